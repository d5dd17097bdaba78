"""Where the int8 kernels' serial threshold should sit on this machine: each w8a8 CNN built
once (integer kernels), then run end to end at 2 threads with the library's
``edgecc_x86_serial_work_log2`` set to each shift in turn (the int8 set's ``SERIAL_WORK``
scaled by 2^shift; 63 = every hand-written job serial), interleaved in one process
(``bench.tvm_cpu.interleaved_times``: every shift sees the same spells of a shared machine).
The shift is relative to the threshold the library was built with, so after a change of
``x86_int8_source.INT8_SERIAL_WORK`` shift 0 is the new default. Prints medians and 10th
percentiles per model and writes ``bench/results/x86_int8_serial.json``.

    python bench/x86_int8_serial.py [--models resnet20,mobilenet_v2,mobilenet_v2_224]
                                    [--shifts -2,0,2,3,4,5,63] [--repeats 60]

A shift written ``0p`` runs shift 0 with ``EDGECC_X86_CONV_BANDS=0`` (padded convolutions pooled
per panel, the copy on the calling thread: the split before the bands), e.g.
``--shifts=0,0p,63``.
``--conv-pool 0,1,3,63`` A/Bs ``edgecc_x86_int8_conv_pool_log2`` (1 built in: a
convolution's job work halved before the serial test; 63: every convolution serial, the
depthwise calls still pooled by their own measure).
``--fp32`` does the same for the fp32 build (its kernel sets' thresholds scale alike).
``--dw-work 64,16`` A/Bs the depthwise kernels' work measure per output instead
(``edgecc_x86_int8_dw_output_work``, 64 built in; on Zen 4 at 1 thread a dw_perm output costs
~8 and a dw_direct one ~16-20 of the convolutions' units, so 64 sends depthwise calls ~4-8x
smaller than convolution ones to the pool).

Not a goal measurement (bench/tvm_cpu.py is); it chooses a default the goal run then checks.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import tempfile
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.host import THREADS  # noqa: E402  (sets TVM_NUM_THREADS before TVM starts)
from bench.tvm_cpu import calibration, interleaved_times, median_p10, models  # noqa: E402

import torch  # noqa: E402

import edgecc  # noqa: E402

warnings.filterwarnings("ignore")
PIPELINE = "fold-batchnorm,quantize{scheme=w8a8},fuse,dce"


def measure(name: str, shifts: list[int], repeats: int,
            symbol: str = "edgecc_x86_serial_work_log2", default: int = 0,
            fp32: bool = False) -> dict:
    make, inputs, shape = models()[name]
    module = make().eval()
    quantized = {} if fp32 else {"pipeline": PIPELINE, "calibration": calibration(inputs)}
    with tempfile.TemporaryDirectory() as d, torch.no_grad():
        res = edgecc.compile(module, "host", example_inputs=inputs, **quantized,
                             output_dir=os.path.join(d, "o"),
                             progress=False, target_options={"num_threads": THREADS,
                                                             "integer_kernels": not fp32})
        res.run(*inputs)
    library = ctypes.CDLL(res._runner.library)  # the copy the runner loaded
    serial = ctypes.c_int64.in_dll(library, symbol)

    def at(shift):
        value = int(str(shift).rstrip("p"))
        bands = "0" if str(shift).endswith("p") else "1"  # "0p": shift 0, bands off

        def run():
            serial.value = value
            os.environ["EDGECC_X86_CONV_BANDS"] = bands
            res.run(*inputs)
        return run

    with torch.no_grad():
        times = interleaved_times({s: at(s) for s in shifts}, repeats)
    serial.value = default
    os.environ.pop("EDGECC_X86_CONV_BANDS", None)
    stats = median_p10(times)
    return {"model": name, "input": shape, "load_average": os.getloadavg()[0],
            "shifts": {str(s): stats[s] for s in shifts}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20,mobilenet_v2,mobilenet_v2_224")
    parser.add_argument("--shifts", default="-2,0,2,3,4,5,63")
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--dw-work", default="",
                        help="A/B edgecc_x86_int8_dw_output_work at these values instead")
    parser.add_argument("--conv-pool", default="",
                        help="A/B edgecc_x86_int8_conv_pool_log2 at these values instead")
    parser.add_argument("--fp32", action="store_true",
                        help="the fp32 build instead (its kernel sets' serial thresholds)")
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "x86_int8_serial.json"))
    args = parser.parse_args()
    shifts = [s if s.endswith("p") else int(s)
              for s in (args.dw_work or args.conv_pool or args.shifts).split(",")]
    what = ("edgecc_x86_int8_dw_output_work", 64) if args.dw_work else \
        ("edgecc_x86_int8_conv_pool_log2", 1) if args.conv_pool else \
        ("edgecc_x86_serial_work_log2", 0)
    rows = [measure(m, shifts, args.repeats, *what, fp32=args.fp32)
            for m in args.models.split(",")]
    label = "dw work " if args.dw_work else "pool>>" if args.conv_pool else "x2^"
    print(f"{'model':<18}" + "".join(f"{label + str(s):>14}" for s in shifts))
    for r in rows:
        base = r["shifts"][str(shifts[0])]["median_ms"]
        print(f"{r['model']:<18}" + "".join(
            f"{r['shifts'][str(s)]['median_ms']:8.3f} "
            f"{r['shifts'][str(s)]['median_ms'] / base:4.2f}x" for s in shifts) + f"   (load {r['load_average']:.1f})")
        print(f"{'  p10':<18}" + "".join(f"{r['shifts'][str(s)]['p10_ms']:14.3f}"
                                         for s in shifts))
    print(f"\nms end to end ({THREADS} threads), medians / 10th percentiles of interleaved "
          "rounds; x = vs the first value")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"benchmark": ("fp32 " if args.fp32 else "int8 ") + ("dw output work" if args.dw_work else
                                           "conv_pool_log2" if args.conv_pool else
                                           "serial threshold shifts") + ", end to end",
                   "repeats": args.repeats, "threads": THREADS, "rows": rows}, f, indent=2)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
