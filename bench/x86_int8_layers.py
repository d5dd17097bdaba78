"""Where a compiled CNN's w8a8 call spends its time, per kernel, against the fp32 build:
each VM call of the int8 library (and of the fp32 one) re-run alone with the VM's arguments,
every hand-written job serial (``edgecc_x86_serial_work_log2`` = 63) and timed by the calling
thread's CPU time — robust to other processes on a loaded machine, and what the kernels cost
(not what the pool's 2 threads make of it). The int8 calls are timed five times, interleaved
in one process: as built, with the library's ``edgecc_x86_int8_dw_vbmi`` = 0 (the depthwise
paths before dw_perm / dw_direct), with the library's ``edgecc_x86_int8_hi32_off`` set (the
64-bit requantized write-back instead of requant16_hi) and with ``edgecc_x86_int8_amx_conv`` =
1 / 0 (every / no convolution on AMX tiles; built: 2, the deep pointwise ones; no AMX: all
the same). Prints a table per model (calls by kind, summed), writes
``bench/results/x86_int8_layers.json``.

    python bench/x86_int8_layers.py [--models mobilenet_v2,resnet20] [--rounds 5] [--calls]

Not a goal measurement (bench/tvm_cpu.py is): one thread, kernels only, no VM around them.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import sys
import tempfile
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.host import THREADS  # noqa: E402  (sets TVM_NUM_THREADS before TVM starts)
from bench.tvm_cpu import calibration, models  # noqa: E402
from bench.tvm_runtime import kernel_calls, kind  # noqa: E402

import torch  # noqa: E402

import edgecc  # noqa: E402

warnings.filterwarnings("ignore")
SWITCH = "edgecc_x86_int8_dw_vbmi"  # the library's knob (1 as built)
PIPELINES = {"fp32": ("fold-batchnorm,fuse,dce", {}),
             "int8": ("fold-batchnorm,quantize{scheme=w8a8},fuse,dce", {"integer_kernels": True})}


def _cpu_ms(fn, args, reps=5):
    fn(*args)
    t = time.clock_gettime(time.CLOCK_THREAD_CPUTIME_ID)
    for _ in range(reps):
        fn(*args)
    return (time.clock_gettime(time.CLOCK_THREAD_CPUTIME_ID) - t) / reps * 1e3


def _label(symbol: str, args) -> str:
    shape = tuple(getattr(args[0], "shape", ()))
    name = symbol.replace("edgecc_x86_", "")
    return f"{name[:24]} {shape}"


def measure(name: str, rounds: int) -> dict:
    from edgecc.targets.tvm.runner import _private_copy

    make, inputs, shape = models()[name]
    module = make().eval()
    calib = calibration(inputs)
    calls = {}
    with tempfile.TemporaryDirectory() as d, torch.no_grad():
        for label, (pipeline, options) in PIPELINES.items():
            out = os.path.join(d, label)
            res = edgecc.compile(module, "host", example_inputs=inputs, pipeline=pipeline,
                                 calibration=calib, output_dir=out, progress=False,
                                 target_options={"num_threads": THREADS, **options})
            res.run(*inputs)
            library = ctypes.CDLL(_private_copy(os.path.join(out, "model.so")))
            ctypes.c_int64.in_dll(library, "edgecc_x86_serial_work_log2").value = 63
            if label == "int8":
                hi32_off = ctypes.c_int64.in_dll(library, "edgecc_x86_int8_hi32_off")
                dw_switch = ctypes.c_int64.in_dll(library, SWITCH)
                amx_conv = ctypes.c_int64.in_dll(library, "edgecc_x86_int8_amx_conv")
            calls[label] = (res, [c for c in kernel_calls(res._runner, inputs)
                                  if kind(c[1]) != "builtin"])
    # (key, build, dw_vbmi, hi32_off, amx_conv): the library's knobs (as built: 1, 0, 2)
    variants = (("fp32", "fp32", 1, 0, 2), ("int8_dw_before", "int8", 0, 0, 2),
                ("int8_hi32_off", "int8", 1, 1, 2), ("int8", "int8", 1, 0, 2),
                ("int8_amx_conv", "int8", 1, 0, 1), ("int8_vnni_conv", "int8", 1, 0, 0))
    times = {key: [[] for _ in calls[label][1]] for key, label, *_ in variants}
    for n in range(rounds):  # each round in another order (no variant always last)
        k = n % len(variants)
        for key, label, switch, off, amx in variants[k:] + variants[:k]:
            dw_switch.value, hi32_off.value, amx_conv.value = switch, off, amx
            for i, (fn, _, args) in enumerate(calls[label][1]):
                times[key][i].append(_cpu_ms(fn, args))
    dw_switch.value, hi32_off.value, amx_conv.value = 1, 0, 2
    row = {"model": name, "input": shape, "load_average": os.getloadavg()[0], "calls": {}}
    for key, label, *_ in variants:
        per = [statistics.median(v) for v in times[key]]
        row[f"{key}_ms"] = sum(per)
        row["calls"][key] = [(_label(s, a), m) for (_, s, a), m in zip(calls[label][1], per)]
        groups: dict[str, float] = {}
        for (_, s, _), m in zip(calls[label][1], per):
            groups[s if kind(s) == "x86" else "tvm"] = groups.get(
                s if kind(s) == "x86" else "tvm", 0.0) + m
        row[f"{key}_by_kernel"] = groups
    row["int8_vs_fp32"] = row["int8_ms"] / row["fp32_ms"]
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenet_v2,resnet20")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--calls", action="store_true", help="print every call")
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "x86_int8_layers.json"))
    args = parser.parse_args()
    rows = [measure(name, args.rounds) for name in args.models.split(",")]
    for r in rows:
        print(f"\n{r['model']} {r['input']}  (load {r['load_average']:.1f})")
        for key in ("fp32", "int8_dw_before", "int8_hi32_off", "int8", "int8_amx_conv",
                    "int8_vnni_conv"):
            parts = ", ".join(f"{k.replace('edgecc_x86_', '')} {v:.3f}"
                              for k, v in sorted(r[f"{key}_by_kernel"].items()))
            print(f"  {key:<15} {r[key + '_ms']:7.3f} ms   {parts}")
        print(f"  int8 / fp32     {r['int8_vs_fp32']:.2f}x   "
              f"(dw before: {r['int8_dw_before_ms'] / r['fp32_ms']:.2f}x, "
              f"hi32 off: {r['int8_hi32_off_ms'] / r['fp32_ms']:.2f}x, "
              f"all convs on amx: {r['int8_amx_conv_ms'] / r['fp32_ms']:.2f}x, "
              f"none: {r['int8_vnni_conv_ms'] / r['fp32_ms']:.2f}x)")
        if args.calls:
            print(f"    {'call':<44} dw_before hi32_off -> int8  amx_conv vnni_conv")
            for (label, before), (_, off), (_, now), (_, amx), (_, vnni) in zip(
                    r["calls"]["int8_dw_before"], r["calls"]["int8_hi32_off"],
                    r["calls"]["int8"], r["calls"]["int8_amx_conv"],
                    r["calls"]["int8_vnni_conv"]):
                print(f"    {label:<44} {before:.4f}    {off:.4f} -> {now:.4f}  {amx:.4f}"
                      f"   {vnni:.4f}")
    print("\nms: sum of every VM call re-run alone, 1 thread (jobs serial), calling thread's "
          "CPU time, medians of interleaved rounds; int8_dw_before = edgecc_x86_int8_dw_vbmi 0, "
          "int8_hi32_off = edgecc_x86_int8_hi32_off 1 (the 64-bit write-back), int8_amx_conv / "
          "int8_vnni_conv = edgecc_x86_int8_amx_conv 1 / 0 (every / no convolution on AMX tiles; "
          "as built: 2, deep pointwise ones, where the CPU has them)")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"benchmark": "w8a8 vs fp32 kernels, 1 thread CPU time",
                   "rounds": args.rounds, "rows": rows}, f, indent=2)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
