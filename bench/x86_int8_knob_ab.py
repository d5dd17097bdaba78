"""Whole-model A/B of int8 library knobs: each column a setting of the int8 build's kernel
globals (any ``edgecc_x86_int8_*`` / ``edgecc_*`` int64 symbol), the outputs first checked
bit-identical across the columns, then timed interleaved in one process at ``THREADS``
threads (wall clock) and at 1 thread (the calling thread's CPU time: the kernels' own cost
on a loaded machine), with the fp32 build as a further column. Prints each column's paired
ratio to the int8 default (10th / 50th / 90th percentile of per-round median ratios,
``paired_spread``) and to fp32; writes ``bench/results/x86_int8_knob_ab.json``.

    python bench/x86_int8_knob_ab.py --columns "post0=tile_post:0" [--models resnet20]
                                     [--repeats 400] [--one-thread]

A column is ``name=symbol:value[,symbol:value]`` (the ``edgecc_x86_int8_`` prefix may be left
off). Not a goal measurement (bench/tvm_cpu.py is).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import tempfile
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.host import THREADS  # noqa: E402  (sets TVM_NUM_THREADS before TVM starts)
from bench.tvm_cpu import interleaved_times, median_p10  # noqa: E402
from bench.x86_int8_common import (  # noqa: E402
    build_pair, knob_columns, paired_spread, write_result)

warnings.filterwarnings("ignore")


def symbol(name: str) -> str:
    return name if name.startswith("edgecc_") else "edgecc_x86_int8_" + name


def parse_columns(text: str) -> dict:
    """``"a=k:v,k:v;b=k:v"`` -> ``{"default": {}, "a": {symbol: v, ...}, ...}``."""
    cols = {"default": {}}
    for part in filter(None, text.split(";")):
        name, spec = part.split("=", 1)
        cols[name] = {symbol(k): int(v) for k, v in (kv.split(":") for kv in spec.split(","))}
    return cols


def measure(name: str, columns: dict, repeats: int, one_thread: bool) -> dict:
    import torch

    with tempfile.TemporaryDirectory() as d, torch.no_grad():
        inputs, shape, built = build_pair(name, d)
        lib = ctypes.CDLL(built["int8"]._runner.library)
        names = {s for col in columns.values() for s in col}
        knobs = {s: ctypes.c_int64.in_dll(lib, s) for s in names}
        defaults = {s: k.value for s, k in knobs.items()}
        pool = ctypes.c_int32.in_dll(lib, "edgecc_pool_threads")
        threads0 = pool.value or THREADS  # 0: the runner's count

        def setting(col):
            for s, k in knobs.items():
                k.value = columns[col].get(s, defaults[s])

        fns = knob_columns(built, inputs, columns, setting)  # bit-identical across them
        out = {"model": name, "input": shape}
        for t, clock in ((THREADS, "wall"), (1, "cpu")) if one_thread else ((THREADS, "wall"),):
            pool.value = t if t == 1 else threads0
            out["load_average_%dt" % t] = os.getloadavg()[0]
            times = interleaved_times(fns, repeats, clock=clock)
            stats = median_p10(times)
            out[f"{t}t"] = {"median_ms": {k: v["median_ms"] for k, v in stats.items()},
                            "vs_default": {c: paired_spread(times, c, "default", repeats)
                                           for c in columns},
                            "vs_fp32": {c: paired_spread(times, c, "fp32", repeats)
                                        for c in columns}}
        pool.value = threads0
        setting("default")
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20")
    parser.add_argument("--repeats", type=int, default=400)
    parser.add_argument("--columns", required=True)
    parser.add_argument("--one-thread", action="store_true")
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "x86_int8_knob_ab.json"))
    args = parser.parse_args()
    columns = parse_columns(args.columns)
    rows = [measure(m, columns, args.repeats, args.one_thread) for m in args.models.split(",")]
    print(f"{'model':<14} {'thr':>3} {'column':<12} {'ms':>7}  {'vs default p10/p50/p90':>24}  "
          f"{'vs fp32 p10/p50/p90':>22}")
    for r in rows:
        for key in (k for k in (f"{THREADS}t", "1t") if k in r):
            m = r[key]
            for c in columns:
                vd, vf = m["vs_default"][c], m["vs_fp32"][c]
                print(f"{r['model']:<14} {key:>3} {c:<12} {m['median_ms'][c]:7.3f}  "
                      f"{vd[0]:7.3f} {vd[1]:7.3f} {vd[2]:7.3f}  "
                      f"{vf[0]:6.3f} {vf[1]:6.3f} {vf[2]:6.3f}")
            print(f"{r['model']:<14} {key:>3} {'fp32':<12} {m['median_ms']['fp32']:7.3f}"
                  f"   (load {r['load_average_' + key]:.1f})")
    print(f"\n{THREADS}t: wall clock; 1t: thread CPU time; paired ratios of round medians over "
          "interleaved rounds")
    write_result(args.output, {"benchmark": "int8 library knobs, end to end, paired",
                               "repeats": args.repeats, "threads": THREADS, "columns": columns,
                               "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
