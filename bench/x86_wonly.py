"""The x86 weight-only kernels (``targets/tvm/x86_wonly``) on this machine: MiniLM (issue 18
goal 4) fp32 vs w4a16 host builds, and the kernel alone on the decode / prefill shapes of
MiniLM and SmolLM2-135M against a float32 matmul of the same (dequantized) weights.

    python bench/x86_wonly.py [--repeats 20] [--gptq] [--skip-model]

MiniLM: all-MiniLM-L6-v2's shape (``bench/tvm_cpu.minilm_like``, random weights, 16x64
tokens), 2 threads, median of interleaved rounds; ``w4a16`` = int4 weights in groups of 32
(RTN, or GPTQ with ``--gptq``: the same kernel either way). ``weight bytes`` = the bytes
of the linears' weights one inference reads: float32 for fp32, the packed codes + group
parameters for w4a16 (the manifest's ``weight_only`` record).

Kernel: ``edgecc_x86_wlinear`` called directly (shared library, serial: no TVM thread
pool) for int4 g32 / int4 g32 + offset (Q4_1) / int8 g32 (Q8_0), beside numpy's float32
``x @ W.T`` (OpenBLAS, OMP_NUM_THREADS=1); GB/s = weight bytes read / time. Writes
``bench/results/x86_wonly.json``. Timings on a shared machine are ratios at best: compare
within a row.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import numpy as np  # noqa: E402
import torch  # noqa: E402

SHAPES = {  # name: (M, K, N)
    "minilm ffn1 prefill": (1024, 384, 1536),
    "minilm ffn2 prefill": (1024, 1536, 384),
    "smollm2 mlp decode": (1, 576, 1536),
    "smollm2 down decode": (1, 1536, 576),
    "smollm2 lm_head decode": (1, 576, 49152),
    "smollm2 mlp prefill": (128, 576, 1536),
}
FORMATS = {"int4 g32": ("int4", 32, False), "int4 g32 +offset": ("uint4", 32, True),
           "int8 g32": ("int8", 32, False)}


def median_ms(fn, repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def kernel_rows(repeats: int) -> list[dict]:
    import tvm
    import tvm_ffi

    from edgecc.targets.tvm import x86_wonly

    fn = tvm_ffi.load_module(x86_wonly.shared_library())[x86_wonly.LINEAR]
    rng = np.random.default_rng(0)
    rows = []
    for name, (m, k, n) in SHAPES.items():
        x = rng.normal(size=(m, k)).astype(np.float32)
        for fmt, (dtype, group, offset) in FORMATS.items():
            lo, hi = {"int4": (-8, 7), "uint4": (0, 15), "int8": (-127, 127)}[dtype]
            q = rng.integers(lo, hi + 1, (n, k))
            ng = -(-k // group)
            scale = rng.uniform(0.01, 0.02, (n, ng)).astype(np.float32)
            zero = np.array(8 if dtype == "uint4" else 0)
            off = rng.normal(size=(n, ng)).astype(np.float32) if offset else None
            packed = x86_wonly.pack(q, dtype, scale, zero, off, group)
            w = packed.dequantized().astype(np.float32)
            args = [tvm.runtime.tensor(a) for a in (
                x, packed.codes, packed.scale, packed.zero,
                packed.offset if off is not None else np.zeros(1, np.float32),
                np.zeros(1, np.float32), packed.meta(m, False))]
            out = tvm.runtime.tensor(np.zeros((m, n), np.float32))
            kernel_ms = median_ms(lambda: fn(*args, out), repeats)
            wt = np.ascontiguousarray(w.T)
            numpy_ms = median_ms(lambda: x @ wt, repeats)
            rows.append({"shape": name, "M": m, "K": k, "N": n, "format": fmt,
                         "kernel_ms": round(kernel_ms, 4), "numpy_fp32_ms": round(numpy_ms, 4),
                         "weight_bytes": packed.nbytes, "fp32_bytes": 4 * n * k,
                         "kernel_GBps": round(packed.nbytes / kernel_ms / 1e6, 2),
                         "numpy_GBps": round(4 * n * k / numpy_ms / 1e6, 2)})
    return rows


def minilm_rows(repeats: int, gptq: bool) -> list[dict]:
    from bench.tvm_cpu import calibration, edgecc_fn, interleaved_ms, minilm_like
    from bench.tvm_cpu import _edgecc_fn_info as info
    from bench.host import Hidden

    torch.set_num_threads(2)
    module = Hidden(minilm_like(), False).eval()
    inputs = (torch.randint(0, 30000, (16, 64)), torch.ones(16, 64, dtype=torch.long))
    calib = calibration(inputs)
    algo = "gptq" if gptq else "rtn"
    builds = {"fp32": "fold-batchnorm,fuse,dce",
              "w4a16": f"fold-batchnorm,quantize{{scheme=w4a16,group_size=32,algorithm={algo}}}"
                       ",fuse,dce"}
    fns, facts = {}, {}
    for name, pipeline in builds.items():
        fns[name], _ = edgecc_fn(module, inputs, pipeline, calib)
        wonly = (info.get("integer_kernels") or {}).get("weight_only") or {}
        facts[name] = {"compile_s": round(info["seconds"], 1), "weight_only": wonly}
    ms = interleaved_ms(fns, repeats)
    linear_fp32 = facts["w4a16"]["weight_only"].get("float32_weight_bytes", 0)
    rows = []
    for name in builds:
        wonly = facts[name]["weight_only"]
        rows.append({"model": "minilm 16x64", "build": name, "latency_ms": round(ms[name], 2),
                     "vs_fp32": round(ms[name] / ms["fp32"], 3),
                     "linear_weight_bytes": wonly.get("weight_only_bytes", linear_fp32),
                     "weight_only_layers": wonly.get("weight_only_layers", 0),
                     "float_fallbacks": len(wonly.get("float_fallbacks", [])),
                     "compile_s": facts[name]["compile_s"]})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--gptq", action="store_true")
    ap.add_argument("--skip-model", action="store_true")
    ap.add_argument("--skip-kernel", action="store_true")
    args = ap.parse_args()
    out = {"load_average": os.getloadavg(), "repeats": args.repeats}
    if not args.skip_kernel:
        out["kernel"] = kernel_rows(args.repeats)
        print(f"{'shape':<24}{'format':<18}{'kernel ms':>10}{'numpy ms':>10}{'kern GB/s':>10}"
              f"{'np GB/s':>9}{'bytes/fp32':>11}")
        for r in out["kernel"]:
            print(f"{r['shape']:<24}{r['format']:<18}{r['kernel_ms']:>10.3f}"
                  f"{r['numpy_fp32_ms']:>10.3f}{r['kernel_GBps']:>10.1f}{r['numpy_GBps']:>9.1f}"
                  f"{r['weight_bytes'] / r['fp32_bytes']:>11.3f}")
    if not args.skip_model:
        out["minilm"] = minilm_rows(args.repeats, args.gptq)
        print(f"\n{'model':<14}{'build':<8}{'ms':>9}{'vs fp32':>9}{'weight bytes':>14}"
              f"{'layers':>8}{'fallbacks':>10}")
        for r in out["minilm"]:
            print(f"{r['model']:<14}{r['build']:<8}{r['latency_ms']:>9.2f}{r['vs_fp32']:>9.3f}"
                  f"{r['linear_weight_bytes']:>14,}{r['weight_only_layers']:>8}"
                  f"{r['float_fallbacks']:>10}")
    print(f"load average {out['load_average']}")
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "x86_wonly.json"), "w") as f:
        json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
