"""MobileNetV2-32's int8 depthwise layers on 32x32 and 16x16 input maps (bench/tvm_cpu.py's
``mobilenet_v2``), each a VM call of one ``emit_depthwise`` (random int8 input, weights and
requantization), A/B of dw_rows (``x86_int8_dwrows_source``: no padded copy, written back from
registers) against dw_perm (``edgecc_x86_int8_dw_rows`` 0) interleaved in one process.
Outputs are checked equal across the columns first. 1 thread (``edgecc_pool_threads`` 1,
the calling thread's CPU time) and 2 threads (wall clock). Prints a table, writes
``bench/results/x86_int8_dwrows.json``.

    python bench/x86_int8_dwrows.py [--repeats 60] [--layers 32|224]

Not a goal measurement (bench/tvm_cpu.py is): single layers, the VM call around each.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.host import THREADS  # noqa: E402  (sets TVM_NUM_THREADS before TVM starts)
from bench.tvm_cpu import interleaved_times, median_p10  # noqa: E402

import numpy as np  # noqa: E402

# (channels, h, w, stride): MobileNetV2-32's depthwise 3x3 layers (pad 1), one of each shape
LAYERS = ((16, 32, 32, 1), (48, 32, 32, 1), (72, 32, 32, 1), (72, 32, 32, 2), (96, 16, 16, 1))
# --layers 224: MobileNetV2-224's depthwise layers that dw_rows takes (rows of <= 64 bytes)
LAYERS_224 = ((144, 56, 56, 1), (144, 56, 56, 2), (192, 28, 28, 1), (192, 28, 28, 2),
              (384, 14, 14, 1), (576, 14, 14, 1))
COLUMNS = {"built": {}, "dw_perm": {"edgecc_x86_int8_dw_rows": 0}}
CALLS = 50  # VM calls per timed sample


def build(rng, layers=LAYERS):
    import tvm  # noqa: F401
    from tvm import relax

    from edgecc.targets.tvm import x86_int8
    from tests.targets.tvm.int8_cases import build_and_load, random_int8, random_requant

    bb = relax.BlockBuilder()
    inputs = []
    for i, (c, h, w, s) in enumerate(layers):
        x = relax.Var("x", relax.TensorType([1, c, h, w], "int8"))
        with bb.function(f"f{i}", [x]):
            with bb.dataflow():
                out = bb.emit_output(x86_int8.emit_depthwise(
                    bb, x, random_int8(rng, c, 1, 3, 3), -3, [s, s], [1, 1], [1, 1],
                    random_requant(rng, c)))
            bb.emit_func_output(out)
        inputs.append(random_int8(rng, 1, c, h, w))
    path = os.path.join(tempfile.mkdtemp(), "dw.so")
    _, vm = build_and_load(bb.get().with_attr("external_mods", [x86_int8.external_module()]),
                           path)
    return ctypes.CDLL(path), vm, inputs


def main() -> int:
    import tvm

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "x86_int8_dwrows.json"))
    parser.add_argument("--layers", default="32", help="32 (MobileNetV2-32) or 224")
    args = parser.parse_args()
    layers = LAYERS_224 if args.layers == "224" else LAYERS
    lib, vm, inputs = build(np.random.default_rng(0), layers)
    knobs = {n: ctypes.c_int64.in_dll(lib, n) for col in COLUMNS.values() for n in col}
    threads = ctypes.c_int32.in_dll(lib, "edgecc_pool_threads")
    wide = ctypes.c_int64.in_dll(lib, "edgecc_x86_int8_dw_rows_calls")

    def setting(col):
        for n, k in knobs.items():
            k.value = COLUMNS[col].get(n, 1)

    rows = []
    for i, (c, h, w, s) in enumerate(layers):
        f, x = vm[f"f{i}"], tvm.runtime.tensor(inputs[i])
        outs = {}
        for col in COLUMNS:
            setting(col)
            before = wide.value
            outs[col] = f(x).numpy()
            outs[col + " wide"] = wide.value - before
        for col in COLUMNS:  # bit-identical across the switches
            np.testing.assert_array_equal(outs[col], outs["built"], err_msg=col)

        def timed(col):
            def go():
                setting(col)
                for _ in range(CALLS):
                    f(x)
            return go

        row = {"layer": f"{c}@{h}x{w} s{s}", "dw_rows": outs["built wide"] == 1}
        for t, clock in ((1, "cpu"), (THREADS, "wall")):
            threads.value = t
            times = interleaved_times({col: timed(col) for col in COLUMNS}, args.repeats,
                                      clock=clock)
            row[f"{t}t_us"] = {col: m["median_ms"] * 1e3 / CALLS
                               for col, m in median_p10(times).items()}
        threads.value = 0
        setting("built")
        rows.append(row)
    print(f"{'layer':<16} {'rows':>5} " + " ".join(
        f"{t}t {col:>9}" for t in (1, THREADS) for col in COLUMNS) + "   (us a VM call)")
    for r in rows:
        print(f"{r['layer']:<16} {str(r['dw_rows']):>5} " + " ".join(
            f"{r[f'{t}t_us'][col]:12.2f}" for t in (1, THREADS) for col in COLUMNS))
    sums = {f"{t}t": {col: sum(r[f"{t}t_us"][col] for r in rows) for col in COLUMNS}
            for t in (1, THREADS)}
    for t, v in sums.items():
        print(f"sum {t}: " + ", ".join(f"{col} {us:.2f}" for col, us in v.items())
              + f"  (dw_rows/dw_perm {v['built'] / v['dw_perm']:.3f}x)")
    print(f"1t: thread CPU time, {THREADS}t: wall; medians of {args.repeats} interleaved "
          f"samples of {CALLS} calls; load {os.getloadavg()[0]:.1f}")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as fh:
        json.dump({"benchmark": "int8 depthwise layers, dw_rows vs dw_perm A/B",
                   "repeats": args.repeats, "calls_per_sample": CALLS, "threads": THREADS,
                   "load_average": os.getloadavg()[0], "rows": rows, "sums_us": sums}, fh, indent=2)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
