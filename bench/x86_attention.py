"""A/B of the x86 transformer float kernels (``targets/tvm/x86_attention``): each model's fp32
and w8a8 (integer kernels) host builds with and without the attention / layer-norm / GELU
rewrite, timed in interleaved rounds in one process (2 TVM threads, median), so the
columns of a row differ only by that rewrite. ``--parts`` adds a third build per row: the
rewrite with attention left on TVM's kernels (layer norm and GELU still rewritten), so
``after / no-attn`` is the fused attention kernel's own gain. Prints a table and writes
``bench/results/x86_attention.json``. ``--clock cpu`` (with ``--threads 1``) times each call
by the calling thread's CPU time instead of the wall clock: on a machine others load, the
time a descheduled thread waits is not counted (wall-clock ratios there swing by 2x).

    python bench/x86_attention.py [--models bert,gpt2,minilm] [--builds fp32,int8]
                                  [--repeats 20] [--threads 2] [--parts] [--clock wall|cpu]

Models as bench/tvm_cpu.py builds them (random weights, nothing downloaded).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import statistics
import tempfile
import time
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


def build(module, inputs, pipeline, calib, options, parts, directory: str):
    """One host build with the rewrite of ``parts`` (``x86_attention.PARTS``: all of it;
    ``None``: ``x86_attention.apply`` as the identity); returns the callable and the
    rewrite's statistics."""
    seen = {}
    real = x86_attention.apply

    def apply(mod, target):
        if parts is None or not x86_attention.supported(target):
            return mod, None
        out, stats = x86_attention.rewrite(mod, parts)
        seen["stats"] = stats.as_dict()
        return out, stats

    x86_attention.apply = apply
    try:
        res = edgecc.compile(module, "host", example_inputs=inputs, pipeline=pipeline,
                             calibration=calib, output_dir=directory, progress=False,
                             target_options={"num_threads": threads, **options})
    finally:
        x86_attention.apply = real
    assert res.report["verification"]["passed"], res.report["verification"]
    res.run(*inputs)  # loads the library
    return (lambda: res.run(*inputs)), seen.get("stats")


threads = THREADS
VARIANTS = {"before_ms": None, "after_ms": x86_attention.PARTS}
NO_ATTENTION = ("no_attn_ms", tuple(p for p in x86_attention.PARTS if p != "attention"))


def cpu_ms(fns, repeats, block=10, warmup=3):
    """``interleaved_ms`` by the calling thread's CPU time (one TVM thread: every kernel
    runs on it): median over interleaved rounds of ``block`` calls."""
    times = {k: [] for k in fns}
    for _ in range(max(1, repeats // block)):
        for k, fn in fns.items():
            for _ in range(warmup):
                fn()
            for _ in range(block):
                t = time.thread_time()
                fn()
                times[k].append((time.thread_time() - t) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def main() -> int:
    global threads
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="bert,gpt2,minilm")
    parser.add_argument("--builds", default="fp32,int8")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=THREADS,
                        help="TVM worker threads of every build (default %(default)s)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: the calling thread's CPU time (needs --threads 1)")
    parser.add_argument("--parts", action="store_true",
                        help="also time the rewrite with attention left on TVM's kernels")
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "x86_attention.json"))
    args = parser.parse_args()
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu times one thread: use it with --threads 1")
    threads = args.threads
    torch.set_num_threads(threads)
    variants = dict(VARIANTS)
    if args.parts:
        variants[NO_ATTENTION[0]] = NO_ATTENTION[1]
    table, rows = models(), []
    for name in args.models.split(","):
        make, inputs, shape = table[name]
        module = make().eval()
        calib = calibration(inputs)
        for kind in args.builds.split(","):
            pipeline, options = BUILDS[kind]
            fns, stats = {}, None
            with tempfile.TemporaryDirectory() as d, torch.no_grad():
                for column, parts in variants.items():
                    fns[column], seen = build(module, inputs, pipeline,
                                              calib if kind != "fp32" else None, options,
                                              parts, os.path.join(d, column))
                    stats = seen if column == "after_ms" else stats
                ms = (cpu_ms if args.clock == "cpu" else interleaved_ms)(fns, args.repeats)
            row = {"model": name, "input": shape, "build": kind, **ms,
                   "after_vs_before": ms["after_ms"] / ms["before_ms"], "rewrite": stats}
            if args.parts:
                row["after_vs_no_attn"] = ms["after_ms"] / ms["no_attn_ms"]
            rows.append(row)
            print(f"done {name} {kind}: {row}", file=sys.stderr, flush=True)
    extra = args.parts
    print(f"{'model':<10}{'build':<7}{'before ms':>11}{'after ms':>11}{'after/before':>14}"
          + (f"{'no-attn ms':>12}{'after/no-attn':>15}" if extra else ""))
    for r in rows:
        print(f"{r['model']:<10}{r['build']:<7}{r['before_ms']:>11.2f}{r['after_ms']:>11.2f}"
              f"{r['after_vs_before']:>13.2f}x"
              + (f"{r['no_attn_ms']:>12.2f}{r['after_vs_no_attn']:>14.2f}x" if extra else ""))
    clock = "CPU time of the calling thread" if args.clock == "cpu" else "wall clock"
    print(f"ms ({clock}), median of interleaved rounds, {threads} TVM thread(s); before = TVM's loop nests "
          "for attention / layer norm / GELU, after = the x86_attention kernels"
          + ("; no-attn = the kernels for layer norm and GELU, attention on TVM's" if extra
             else "") + f"; load average at the end: {os.getloadavg()[0]:.1f}")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"benchmark": "x86_attention rewrite, before / after", "threads": threads,
                   "clock": args.clock,
                   "repeats": args.repeats, "statistic": "median of interleaved rounds",
                   "load_average_1min_at_end": os.getloadavg()[0], "rows": rows}, f, indent=2)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
