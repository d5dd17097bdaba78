"""w8a8 vs fp32 end to end with int8 kernel knobs A/B: each CNN's fp32 and int8 builds in one
process, timed as whole VM calls interleaved in rounds (``bench.tvm_cpu.interleaved_times``:
every column sees the same spells of a shared machine) — fp32 at 2 threads, the int8 build as
built, the int8 build with each ``--columns`` setting of its library's int64 knobs (set around
the call, restored after), and each int8 column and fp32 at 1 thread (``edgecc_pool_threads``
1: a load's effect on the pool's worker out of the picture). Prints
per column the median, the 10th percentile and the paired int8/fp32 ratio (``paired_ratio``:
the median over rounds of the per-round ratio, as bench/tvm_cpu.py quotes it), and each int8
column's paired ratio to the int8 build as is at the same threads (a knob's own A/B; median,
10th-90th percentile over rounds), writes
``bench/results/x86_int8_ab.json``.

    python bench/x86_int8_ab.py [--models mobilenet_v2,resnet20] [--repeats 40]
        [--columns '{"before": {"edgecc_x86_int8_dw_rows": 0}}'] [--clock wall|cpu]

Default columns: ``before`` = this session's int8 depthwise changes off (dw_rows 0: dw_perm's
padded copy, split by channels). Not a goal measurement (bench/tvm_cpu.py is).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import tempfile
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.host import THREADS  # noqa: E402  (sets TVM_NUM_THREADS before TVM starts)
from bench.tvm_cpu import interleaved_times, median_p10, paired_ratio  # noqa: E402
from bench.x86_int8_common import build_pair, paired_spread  # noqa: E402

import torch  # noqa: E402

warnings.filterwarnings("ignore")
BEFORE = {"before": {"edgecc_x86_int8_dw_rows": 0}}


def measure(name: str, repeats: int, columns: dict, clock: str = "wall") -> dict:
    with tempfile.TemporaryDirectory() as d:
        inputs, shape, results = build_pair(name, d)
    built = {k: (res, ctypes.CDLL(res._runner.library)) for k, res in results.items()}

    def column(label, knobs, threads=THREADS):
        res, lib = built[label]
        pool = ctypes.c_int32.in_dll(lib, "edgecc_pool_threads")
        full = pool.value or THREADS
        vars_ = [(ctypes.c_int64.in_dll(lib, k), v) for k, v in knobs.items()]

        def go():
            old = [var.value for var, _ in vars_]
            for var, v in vars_:
                var.value = v
            pool.value = threads if threads == 1 else full
            try:
                res.run(*inputs)
            finally:
                for (var, _), o in zip(vars_, old):
                    var.value = o
                pool.value = full
        return go

    fns = {"fp32": column("fp32", {}), "int8": column("int8", {})}
    fns.update({f"int8 {c}": column("int8", knobs) for c, knobs in columns.items()})
    fns["int8 1t"] = column("int8", {}, 1)
    fns.update({f"int8 {c} 1t": column("int8", knobs, 1) for c, knobs in columns.items()})
    fns["fp32 1t"] = column("fp32", {}, 1)
    if clock == "cpu":  # the calling thread's CPU time: 1-thread columns only (fp32 1t: "fp32")
        fns = {k: v for k, v in fns.items() if k.endswith(" 1t")}
        fns["fp32"] = fns.pop("fp32 1t")
    with torch.no_grad():
        times = interleaved_times(fns, repeats, clock=clock)
    stats = median_p10(times)
    return {"model": name, "input": shape, "load_average": os.getloadavg()[0],
            "columns": {k: {**stats[k],
                            "paired_vs_fp32": paired_ratio(times, k, "fp32", repeats),
                            # the knob columns against the build as is, same threads
                            "paired_vs_int8": paired_spread(
                                times, k, "int8 1t" if k.endswith(" 1t") else "int8", repeats)}
                        for k in fns if k.startswith("int8")} | {
                "fp32": {**stats["fp32"], "paired_vs_fp32": 1.0},
                **({"fp32 1t": {**stats["fp32 1t"], "paired_vs_fp32": paired_ratio(
                    times, "fp32 1t", "fp32", repeats)}} if "fp32 1t" in stats else {})}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenet_v2,resnet20")
    parser.add_argument("--repeats", type=int, default=40)
    parser.add_argument("--columns", default=json.dumps(BEFORE),
                        help="JSON {column: {knob: value}} of int8 A/B columns")
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "x86_int8_ab.json"))
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: 1-thread columns only, by the calling thread's CPU time "
                             "(robust to other processes on a loaded machine)")
    args = parser.parse_args()
    columns = json.loads(args.columns)
    rows = [measure(m, args.repeats, columns, args.clock) for m in args.models.split(",")]
    for r in rows:
        print(f"\n{r['model']} {r['input']}  (load {r['load_average']:.1f})")
        print(f"  {'column':<24} {'median ms':>9} {'p10 ms':>9} {'paired/fp32':>11} "
              f"{'paired/int8 (p10-p90)':>24}")
        for k, c in r["columns"].items():
            p = c.get("paired_vs_int8")
            vs_int8 = f"{p[1]:10.3f}x ({p[0]:.3f}-{p[2]:.3f})" if p else ""
            print(f"  {k:<24} {c['median_ms']:9.3f} {c['p10_ms']:9.3f} "
                  f"{c['paired_vs_fp32']:10.3f}x {vs_int8:>11}")
    print(f"\nwhole VM calls, {THREADS} threads unless 1t; interleaved rounds in one process; "
          f"clock {args.clock}; columns: {json.dumps(columns)}")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"benchmark": "w8a8 vs fp32 whole model, int8 knob A/B", "clock": args.clock,
                   "repeats": args.repeats,
                   "threads": THREADS, "columns": columns, "rows": rows}, f, indent=2)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
