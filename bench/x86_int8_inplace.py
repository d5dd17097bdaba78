"""Per-call A/B of int8 library knobs in place: a w8a8 CNN's kernel calls (the VM's own
arguments, ``bench.vm_calls.kernel_calls``) replayed back to back in the VM's order at
``THREADS`` threads, each call timed by the wall clock where it runs — after the layer
before it, so its input lies where that layer's threads left it (a call re-run alone, as
bench/x86_int8_calls_ab.py does, finds its input in whichever cache its own last run left
it: that hides what a pool split costs or saves in cross-core traffic between layers).
Each round replays the whole sequence ``--reps`` times under each column (the columns'
order rotating per round), the model's outputs first checked bit-identical across the
columns. Prints per call each column's median us and its median paired ratio to the
default, and the per-round sum's paired ratio (10th / 50th / 90th percentile); writes
``bench/results/x86_int8_inplace.json``.

    python bench/x86_int8_inplace.py --columns "rows=conv_pool_rows:1" [--models mobilenet_v2]
                                     [--rounds 60] [--reps 5]

s15 (Zen 4 KVM, load 4.8-5.6, 40-60 rounds): MobileNetV2-32's oc_split calls (48->288@8x8)
channel-major (``oc_major`` 1) 0.98x of panel-major in place; every pooled call at best even
with one thread (``edgecc_pool_threads:1`` 0.85-0.94x on the oc_split calls, 1.00x on the
32x32 layers: the other vCPU was busy), so 2-thread splits cannot be judged under such load.

Columns as bench/x86_int8_knob_ab.py's (``name=symbol:value[,symbol:value]``, the
``edgecc_x86_int8_`` prefix may be left off); ``edgecc_pool_threads:1`` runs a column on one
thread (the pool's size, an int32). Not a goal measurement (bench/tvm_cpu.py is).
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
from bench.tvm_cpu import PAUSE_S  # noqa: E402
from bench.tvm_runtime import kind  # noqa: E402
from bench.vm_calls import kernel_calls  # noqa: E402
from bench.x86_int8_knob_ab import parse_columns  # noqa: E402
from bench.x86_int8_common import (build_int8, per_call_summary, replay,  # noqa: E402
                                   same_outputs, write_result)

warnings.filterwarnings("ignore")
INT32 = ("edgecc_pool_threads", "edgecc_pool_adaptive")  # int32 symbols a column may set


def measure(name: str, columns: dict, rounds: int, reps: int) -> dict:
    import torch

    with tempfile.TemporaryDirectory() as d, torch.no_grad():
        inputs, shape, res, reference = build_int8(name, d)
        lib = ctypes.CDLL(res._runner.library)
        knobs = {s: (ctypes.c_int32 if s in INT32 else ctypes.c_int64).in_dll(lib, s)
                 for col in columns.values() for s in col}
        defaults = {s: k.value for s, k in knobs.items()}

        def setting(col):
            for s, k in knobs.items():
                k.value = columns[col].get(s, defaults[s])

        for col in columns:  # bit-identical across the settings
            setting(col)
            assert same_outputs(res.run(*inputs), reference), col
        calls = [c for c in kernel_calls(res._runner, inputs) if kind(c[1]) != "builtin"]
        names = list(columns)
        times = {col: [[] for _ in calls] for col in names}
        for r in range(rounds):
            for col in names[r % len(names):] + names[:r % len(names)]:
                setting(col)
                time.sleep(PAUSE_S / 10)
                for i, us in enumerate(replay(calls, reps)):
                    times[col][i].append(us)
        setting("default")
    return per_call_summary(name, shape, THREADS, calls, times, rounds)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenet_v2")
    parser.add_argument("--columns", required=True)
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "x86_int8_inplace.json"))
    args = parser.parse_args()
    columns = parse_columns(args.columns)
    rows = [measure(m, columns, args.rounds, args.reps) for m in args.models.split(",")]
    names = list(columns)
    for r in rows:
        print(f"\n{r['model']} {r['input']}  {r['threads']}t in place  "
              f"(load {r['load_average']:.1f})")
        print(f"  {'call':<30} " + " ".join(f"{c[:9]:>9}" for c in names)
              + "  " + " ".join(f"{'/' + c[:8]:>9}" for c in names[1:]))
        for c in r["calls"]:
            print(f"  {c['call'][:30]:<30} " + " ".join(f"{c['us'][n]:9.2f}" for n in names)
                  + "  " + " ".join(f"{c['vs_default'][n]:9.3f}" for n in names[1:]))
        print(f"  {'sum':<30} " + " ".join(f"{r['sum_us'][n]:9.1f}" for n in names))
        for n in names[1:]:
            p = r["sum_vs_default"][n]
            print(f"  sum {n} / default p10/p50/p90: {p[0]:.3f} {p[1]:.3f} {p[2]:.3f}")
    print(f"\nwall clock, {THREADS} threads; each call timed in the VM's order, median of "
          f"{args.reps} sequences per column per round, {args.rounds} rounds")
    write_result(args.output, {"benchmark": "int8 library knobs per call in place, paired",
                               "rounds": args.rounds, "reps": args.reps, "threads": THREADS,
                               "columns": columns, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
