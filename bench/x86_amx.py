"""edgecc's w8a8 builds on Intel AMX tiles against the AVX-512 VNNI kernels and edgecc fp32, in
one process: the same compiled int8 artifact timed with its linears (``tdpbusd``) and
convolutions (``tdpbsud``) on AMX (the library's pick where the CPU and OS allow it) and with
``EDGECC_X86_INT8_ISA=avx512vnni`` (``vpdpbusd`` zmm), so the tile speed-up is measured on
the very same build (the JSON also says whether AMX ran and how many linear and convolution products a
run sent to the tiles). 2 threads, median of interleaved rounds (bench/tvm_cpu.py's timing
and models). Prints a table and writes ``bench/results/x86_amx.json``.

    python bench/x86_amx.py [--repeats 20] [--models bert,gpt2,minilm,resnet20,mobilenet_v2]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.tvm_cpu import THREADS, calibration, edgecc_fn, interleaved_ms, models  # noqa: E402

import tempfile  # noqa: E402

import torch  # noqa: E402

import edgecc  # noqa: E402

ENV = "EDGECC_X86_INT8_ISA"
TRANSFORMERS = "bert,gpt2,minilm"


def with_isa(fn, isa):
    def run():
        os.environ[ENV] = isa  # read by the kernels on every call
        try:
            return fn()
        finally:
            os.environ.pop(ENV, None)
    return run


def int8_build(module, inputs, calib):
    """The w8a8 build with integer kernels (bench/tvm_cpu.py's int8 column), loaded."""
    with tempfile.TemporaryDirectory() as d:
        res = edgecc.compile(module, "host", example_inputs=inputs,
                             pipeline="fold-batchnorm,quantize{scheme=w8a8},fuse,dce",
                             calibration=calib, output_dir=os.path.join(d, "o"),
                             progress=False, target_options={"num_threads": THREADS,
                                                             "integer_kernels": True})
        res.run(*inputs)  # loads the library (a private copy) before the directory goes
    return res


def amx_state(res) -> dict:
    """Whether the artifact's kernels run on AMX now, and its product count so far."""
    from edgecc.targets.tvm.x86_amx_source import AMX_CONV_COUNT, AMX_COUNT, AMX_QUERY

    lib = res._runner.module
    return {"amx": int(lib.get_function(AMX_QUERY, query_imports=True)()),
            "products": int(lib.get_function(AMX_COUNT, query_imports=True)()),
            "convs": int(lib.get_function(AMX_CONV_COUNT, query_imports=True)())}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--models", default=TRANSFORMERS)
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "x86_amx.json"))
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    table, rows = models(), []
    for name in args.models.split(","):
        make, inputs, shape = table[name]
        module = make().eval()
        calib = calibration(inputs)
        with torch.no_grad():
            fp32 = edgecc_fn(module, inputs, "fold-batchnorm,fuse,dce", None)[0]
            res = int8_build(module, inputs, calib)
            integer = res.report.get("lowering", {}).get("integer_kernels")

            def int8(res=res, inputs=inputs):
                return res.run(*inputs)

            state0 = amx_state(res)
            int8()
            state1 = amx_state(res)
            fns = {"edgecc_fp32_ms": fp32, "int8_avx512vnni_ms": with_isa(int8, "avx512vnni"),
                   "int8_amx_ms": int8}
            row = {"model": name, "input": shape, **interleaved_ms(fns, args.repeats),
                   "integer_kernels": integer, "amx": state1["amx"],
                   "amx_products_per_run": state1["products"] - state0["products"],
                   "amx_convs_per_run": state1["convs"] - state0["convs"]}
        row["vnni_vs_fp32"] = row["int8_avx512vnni_ms"] / row["edgecc_fp32_ms"]
        row["amx_vs_fp32"] = row["int8_amx_ms"] / row["edgecc_fp32_ms"]
        row["amx_vs_vnni"] = row["int8_amx_ms"] / row["int8_avx512vnni_ms"]
        rows.append(row)
        print(f"done {name}: amx={row['amx']} products/run={row['amx_products_per_run']} "
              f"convs/run={row['amx_convs_per_run']}", flush=True)
    print("model | input | fp32 ms | int8 vnni ms | int8 amx ms | vnni/fp32 | amx/fp32 | "
          "amx/vnni | amx linears/run | amx convs/run")
    for r in rows:
        print(f"{r['model']} | {r['input']} | {r['edgecc_fp32_ms']:.2f} | "
              f"{r['int8_avx512vnni_ms']:.2f} | {r['int8_amx_ms']:.2f} | "
              f"{r['vnni_vs_fp32']:.2f}x | {r['amx_vs_fp32']:.2f}x | {r['amx_vs_vnni']:.2f}x | "
              f"{r['amx_products_per_run']} | {r['amx_convs_per_run']}")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"benchmark": "edgecc w8a8 builds: AMX tiles vs AVX-512 VNNI vs edgecc fp32",
                   "threads": THREADS, "repeats": args.repeats,
                   "statistic": "median of interleaved rounds",
                   "machine": {"cpu": platform.processor() or platform.machine(),
                               "cores": os.cpu_count(), "load_average": os.getloadavg()},
                   "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
