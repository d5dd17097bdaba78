"""Where a pooled int8 call's time goes outside its bands, in place in the plan replay: every
step of the native plan runner and every ``parallel_for`` of a run stamped with the TSC.

The int8 build of a CNN is run whole at 2 threads with ``edgecc_plan_trace`` 1 (each plan
step's TSC before and after its packed call) and ``edgecc_pool_timing`` 3 (each pool job's
TSC when ``parallel_for`` is entered, the job posted, the caller's last chunk done, the join
seen, the worker's entry and last chunk, ``parallel_for``'s return). Per step (median over the
rounds, us):

- ``gap``: from the previous step's return to this step's call (the plan runner's loop);
- ``entry``: from the step's call to its first ``parallel_for`` (the entry's argument
  parsing, tables, getenv); ``post``: from there to the job being posted (the pool's entry);
- ``wake``: from posting to the worker entering the job;
- ``c band`` / ``w band``: the caller's chunks (posting to its last chunk) and the worker's;
- ``wait``: the caller's last chunk to the join (waiting for the worker's chunks);
- ``tail``: the last ``parallel_for``'s return to the step's return;
- ``step``: the whole call; ``joined``: the share of its jobs a worker ran items of.

    python bench/x86_int8_call_overhead.py [--model resnet20] [--rounds 200]
        [--columns "base=;knob=symbol:value"]

Found with it (s19, ResNet-20 w8a8, Zen 4 KVM, 2 threads, the other vCPU idle, a worker in
every job; 80 rounds, whole run 170 us): a pooled 3x3 call (e.g. 16->16@32, 8.6-8.7 us) is
entry 0.34-0.42 us (0.2-0.25 at 1 thread; qconv_pair 0.74-0.82) + post 0.12 + the caller's
band 6.6-6.8 while the worker starts 0.12-0.14 us after posting and runs its band in 7.7-7.8:
the caller then waits 1.0-1.9 us (the worker's band ~1.1-1.6 us slower than the caller's,
every layer: 25 us of 170 a run), tail 0.02-0.13, gap between calls 0.02-0.1. Sums a run:
wait 25.1, entry 8.4, wake 2.4, post 2.3, tail 1.3, gap 1.0 us. Under load (the other vCPU
busy) the worker joins ~0-5% of the jobs and 40-80 us after posting (it waits for a CPU).
Later (03:15, the tree with H-C's c4 work, column ``t1=edgecc_pool_threads:1``, 100 rounds,
paired 1t/2t 1.61): 2 threads 141.9 us a run, of which outside the bands entry 7.4 (1 thread:
4.9), post 2.5, wake 2.3, wait 2.5, tail 0.9, gap 0.8: ~11 us a run only at 2 threads.

A column (library settings, flipped between runs of one build) adds its own table; the
whole-run medians of each column are printed together. Writes
``bench/results/x86_int8_call_overhead.json``. A debug view: the stamps add ~0.3 us a job
(``edgecc_pool_timing`` 2's clock reads), so compare columns, not against untraced runs.
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.host import THREADS  # noqa: E402  (sets TVM_NUM_THREADS before TVM starts)
from bench.x86_int8_common import build_int8, write_result  # noqa: E402
from bench.x86_int8_dw_threads import _ctype, _library, parse_columns  # noqa: E402
from bench.x86_int8_thread_cost import tsc_mhz  # noqa: E402

FIELDS = 8  # EDGECC_TRACE_FIELDS
ENTER, POSTED, CALLER_END, JOINED, W_START, W_END, EXIT, EPOCH = range(FIELDS)
PARTS = ("gap", "entry", "post", "wake", "c_band", "w_band", "wait", "tail", "step", "joined")


def step_parts(steps: list, jobs: list) -> list:
    """Per plan step (``steps``: (start, end) TSC), its PARTS in ticks (None where the step
    posted no job, or no worker joined it) from the pool jobs (``jobs``: trace rows) inside it."""
    out = []
    prev_end = None
    for start, end in steps:
        mine = [j for j in jobs if start <= j[ENTER] <= end]
        posted = [j for j in mine if j[POSTED]]
        row = dict.fromkeys(PARTS)
        row["step"] = end - start
        row["gap"] = start - prev_end if prev_end is not None else None
        row["jobs"] = len(mine)
        row["pooled"] = len(posted)
        if mine:  # posted or serial (one thread): the entry before its first parallel_for
            row["entry"] = mine[0][ENTER] - start
        if posted:
            first, last = posted[0], mine[-1]
            row["post"] = first[POSTED] - first[ENTER]
            row["c_band"] = sum(j[CALLER_END] - j[POSTED] for j in posted)
            row["wait"] = sum(j[JOINED] - j[CALLER_END] for j in posted)
            row["tail"] = end - last[EXIT]
            joined = [j for j in posted if j[W_START]]
            row["joined"] = len(joined) / len(posted)
            if len(joined) == len(posted):
                row["wake"] = sum(j[W_START] - j[POSTED] for j in joined)
                row["w_band"] = sum(j[W_END] - j[W_START] for j in joined)
        out.append(row)
        prev_end = end
    return out


def measure(model: str, rounds: int, columns: dict, warm_s: float = 2.0) -> dict:
    from bench.tvm_runtime import kind
    from bench.vm_calls import kernel_calls

    with tempfile.TemporaryDirectory() as d:
        inputs, shape, res, _ = build_int8(model, d)
        lib = _library(res)
        timing = ctypes.c_int32.in_dll(lib, "edgecc_pool_timing")
        plan_trace = ctypes.c_int64.in_dll(lib, "edgecc_plan_trace")
        plan_log = (ctypes.c_int64 * 2048).in_dll(lib, "edgecc_plan_trace_log")
        trace = (ctypes.c_int64 * (512 * FIELDS)).in_dll(lib, "edgecc_pool_trace")
        nxt = ctypes.c_int64.in_dll(lib, "edgecc_pool_log_next")
        labels = [s.replace("edgecc_x86_", "") + str(tuple(getattr(a[0], "shape", ())))
                  for _, s, a in kernel_calls(res._runner, inputs) if kind(s) != "builtin"]
        knobs = {sym: _ctype(sym).in_dll(lib, sym) for col in columns.values() for sym in col}
        defaults = {sym: k.value for sym, k in knobs.items()}
        runs = {col: [] for col in columns}
        nsteps = None
        # warm: after the build and the VM's instrumented run the worker joins no job for a
        # while (up to ~1 s here: another thread of the process spins on its vCPU)
        start = time.perf_counter()
        while time.perf_counter() - start < warm_s:
            res.run(*inputs)
        for r in range(rounds):
            for col in (columns if r % 2 == 0 else list(columns)[::-1]):
                for sym, k in knobs.items():
                    k.value = columns[col].get(sym, defaults[sym])
                for i in range(2048):  # (before the warm run: the worker spins only ~200 us)
                    plan_log[i] = 0
                timing.value = 3
                plan_trace.value = 1
                res.run(*inputs)  # the pool as in a stream of runs (the log overwritten next)
                n0 = nxt.value
                res.run(*inputs)
                n1 = nxt.value
                timing.value = 0
                plan_trace.value = 0
                steps = []
                for s in range(1024):
                    if plan_log[2 * s] == 0:
                        break
                    steps.append((plan_log[2 * s], plan_log[2 * s + 1]))
                nsteps = len(steps)
                jobs = [[trace[FIELDS * (i % 512) + k] for k in range(FIELDS)]
                        for i in range(n0, n1)]
                runs[col].append(step_parts(steps, jobs))
        for sym, k in knobs.items():
            k.value = defaults[sym]
    mhz = tsc_mhz()
    tables, wholes = {}, {}
    for col, rs in runs.items():
        rows = []
        for s in range(nsteps):
            row = {"step": s, "call": labels[s] if len(labels) == nsteps else f"step {s}",
                   "pooled": statistics.median(r[s]["pooled"] for r in rs)}
            for part in PARTS:
                xs = [r[s][part] for r in rs if r[s][part] is not None]
                if part == "joined":  # a share: the mean
                    row[part] = statistics.mean(xs) if xs else None
                else:
                    row[part] = statistics.median(xs) / mhz if xs else None
                row[part + "_n"] = len(xs)
            rows.append(row)
        whole = [(r[-1]["step"] + sum(x["step"] + (x["gap"] or 0) for x in r[:-1])) / mhz
                 for r in rs]
        tables[col] = {"rows": rows, "whole_us": statistics.median(whole)}
        wholes[col] = whole
    first = next(iter(tables))
    for col, t in tables.items():  # each round's whole run paired with the first column's
        ratios = sorted(a / b for a, b in zip(wholes[col], wholes[first]))
        t["ratio"] = {"to": first, "median": statistics.median(ratios),
                      "p10": ratios[len(ratios) // 10], "p90": ratios[len(ratios) * 9 // 10]}
    return {"model": model, "input": shape, "threads": THREADS, "rounds": rounds,
            "load_average": os.getloadavg()[0], "tsc_mhz": mhz, "columns": columns,
            "tables": tables}


def _fmt(x) -> str:
    return f"{x:7.2f}" if x is not None else "      -"


def print_result(r: dict) -> None:
    print(f"\n{r['model']} {r['input']} int8, {r['threads']} threads, per plan step median us "
          f"(load {r['load_average']:.1f}, {r['rounds']} rounds)")
    for col, t in r["tables"].items():
        print(f"  column {col} {r['columns'][col]}: whole run (first call to last return) "
              f"{t['whole_us']:.1f} us; paired / {t['ratio']['to']} {t['ratio']['median']:.3f} "
              f"(p10-p90 {t['ratio']['p10']:.3f}-{t['ratio']['p90']:.3f})")
        print(f"  {'call':28s} pool " + " ".join(f"{p:>7s}" for p in PARTS))
        sums = dict.fromkeys(PARTS, 0.0)
        for row in t["rows"]:
            print(f"  {row['call'][:28]:28s} {row['pooled']:4.0f} "
                  + " ".join(_fmt(row[p]) for p in PARTS))
            for p in PARTS:
                sums[p] += row[p] or 0.0
        print(f"  {'sum of medians':28s}      " + " ".join(_fmt(sums[p]) for p in PARTS))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--columns", default="")
    parser.add_argument("--warm", type=float, default=2.0, help="seconds of runs first")
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "x86_int8_call_overhead.json"))
    args = parser.parse_args()
    r = measure(args.model, args.rounds, parse_columns(args.columns), args.warm)
    print_result(r)
    write_result(args.output, r)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
