"""One fp32 kernel knob (a ``int64_t edgecc_x86_fp32_*`` global of the fp32 kernel library,
e.g. ``edgecc_x86_fp32_s2_phases``) A/B'd end to end: each CNN built once (fp32), then run at
2 threads with the knob set to each value in turn, interleaved in one process
(``bench.tvm_cpu.interleaved_times`` through ``bench/x86_int8_serial.measure``: every value
sees the same spells of a shared machine). Same library, same process, only the knob moves:
an A/B of one kernel path without two builds' layout and cache differences (``bench/
x86_fp32.py --against`` compares two builds). The knobs' paths give the same sums, so the
outputs do not change. Prints medians and 10th percentiles, writes
``bench/results/x86_fp32_knob.json``.

    python bench/x86_fp32_knob.py --knob edgecc_x86_fp32_s2_phases [--values 1,0]
                                  [--models resnet20,mobilenet_v2] [--repeats 60]
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.x86_int8_serial import THREADS, measure  # noqa: E402


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--knob", required=True, help="the library global to move")
    parser.add_argument("--values", default="1,0", help="its values; the first is restored")
    parser.add_argument("--models", default="resnet20,mobilenet_v2")
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "x86_fp32_knob.json"))
    args = parser.parse_args()
    values = [int(v) for v in args.values.split(",")]
    rows = [measure(m, values, args.repeats, args.knob, values[0], fp32=True)
            for m in args.models.split(",")]
    print(f"{'model':<18}" + "".join(f"{args.knob[-12:] + '=' + str(v):>22}" for v in values))
    for r in rows:
        base = r["shifts"][str(values[0])]["median_ms"]
        print(f"{r['model']:<18}" + "".join(
            f"{r['shifts'][str(v)]['median_ms']:14.3f} {r['shifts'][str(v)]['median_ms'] / base:5.2f}x"
            for v in values) + f"   (load {r['load_average']:.1f})")
        print(f"{'  p10':<18}" + "".join(f"{r['shifts'][str(v)]['p10_ms']:22.3f}" for v in values))
    print(f"\nms end to end ({THREADS} threads), medians / 10th percentiles of interleaved "
          "rounds; x = vs the first value")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"benchmark": f"fp32 knob {args.knob}, end to end", "knob": args.knob,
                   "repeats": args.repeats, "threads": THREADS,
                   "rows": [{**r, "values": r.pop("shifts")} for r in rows]}, f, indent=2)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
