"""``edgecc_x86_linear`` on all-MiniLM-L6-v2's four linear shapes (16 x 64 tokens): GMAC/s per
call at 1 and 2 threads against the machine's measured FMA peak (a register-only loop of
independent 512-bit FMAs; 1 thread by CPU time, the machine being shared, 2 by the wall
clock), and against the register tile alone in the kernel's loop order (no packing or
write-back work), so the % of peak says what a better kernel could still win.  With
``--process-cpu`` 2+ threads are timed by the process's CPU time (every thread's) per batch of
``--repeats`` calls against one core's peak: what a call costs the threads on a loaded machine
(the work, its pool waits and cache traffic between the cores), not the wall clock's spells. With ``--knob
NAME=VALUE`` each shape is also timed with that int64 knob of the kernel library set
(interleaved with the default, paired ratios, outputs checked bit for bit).

    python bench/x86_linear_peak.py [--rounds 10] [--threads 1,2] \
        [--knob edgecc_x86_linear_prefetch=0] [--shapes qkv,ffn_in_nogelu,n32]

Prints a table and writes ``bench/results/x86_linear_peak.json``. Say the load with it.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

# MiniLM at 16 x 64 tokens: (M, K, N, gelu, residual), per layer: q/k/v merged, attention
# output (+ residual), intermediate (+ erf GELU), output (+ residual)
SHAPES = {"qkv": (1024, 384, 1152, 0, False), "attn_out": (1024, 384, 384, 0, True),
          "ffn_in": (1024, 384, 1536, 1, False), "ffn_out": (1024, 1536, 384, 0, True),
          # not in the model: what the GELU / residual write-backs and the packing (n32: one
          # tile per 12 rows) cost, and a multiple of 12 rows
          "ffn_in_nogelu": (1024, 384, 1536, 0, False), "ffn_in_1020": (1020, 384, 1536, 0, False),
          "ffn_in_res": (1024, 384, 1536, 0, True), "attn_out_nores": (1024, 384, 384, 0, False),
          "n32": (1024, 384, 32, 0, False), "n128": (1024, 384, 128, 0, False)}
MODEL = ("qkv", "attn_out", "ffn_in", "ffn_out")

PEAK_C = r"""
#include <stdint.h>
#include <time.h>
// 24 independent accumulators (zmm0-23), 24 FMAs per iteration: the FMA pipes' throughput
#define F(i) "vfmadd231ps %%zmm30, %%zmm31, %%zmm" #i "\n\t"
__attribute__((target("avx512f"))) float fma_peak(int64_t iters) {
  __asm__ volatile(
      "vxorps %%xmm30, %%xmm30, %%xmm30\n\tvxorps %%xmm31, %%xmm31, %%xmm31\n\t"
      "1:\n\t" F(0) F(1) F(2) F(3) F(4) F(5) F(6) F(7) F(8) F(9) F(10) F(11) F(12) F(13)
      F(14) F(15) F(16) F(17) F(18) F(19) F(20) F(21) F(22) F(23)
      "dec %0\n\tjnz 1b\n\t"
      : "+r"(iters) : : "cc", "xmm0", "xmm1", "xmm2", "xmm3", "xmm4", "xmm5", "xmm6", "xmm7",
        "xmm8", "xmm9", "xmm10", "xmm11", "xmm12", "xmm13", "xmm14", "xmm15", "xmm16",
        "xmm17", "xmm18", "xmm19", "xmm20", "xmm21", "xmm22", "xmm23", "xmm30", "xmm31");
  return 0.0f;
}
static double cpu_now() {
  struct timespec t;
  clock_gettime(CLOCK_THREAD_CPUTIME_ID, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}
// GMAC/s of fma_peak per second of this thread's CPU time
double fma_peak_cpu(int64_t iters) {
  const double t0 = cpu_now();
  volatile float sink = fma_peak(iters);
  (void)sink;
  return iters * 24.0 * 16.0 / (cpu_now() - t0) / 1e9;
}

// The linear's 12 x 32 register tile alone (x86_linear_source's k loop, the same code GCC
// makes of it), in the kernel's order (groups of ``gb`` 12-row blocks, chunks of ``ct`` tiles)
// over packed rows and panels of a (12 blocks) x k x (32 tiles) product, plain stores: no
// packing, bias, clamp, residual or GELU. GMAC per second of CPU time, the best of 5 runs
#include <immintrin.h>
#include <stdlib.h>
__attribute__((target("avx512f"), noinline)) static void tile(
    const float* ap, const float* b0, const float* b1, int64_t k, float* c, int64_t ldc) {
  __m512 acc[12][2];
  for (int r = 0; r < 12; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  for (int64_t i = 0; i < k; ++i) {
    const __m512 x0 = _mm512_loadu_ps(b0 + i * 16), x1 = _mm512_loadu_ps(b1 + i * 16);
    const float* a = ap + i * 12;
    for (int r = 0; r < 12; ++r) {
      const __m512 v = _mm512_set1_ps(a[r]);
      acc[r][0] = _mm512_fmadd_ps(v, x0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(v, x1, acc[r][1]);
    }
  }
  for (int r = 0; r < 12; ++r) {
    _mm512_storeu_ps(c + r * ldc, acc[r][0]);
    _mm512_storeu_ps(c + r * ldc + 16, acc[r][1]);
  }
}
double tile_flow(int64_t k, int64_t blocks, int64_t tiles, int64_t gb, int64_t ct) {
  const int64_t n = tiles * 32, m = blocks * 12;
  float* a = (float*)aligned_alloc(64, m * k * 4);
  float* b = (float*)aligned_alloc(64, n * k * 4);
  float* c = (float*)aligned_alloc(64, m * n * 4);
  for (int64_t i = 0; i < m * k; ++i) a[i] = 1e-3f * (i % 7);
  for (int64_t i = 0; i < n * k; ++i) b[i] = 1e-3f * (i % 5);
  for (int64_t i = 0; i < m * n; ++i) c[i] = 0.0f;
  double best = 1e30;
  for (int rep = 0; rep < 5; ++rep) {
    const double t0 = cpu_now();
    for (int64_t g0 = 0; g0 < blocks; g0 += gb)
      for (int64_t t0 = 0; t0 < tiles; t0 += ct)
        for (int64_t bl = g0; bl < blocks && bl < g0 + gb; ++bl)
          for (int64_t t = t0; t < tiles && t < t0 + ct; ++t)
            tile(a + bl * 12 * k, b + 2 * t * k * 16, b + (2 * t + 1) * k * 16, k,
                 c + bl * 12 * n + t * 32, n);
    const double dt = cpu_now() - t0;
    if (dt < best) best = dt;
  }
  free(a); free(b); free(c);
  return (double)m * n * k / best / 1e9;
}
"""


def _peak_lib(folder: str):
    src, so = os.path.join(folder, "peak.c"), os.path.join(folder, "peak.so")
    if not os.path.exists(so):
        with open(src, "w") as f:
            f.write(PEAK_C)
        subprocess.run(["gcc", "-O3", "-shared", "-fPIC", src, "-o", so], check=True)
    lib = ctypes.CDLL(so)
    lib.fma_peak_cpu.argtypes, lib.fma_peak_cpu.restype = [ctypes.c_int64], ctypes.c_double
    lib.tile_flow.argtypes, lib.tile_flow.restype = [ctypes.c_int64] * 5, ctypes.c_double
    return lib


def fma_peak(folder: str, iters: int = 20_000_000) -> float:
    """Measured 512-bit FMA throughput of one core, GMAC per second of CPU time (the best of
    5: CPU time, so other processes on the machine do not count)."""
    lib = _peak_lib(folder)
    return max(lib.fma_peak_cpu(iters) for _ in range(5))


def tile_ceiling(folder: str, m: int, k: int, n: int) -> float:
    """GMAC/s (CPU time, 1 thread) of the register tile alone on about this product, in the
    kernel's default group / chunk order (14 blocks: 256 KiB of packed rows at k = 384;
    ~256 KiB of panels): what the kernel would reach with free packing and write-back."""
    chunk = max(1, 256 * 1024 // (k * 4) // 32)
    group = max(1, 256 * 1024 // (12 * k * 4))
    return _peak_lib(folder).tile_flow(k, m // 12, n // 32, group, chunk)


def kernel_library(folder: str):
    """(edgecc_x86_linear, ctypes handle) of ``x86_attention``'s kernels linked alone."""
    import tvm_ffi

    from edgecc.targets.tvm import x86_attention, x86_int8
    from edgecc.targets.tvm.x86_attention_source import LINEAR, SOURCE

    obj = x86_int8.compiled_object(source=SOURCE, cache=x86_attention.CACHE)
    so = os.path.join(folder, "attn.so")
    subprocess.run([os.environ.get("CXX", "g++"), "-shared", obj, "-o", so], check=True)
    return tvm_ffi.load_module(so)[LINEAR], ctypes.CDLL(so)


def pack_panels(w):
    """``W[K, N]`` -> panels ``[ceil(N/16), K, 16]``, zero-padded (``x86_fp32.pack_panels``)."""
    import numpy as np

    k, n = w.shape
    n16 = -(-n // 16) * 16
    padded = np.zeros((k, n16), np.float32)
    padded[:, :n] = w
    return np.ascontiguousarray(padded.reshape(k, n16 // 16, 16).transpose(1, 0, 2))


def shape_call(linear, m, k, n, gelu, residual, seed=0):
    """A zero-argument call of the linear on random data, and its output tensor."""
    import numpy as np
    import tvm

    rng = np.random.default_rng(seed)
    x = rng.normal(size=(m, k)).astype(np.float32)
    w = (rng.normal(size=(k, n)) / np.sqrt(k)).astype(np.float32)
    args = [x, pack_panels(w), rng.normal(size=n).astype(np.float32),
            np.array([m, k, n, 1 if gelu else 0], np.int64),
            np.array([-np.inf, np.inf, 0.7071067811865476, 0.0], np.float32)]
    if residual:
        args.append(rng.normal(size=(m, n)).astype(np.float32))
    t = [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in args]
    out = tvm.runtime.tensor(np.zeros((m, n), np.float32))
    return (lambda: linear(*t, out)), out


def with_knobs(fn, lib, values: dict[str, int]):
    """``fn`` with the library's int64 knobs set to ``values`` for the call."""
    vars_ = {k: ctypes.c_int64.in_dll(lib, k) for k in values}

    def run():
        old = {k: v.value for k, v in vars_.items()}
        for k, v in vars_.items():
            v.value = values[k]
        try:
            return fn()
        finally:
            for k, v in vars_.items():
                v.value = old[k]
    return run


def timed(fns: dict, repeats: int, rounds: int, clock=time.perf_counter
          ) -> dict[str, list[float]]:
    """Per-round median seconds (of ``clock``) of each callable, the callables interleaved in
    each round."""
    import statistics

    times = {k: [] for k in fns}
    best = {}
    for fn in fns.values():
        fn()
    for _ in range(rounds):
        for key, fn in fns.items():
            ts = []
            for _ in range(repeats):
                t0 = clock()
                fn()
                ts.append(clock() - t0)
            times[key].append(statistics.median(ts))
            best[key] = min([best.get(key, 1e9), *ts])
    times["best"] = best
    return times


def main() -> int:
    import statistics

    import numpy as np

    import tvm  # noqa: F401 - registers the runtime functions use_threads calls

    from edgecc.targets.tvm.runner import use_threads

    ap = argparse.ArgumentParser()
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--knob", action="append", default=[],
                    help="NAME=VALUE[,NAME=VALUE]: an extra column with those int64 knobs")
    ap.add_argument("--shapes", default=",".join(MODEL))
    ap.add_argument("--process-cpu", action="store_true",
                    help="2+ threads: the process's CPU time (every thread's) per batch of "
                         "--repeats calls against one core's peak: what the work costs the "
                         "threads, waits for a loaded machine's other processes not counted")
    args = ap.parse_args()
    use_threads(2)
    table = {"load_before": os.getloadavg(), "rows": []}
    with tempfile.TemporaryDirectory() as d:
        linear, lib = kernel_library(d)
        pool = ctypes.c_int32.in_dll(lib, "edgecc_pool_threads")
        for threads in [int(t) for t in args.threads.split(",")]:
            core = fma_peak(d)  # one core's, per CPU second
            # 1 thread: the calling thread's CPU time (the pool runs the job inline; other
            # processes do not count); 2+: the wall clock against threads x one core's peak
            # (the process's CPU time lags by up to a tick for the workers: not usable), so
            # only as good as the machine is quiet
            # --process-cpu: batches of --repeats calls (the tick the workers' CPU time lags
            # by spread over the batch), the summed CPU time against one core's peak
            batch = threads > 1 and args.process_cpu
            clock = time.thread_time if threads == 1 else \
                time.process_time if batch else time.perf_counter
            peak = core if batch else core * threads
            what = "CPU time" if threads == 1 else "process CPU time" if batch else "wall clock"
            print(f"{threads} thread(s), {what}: FMA "
                  f"peak {core:.1f} GMAC/s per core ({core / 16:.2f} GHz at 16 MAC/cycle)",
                  flush=True)
            pool.value = threads
            for name in args.shapes.split(","):
                m, k, n, gelu, res = SHAPES[name]
                call, out = shape_call(linear, m, k, n, gelu, res)
                fns = {"default": call}
                for spec in args.knob:
                    fns[spec] = with_knobs(call, lib, {kv.split("=")[0]: int(kv.split("=")[1])
                                                       for kv in spec.split(",")})
                outs = {}
                for key, fn in fns.items():
                    fn()
                    outs[key] = out.numpy().copy()
                if batch:
                    fns = {key: (lambda f=fn: [f() for _ in range(args.repeats)])
                           for key, fn in fns.items()}
                    times = timed(fns, 1, args.rounds, clock)
                    times = {key: [t / args.repeats for t in ts] for key, ts in times.items()
                             if key != "best"} | {"best": {key: t / args.repeats for key, t
                                                           in times["best"].items()}}
                else:
                    times = timed(fns, args.repeats, args.rounds, clock)
                ms = statistics.median(times["default"]) * 1e3  # CPU ms
                best_gmacs = m * k * n / times["best"]["default"] / 1e9
                gmacs = m * k * n / (ms * 1e-3) / 1e9
                row = {"threads": threads, "clock": what, "shape": name, "mkn": [m, k, n],
                       "ms": ms,
                       "gmacs": gmacs, "peak_gmacs": peak, "of_peak": gmacs / peak,
                       "best_of_peak": best_gmacs / peak}
                ceiling = tile_ceiling(d, m, k, n) if threads == 1 else float("nan")
                row["tile_ceiling_of_peak"] = ceiling / peak
                line = (f"  {name:8s} {m}x{k}x{n}: {ms:7.3f} ms {gmacs:6.1f} GMAC/s "
                        f"{100 * gmacs / peak:5.1f}% of peak (best {100 * best_gmacs / peak:5.1f}%;"
                        f" tile alone {100 * ceiling / peak:5.1f}%)")
                for spec in args.knob:
                    ratios = [a / b for a, b in zip(times[spec], times["default"])]
                    same = bool(np.array_equal(outs[spec], outs["default"]))
                    err = float(np.max(np.abs(outs[spec] - outs["default"]) /
                                       (np.abs(outs["default"]) + 1e-30)))
                    row[spec] = {"ratio_median": statistics.median(ratios),
                                 "ratio_min": min(ratios), "ratio_max": max(ratios),
                                 "bit_identical": same, "max_rel": err}
                    line += (f" | {spec}: {statistics.median(ratios):.3f}x "
                             f"[{min(ratios):.3f}-{max(ratios):.3f}] same={same}")
                print(line, flush=True)
                table["rows"].append(row)
        pool.value = 0
    table["load_after"] = os.getloadavg()
    out = os.path.join(ROOT, "bench", "results", "x86_linear_peak.json")
    with open(out, "w") as f:
        json.dump(table, f, indent=1)
    print(f"load {table['load_before'][0]:.1f} -> {table['load_after'][0]:.1f}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
