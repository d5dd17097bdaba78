"""What the second thread buys per kernel call of a float32 CNN: each VM call of one run of the
default host build (``bench.vm_calls.kernel_calls``) timed alone at 1 and at 2 pool threads
(``edgecc_pool_configure``), rounds alternating, wall time, with the pool's timing counters on:
the median per call, 2t / 1t, and the caller's + worker's working time at 2 threads (their
sum over the 1-thread time is the work the split adds). ``--knob NAME=A,B`` also runs every
call with the library's int64 global ``NAME`` at each value (the 2-thread column per value),
(both thread counts per value), outputs checked bit-identical across values.

    python bench/x86_fp32_call_threads.py [--model resnet20] [--rounds 10] [--fifo]
                                          [--knob edgecc_x86_fp32_s2_halves=1,0]

Calls are timed alone (their inputs and weights warm in cache, the same call repeated), so the
sum is below a whole run; the whole model's ratio is bench/tvm_cpu.py's and
bench/pool_scaling.py's. On this 2-vCPU KVM guest the host at times gives the second vCPU
little time (bench/host_probe.py): the 2-thread columns move with it, so the script prints
the probe's reading before and after. Writes ``bench/results/x86_fp32_call_threads.json``.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import sys
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.pool_common import Pool, build, fifo  # noqa: E402  (TVM_NUM_THREADS=2)

warnings.filterwarnings("ignore")
REPS = 50  # calls per timed block


def describe(symbol: str, args: list) -> str:
    if symbol == "edgecc_x86_sconv":
        m = [int(v) for v in args[3].numpy()]
        return (f"conv {m[5]}x{m[6]} s{m[7]} {m[1]}->{m[4]} @{m[2]}"
                + (" +res" if len(args) == 7 else ""))
    return symbol.removeprefix("edgecc_x86_")[:28]


def timed(pool: Pool, fn, args: list) -> tuple[list[int], int, int]:
    """REPS calls' wall ns each, and the pool's caller / worker working ns summed."""
    for _ in range(3):
        fn(*args)
    pool.reset()
    pool.timing.value = 1
    times = []
    try:
        for _ in range(REPS):
            t0 = time.perf_counter_ns()
            fn(*args)
            times.append(time.perf_counter_ns() - t0)
    finally:
        pool.timing.value = 0
    c = pool.counters()
    return times, c["caller_ns"], c["worker_ns"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--fifo", action="store_true", help="time under SCHED_FIFO")
    ap.add_argument("--knob", default="", help="NAME=A,B: a library int64 global's values")
    ap.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                     "x86_fp32_call_threads.json"))
    a = ap.parse_args()
    from bench.host_probe import probe
    from bench.vm_calls import kernel_calls

    built = build(a.model)
    pool = Pool(built.runner)
    calls = [c for c in kernel_calls(built.runner, built.inputs)
             if not c[1].startswith("vm.builtin")]
    name, _, values = a.knob.partition("=")
    knob = ctypes.c_int64.in_dll(pool.lib, name) if name else None
    values = [int(v) for v in values.split(",")] if name else [None]
    default = knob.value if knob is not None else None
    label = name.removeprefix("edgecc_x86_")
    host = probe()
    probes = [host.scaling() if host else None]
    # columns: (threads, knob value)
    columns = [(t, v) for t in (1, 2) for v in values]
    times = {(i, col): [] for i in range(len(calls)) for col in columns}
    work = {(i, v): [] for i in range(len(calls)) for v in values}
    outputs = {}
    if a.fifo:
        fifo(True)
    try:
        for _ in range(a.rounds):
            for threads, value in columns:
                pool.mode(threads, True)
                if knob is not None:
                    knob.value = value
                for i, (fn, _sym, args) in enumerate(calls):
                    t, caller, worker = timed(pool, fn, args)
                    times[(i, (threads, value))] += t
                    if threads == 2:
                        work[(i, value)].append((caller + worker) / REPS)
                        out = args[-1].numpy()
                        prev = outputs.setdefault(i, out)
                        assert (prev == out).all(), f"call {i}: outputs differ across values"
    finally:
        if a.fifo:
            fifo(False)
        if knob is not None:
            knob.value = default
    probes.append(host.scaling() if host else None)
    rows = []
    for i, (_fn, sym, args) in enumerate(calls):
        row = {"call": describe(sym, args)}
        for threads, value in columns:
            key = f"{threads}t" + (f" {label}={value}" if knob is not None else "")
            row[key] = statistics.median(times[(i, (threads, value))]) / 1e3
        for value in values:
            key = "work 2t" + (f" {label}={value}" if knob is not None else "")
            row[key] = statistics.median(work[(i, value)]) / 1e3
        rows.append(row)
    keys = [k for k in rows[0] if k != "call"]
    print(f"{a.model}: us per call (median of {a.rounds} x {REPS}), host probe "
          + " -> ".join("n/a" if p is None else f"{p:.2f}" for p in probes)
          + (", SCHED_FIFO" if a.fifo else ""))
    print(f"{'call':34s}" + "".join(f"{k[:24]:>26s}" for k in keys))
    for row in rows:
        print(f"{row['call']:34s}" + "".join(f"{row[k]:26.1f}" for k in keys))
    totals = {k: sum(r[k] for r in rows) for k in keys}
    print(f"{'sum':34s}" + "".join(f"{totals[k]:26.1f}" for k in keys))
    os.makedirs(os.path.dirname(a.output), exist_ok=True)
    with open(a.output, "w") as f:
        json.dump({"model": a.model, "unit": "us per call, wall, median", "rounds": a.rounds,
                   "reps": REPS, "fifo": a.fifo, "host_probe": probes, "knob": a.knob,
                   "load_average": os.getloadavg()[0], "rows": rows, "sums": totals}, f,
                  indent=1)
    print("wrote", a.output)


if __name__ == "__main__":
    main()
