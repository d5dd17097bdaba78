"""Run an edgecc arm64 artifact with the TVM runtime (no edgecc, no PyTorch needed).

On the board (64-bit Arm Linux, Python >= 3.9)::

    pip install numpy apache-tvm-ffi==0.1.14.post0 apache-tvm==0.27.0.post1
    TVM_USE_RUNTIME_LIB=1 python3 run_model.py model.so inputs.npz outputs.npz [in2 out2 ...]

``inputs.npz`` holds the model inputs as ``arg0``, ``arg1``, ... (shapes and dtypes are in
``manifest.json``); ``outputs.npz`` receives ``out0``, ``out1``, ... More input/output pairs
run in the same process (the library is loaded once). ``--repeat N`` also prints the median
latency of N runs of the first inputs in milliseconds.
"""

import argparse
import os
import statistics
import sys
import time

import numpy as np


def flatten(value):
    if hasattr(value, "numpy"):
        return [value.numpy()]
    out = []
    for item in value:
        out.extend(flatten(item))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description="run an edgecc arm64 artifact")
    parser.add_argument("library")
    parser.add_argument("files", nargs="+", metavar="INPUTS.npz OUTPUTS.npz")
    parser.add_argument("--repeat", type=int, default=0)
    args = parser.parse_args()
    if len(args.files) % 2:
        parser.error("give input and output files in pairs: inputs.npz outputs.npz ...")
    os.environ.setdefault("TVM_USE_RUNTIME_LIB", "1")
    import tvm
    from tvm.runtime.vm import VirtualMachine

    device = tvm.cpu()
    vm = VirtualMachine(tvm.runtime.load_module(args.library), device)
    for src, dst in zip(args.files[::2], args.files[1::2]):
        data = np.load(src)
        names = sorted(data.files, key=lambda k: int(k[3:]))
        inputs = [tvm.runtime.tensor(np.ascontiguousarray(data[k]), device) for k in names]
        result = flatten(vm["main"](*inputs))
        np.savez(dst, **{f"out{i}": r for i, r in enumerate(result)})
        if src == args.files[0]:
            first = inputs
    inputs = first
    if args.repeat:
        times = []
        for _ in range(args.repeat):
            t = time.perf_counter()
            vm["main"](*inputs)
            times.append((time.perf_counter() - t) * 1000)
        print(f"median {statistics.median(times):.3f} ms over {args.repeat} runs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
