"""Which of a model's kernel calls gain from the second thread: every call the VM makes (a VM
instrument records them, ``bench.vm_calls``) re-run alone with its arguments, at 1 thread and at
2 (the pool's size, ``edgecc_pool_configure``), in rounds over the whole call list (each call
hot, as in a run), median wall us per call. ``--fifo``: timed under SCHED_FIFO (a quiet
machine on a shared one). Prints per-call and per-kernel tables, writes
``bench/results/pool_calls.json``. A call slower at 2 threads (ratio > 1) is a job the
kernel's serial threshold should keep on the caller (or split otherwise); ``jobs``: the pool
jobs the call made at 2 threads (0: serial, under its kernel set's threshold).

    python bench/pool_calls.py [--model mobilenet_v2:int8] [--rounds 30] [--fifo]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.pool_common import Pool, build, fifo  # noqa: E402  (TVM_NUM_THREADS=2)
from bench.vm_calls import kernel_calls  # noqa: E402

import torch  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="mobilenet_v2:int8")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--fifo", action="store_true")
    parser.add_argument("--output",
                        default=os.path.join(ROOT, "bench", "results", "pool_calls.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    built = build(args.model)
    runner = built.runner
    pool = Pool(runner)
    calls = [c for c in kernel_calls(runner, built.inputs) if not c[1].startswith("vm.builtin")]
    pool.mode(2, True)  # which calls make a pool job at 2 threads (the rest stay serial)
    jobs = []
    for func, _, a in calls:
        func(*a)
        pool.reset()
        pool.timing.value = 1
        func(*a)
        pool.timing.value = 0
        jobs.append(pool.counters()["jobs"])
    us = {}
    fifo(args.fifo)
    try:
        for threads in (1, 2, 1, 2):
            pool.mode(threads, True)
            per = [[] for _ in calls]
            for _ in range(args.rounds):
                for i, (func, _, a) in enumerate(calls):
                    t = time.perf_counter()
                    func(*a)
                    per[i].append((time.perf_counter() - t) * 1e6)
            us.setdefault(threads, []).append(per)
    finally:
        fifo(False)
        pool.mode(2, True)
    rows = []
    for i, (_, symbol, a) in enumerate(calls):
        t1 = statistics.median(us[1][0][i] + us[1][1][i])
        t2 = statistics.median(us[2][0][i] + us[2][1][i])
        shapes = [list(x.shape) for x in a if hasattr(x, "shape")][:2]
        rows.append({"symbol": symbol, "shapes": shapes, "us_1t": t1, "us_2t": t2,
                     "pool_jobs": jobs[i]})
    print(f"{'#':>3} {'kernel':<30}{'1t us':>8}{'2t us':>8}{'2t/1t':>7}{'jobs':>5}  shapes")
    for i, r in enumerate(rows):
        print(f"{i:>3} {r['symbol'][:30]:<30}{r['us_1t']:>8.1f}{r['us_2t']:>8.1f}"
              f"{r['us_2t'] / r['us_1t']:>7.2f}{r['pool_jobs']:>5}  {r['shapes']}")
    kinds = collections.defaultdict(lambda: [0, 0.0, 0.0])
    for r in rows:
        k = kinds[r["symbol"] if r["symbol"].startswith("edgecc_x86") else "TVM-generated"]
        k[0] += 1
        k[1] += r["us_1t"]
        k[2] += r["us_2t"]
    for k, (n, a, b) in sorted(kinds.items(), key=lambda kv: -kv[1][1]):
        print(f"    {k[:30]:<30}{a:>8.1f}{b:>8.1f}{b / a:>7.2f}  ({n} calls)")
    serial = [r for r in rows if r["pool_jobs"] == 0]
    print(f"    serial at 2 threads (no pool job): {len(serial)} calls, "
          f"{sum(r['us_1t'] for r in serial):.1f} us of {sum(r['us_1t'] for r in rows):.1f} at 1t")
    slower = [r for r in rows if r["us_2t"] > r["us_1t"] * 1.05]
    print(f"{args.model}: {len(rows)} calls, 1t {sum(r['us_1t'] for r in rows):.1f} us, 2t "
          f"{sum(r['us_2t'] for r in rows):.1f} us; {len(slower)} calls over 1.05x slower at 2 "
          f"threads ({sum(r['us_2t'] - r['us_1t'] for r in slower):.1f} us lost); "
          f"load {os.getloadavg()[0]:.1f}" + (", SCHED_FIFO" if args.fifo else ""))
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"benchmark": "edgecc kernel calls alone, 1 vs 2 threads", "model": args.model,
                   "rounds": args.rounds, "sched_fifo": args.fifo, "rows": rows}, f, indent=2)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
