"""edgecc's w8a8 integer kernels on x86 per instruction set, against edgecc fp32, in one
process: the same compiled int8 artifact timed with its AVX2 kernels (``vpmaddwd``) and with
the int8 dot-product ones this CPU has (256-bit AVX-VNNI and AVX-512 VNNI ``vpdpbusd``) —
the library picks the widest by cpuid; ``EDGECC_X86_INT8_ISA`` narrows the choice per call —
so the VNNI speed-up is measured on the very same build. 2 threads, median of interleaved
rounds (bench/tvm_cpu.py's timing and models). Prints a table and writes
``bench/results/x86_int8_isa.json``.

    python bench/x86_int8_isa.py [--repeats 20] [--models resnet20,mobilenet_v2,...]
                                 [--avx2-machine]

``--avx2-machine``: both builds as on a CPU with AVX2 and no AVX-512 / VNNI (issue 18's
"w8a8 <= 1.0x edgecc fp32 on an AVX2 machine"), emulated here: TVM's own code compiled for
``mcpu=haswell``, the hand-written fp32 and attention kernels on their AVX2 paths
(``EDGECC_X86_FP32_NO_AVX512=1``, ``EDGECC_X86_ATTN_NO_AVX512=1``, read when the library
loads) and the int8 kernels on theirs (``EDGECC_X86_INT8_ISA=avx2``: int16 ``vpmaddwd`` +
``vpaddd``); writes ``bench/results/x86_int8_isa_avx2.json``. A Zen 4 core running AVX2
code is not a Haswell: the ratio is the kernels', the absolute times are this machine's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.tvm_cpu import (  # noqa: E402
    ALL_MODELS, THREADS, _edgecc_fn_info, calibration, edgecc_fn, interleaved_ms, models,
)

import torch  # noqa: E402

ENV = "EDGECC_X86_INT8_ISA"
# --avx2-machine: the environment every kernel library reads for its AVX2 path, and the LLVM CPU
AVX2_ENV = {"EDGECC_X86_FP32_NO_AVX512": "1", "EDGECC_X86_ATTN_NO_AVX512": "1", ENV: "avx2"}
AVX2_MCPU = "haswell"


def cpu_isas() -> list[str]:
    """avx2, then the VNNI kernels this CPU can run, then AMX where the CPU has AMX-INT8
    (``EDGECC_X86_INT8_ISA=amx``, the library's default there: the linears and the deep
    pointwise convolutions on the tiles, every convolution with ``edgecc_x86_int8_amx_conv`` =
    1) — from /proc/cpuinfo."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = set(next(line for line in f if line.startswith("flags")).split(":")[1]
                        .split())
    except (OSError, StopIteration):
        flags = set()
    return (["avx2"] + (["avxvnni"] if "avx_vnni" in flags else [])
            + (["avx512vnni"] if {"avx512_vnni", "avx512bw"} <= flags else [])
            + (["amx"] if {"amx_int8", "amx_tile", "avx512_vnni"} <= flags else []))


def with_isa(fn, isa):
    def run():
        before = os.environ.get(ENV)
        os.environ[ENV] = isa  # read by the kernels on every call
        try:
            return fn()
        finally:
            if before is None:
                os.environ.pop(ENV, None)
            else:
                os.environ[ENV] = before
    return run


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--models", default=ALL_MODELS)
    parser.add_argument("--avx2-machine", action="store_true",
                        help="both builds on their AVX2 paths, TVM's code for mcpu=haswell")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    output = args.output or os.path.join(
        ROOT, "bench", "results", "x86_int8_isa_avx2.json" if args.avx2_machine
        else "x86_int8_isa.json")
    torch.set_num_threads(THREADS)
    isas = cpu_isas()
    target = {}
    if args.avx2_machine:  # before any kernel library loads (the fp32 one reads it then)
        os.environ.update(AVX2_ENV)
        isas, target = ["avx2"], {"mcpu": AVX2_MCPU}
    table, rows = models(), []
    for name in args.models.split(","):
        make, inputs, shape = table[name]
        module = make().eval()
        calib = calibration(inputs)
        with torch.no_grad():
            fns = {"edgecc_fp32_ms": edgecc_fn(module, inputs, "fold-batchnorm,fuse,dce",
                                               None, **target)[0]}
            int8 = edgecc_fn(module, inputs, "fold-batchnorm,quantize{scheme=w8a8},fuse,dce",
                             calib, integer_kernels=True, **target)[0]
            for isa in isas:
                fns[f"int8_{isa}_ms"] = with_isa(int8, isa)
            integer = _edgecc_fn_info.get("integer_kernels")
            row = {"model": name, "input": shape, **interleaved_ms(fns, args.repeats),
                   "integer_kernels": integer}
        row["int8_vs_fp32"] = {isa: row[f"int8_{isa}_ms"] / row["edgecc_fp32_ms"]
                               for isa in isas}
        rows.append(row)
        print(f"done {name}: {row}", flush=True)
    heads = ["model", "fp32 ms"] + [f"{i} ms" for i in isas] + [f"{i}/fp32" for i in isas]
    print(" | ".join(heads))
    for r in rows:
        cells = [r["model"], f"{r['edgecc_fp32_ms']:.2f}"]
        cells += [f"{r[f'int8_{i}_ms']:.2f}" for i in isas]
        cells += [f"{r['int8_vs_fp32'][i]:.2f}" for i in isas]
        print(" | ".join(cells))
    os.makedirs(os.path.dirname(output), exist_ok=True)
    with open(output, "w") as f:
        json.dump({"benchmark": "edgecc x86 int8 kernels per ISA vs edgecc fp32",
                   "threads": THREADS, "repeats": args.repeats,
                   "statistic": "median of interleaved rounds",
                   "machine": {"cpu": platform.processor() or platform.machine(),
                               "cores": os.cpu_count(), "isas": isas,
                               "load_average": os.getloadavg()},
                   "avx2_machine": ({"environment": AVX2_ENV, "mcpu": AVX2_MCPU}
                                    if args.avx2_machine else None),
                   "rows": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
