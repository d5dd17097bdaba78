"""A/B of the x86 transformer float kernels (``targets/tvm/x86_attention``): each model's fp32
and w8a8 (integer kernels) host builds with and without the attention / layer-norm / GELU
rewrite, timed in interleaved rounds in one process (2 TVM threads, median), so the two
columns of a row differ only by that rewrite. Prints a table and writes
``bench/results/x86_attention.json``.

    python bench/x86_attention.py [--models bert,gpt2,minilm] [--repeats 20]

Models as bench/tvm_cpu.py builds them (random weights, nothing downloaded).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.host import THREADS  # noqa: E402
from bench.tvm_cpu import calibration, interleaved_ms, models  # noqa: E402

import torch  # noqa: E402

import edgecc  # noqa: E402
from edgecc.targets.tvm import x86_attention  # noqa: E402

warnings.filterwarnings("ignore")

BUILDS = {"fp32": ("fold-batchnorm,fuse,dce", {}),
          "int8": ("fold-batchnorm,quantize{scheme=w8a8},fuse,dce", {"integer_kernels": True})}


def build(module, inputs, pipeline, calib, options, rewrite: bool, directory: str):
    """One host build, with the rewrite on or off (``x86_attention.apply`` as the identity);
    returns the callable and the rewrite's statistics."""
    seen = {}
    real = x86_attention.apply

    def apply(mod, target):
        if not rewrite:
            return mod, None
        out, stats = real(mod, target)
        seen["stats"] = stats.as_dict() if stats is not None else None
        return out, stats

    x86_attention.apply = apply
    try:
        res = edgecc.compile(module, "host", example_inputs=inputs, pipeline=pipeline,
                             calibration=calib, output_dir=directory, progress=False,
                             target_options={"num_threads": THREADS, **options})
    finally:
        x86_attention.apply = real
    assert res.report["verification"]["passed"], res.report["verification"]
    res.run(*inputs)  # loads the library
    return (lambda: res.run(*inputs)), seen.get("stats")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="bert,gpt2,minilm")
    parser.add_argument("--builds", default="fp32,int8")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "x86_attention.json"))
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    table, rows = models(), []
    for name in args.models.split(","):
        make, inputs, shape = table[name]
        module = make().eval()
        calib = calibration(inputs)
        for kind in args.builds.split(","):
            pipeline, options = BUILDS[kind]
            with tempfile.TemporaryDirectory() as d, torch.no_grad():
                before, _ = build(module, inputs, pipeline, calib if kind != "fp32" else None,
                                  options, False, os.path.join(d, "before"))
                after, stats = build(module, inputs, pipeline,
                                     calib if kind != "fp32" else None, options, True,
                                     os.path.join(d, "after"))
                ms = interleaved_ms({"before_ms": before, "after_ms": after}, args.repeats)
            row = {"model": name, "input": shape, "build": kind, **ms,
                   "after_vs_before": ms["after_ms"] / ms["before_ms"], "rewrite": stats}
            rows.append(row)
            print(f"done {name} {kind}: {row}", file=sys.stderr, flush=True)
    print(f"{'model':<10}{'build':<7}{'before ms':>11}{'after ms':>11}{'after/before':>14}")
    for r in rows:
        print(f"{r['model']:<10}{r['build']:<7}{r['before_ms']:>11.2f}{r['after_ms']:>11.2f}"
              f"{r['after_vs_before']:>13.2f}x")
    print(f"ms, median of interleaved rounds, {THREADS} TVM threads; before = TVM's loop nests "
          "for attention / layer norm / GELU, after = the x86_attention kernels; "
          f"load average at the end: {os.getloadavg()[0]:.1f}")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"benchmark": "x86_attention rewrite, before / after", "threads": THREADS,
                   "repeats": args.repeats, "statistic": "median of interleaved rounds",
                   "load_average_1min_at_end": os.getloadavg()[0], "rows": rows}, f, indent=2)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
