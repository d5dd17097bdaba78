"""The x86 weight-only kernels (``targets/tvm/x86_wonly``) on this machine: MiniLM (issue 18
goal 4) fp32 vs w4a16 host builds, and the kernel alone on the decode / prefill shapes of
MiniLM and SmolLM2-135M against a float32 matmul of the same (dequantized) weights.

    python bench/x86_wonly.py [--repeats 20] [--gptq] [--skip-model] [--skip-kernel]
                              [--models bert,gpt2,minilm] [--threads 2] [--gemm]
                              [--knob edgecc_x86_wonly_rows --values 48,0]

Models (issue 18 goal 4: w4a16 <= fp32): BERT / GPT-2 4x256 at 1x128 tokens and
all-MiniLM-L6-v2's shape (16x64 tokens) as ``bench/tvm_cpu`` builds them (random weights),
fp32 and w4a16 host builds timed call by call in interleaved rounds in one process: with
``--threads 1`` by the calling thread's CPU time (robust to a loaded machine), else by the
wall clock (median and 10th percentile). ``w4a16`` = int4 weights in groups of 32 (RTN, or
GPTQ with ``--gptq``: the same kernel either way). ``weight bytes`` = the bytes of the
linears' weights one inference reads: float32 for fp32, the packed codes + group
parameters for w4a16 (the manifest's ``weight_only`` record); the bench asserts the ratio
is under 1/6.

``--gemm``: the weight-only kernel against edgecc's own fp32 GEMM (``edgecc_x86_sgemm``,
what the fp32 build runs) on the same dequantized weights, per linear shape of those models
(rows M = tokens), with ``--threads`` as above; outputs compared (``rel diff``: max |w4a16 -
fp32| / max |fp32|; the w4a16 kernel is called as edgecc-quantized builds call it, so on an
AVX512_BF16 CPU it rounds x to bfloat16: ~2e-3; ``--knob edgecc_x86_wonly_bf16 --values 0``
adds the float32-activation path; on an AMX-BF16 CPU it runs the tiles, and ``--knob
edgecc_x86_wonly_amx --values 0`` adds the vdpbf16ps path). GFLOP/s = 2·M·K·N / time:
with ``--threads 1`` compare it with the core's FMA peak (Zen 4, one 512-bit FMA a cycle:
about 115 GFLOP/s on this machine's ~3.6 GHz core; Sapphire Rapids, two: ~2x that a GHz).

``--values 48,0``: w4a16 also with the kernel library's ``--knob`` (an ``int64_t`` global:
``edgecc_x86_wonly_rows``, rows per prefill pool item, 0: whole panels; or
``edgecc_x86_wonly_prefetch``, 1/0: the output prefetch; several, comma-separated, with
values such as ``0:0``) at each value, interleaved with the rest in the same process and
library (``--gemm``: asserts every value gives the same bits).

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

# knobs that pick another arithmetic (bf16 activations, the AMX path's hi / lo weights)
ARITHMETIC_KNOBS = ("edgecc_x86_wonly_bf16", "edgecc_x86_wonly_amx")
GEMMS = {  # the models' linears: name -> (M, K, N)
    "bert/gpt2 q,k,v,o": (128, 256, 256), "gpt2 c_attn": (128, 256, 768),
    "bert/gpt2 ffn up": (128, 256, 1024), "bert/gpt2 ffn down": (128, 1024, 256),
    "minilm q,k,v,o": (1024, 384, 384), "minilm ffn up": (1024, 384, 1536),
    "minilm ffn down": (1024, 1536, 384)}
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


def timed(fns: dict, repeats: int, threads: int) -> dict:
    """Per callable: (median, 10th percentile) of single calls in interleaved rounds of 10
    (``bench.tvm_cpu.interleaved_times``); one thread: its CPU time, else the wall clock."""
    from bench.tvm_cpu import interleaved_times, median_p10  # (lazily: bench.host sets threads)

    times = interleaved_times(fns, repeats, clock="cpu" if threads == 1 else "wall")
    return {k: (v["median_ms"], v["p10_ms"]) for k, v in median_p10(times).items()}


def knob(names: str, library: str) -> list:
    """The ``int64_t`` globals ``names`` (comma-separated) of a loaded shared library
    (ctypes; the variables the library's code reads: dlopen returns the loaded copy)."""
    import ctypes

    lib = ctypes.CDLL(library)
    return [ctypes.c_int64.in_dll(lib, name) for name in names.split(",")]


def with_rows(fn, knobs: list, value: str):
    """``fn`` run with the ``knobs`` set to ``value`` (one int per knob, ``:``-separated;
    restored after)."""
    values = [int(v) for v in value.split(":")]
    assert len(values) == len(knobs), (value, len(knobs))

    def run():
        old = [k.value for k in knobs]
        for k, v in zip(knobs, values):
            k.value = v
        try:
            fn()
        finally:
            for k, v in zip(knobs, old):
                k.value = v
    return run


def gemm_rows(repeats: int, threads: int, rows: list[str],
              knob_name: str = "edgecc_x86_wonly_rows") -> list[dict]:
    import subprocess

    import tvm
    import tvm_ffi

    from edgecc.targets.tvm import x86_fp32, x86_int8, x86_wonly
    from edgecc.targets.tvm.runner import use_threads

    use_threads(threads)
    obj = x86_int8.compiled_object(source=x86_fp32.SOURCE, cache=x86_fp32.CACHE)
    so = obj[:-2] + ".so"
    if not os.path.exists(so):
        subprocess.run([os.environ.get("CXX", "g++"), "-shared", obj, "-o", so], check=True,
                       capture_output=True)
    sgemm = tvm_ffi.load_module(so)[x86_fp32.SGEMM]
    wlinear = tvm_ffi.load_module(x86_wonly.shared_library())[x86_wonly.LINEAR]
    rows_knob = knob(knob_name, x86_wonly.shared_library())
    rng = np.random.default_rng(0)
    out_rows = []
    for name, (m, k, n) in GEMMS.items():
        x = rng.normal(size=(m, k)).astype(np.float32)
        q = rng.integers(-8, 8, (n, k))
        scale = rng.uniform(0.01, 0.02, (n, -(-k // 32))).astype(np.float32)
        packed = x86_wonly.pack(q, "int4", scale, np.array(0), None, 32)
        w = packed.dequantized()
        bias = rng.normal(size=n).astype(np.float32)
        padded = np.zeros(packed.codes.shape[0] * 32, np.float32)
        padded[:n] = bias
        t = [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in (
            x, packed.codes, packed.scale, packed.zero, np.zeros(1, np.float32), padded,
            packed.meta(m, True, bf16_activations=True))]  # as edgecc-quantized builds
        s = [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in (
            x, x86_fp32.pack_panels(np.ascontiguousarray(w.T)), bias,
            np.array([m, k, n], np.int64), np.array([-np.inf, np.inf], np.float32))]
        out_w, out_s = (tvm.runtime.tensor(np.zeros((m, n), np.float32)) for _ in range(2))
        fns = {"w4a16": lambda: wlinear(*t, out_w), "fp32": lambda: sgemm(*s, out_s)}
        fns.update({f"@{r}": with_rows(fns["w4a16"], rows_knob, r) for r in rows})
        ms = timed(fns, repeats, threads)
        ref = out_s.numpy()
        outs = {}
        for r in rows:  # every split gives the same bits (the bf16 / amx knobs: other bits)
            fns[f"@{r}"]()
            outs[r] = out_w.numpy().copy()
        fns["w4a16"]()
        if knob_name not in ARITHMETIC_KNOBS:
            assert all(np.array_equal(o, out_w.numpy()) for o in outs.values()), name
        out_rows.append({"shape": name, "M": m, "K": k, "N": n,
                     **{f"w4a16_at{r}_vs_fp32": round(ms[f"@{r}"][0] / ms["fp32"][0], 3)
                        for r in rows},
                     "w4a16_ms": round(ms["w4a16"][0], 4), "fp32_ms": round(ms["fp32"][0], 4),
                     "w4a16_p10_ms": round(ms["w4a16"][1], 4),
                     "fp32_p10_ms": round(ms["fp32"][1], 4),
                     "w4a16_vs_fp32": round(ms["w4a16"][0] / ms["fp32"][0], 3),
                     "w4a16_gflops": round(2 * m * k * n / ms["w4a16"][0] / 1e6, 1),
                     "fp32_gflops": round(2 * m * k * n / ms["fp32"][0] / 1e6, 1),
                     "max_rel_diff": float(np.abs(out_w.numpy() - ref).max()
                                           / np.abs(ref).max()),
                     "weight_bytes_vs_fp32": round(packed.nbytes / (4 * n * k), 4)})
    return out_rows


def _library(fn) -> str:
    """The model library ``bench.tvm_cpu.edgecc_fn``'s callable runs (its ``res``)."""
    res = fn.__closure__[fn.__code__.co_freevars.index("res")].cell_contents
    return res._runner.library


def model_rows(names: list[str], repeats: int, threads: int, gptq: bool,
               knob_rows: list[str] = (), knob_name: str = "edgecc_x86_wonly_rows"
               ) -> list[dict]:
    from bench.tvm_cpu import calibration, edgecc_fn, models
    from bench.tvm_cpu import _edgecc_fn_info as info

    torch.set_num_threads(threads)
    algo = "gptq" if gptq else "rtn"
    builds = {"fp32": "fold-batchnorm,fuse,dce",
              "w4a16": f"fold-batchnorm,quantize{{scheme=w4a16,group_size=32,algorithm={algo}}}"
                       ",fuse,dce"}
    rows = []
    for model in names:
        make, inputs, shape = models()[model]
        module = make().eval()
        calib = calibration(inputs)
        fns, facts = {}, {}
        for name, pipeline in builds.items():
            fns[name], _ = edgecc_fn(module, inputs, pipeline, calib, num_threads=threads)
            wonly = (info.get("integer_kernels") or {}).get("weight_only") or {}
            facts[name] = {"compile_s": round(info["seconds"], 1), "weight_only": wonly}
        if knob_rows:  # the same w4a16 library, its prefill split moved (same outputs)
            rows_knob = knob(knob_name, _library(fns["w4a16"]))
            for r in knob_rows:
                fns[f"w4a16 @{r}"] = with_rows(fns["w4a16"], rows_knob, r)
                facts[f"w4a16 @{r}"] = facts["w4a16"]
        counters = knob("edgecc_x86_wonly_bf16_calls,edgecc_x86_wonly_amx_calls",
                        _library(fns["w4a16"]))
        before = [c.value for c in counters]
        ms = timed(fns, repeats, threads)
        # prefill calls that ran the vdpbf16ps path / the AMX tiles (all builds, all rounds)
        bf16_calls, amx_calls = (c.value - b for c, b in zip(counters, before))
        wonly = facts["w4a16"]["weight_only"]
        ratio = wonly.get("weight_only_bytes", 0) / max(1, wonly.get("float32_weight_bytes", 0))
        assert wonly.get("weight_only_layers") and ratio < 1 / 6, (model, wonly)
        for name in fns:
            w = facts[name]["weight_only"]
            rows.append({"model": f"{model} {shape}", "build": name,
                         "latency_ms": round(ms[name][0], 3), "p10_ms": round(ms[name][1], 3),
                         "vs_fp32": round(ms[name][0] / ms["fp32"][0], 3),
                         "p10_vs_fp32": round(ms[name][1] / ms["fp32"][1], 3),
                         "linear_weight_bytes": w.get("weight_only_bytes",
                                                      wonly["float32_weight_bytes"]),
                         "weight_only_layers": w.get("weight_only_layers", 0),
                         "float_fallbacks": len(w.get("float_fallbacks", [])),
                         "compile_s": facts[name]["compile_s"], "bf16_calls": bf16_calls,
                         "amx_calls": amx_calls})
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--gptq", action="store_true")
    ap.add_argument("--skip-model", action="store_true")
    ap.add_argument("--skip-kernel", action="store_true")
    ap.add_argument("--models", default="bert,gpt2,minilm")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--gemm", action="store_true",
                    help="the kernel against edgecc's fp32 GEMM per linear shape of the models")
    ap.add_argument("--knob", default="edgecc_x86_wonly_rows",
                    help="the kernel library globals --values moves (comma-separated)")
    ap.add_argument("--values", default="",
                    help="also w4a16 with --knob at these values (one per knob, ':'-"
                         "separated), interleaved with the default (--gemm and the models)")
    ap.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                     "x86_wonly.json"))
    args = ap.parse_args()
    out = {"load_average": os.getloadavg(), "repeats": args.repeats, "threads": args.threads}
    rows = args.values.split(",") if args.values else []
    out["knob"] = args.knob
    if not args.skip_kernel:
        out["kernel"] = kernel_rows(args.repeats)
        print(f"{'shape':<24}{'format':<18}{'kernel ms':>10}{'numpy ms':>10}{'kern GB/s':>10}"
              f"{'np GB/s':>9}{'bytes/fp32':>11}")
        for r in out["kernel"]:
            print(f"{r['shape']:<24}{r['format']:<18}{r['kernel_ms']:>10.3f}"
                  f"{r['numpy_fp32_ms']:>10.3f}{r['kernel_GBps']:>10.1f}{r['numpy_GBps']:>9.1f}"
                  f"{r['weight_bytes'] / r['fp32_bytes']:>11.3f}")
    clock = "CPU time of the calling thread" if args.threads == 1 else "wall clock"
    if args.gemm:
        out["gemm"] = gemm_rows(args.repeats, args.threads, rows, args.knob)
        print(f"\n{'linear':<20}{'M x K x N':>18}{'w4a16 ms':>10}{'fp32 ms':>9}{'ratio':>7}"
              f"{'p10 ratio':>10}{'GFLOP/s w4a16 / fp32':>22}{'rel diff':>10}{'bytes/fp32':>11}")
        for r in out["gemm"]:
            print(f"{r['shape']:<20}{r['M']:>8} x{r['K']:>4} x{r['N']:>4}{r['w4a16_ms']:>10.3f}"
                  f"{r['fp32_ms']:>9.3f}{r['w4a16_vs_fp32']:>6.2f}x"
                  f"{r['w4a16_p10_ms'] / r['fp32_p10_ms']:>9.2f}x"
                  f"{r['w4a16_gflops']:>14.1f} /{r['fp32_gflops']:>6.1f}{r['max_rel_diff']:>10.1e}"
                  f"{r['weight_bytes_vs_fp32']:>11.3f}"
                  + "".join(f"  @{v}: {r[f'w4a16_at{v}_vs_fp32']:.2f}x" for v in rows))
        print(f"ms per call ({clock}), {args.threads} thread(s); fp32 = edgecc_x86_sgemm on the "
              "dequantized weights; w4a16 = edgecc_x86_wlinear, int4 g32")
    if not args.skip_model:
        out["models"] = model_rows(args.models.split(","), args.repeats, args.threads,
                                   args.gptq, rows, args.knob)
        print(f"\n{'model':<22}{'build':<14}{'ms':>9}{'p10 ms':>9}{'vs fp32':>9}{'p10 vs':>8}"
              f"{'weight bytes':>14}{'layers':>8}{'fallbacks':>10}")
        for r in out["models"]:
            print(f"{r['model']:<22}{r['build']:<14}{r['latency_ms']:>9.2f}{r['p10_ms']:>9.2f}"
                  f"{r['vs_fp32']:>9.3f}{r['p10_vs_fp32']:>8.3f}{r['linear_weight_bytes']:>14,}"
                  f"{r['weight_only_layers']:>8}{r['float_fallbacks']:>10}")
        print(f"ms per call ({clock}), {args.threads} thread(s), interleaved rounds")
    print(f"load average {out['load_average']}")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
