"""Per-call A/B of int8 library knobs: each int8 kernel call of a w8a8 CNN's integer build
(the VM's own arguments) re-run alone under each column's knob setting, interleaved in
rounds in one process (the columns' order rotating per call), by the calling thread's CPU
time at 1 thread (``--threads 1``: the kernels' own cost, steady on a loaded machine) or by
the wall clock at ``THREADS``. The whole model's outputs are first checked bit-identical
across the columns. Prints per call each column's median us and its median paired ratio to
the default, and per round the sum over calls (paired ratio percentiles); writes
``bench/results/x86_int8_calls_ab.json``.

    python bench/x86_int8_calls_ab.py --columns "tied0=tile_tied:0" [--models resnet20]
                                      [--threads 1] [--rounds 40] [--reps 10]

Columns as bench/x86_int8_knob_ab.py's. Not a goal measurement (bench/tvm_cpu.py is).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import tempfile
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.host import THREADS  # noqa: E402  (sets TVM_NUM_THREADS before TVM starts)
from bench.tvm_runtime import kind  # noqa: E402
from bench.vm_calls import kernel_calls  # noqa: E402
from bench.x86_int8_knob_ab import parse_columns  # noqa: E402
from bench.x86_int8_common import (build_int8, per_call_summary, same_outputs,  # noqa: E402
                                   write_result)

warnings.filterwarnings("ignore")


def measure(name: str, columns: dict, threads: int, rounds: int, reps: int) -> dict:
    import torch

    with tempfile.TemporaryDirectory() as d, torch.no_grad():
        inputs, shape, res, reference = build_int8(name, d)
        lib = ctypes.CDLL(res._runner.library)
        knobs = {s: ctypes.c_int64.in_dll(lib, s) for col in columns.values() for s in col}
        defaults = {s: k.value for s, k in knobs.items()}
        pool = ctypes.c_int32.in_dll(lib, "edgecc_pool_threads")
        threads0 = pool.value or THREADS  # 0: the runner's count (a direct call: set it)

        def setting(col):
            for s, k in knobs.items():
                k.value = columns[col].get(s, defaults[s])

        for col in columns:  # bit-identical across the settings
            setting(col)
            assert same_outputs(res.run(*inputs), reference), col
        calls = [c for c in kernel_calls(res._runner, inputs) if kind(c[1]) != "builtin"]
        pool.value = 1 if threads == 1 else threads0
        clock = time.thread_time if threads == 1 else time.perf_counter
        names = list(columns)
        times = {col: [[] for _ in calls] for col in names}
        for r in range(rounds):
            for i, (fn, _, args) in enumerate(calls):
                order = names[(r + i) % len(names):] + names[:(r + i) % len(names)]
                for col in order:
                    setting(col)
                    fn(*args)
                    start = clock()
                    for _ in range(reps):
                        fn(*args)
                    times[col][i].append((clock() - start) / reps * 1e6)
        pool.value = threads0
        setting("default")
    return per_call_summary(name, shape, threads, calls, times, rounds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20")
    parser.add_argument("--columns", required=True)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--reps", type=int, default=10)
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "x86_int8_calls_ab.json"))
    args = parser.parse_args()
    columns = parse_columns(args.columns)
    rows = [measure(m, columns, args.threads, args.rounds, args.reps)
            for m in args.models.split(",")]
    names = list(columns)
    for r in rows:
        print(f"\n{r['model']} {r['input']}  {r['threads']}t  (load {r['load_average']:.1f})")
        print(f"  {'call':<30} " + " ".join(f"{c[:9]:>9}" for c in names)
              + "  " + " ".join(f"{'/' + c[:8]:>9}" for c in names[1:]))
        for c in r["calls"]:
            print(f"  {c['call'][:30]:<30} " + " ".join(f"{c['us'][n]:9.2f}" for n in names)
                  + "  " + " ".join(f"{c['vs_default'][n]:9.3f}" for n in names[1:]))
        print(f"  {'sum':<30} " + " ".join(f"{r['sum_us'][n]:9.1f}" for n in names))
        for n in names[1:]:
            p = r["sum_vs_default"][n]
            print(f"  sum {n} / default p10/p50/p90: {p[0]:.3f} {p[1]:.3f} {p[2]:.3f}")
    clock = "thread CPU time" if args.threads == 1 else "wall clock"
    print(f"\n{clock}; each call re-run {args.reps}x alone per column, {args.rounds} rounds")
    write_result(args.output, {"benchmark": "int8 library knobs per call, paired",
                               "rounds": args.rounds, "reps": args.reps, "columns": columns,
                               "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
