"""Which int8 kernel calls gain from the pool's second thread: each VM call of a w8a8 CNN's
int8 build re-run alone with the VM's arguments, by the wall clock, at 2 threads and at 1
(the library's ``edgecc_pool_threads``), alternating in rounds in one process; per call the
median and the 10th percentile (the quiet spells of a shared machine: a loaded one
deschedules the pool's worker mid-chunk and makes every pooled call look slower) of the
per-round ratio 2t / 1t. Prints a table (calls by kind and map size), writes
``bench/results/x86_int8_pool_calls.json``.

    python bench/x86_int8_pool_calls.py [--models mobilenet_v2] [--rounds 30] [--reps 10]

Not a goal measurement (bench/tvm_cpu.py is): it says which calls the serial thresholds
should keep off the pool.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import tempfile
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.host import THREADS  # noqa: E402  (sets TVM_NUM_THREADS before TVM starts)
from bench.tvm_runtime import kernel_calls, kind  # noqa: E402
from bench.x86_int8_common import build_int8, write_result  # noqa: E402

warnings.filterwarnings("ignore")


def measure(name: str, rounds: int, reps: int) -> dict:
    with tempfile.TemporaryDirectory() as d:
        inputs, shape, res, _ = build_int8(name, d)
    library = ctypes.CDLL(res._runner.library)
    pool = ctypes.c_int32.in_dll(library, "edgecc_pool_threads")
    full = pool.value or THREADS
    calls = [c for c in kernel_calls(res._runner, inputs) if kind(c[1]) != "builtin"]
    ratios = [[] for _ in calls]
    times = {t: [[] for _ in calls] for t in (THREADS, 1)}
    for r in range(rounds):
        for i, (fn, _, args) in enumerate(calls):
            got = {}
            for t in ((THREADS, 1) if r % 2 == 0 else (1, THREADS)):
                pool.value = full if t > 1 else 1
                fn(*args)
                start = time.perf_counter()
                for _ in range(reps):
                    fn(*args)
                got[t] = (time.perf_counter() - start) / reps * 1e6
                times[t][i].append(got[t])
            ratios[i].append(got[THREADS] / got[1])
    pool.value = full
    rows = []
    for i, (_, symbol, args) in enumerate(calls):
        rows.append({"call": symbol.replace("edgecc_x86_", "")
                     + str(tuple(getattr(args[0], "shape", ()))),
                     "us_2t_p10": sorted(times[THREADS][i])[len(times[THREADS][i]) // 10],
                     "us_1t_p10": sorted(times[1][i])[len(times[1][i]) // 10],
                     "ratio_median": statistics.median(ratios[i]),
                     "ratio_p10": sorted(ratios[i])[len(ratios[i]) // 10]})
    return {"model": name, "input": shape, "load_average": os.getloadavg()[0], "calls": rows}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenet_v2")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "x86_int8_pool_calls.json"))
    args = parser.parse_args()
    rows = [measure(m, args.rounds, args.reps) for m in args.models.split(",")]
    for r in rows:
        print(f"\n{r['model']} {r['input']}  (load {r['load_average']:.1f})")
        print(f"  {'call':<34} {'2t p10 us':>9} {'1t p10 us':>9} {'2t/1t med':>9} "
              f"{'2t/1t p10':>9}")
        for c in r["calls"]:
            print(f"  {c['call'][:34]:<34} {c['us_2t_p10']:9.1f} {c['us_1t_p10']:9.1f} "
                  f"{c['ratio_median']:9.2f} {c['ratio_p10']:9.2f}")
        s2 = sum(c["us_2t_p10"] for c in r["calls"])
        s1 = sum(c["us_1t_p10"] for c in r["calls"])
        print(f"  {'sum':<34} {s2:9.1f} {s1:9.1f} {s2 / s1:9.2f}")
    print(f"\nwall clock, each call re-run {args.reps}x alone; 2t / 1t alternating per call, "
          f"{args.rounds} rounds, one process")
    write_result(args.output, {"benchmark": "int8 calls, 2 vs 1 pool threads, wall",
                               "rounds": args.rounds, "reps": args.reps, "threads": THREADS,
                               "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
