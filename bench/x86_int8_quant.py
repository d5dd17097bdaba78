"""A/B of ``edgecc_x86_quantize`` (``x86_int8_quant_source``): the w8a8 build of each CNN with
the activation quantizes (the input's, the global mean's) lowered to that kernel and with
TVM's kernels (``IntegerKernels.x86_quantize`` False), in one process, timed interleaved
(``interleaved_times``): the whole VM call at 2 threads and at 1 thread (the library's
``edgecc_pool_threads`` 1), beside the fp32 build at 2 threads. Prints ms and int8/fp32,
writes ``bench/results/x86_int8_quant.json``.

    python bench/x86_int8_quant.py [--models resnet20,mobilenet_v2] [--repeats 60]

Not a goal measurement (bench/tvm_cpu.py is).
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
from edgecc.targets.tvm import integer_lowering  # noqa: E402

warnings.filterwarnings("ignore")
INT8 = ("fold-batchnorm,quantize{scheme=w8a8},fuse,dce", {"integer_kernels": True})
FP32 = ("fold-batchnorm,fuse,dce", {})


def measure(name: str, repeats: int) -> dict:
    make, inputs, shape = models()[name]
    module = make().eval()
    calib = calibration(inputs)
    built = {}
    with tempfile.TemporaryDirectory() as d, torch.no_grad():
        for label, on, (pipeline, options) in (("fp32", True, FP32), ("int8 tvm", False, INT8),
                                               ("int8 quant", True, INT8)):
            integer_lowering.IntegerKernels.x86_quantize = on
            try:
                res = edgecc.compile(module, "host", example_inputs=inputs, pipeline=pipeline,
                                     calibration=calib, output_dir=os.path.join(d, label),
                                     progress=False,
                                     target_options={"num_threads": THREADS, **options})
            finally:
                integer_lowering.IntegerKernels.x86_quantize = True
            res.run(*inputs)
            pool = ctypes.c_int32.in_dll(ctypes.CDLL(res._runner.library), "edgecc_pool_threads")
            built[label] = (res, pool, pool.value or THREADS)

        def column(label, threads):
            res, pool, full = built[label]

            def run():
                pool.value = full if threads > 1 else 1
                try:
                    res.run(*inputs)
                finally:
                    pool.value = full
            return run

        fns = {"fp32 2t": column("fp32", THREADS)}
        for t in (THREADS, 1):
            for label in ("int8 tvm", "int8 quant"):
                fns[f"{label} {t}t"] = column(label, t)
        stats = median_p10(interleaved_times(fns, repeats))
    return {"model": name, "input": shape, "load_average": os.getloadavg()[0],
            "columns": stats}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20,mobilenet_v2")
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "x86_int8_quant.json"))
    args = parser.parse_args()
    rows = [measure(m, args.repeats) for m in args.models.split(",")]
    for r in rows:
        c = r["columns"]
        fp = c["fp32 2t"]["median_ms"]
        print(f"\n{r['model']} {r['input']}  (load {r['load_average']:.1f})")
        for k, v in c.items():
            print(f"  {k:<16} {v['median_ms']:7.3f} ms  (p10 {v['p10_ms']:.3f})  "
                  f"{v['median_ms'] / fp:5.2f}x fp32 2t")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"benchmark": "edgecc_x86_quantize A/B (w8a8 whole calls)",
                   "repeats": args.repeats, "threads": THREADS, "rows": rows}, f, indent=2)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
