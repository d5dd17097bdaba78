"""The pool's per-job atomics on whole models: each model's edgecc build run at 2 threads with
the claim and done-counter settings of the pool (x86_kernel_ffi: ``edgecc_pool_chunk_parts``,
a claim takes remaining / (parts x threads) items; ``edgecc_pool_done_once``, a worker adds
its items to the job's done counter once instead of after every chunk, the caller never),
interleaved in one process (``interleaved_times``, paired per-round ratios against ``base``,
the build's defaults), plus per call the pool jobs, claims and done-counter additions
(``edgecc_pool_timing``). Outputs checked bit-identical to ``base``.

    python bench/pool_overhead.py [--models resnet20,resnet20:int8,mobilenet_v2,...]
                                  [--repeats 200] [--threads 2]

Prints a table, writes ``bench/results/pool_overhead.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.pool_common import Pool, build  # noqa: E402  (TVM_NUM_THREADS=2)
from bench.tvm_cpu import interleaved_times, median_p10, paired_ratio  # noqa: E402

import ctypes  # noqa: E402

import torch  # noqa: E402

# name -> (edgecc_pool_chunk_parts, edgecc_pool_done_once)
VARIANTS = {"parts2": (2, 0), "once": (2, 1), "parts1": (1, 0), "parts1_once": (1, 1)}


def measure(spec: str, repeats: int, threads: int, stat_calls: int = 50) -> dict:
    built = build(spec)
    call = built.call
    pool = Pool(built.runner)
    parts = pool.knob("edgecc_pool_chunk_parts")
    once = pool.knob("edgecc_pool_done_once")
    claims = pool.knob("edgecc_pool_claims", ctypes.c_int64)
    adds = pool.knob("edgecc_pool_done_adds", ctypes.c_int64)
    default = (parts.value, once.value)
    variants = {"base": default, **VARIANTS}

    def variant(setting):
        def fn():
            parts.value, once.value = setting
            return call()
        return fn

    pool.mode(threads, True)
    fns = {k: variant(v) for k, v in variants.items()}
    ref = [t.clone() for t in fns["base"]()]
    counts = {}
    for k, fn in fns.items():
        for _ in range(5):
            assert all(torch.equal(a, b) for a, b in zip(fn(), ref)), (spec, k)
        pool.reset()
        claims.value = adds.value = 0
        pool.timing.value = 1
        for _ in range(stat_calls):
            fn()
        pool.timing.value = 0
        c = pool.counters()
        counts[k] = {"jobs": c["jobs"] / stat_calls, "claims": claims.value / stat_calls,
                     "done_adds": adds.value / stat_calls,
                     "joined": c["joined"] / max(1, c["jobs"])}
    try:
        with torch.no_grad():
            times = interleaved_times(fns, repeats)
    finally:
        parts.value, once.value = default
    return {"model": built.name, "precision": built.precision, "threads": threads,
            "default": {"chunk_parts": default[0], "done_once": default[1]},
            "times": median_p10(times), "per_call": counts,
            "ratio_vs_base": {k: paired_ratio(times, k, "base", repeats) for k in fns},
            "load_average": os.getloadavg()[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models",
                        default="resnet20,resnet20:int8,mobilenet_v2,mobilenet_v2:int8")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output",
                        default=os.path.join(ROOT, "bench", "results", "pool_overhead.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = []
    for spec in args.models.split(","):
        rows.append(measure(spec, args.repeats, args.threads))
        print(json.dumps(rows[-1]["ratio_vs_base"]), flush=True)
    print(f"{'model':<20}{'variant':>12}{'median ms':>11}{'p10 ms':>9}{'vs base':>9}"
          f"{'jobs':>7}{'claims':>8}{'adds':>7}{'joined':>8}")
    for r in rows:
        for k, t in r["times"].items():
            c = r["per_call"][k]
            print(f"{r['model'] + ' ' + r['precision']:<20}{k:>12}{t['median_ms']:>11.3f}"
                  f"{t['p10_ms']:>9.3f}{r['ratio_vs_base'][k]:>9.3f}{c['jobs']:>7.1f}"
                  f"{c['claims']:>8.1f}{c['done_adds']:>7.1f}{c['joined']:>8.0%}")
    print(f"{args.threads} threads; interleaved, paired per-round ratios vs base (the build's "
          f"defaults); per call: pool jobs, claims, done-counter additions, share of jobs the "
          f"worker joined; load {os.getloadavg()[0]:.1f}")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"benchmark": "edgecc pool claims / done counting, whole models",
                   "repeats": args.repeats, "rows": rows}, f, indent=2)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
