"""What edgecc's second thread buys on whole models, and where the 2-thread time goes: each
model's edgecc build run with its kernel pool at 1 thread and at 2 (``edgecc_pool_configure``:
TVM's generated loops and the hand-written kernels both follow it), the 2-thread run with and
without this session's pool changes ("new": TVM's generated parallel loops measured shorter
than ``edgecc_pool_inline_ns`` run on the caller alone, and two-ended jobs,
``edgecc_pool_two_ended``; "old": both off, every launch on the pool and one claim counter), and onnxruntime at 1 and 2 intra-op threads, all interleaved in one process
(``bench.tvm_cpu.interleaved_times``: wall time, rounds rotated), so the ratios are paired.

Then one pass per 2-thread mode with the pool's timing counters on (``edgecc_pool_timing``):
per call, the pool jobs (kernels' and TVM's), the TVM launches run on the caller alone, the
caller's time working / waiting for the worker, the worker's time, the jobs it joined and its
wake-up latency (publish to first claim), and which CPUs the threads ran on
(``/proc/self/task/*/stat``).

    python bench/pool_scaling.py [--models resnet20,mobilenet_v2,mobilenet_v2:int8,bert]
                                 [--repeats 200]

Prints a table and writes ``bench/results/pool_scaling.json``. On a shared machine the 2-thread
columns depend on whether the second vCPU is free: compare columns within a row (paired), and
read ``joined`` (the share of pool jobs the worker took part in).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.pool_common import Pool, build, fifo  # noqa: E402  (TVM_NUM_THREADS=2)
from bench.tvm_cpu import interleaved_times, median_p10, paired_ratio  # noqa: E402

import torch  # noqa: E402

warnings.filterwarnings("ignore")

def thread_cpus() -> dict:
    """This process's threads: tid -> (last CPU, user+system ticks)."""
    out = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:
            continue
        out[int(tid)] = (int(fields[36]), int(fields[11]) + int(fields[12]))
    return out


def ort_fn(module, inputs, threads):
    import tempfile

    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.onnx")
        torch.onnx.export(module, inputs, dynamo=True, verbose=False).save(path)
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    feed = {i.name: t.numpy() for i, t in zip(sess.get_inputs(), inputs)}
    return lambda: sess.run(None, feed)


