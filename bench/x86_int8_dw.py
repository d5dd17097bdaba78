"""The int8 depthwise layers of MobileNetV2-32 (bench/tvm_cpu.py's ``mobilenet_v2``), each a
VM call of one ``emit_depthwise`` (random int8 input, weights and requantization), A/B of
dw_direct's library switches interleaved in one process: as built, the wide planes off
(``edgecc_x86_int8_dw_direct_wide`` 0: 16x16 stride 2 back on dw_perm's padded copy), the plan
cache off (``edgecc_x86_int8_dw_plan_cache`` 0: dw_direct planned on every call), both off.
Outputs are checked equal across the columns first. 1 thread (``edgecc_pool_threads`` 1,
the calling thread's CPU time) and 2 threads (wall clock). Prints a table, writes
``bench/results/x86_int8_dw.json``.

    python bench/x86_int8_dw.py [--repeats 60]

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
LAYERS = ((96, 16, 16, 2), (144, 16, 16, 1), (192, 8, 8, 1), (288, 8, 8, 2), (480, 4, 4, 1))
SPEC = DepthwiseAB(
    columns={"built": {}, "wide_off": {"edgecc_x86_int8_dw_direct_wide": 0},
             "cache_off": {"edgecc_x86_int8_dw_plan_cache": 0},
             "both_off": {"edgecc_x86_int8_dw_direct_wide": 0,
                          "edgecc_x86_int8_dw_plan_cache": 0}},
    counter="edgecc_x86_int8_dw_direct_wide_calls", path_key="wide_path", path_label="wide",
    ratio=("built", "both_off"), ratio_label="built/both_off",
    benchmark="int8 depthwise layers, dw_direct switches A/B")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "x86_int8_dw.json"))
    args = parser.parse_args()
    depthwise_ab(SPEC, LAYERS, args.repeats, args.output)
    return 0


if __name__ == "__main__":
    sys.exit(main())
