"""A/B of ``x86_linear`` on whole fp32 transformers: the default build (linears of 96+ rows on
``edgecc_x86_linear``, GELU in its write-back) against the same build with the linears left
on ``x86_fp32``'s SGEMM (``x86_linear.apply`` replaced by the identity), and onnxruntime fp32,
all timed interleaved in one process (``bench.tvm_cpu.interleaved_times``): 2 threads by the
wall clock, with paired ratios (``paired_ratio``: the median over rounds), or with ``--cpu``
1-thread builds by the calling thread's CPU time (ort left out). Outputs are checked equal
(bit for bit) between the two edgecc builds. Say the machine's load with the numbers.

    python bench/transformer_linear.py [--models minilm,bert,gpt2] [--repeats 20] [--cpu]

Prints a table and writes ``bench/results/transformer_linear[_cpu].json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.tvm_cpu import (  # noqa: E402
    interleaved_times, median_p10, models, ort_fp32_fn, paired_ratio,
)

import edgecc  # noqa: E402
from edgecc.targets.tvm import x86_linear  # noqa: E402

_APPLY = x86_linear.apply


def _sgemm_only(module, library=True, options=None):
    return module, x86_linear.RewriteStats()


def build(module, inputs, threads, linear: bool):
    x86_linear.apply = _APPLY if linear else _sgemm_only
    try:
        with tempfile.TemporaryDirectory() as d:
            res = edgecc.compile(module, "host", example_inputs=inputs, pipeline=None,
                                 output_dir=os.path.join(d, "o"), progress=False,
                                 target_options={"num_threads": threads})
            res.run(*inputs)
    finally:
        x86_linear.apply = _APPLY
    return res


KNOB = "edgecc_x86_linear_panel_bytes"


def _knobbed(res, inputs, value, name=KNOB):
    """``res.run`` with the library's int64 ``name`` set to ``value`` for the call."""
    import ctypes

    var = ctypes.c_int64.in_dll(ctypes.CDLL(res._runner.library), name)

    def run():
        default = var.value
        var.value = value
        try:
            return res.run(*inputs)
        finally:
            var.value = default
    return run


def _first(out):
    import numpy as np

    return np.asarray(out[0] if isinstance(out, (list, tuple)) else out)


def main() -> int:
    import numpy as np

    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="minilm,bert,gpt2")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--cpu", action="store_true", help="1-thread builds, CPU time, no ort")
    ap.add_argument("--chunks", default="", help="comma-separated values of the knob "
                    f"{KNOB} (bytes of panels per chunk; 0: all): extra columns")
    ap.add_argument("--knob", action="append", default=[],
                    help="NAME=VALUE: an extra column, the linear build with that int64 knob "
                    "(e.g. edgecc_x86_linear_min_items=0)")
    args = ap.parse_args()
    args.chunks = [int(v) for v in args.chunks.split(",") if v]
    threads = 1 if args.cpu else 2
    table = {"threads": threads, "clock": "cpu" if args.cpu else "wall",
             "load_before": os.getloadavg(), "models": {}}
    print(f"{'model':8s} {'sgemm ms':>9s} {'linear ms':>9s} {'ort ms':>8s} "
          f"{'lin/sgemm':>9s} {'sgemm/ort':>9s} {'lin/ort':>8s}  (medians; ratios paired)")
    for name in args.models.split(","):
        make, inputs, _ = models()[name]
        module = make().eval()
        res = {"sgemm": build(module, inputs, threads, False),
               "linear": build(module, inputs, threads, True)}
        same = bool(np.array_equal(_first(res["sgemm"].run(*inputs)),
                                   _first(res["linear"].run(*inputs))))
        fns = {k: (lambda r=r: r.run(*inputs)) for k, r in res.items()}
        for value in args.chunks:  # the linear build with edgecc_x86_linear_panel_bytes set
            fns[f"linear@{value}"] = _knobbed(res["linear"], inputs, value)
        for knob in args.knob:  # NAME=VALUE on the linear build
            fns[f"linear {knob}"] = _knobbed(res["linear"], inputs, int(knob.split("=")[1]),
                                             knob.split("=")[0])
        if not args.cpu:
            fns["ort"] = ort_fp32_fn(module, inputs)
        times = interleaved_times(fns, args.repeats, clock="cpu" if args.cpu else "wall")
        stats = median_p10(times)
        row = {"stats": stats, "bit_identical": same,
               "linear/sgemm": paired_ratio(times, "linear", "sgemm", args.repeats)}
        if not args.cpu:
            row["sgemm/ort"] = paired_ratio(times, "sgemm", "ort", args.repeats)
            row["linear/ort"] = paired_ratio(times, "linear", "ort", args.repeats)
        ort_ms = stats["ort"]["median_ms"] if "ort" in stats else float("nan")
        print(f"{name:8s} {stats['sgemm']['median_ms']:9.2f} {stats['linear']['median_ms']:9.2f} "
              f"{ort_ms:8.2f} {row['linear/sgemm']:9.3f} {row.get('sgemm/ort', float('nan')):9.3f}"
              f" {row.get('linear/ort', float('nan')):8.3f}  bit-identical {same}", flush=True)
        for value in args.chunks:
            key = f"linear@{value}"
            row[f"{key}/linear"] = paired_ratio(times, key, "linear", args.repeats)
            print(f"{'':8s} {KNOB}={value}: {stats[key]['median_ms']:.2f} ms, "
                  f"{row[f'{key}/linear']:.3f}x of the default (paired)")
        for knob in args.knob:
            key = f"linear {knob}"
            row[f"{key}/linear"] = paired_ratio(times, key, "linear", args.repeats)
            print(f"{'':8s} {knob}: {stats[key]['median_ms']:.2f} ms, "
                  f"{row[f'{key}/linear']:.3f}x of the default (paired)")
        table["models"][name] = row
    table["load_after"] = os.getloadavg()
    out = os.path.join(ROOT, "bench", "results",
                       "transformer_linear_cpu.json" if args.cpu else "transformer_linear.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(table, f, indent=1)
    print(f"load {table['load_before'][0]:.1f} -> {table['load_after'][0]:.1f}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
