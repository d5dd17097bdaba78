"""How much of a model's kernels the second thread should take: one edgecc build timed at 2
threads with every kernel set's serial threshold scaled (``edgecc_x86_serial_work_log2``: 0 =
the thresholds as written, -k = 2^k times lower, -63 = every job with 2+ items on the pool, 63
= every job serial) and at 1 thread, interleaved in one process (``interleaved_times``, paired
per-round ratios against the default), plus the pool jobs per call at each setting
(``edgecc_pool_stat``). Outputs checked bit-identical. ``--fifo``: timed under SCHED_FIFO.

    python bench/pool_serial_work.py [--models mobilenet_v2:int8,resnet20] [--repeats 100]

Prints a table, writes ``bench/results/pool_serial_work.json``. The thresholds are the kernel
sets' own (x86_int8*, x86_fp32*: their owners'); ``--tune`` searches the scale per model. ``2t_auto``: every job with 2+ items a candidate and ``edgecc_pool_adaptive`` on
(each job site timed serially and on the pool, the faster kept; x86_kernel_ffi).
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.pool_common import Pool, build, fifo  # noqa: E402  (TVM_NUM_THREADS=2)
from bench.tvm_cpu import interleaved_times, median_p10, paired_ratio  # noqa: E402

import torch  # noqa: E402

SCALES = (0, -2, -63, 63)


def measure(spec: str, repeats: int, quiet: bool) -> dict:
    built = build(spec)
    name, precision, shape, call = built.name, built.precision, built.shape, built.call
    pool = Pool(built.runner)
    scale, adaptive = pool.serial_work_log2, pool.adaptive
    ref = [t.clone() for t in call()]

    def variant(threads, log2, auto=0):
        def fn():
            pool.mode(threads, True)
            scale.value = log2
            adaptive.value = auto
            return call()
        return fn

    fns = {f"2t_{k}": variant(2, k) for k in SCALES}
    fns["2t_auto"] = variant(2, -63, 1)  # every job a candidate, each site timed both ways
    fns["1t"] = variant(1, 0)
    jobs = {}
    for k, fn in fns.items():
        assert all(torch.equal(a, b) for a, b in zip(fn(), ref)), (spec, k)
        pool.reset()
        pool.timing.value = 1
        for _ in range(20):
            fn()
        pool.timing.value = 0
        jobs[k] = pool.counters()["jobs"] / 20
    fifo(quiet)
    try:
        with torch.no_grad():
            times = interleaved_times(fns, repeats)
    finally:
        fifo(False)
        pool.mode(2, True)
        scale.value = 0
        adaptive.value = 0
    return {"model": name, "precision": precision, "input": shape, "sched_fifo": quiet,
            "times": median_p10(times), "pool_jobs_per_call": jobs,
            "ratio_vs_default": {k: paired_ratio(times, k, "2t_0", repeats) for k in fns},
            "load_average": os.getloadavg()[0]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenet_v2:int8,resnet20")
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--fifo", action="store_true")
    parser.add_argument("--output",
                        default=os.path.join(ROOT, "bench", "results", "pool_serial_work.json"))
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = [measure(s, args.repeats, args.fifo) for s in args.models.split(",")]
    print(f"{'model':<20}{'variant':>8}{'median ms':>11}{'p10 ms':>9}{'vs 2t_0':>9}{'jobs':>7}")
    for r in rows:
        for k, t in r["times"].items():
            print(f"{r['model'] + ' ' + r['precision']:<20}{k:>8}{t['median_ms']:>11.3f}"
                  f"{t['p10_ms']:>9.3f}{r['ratio_vs_default'][k]:>9.2f}"
                  f"{r['pool_jobs_per_call'][k]:>7.1f}")
    print("2t_k: 2 threads, serial thresholds x 2^k (63: all serial, -63: all on the pool); "
          f"interleaved, paired per-round ratios; load {os.getloadavg()[0]:.1f}"
          + (", SCHED_FIFO" if args.fifo else ""))
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"benchmark": "edgecc serial thresholds scaled, 2 threads",
                   "repeats": args.repeats, "rows": rows}, f, indent=2)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