def measure(spec: str, repeats: int, stat_calls: int, quiet: bool = False) -> dict:
    built = build(spec)
    name, precision, shape, call = built.name, built.precision, built.shape, built.call
    with torch.no_grad():
        ort1, ort2 = ort_fn(built.module, built.inputs, 1), ort_fn(built.module, built.inputs, 2)
    pool = Pool(built.runner)
    ref = [t.clone() for t in call()]

    def mode(threads, new):
        def fn():
            pool.mode(threads, new)
            return call()
        return fn

    fns = {"edgecc_1t": mode(1, False), "edgecc_2t_old": mode(2, False),
           "edgecc_2t_new": mode(2, True), "ort_1t": ort1, "ort_2t": ort2}
    for k in ("edgecc_1t", "edgecc_2t_old", "edgecc_2t_new"):  # the pool only schedules work
        got = fns[k]()
        assert all(torch.equal(a, b) for a, b in zip(got, ref)), (spec, k)
    fifo(quiet)
    with torch.no_grad():
        times = interleaved_times(fns, repeats)
    row = {"model": name, "precision": precision, "input": shape, "inline_ns": pool.default_inline,
           "times": median_p10(times),
           "ratios": {"edgecc_2t_old/1t": paired_ratio(times, "edgecc_2t_old", "edgecc_1t",
                                                         repeats),
                      "edgecc_2t_new/1t": paired_ratio(times, "edgecc_2t_new", "edgecc_1t",
                                                         repeats),
                      "edgecc_2t_new/old": paired_ratio(times, "edgecc_2t_new",
                                                          "edgecc_2t_old", repeats),
                      "ort_2t/1t": paired_ratio(times, "ort_2t", "ort_1t", repeats),
                      "edgecc_2t_new/ort_2t": paired_ratio(times, "edgecc_2t_new", "ort_2t",
                                                             repeats)},
           "load_average": os.getloadavg()[0]}
    # 1-thread CPU time of the caller (what the work costs without the second thread)
    pool.mode(1, False)
    cpu = []
    for _ in range(max(20, stat_calls)):
        t = time.thread_time()
        call()
        cpu.append((time.thread_time() - t) * 1e3)
    row["edgecc_1t_cpu_ms"] = statistics.median(cpu)
    stats = {}
    for label, new in (("old", False), ("new", True)):
        pool.mode(2, new)
        for _ in range(20):
            call()
        pool.reset()
        pool.timing.value = 1
        before, launches = thread_cpus(), pool.launches.value
        t = time.perf_counter()
        for _ in range(stat_calls):
            call()
        wall = (time.perf_counter() - t) / stat_calls
        pool.timing.value = 0
        after = thread_cpus()
        c = pool.counters()
        per = {k: v / stat_calls for k, v in c.items()}
        stats[label] = {
            "call_us": wall * 1e6, "tvm_launches": (pool.launches.value - launches) / stat_calls,
            "pool_jobs": per["jobs"], "tvm_on_pool": per["tvm_pool"],
            "tvm_inline": per["tvm_inline"], "tvm_inline_us": per["inline_ns"] / 1e3,
            "pool_wall_us": per["wall_ns"] / 1e3, "caller_work_us": per["caller_ns"] / 1e3,
            "caller_wait_us": per["wait_ns"] / 1e3, "worker_us": per["worker_ns"] / 1e3,
            "joined": c["joined"] / max(1, c["jobs"]),
            "wake_us": c["wake_ns"] / max(1, c["joined"]) / 1e3,
            "worker_item_share": c["worker_items"] / max(1, c["items"]),
            "short_jobs": per["short"], "sleeps": per["sleeps"],
            "threads": {tid: {"cpu": cpu_, "ticks": ticks - before.get(tid, (0, 0))[1]}
                        for tid, (cpu_, ticks) in after.items()
                        if ticks - before.get(tid, (0, 0))[1] > 0}}
    row["stats"] = stats
    row["sched_fifo"] = quiet
    fifo(False)
    pool.mode(2, True)
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20,mobilenet_v2,mobilenet_v2:int8,bert")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--stat-calls", type=int, default=200)
    parser.add_argument("--output",
                        default=os.path.join(ROOT, "bench", "results", "pool_scaling.json"))
    parser.add_argument("--fifo", action="store_true",
                        help="time under SCHED_FIFO (root): a quiet machine on a shared one")
    args = parser.parse_args()
    torch.set_num_threads(2)
    rows = []
    for spec in args.models.split(","):
        row = measure(spec, args.repeats, args.stat_calls, args.fifo)
        rows.append(row)
        print(json.dumps(row["stats"], indent=None)[:3000], flush=True)
    cols = ("edgecc_1t", "edgecc_2t_old", "edgecc_2t_new", "ort_1t", "ort_2t")
    print(f"{'model':<20}{'1t cpu':>8}" + "".join(f"{c:>15}" for c in cols)
          + f"{'old/1t':>8}{'new/1t':>8}{'new/old':>8}{'ort2/1':>8}{'new/ort2':>9}{'load':>6}")
    for r in rows:
        ra = r["ratios"]
        print(f"{r['model'] + ' ' + r['precision']:<20}{r['edgecc_1t_cpu_ms']:>8.3f}"
              + "".join(f"{r['times'][c]['median_ms']:>15.3f}" for c in cols)
              + f"{ra['edgecc_2t_old/1t']:>8.2f}{ra['edgecc_2t_new/1t']:>8.2f}"
              f"{ra['edgecc_2t_new/old']:>8.2f}{ra['ort_2t/1t']:>8.2f}"
              f"{ra['edgecc_2t_new/ort_2t']:>9.2f}{r['load_average']:>6.1f}")
    print("ms, medians of interleaved rounds (wall); ratios: median per-round paired; 1t cpu: "
          "the caller's CPU time at 1 thread")
    print(f"{'model':<20}{'mode':>5}{'call us':>9}{'launch':>8}{'jobs':>7}{'inline':>7}"
          f"{'inl us':>8}{'pool us':>9}{'work us':>9}{'wait us':>9}{'wkr us':>8}"
          f"{'joined':>8}{'wake us':>8}{'wkr %':>7}{'<3us':>6}{'sleeps':>7}")
    for r in rows:
        for label, s in r["stats"].items():
            print(f"{r['model'] + ' ' + r['precision']:<20}{label:>5}{s['call_us']:>9.1f}"
                  f"{s['tvm_launches']:>8.1f}{s['pool_jobs']:>7.1f}{s['tvm_inline']:>7.1f}"
                  f"{s['tvm_inline_us']:>8.1f}{s['pool_wall_us']:>9.1f}"
                  f"{s['caller_work_us']:>9.1f}{s['caller_wait_us']:>9.1f}"
                  f"{s['worker_us']:>8.1f}{s['joined']:>8.0%}{s['wake_us']:>8.2f}"
                  f"{s['worker_item_share']:>7.0%}{s['short_jobs']:>6.1f}{s['sleeps']:>7.2f}")
    print("per call (timing on): launch = TVM launches, jobs = pool jobs (kernels' + TVM's), "
          "inline = TVM launches on the caller alone (their us), pool us = the pool jobs' wall "
          "time, work/wait = the caller's time in them working / waiting for the worker, wkr = "
          "the worker's working time, joined = share of jobs the worker ran items of, wake = its "
          "delay to the first claim, wkr % = share of items it ran")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"benchmark": "edgecc pool: 1 vs 2 threads, inlining short TVM loops",
                   "repeats": args.repeats, "rows": rows}, f, indent=2)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
