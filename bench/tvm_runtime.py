"""What a compiled CNN's call spends outside its kernels: edgecc's fp32 host build of each
model, timed end to end (``CompileResult.run``, the runner, the bare VM function) against the
sum of its kernels, each re-run alone with the arguments the VM passed it (a VM instrument
records every call), and onnxruntime's session, all interleaved in one process, 2 threads.
Also the VM's calls by kind (hand-written x86 kernels, TVM-generated kernels, VM builtins) and
the same run with every hand-written job serial (``edgecc_x86_serial_work_log2`` = 63: what
the pool buys). Prints a table, writes ``bench/results/tvm_runtime.json``.

    python bench/tvm_runtime.py [--models resnet20,mobilenet_v2,mobilenet_v2_224] [--rounds 20]

``overhead`` = runner - sum of kernels: the VM, the pool's launches and waits, Python.
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
from bench.tvm_cpu import models, ort_fp32_fn  # noqa: E402

import torch  # noqa: E402

import edgecc  # noqa: E402

warnings.filterwarnings("ignore")


def kernel_calls(runner, inputs):
    """(function, symbol, arguments) of every call the VM makes in one run."""
    from edgecc.targets.tvm.runner import tvm_tensor

    calls = []

    def instrument(func, symbol, before, _ret, *args):
        if before:
            calls.append((func, str(symbol), list(args)))
        return 0

    runner.vm.set_instrument(instrument)
    try:
        runner.vm["main"](*[tvm_tensor(t, runner.device) for t in inputs])
    finally:
        runner.vm.set_instrument(None)
    return calls


def kind(symbol: str) -> str:
    if symbol.startswith("edgecc_x86"):
        return "x86"
    return "builtin" if symbol.startswith("vm.builtin") else "tvm"


def measure(name, rounds):
    from edgecc.targets.tvm.runner import _private_copy, tvm_tensor

    make, inputs, shape = models()[name]
    module = make().eval()
    with tempfile.TemporaryDirectory() as d, torch.no_grad():
        res = edgecc.compile(module, "host", example_inputs=inputs,
                             pipeline="fold-batchnorm,fuse,dce", output_dir=os.path.join(d, "o"),
                             progress=False, target_options={"num_threads": THREADS})
        res.run(*inputs)
        runner = res._runner
        library = ctypes.CDLL(_private_copy(os.path.join(d, "o", "model.so")))
        ort = ort_fp32_fn(module, inputs)
    serial = ctypes.c_int64.in_dll(library, "edgecc_x86_serial_work_log2")
    calls = [c for c in kernel_calls(runner, inputs) if kind(c[1]) != "builtin"]
    builtins = len(kernel_calls(runner, inputs)) - len(calls)
    main = runner.vm["main"]
    args = [tvm_tensor(t, runner.device) for t in inputs]

    def all_serial():
        serial.value = 63
        try:
            runner.run(*inputs)
        finally:
            serial.value = 0

    fns = {"result_run_ms": lambda: res.run(*inputs), "runner_ms": lambda: runner.run(*inputs),
           "vm_ms": lambda: main(*args), "serial_ms": all_serial, "onnxruntime_ms": ort}
    times = {k: [] for k in fns}
    kernels = [[] for _ in calls]
    for _ in range(rounds):
        for k, fn in fns.items():
            time.sleep(0.05)
            for _ in range(3):
                fn()
            for _ in range(10):
                t = time.perf_counter()
                fn()
                times[k].append((time.perf_counter() - t) * 1e3)
        for i, (func, _, a) in enumerate(calls):
            func(*a)
            for _ in range(3):
                t = time.perf_counter()
                func(*a)
                kernels[i].append((time.perf_counter() - t) * 1e3)
    row = {"model": name, "input": shape, **{k: statistics.median(v) for k, v in times.items()}}
    per = [statistics.median(v) for v in kernels]
    row["kernels_ms"] = sum(per)
    row["x86_kernels_ms"] = sum(p for p, c in zip(per, calls) if kind(c[1]) == "x86")
    row["calls"] = {"x86": sum(kind(c[1]) == "x86" for c in calls),
                    "tvm": sum(kind(c[1]) == "tvm" for c in calls), "builtin": builtins}
    row["overhead_ms"] = row["runner_ms"] - row["kernels_ms"]
    row["load_average"] = os.getloadavg()[0]
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20,mobilenet_v2,mobilenet_v2_224")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "tvm_runtime.json"))
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    rows = [measure(name, args.rounds) for name in args.models.split(",")]
    cols = ["result_run_ms", "runner_ms", "vm_ms", "kernels_ms", "overhead_ms", "serial_ms",
            "onnxruntime_ms"]
    heads = ["res.run", "runner", "bare VM", "kernels", "overhead", "all serial", "ort"]
    print(f"{'model':<18}" + "".join(f"{h:>11}" for h in heads) + "   calls x86/tvm/builtin  load")
    for r in rows:
        c = r["calls"]
        print(f"{r['model']:<18}" + "".join(f"{r[k]:>11.3f}" for k in cols)
              + f"   {c['x86']}/{c['tvm']}/{c['builtin']:<14}{r['load_average']:.1f}")
    print(f"ms, medians of interleaved rounds, {THREADS} threads; kernels = sum of each VM call "
          "re-run alone; overhead = runner - kernels; all serial = every hand-written job serial")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"benchmark": "edgecc fp32 host call: kernels vs the runtime around them",
                   "threads": THREADS, "rounds": args.rounds, "rows": rows}, f, indent=2)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
