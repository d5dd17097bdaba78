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
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.x86_int8_common import DepthwiseAB, depthwise_ab  # noqa: E402

# (channels, h, w, stride): MobileNetV2-32's depthwise 3x3 layers (pad 1), one of each shape
LAYERS = ((16, 32, 32, 1), (48, 32, 32, 1), (72, 32, 32, 1), (72, 32, 32, 2), (96, 16, 16, 1))
# --layers 224: MobileNetV2-224's depthwise layers that dw_rows takes (rows of <= 64 bytes)
LAYERS_224 = ((144, 56, 56, 1), (144, 56, 56, 2), (192, 28, 28, 1), (192, 28, 28, 2),
              (384, 14, 14, 1), (576, 14, 14, 1))
SPEC = DepthwiseAB(
    columns={"built": {}, "dw_perm": {"edgecc_x86_int8_dw_rows": 0}},
    counter="edgecc_x86_int8_dw_rows_calls", path_key="dw_rows", path_label="rows",
    ratio=("built", "dw_perm"), ratio_label="dw_rows/dw_perm",
    benchmark="int8 depthwise layers, dw_rows vs dw_perm A/B")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "x86_int8_dwrows.json"))
    parser.add_argument("--layers", default="32", help="32 (MobileNetV2-32) or 224")
    args = parser.parse_args()
    depthwise_ab(SPEC, LAYERS_224 if args.layers == "224" else LAYERS, args.repeats, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
