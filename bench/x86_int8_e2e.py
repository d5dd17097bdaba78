"""Where a w8a8 CNN loses its kernels' int8/fp32 ratio end to end: the fp32 and the int8
build of each model, in one process, timed four ways interleaved (``interleaved_times``: every
column sees the same spells of a shared machine): the whole VM call at 2 threads and at 1
thread (the library's ``edgecc_pool_threads`` set to 1: every job on the calling thread), and
the sum of the library's kernel calls, each re-run alone with the VM's arguments (wall clock,
back to back; wall clock at 2 threads, the calling thread's CPU time at 1), at 2 and at 1
thread. whole - sum is what runs around the kernels per call (VM,
allocation, the Python boundary). Prints int8 / fp32 for each column, writes
``bench/results/x86_int8_e2e.json``.

    python bench/x86_int8_e2e.py [--models resnet20,mobilenet_v2] [--repeats 60] [--calls]

``--knob NAME=V[,NAME2=V2]`` adds the int8 build's whole call with the library's int64 ``NAME`` set to V
(2 and 1 thread, same rounds: an A/B of a kernel knob, e.g. ``edgecc_x86_int8_flip_copy=0``).
``--calls`` also prints each kernel call's 2-thread / 1-thread wall time (int8 build), i.e.
which calls gain from the second thread. Not a goal measurement (bench/tvm_cpu.py is).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import sys
import tempfile
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.host import THREADS  # noqa: E402  (sets TVM_NUM_THREADS before TVM starts)
from bench.tvm_cpu import interleaved_times, median_p10  # noqa: E402
from bench.tvm_runtime import kernel_calls, kind  # noqa: E402
from bench.x86_int8_common import build_pair  # noqa: E402

import torch  # noqa: E402

warnings.filterwarnings("ignore")


def _calls_ms(calls, reps=5, clock=time.perf_counter):
    """Per call (ms), each re-run ``reps`` times back to back (wall clock, or ``clock``)."""
    out = []
    for fn, _, args in calls:
        fn(*args)
        t = clock()
        for _ in range(reps):
            fn(*args)
        out.append((clock() - t) / reps * 1e3)
    return out


def measure(name: str, repeats: int, knob: str = "") -> dict:
    built = {}
    with tempfile.TemporaryDirectory() as d, torch.no_grad():
        inputs, shape, results = build_pair(name, d)
        for label, res in results.items():
            library = ctypes.CDLL(res._runner.library)  # the copy the runner loaded
            pool = ctypes.c_int32.in_dll(library, "edgecc_pool_threads")
            calls = [c for c in kernel_calls(res._runner, inputs) if kind(c[1]) != "builtin"]
            built[label] = (res, pool, pool.value or THREADS, calls)
        per_call = {}

        def column(label, threads, whole, key=""):
            res, pool, full, calls = built[label]

            def run():
                pool.value = full if threads > 1 else 1
                if whole:
                    res.run(*inputs)
                else:  # 1 thread: the calling thread's CPU time (robust to other processes)
                    per_call.setdefault((label + key, threads), []).append(_calls_ms(
                        calls, clock=time.perf_counter if threads > 1 else time.thread_time))
            return run

        fns = {f"{label} {'whole' if whole else 'sum'} {t}t": column(label, t, whole)
               for whole in (True, False) for t in (THREADS, 1) for label in built}
        if knob:
            lib = ctypes.CDLL(built["int8"][0]._runner.library)
            knobs = [(ctypes.c_int64.in_dll(lib, k.split("=")[0]), int(k.split("=")[1]))
                     for k in knob.split(",")]
            defaults = [var.value for var, _ in knobs]

            def knobbed(t, whole=True):
                run = column("int8", t, whole, "" if whole else "_knob")

                def go():
                    for var, value in knobs:
                        var.value = value
                    try:
                        run()
                    finally:
                        for (var, _), default in zip(knobs, defaults):
                            var.value = default
                return go
            for t in (THREADS, 1):
                fns[f"int8 whole {t}t knob"] = knobbed(t)
            fns["int8 sum 1t knob"] = knobbed(1, False)
        times = interleaved_times(fns, repeats)
        for _, pool, full, _ in built.values():
            pool.value = full
    stats = median_p10(times)
    calls = {}
    for (label, threads), samples in per_call.items():
        calls[f"{label} {threads}t"] = [statistics.median(c) for c in zip(*samples)]
    sums = {f"{k} sum": sum(v) for k, v in calls.items()}
    names = {k: k.split()[0].replace("_knob", "") for k in calls}
    row = {"model": name, "input": shape, "load_average": os.getloadavg()[0], "knob": knob,
           "columns": stats, "sum_of_calls_ms": sums,
           "calls": {k: list(zip([c[1].replace("edgecc_x86_", "") +
                                  str(tuple(getattr(c[2][0], "shape", ())))
                                  for c in built[names[k]][3]], v))
                     for k, v in calls.items()}}
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20,mobilenet_v2")
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--calls", action="store_true")
    parser.add_argument("--knob", default="", help="NAME=VALUE: an int8 A/B column")
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "x86_int8_e2e.json"))
    args = parser.parse_args()
    rows = [measure(m, args.repeats, args.knob) for m in args.models.split(",")]
    for r in rows:
        c, s = r["columns"], r["sum_of_calls_ms"]
        print(f"\n{r['model']} {r['input']}  (load {r['load_average']:.1f})")
        print(f"  {'':<12} {'fp32 ms':>9} {'int8 ms':>9} {'int8/fp32':>9}   (p10 fp32/int8)")
        for t in (THREADS, 1):
            f, i = c[f"fp32 whole {t}t"], c[f"int8 whole {t}t"]
            print(f"  whole {t}t     {f['median_ms']:9.3f} {i['median_ms']:9.3f} "
                  f"{i['median_ms'] / f['median_ms']:8.2f}x   ({f['p10_ms']:.3f}/{i['p10_ms']:.3f})")
            fs, is_ = s[f"fp32 {t}t sum"], s[f"int8 {t}t sum"]
            if f"int8 whole {t}t knob" in c:
                k = c[f"int8 whole {t}t knob"]
                print(f"  knob {t}t      {'':9} {k['median_ms']:9.3f} "
                      f"{k['median_ms'] / f['median_ms']:8.2f}x   ({r['knob']}; p10 {k['p10_ms']:.3f})")
            print(f"  calls {t}t     {fs:9.3f} {is_:9.3f} {is_ / fs:8.2f}x   "
                  f"(outside calls: fp32 {f['median_ms'] - fs:+.3f}, int8 {i['median_ms'] - is_:+.3f})")
            if t == 1 and "int8_knob 1t sum" in s:
                k = s["int8_knob 1t sum"]
                print(f"  knob calls 1t {'':9} {k:9.3f} {k / fs:8.2f}x   ({r['knob']})")
        if args.calls:
            print(f"    {'int8 call':<40} {THREADS}t us   1t us     x")
            for (lab, a), (_, b) in zip(r["calls"][f"int8 {THREADS}t"], r["calls"]["int8 1t"]):
                print(f"    {lab[:40]:<40} {a * 1e3:7.1f} {b * 1e3:7.1f} {b / a:5.2f}")
    print(f"\nwhole: a VM call, median of interleaved rounds; calls: sum of each kernel call re-run"
          f" alone (median; wall at {THREADS}t, thread CPU time at 1t); 1t = edgecc_pool_threads"
          f" 1; same process, same load")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"benchmark": "w8a8 vs fp32 end to end, 2 and 1 threads, whole vs calls",
                   "repeats": args.repeats, "threads": THREADS, "rows": rows}, f, indent=2)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
