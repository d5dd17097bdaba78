"""Int8 two-thread scaling: which pool settings of the int8 kernels win end to end.

Each CNN is built once as fp32 and once as w8a8 (integer kernels, ``build_pair``); the int8
build then runs at ``THREADS`` threads under each column's library knobs
(``edgecc_x86_int8_conv_pool_log2``, ``edgecc_x86_serial_work_log2``), interleaved in one
process with the fp32 build as a further column. Prints, per column, the paired ratio to the
int8 default (10th / 50th / 90th percentile over rounds, ``paired_spread``) and to fp32, and
writes ``bench/results/x86_int8_threads.json``.

    python bench/x86_int8_threads.py [--models resnet20,mobilenet_v2] [--repeats 400]
                                     [--columns "pool0=conv_pool_log2:0;ser-1=serial_work_log2:-1"]

A column is ``name=knob:value[,knob:value]`` (knob names without the ``edgecc_x86_`` /
``edgecc_x86_int8_`` prefixes). Not a goal measurement (bench/tvm_cpu.py is).
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
SYMBOLS = {"conv_pool_log2": ("edgecc_x86_int8_conv_pool_log2", 1),
           "serial_work_log2": ("edgecc_x86_serial_work_log2", 0)}
DEFAULT_COLUMNS = ("pool0=conv_pool_log2:0;ser-1=serial_work_log2:-1;"
                   "ser-2=serial_work_log2:-2;pool0ser-1=conv_pool_log2:0,serial_work_log2:-1")


def parse_columns(text: str) -> dict:
    """``"a=k:v,k:v;b=k:v"`` -> ``{"default": {}, "a": {k: v, ...}, ...}``."""
    cols = {"default": {}}
    for part in filter(None, text.split(";")):
        name, spec = part.split("=", 1)
        cols[name] = {k: int(v) for k, v in (kv.split(":") for kv in spec.split(","))}
    return cols


def measure(name: str, columns: dict, repeats: int) -> dict:
    import torch

    with tempfile.TemporaryDirectory() as d, torch.no_grad():
        inputs, shape, built = build_pair(name, d)
        lib = ctypes.CDLL(built["int8"]._runner.library)
        knobs = {k: ctypes.c_int64.in_dll(lib, sym) for k, (sym, _) in SYMBOLS.items()}

        def setting(col):
            for k, (_, default) in SYMBOLS.items():
                knobs[k].value = columns[col].get(k, default)

        fns = knob_columns(built, inputs, columns, setting)  # bit-identical across them
        times = interleaved_times(fns, repeats)
        setting("default")
    stats = median_p10(times)
    return {"model": name, "input": shape, "load_average": os.getloadavg()[0],
            "median_ms": {k: v["median_ms"] for k, v in stats.items()},
            "vs_default": {c: paired_spread(times, c, "default", repeats) for c in columns},
            "vs_fp32": {c: paired_spread(times, c, "fp32", repeats) for c in columns}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20,mobilenet_v2")
    parser.add_argument("--repeats", type=int, default=400)
    parser.add_argument("--columns", default=DEFAULT_COLUMNS)
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "x86_int8_threads.json"))
    args = parser.parse_args()
    columns = parse_columns(args.columns)
    rows = [measure(m, columns, args.repeats) for m in args.models.split(",")]
    print(f"{'model':<14} {'column':<12} {'ms':>7}  {'vs default p10/p50/p90':>24}  "
          f"{'vs fp32 p10/p50/p90':>22}")
    for r in rows:
        for c in columns:
            vd, vf = r["vs_default"][c], r["vs_fp32"][c]
            print(f"{r['model']:<14} {c:<12} {r['median_ms'][c]:7.3f}  "
                  f"{vd[0]:7.3f} {vd[1]:7.3f} {vd[2]:7.3f}  {vf[0]:6.3f} {vf[1]:6.3f} {vf[2]:6.3f}")
        print(f"{r['model']:<14} {'fp32':<12} {r['median_ms']['fp32']:7.3f}"
              f"   (load {r['load_average']:.1f})")
    print(f"\n{THREADS} threads, wall clock; paired ratios of round medians over interleaved rounds")
    write_result(args.output, {"benchmark": "int8 pool settings, end to end, paired",
                               "repeats": args.repeats, "threads": THREADS, "columns": columns,
                               "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
