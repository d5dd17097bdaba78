"""C++ source of the x86 weight-only kernels (``x86_wonly``): ``y = x · dequant(W)ᵀ + b``
with float32 activations (or bfloat16 ones, below) and 4-bit or 8-bit weights that stay
packed in memory and are dequantized in registers.

AVX512_BF16 prefill (namespace ``bf16``; meta[11] allows it, ``edgecc_x86_wonly_bf16``
turns it off, isa 4 pins it): x is converted once per call to bf16 pairs (vcvtne2ps2bf16,
a pool job of 16-row blocks, into the caller thread's buffer); each panel's q - z become bf16
pairs per column (the float32 top halves: integers of at most 256 are exact) in the thread's
panel buffer; a 6 x 32 micro-kernel runs vdpbf16ps into per-group sums (12 zmm) and adds them
times the group scale into 12 float32 sums (6 rows: 24 sums + 2 weights + 1 broadcast of 32
zmm). Offsets (Q4_1) and odd group sizes keep the float32 path. Zen 4, 1 thread CPU time,
interleaved, load ~3.7, 2026-12-01: 0.47-0.57x of ``edgecc_x86_sgemm`` on every BERT /
GPT-2 / MiniLM linear (172-198 GFLOP/s against its 86-107); MiniLM w4a16 whole model
0.59x of fp32 (the float32-activation path: 1.06x). Tried: 7-row tiles (31 zmm), no
gain (194-200 vs 199-208 GFLOP/s). Measured on Zen 4 only: where vdpbf16ps is no
faster than two FMAs (Intel cores with two FMA ports) the knob turns it off.

AMX-BF16 prefill (namespace ``amx``, Intel Sapphire Rapids+; meta[11] allows it as for bf16,
``edgecc_x86_wonly_amx`` turns it off, isa 5 pins it): 16+ rows and K a multiple of 32. Each
pool task dequantizes its panel's weights in float32 (``avx512::weights``) and splits each
into hi = bf16(w), lo = bf16(w - hi), in B-tile layout; tiles of 32 rows x 32 columns run
``tdpbf16ps`` with x's bf16 rows (the same buffer as above) against hi, then lo, over whole
32-k steps (scales, zero points and offsets are folded into the weights, so every group size
and Q4_1 fit). Intel Xeon (KVM, 2 vCPUs), 1 thread CPU time, interleaved, s25: 0.42-0.56x of
``edgecc_x86_sgemm`` on every BERT / GPT-2 / MiniLM linear, where the vdpbf16ps path reads
1.60-1.78x (this core's two FMA ports run the float32 GEMM at vdpbf16ps's rate); hi only
(no lo) was 0.28-0.39x — the lo tiles cost ~1.3x for weights within 2^-16 instead of 2^-8.
MiniLM w4a16 whole model (2 threads): 0.62x of fp32 (vdpbf16ps: 1.69x).

One fixed text (shapes and modes come in an int64 ``meta`` tensor), compiled once into a
static library (``x86_int8.compiled_object``'s cache, folder ``x86_wonly``). The body is
written once (``_BODY``) and instantiated three times — AVX-512F, AVX2 + FMA, and plain C++
— each in its own namespace under its own ``#pragma GCC target``; the entry point picks
one at run time (``__builtin_cpu_supports``), so the library runs on any x86-64.

Weight layout (packed at compile time, ``x86_wonly.pack``): output channels in panels of
32, a panel's 32 codes of one input index ``k`` together::

    int4: codes uint8 [N/32][K][16]   byte j = u[32p + j, k] | u[32p + 16 + j, k] << 4
    int8: codes int8  [N/32][K][32]
    scale, offset: float32 [N/32][K/G][32], or float16 where every value is one exactly
    (GGUF's d and m are): the kernel widens them with ``vcvtph2ps``
    zero: int8 [N/32][K/G][32], or a single float32 when uniform (symmetric)
    u are unsigned nibbles (int4 codes + 8, zero point + 8: the same differences q - z)

Per input index the 32 codes widen to int32 lanes (``vpmovzxbd`` / ``vpmovsxbd``; the high
nibbles by one shift), convert to float and become ``w = (q - z) · s [+ o]`` — computed
as ``edgecc.dequantize`` / ``dequantize_offset`` compute them (one subtraction of integers
held exactly in float, one rounded product, one rounded sum; no contraction), so each
weight is bit-identical to the float32 reference. Then:

    M <= SMALL_M (decode GEMV):  acc[m][32] += w · x[m, k]   straight from the registers
    M >  SMALL_M (prefill):      the panel's K x 32 weights are dequantized once into a
                                 per-thread buffer (L2), then an MR x 32 FMA micro-kernel
                                 runs every MR rows of x over it

Speed (``bench/x86_wonly.py --gemm``, against edgecc's fp32 GEMM ``edgecc_x86_sgemm`` on the
same dequantized weights, 1 thread CPU time, interleaved, load ~4, 2026-11-30): the prefill
path runs the fp32 GEMM's micro-kernel (12 x 32, 24 zmm sums) and is 0.92-1.00x of it on
every linear of BERT / GPT-2 (M = 128 tokens) and MiniLM (M = 1024), outputs bit-identical
(both sum k in order with one FMA rounding): the panel's dequantization is paid once per
M rows. That micro-kernel runs at about the FMA peak (M = 128: 157-173 GFLOP/s on a
2.6 GHz core, 2 x 16-lane FMA a cycle = 166), so no float32 kernel is much faster; tried
and not kept (no gain beyond the noise): K in blocks of 128-512 with partial sums reloaded
(1.02-1.27x on MiniLM), rows in L2-sized blocks with the panel dequantized per block,
write-back from the registers. What w4a16 wins is the weight traffic: whole models with the
same kernels around them, BERT 0.67x and GPT-2 0.75x of fp32 (1 thread CPU time).

On AMD Zen 4 (512-bit ops double-pumped: one 512-bit FMA a cycle, ~115 GFLOP/s on its
~3.6 GHz core, measured by 12 independent vfmadd231ps chains) the same holds, at half of
SPR's peak a cycle: under load (~3), 1 thread CPU time, interleaved, 2026-11-30, the prefill
path ran 0.92-1.02x of ``edgecc_x86_sgemm`` on every linear above at 92-103 GFLOP/s, both,
outputs bit-identical; the 12 x 32 micro-kernel alone on an L1-resident panel runs at
106-114 GFLOP/s (~95% of peak). The panel's dequantization (vpmovzxbd, vpand / vpsrld,
2 vcvtdq2ps, 2 vsubps, 2 vmulps per input index) costs 0.21 cycles a weight on Zen 4 (C probe,
K = 1024 panels into an L1/L2 buffer; a 16-entry vpermps table of q - z instead of the
vcvtdq2ps + vsubps: 0.21 too, same bits) against 8 FMA cycles a weight at M = 128: ~3% of
the work, less at M = 1024, so no unpack variant can buy more than that. Tried
on Zen 4 and not kept: rows in L2-sized blocks with the panel dequantized per block (128 KiB
of x a block: 1.02-1.17x slower; 384 KiB: 0.97-1.07x, noise), the write-back straight
from the registers (0.96-1.02x, noise), FMAs with an embedded {1to16} broadcast of x
instead of one vbroadcastss a row (2.4x slower in a C probe). With both kernels at the FMA
bound, w4a16's lead over fp32 on these compute-bound prefill shapes is only what the cold
float32 weights cost fp32 (GPT-2 whole model, 1 thread: 0.95x); a float32 kernel gets no
faster by unpacking int4 well. Pool items (prefill, M >= 4 x 48): a panel's rows in blocks
of ``edgecc_x86_wonly_rows`` (48, the fp32 GEMM's 4 x 12-row items of one 32-column panel
group), panel-major, each thread dequantizing a panel once per run of its items on it
(fewer rows, e.g. BERT / GPT-2's 128: whole panels, already small items; there a chunk
starting inside a panel dequantized it again, and w4a16 read 1.05 vs 1.04x of fp32 at 1 thread). With
whole panels as items (``edgecc_x86_wonly_rows = 0``, before 2026-11-30 s9) a MiniLM job was
12 items of 0.22 ms (K = 384) or 0.88 ms (K = 1536) at 2 threads, the fp32 GEMM's 264 items of
10-40 us: whichever thread drew the last panel ran alone for up to one item (the two vCPUs
of this shared VM never run at the same speed), in the perf profile the caller's wait at the
end of jobs (edgecc_pool_run) was 3x the fp32 build's. Same bits either way (each row's sums
do not depend on the split), same CPU time at 1 thread (MiniLM's linears 0.97x of fp32 both).
(On an Intel Xeon, quiet, 2 threads pinned, an earlier split of jobs under 32 panels was
1.00-1.03x slower than whole panels, which already ran 1.91-1.96x of one thread there.)
x packed 12 rows interleaved for K % 1024 == 0 (rows 4 KiB apart share an L1 set): 1.02-1.05x
slower on Zen 4 where the in-place read was not slow (its slow spells, 74 vs 102 GFLOP/s at
K = 1024, came and went with what ran before it in the process, for sgemm alike).

Only the summation order differs from ``x @ dequant(W).T + b``: |y - ref| <= 2 γ_{K+1}
(|x| @ |W|ᵀ + |b|), γ_n = n u / (1 - n u), u = 2^-24 (``x86_wonly.ERROR_BOUND``).
Panels are spread over TVM's thread pool (``TVMBackendParallelLaunch``, as ``x86_int8``).
"""

from edgecc.targets.tvm.x86_kernel_ffi import ffi_prelude

SYMBOLS = ("edgecc_x86_wlinear",)

_HEAD = r"""
// edgecc x86 weight-only kernels (targets/tvm/x86_wonly_source.py)
#pragma GCC optimize("O3", "fp-contract=off")
#include <tvm/ffi/c_api.h>
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

""" + ffi_prelude(1 << 16) + r"""

extern "C" {
// rows of x per prefill pool item (M >= 4 x this): a job is (panel, row block) items, as the
// fp32 GEMM's (48-row blocks of a 32-column panel group), so the two threads' last items are
// small; 0 (or M < 4 x this): whole panels (one item per panel of 32 outputs, every row). Weak: a bench or
// test moves it at run time (ctypes) to A/B the split in one process.
__attribute__((weak)) int64_t edgecc_x86_wonly_rows = 48;
// calls whose prefill job was split into row blocks (tests: the path is taken)
__attribute__((weak)) int64_t edgecc_x86_wonly_row_items = 0;
// prefill tiles prefetch their output lines for writing before their K loop (0: not)
__attribute__((weak)) int64_t edgecc_x86_wonly_prefetch = 1;
// prefill (M > 4) on CPUs with AVX512_BF16 rounds x to bfloat16 and runs vdpbf16ps (2x the
// multiply-adds of an FMA an instruction) where the weights' q - z are exact in bf16; 0: the
// float32-activation path everywhere (isa 0 only; isa 4 pins the bf16 path)
__attribute__((weak)) int64_t edgecc_x86_wonly_bf16 = 1;
// calls that ran the bf16 prefill path (tests: the path is taken, no silent fallback)
__attribute__((weak)) int64_t edgecc_x86_wonly_bf16_calls = 0;
// prefill (M >= 16, K % 32 == 0) where bf16 activations are allowed and the CPU has AMX-BF16
// (and the OS grants the tile state) runs on AMX tiles (tdpbf16ps); 0: the vdpbf16ps path
__attribute__((weak)) int64_t edgecc_x86_wonly_amx = 1;
// rows of x per AMX pool item (rounded up to 32: two 16-row tiles)
__attribute__((weak)) int64_t edgecc_x86_wonly_amx_rows = 64;
// calls that ran the AMX prefill (tests: the path is taken, no silent fallback)
__attribute__((weak)) int64_t edgecc_x86_wonly_amx_calls = 0;
}

namespace {

struct Args {
  const float* x; const uint8_t* codes; const void* s; const void* z; const void* o;
  const float* bias; float* out;
  int64_t M, K, N, G, NG, bits, zpg, hasoff, hasbias, sf16, of16;
  int64_t rb, nrb;  // prefill pool items: rows per item, items per panel (M > SMALL_M)
  const uint32_t* xb; int64_t KP;  // bf16 path: x as bf16 pairs [M][KP], KP = ceil(K / 2)
};

// IEEE half -> float (exact), for the plain C++ path
static inline float half_to_float(uint16_t h) {
  const uint32_t sign = (uint32_t)(h & 0x8000) << 16, e = (h >> 10) & 31, m = h & 1023;
  uint32_t bits;
  if (e == 31) {
    bits = sign | 0x7F800000u | (m << 13);
  } else if (e) {
    bits = sign | ((e + 112) << 23) | (m << 13);
  } else if (m) {  // subnormal: m * 2^-24
    const float v = (float)m * 5.9604644775390625e-08f;
    memcpy(&bits, &v, 4);
    bits |= sign;
  } else {
    bits = sign;
  }
  float f;
  memcpy(&f, &bits, 4);
  return f;
}

// element i of a float32 or float16 parameter array
static inline float param(const void* p, int64_t i, int64_t f16) {
  return f16 ? half_to_float(static_cast<const uint16_t*>(p)[i]) : static_cast<const float*>(p)[i];
}

// a per-thread buffer that grows (TVM's pool threads live as long as the process)
static float* panel_buffer(int64_t floats) {
  static thread_local float* buf = 0;
  static thread_local int64_t cap = 0;
  if (floats > cap) {
    free(buf);
    cap = floats;
    buf = static_cast<float*>(aligned_alloc(64, ((floats * 4 + 63) / 64) * 64));
  }
  return buf;
}

// one output row segment of panel p: out[m, 32p + j] = acc[j] (+ bias) for the valid j
static inline void write_row(const Args& a, int64_t m, int64_t p, const float* acc) {
  float* o = a.out + m * a.N + p * 32;
  const int64_t n = a.N - p * 32 < 32 ? a.N - p * 32 : 32;
  if (a.hasbias) {
    const float* b = a.bias + p * 32;
    for (int64_t j = 0; j < n; ++j) o[j] = acc[j] + b[j];
  } else {
    for (int64_t j = 0; j < n; ++j) o[j] = acc[j];
  }
}
"""

# The kernel body, instantiated per ISA. V: the vector type, NV vectors per 32 columns;
# LOAD / STORE / SET1 / ZERO / ADD / SUB / MUL / FMA(a, b, c) = a * b + c; CODES(a, p, k, q)
# writes the 32 codes of panel p at input index k as floats into q[NV].
_BODY = r"""
// the 32 weights of panel p at input index k, given the group's s, z, o vectors
static inline void weights(const Args& a, int64_t p, int64_t k, const V* s, const V* z,
                           const V* o, V* w) {
  V q[NV];
  CODES(a, p, k, q);
  for (int v = 0; v < NV; ++v) {
    w[v] = MUL(SUB(q[v], z[v]), s[v]);
    if (a.hasoff) w[v] = ADD(w[v], o[v]);
  }
}

static inline void group_params(const Args& a, int64_t p, int64_t g, V* s, V* z, V* o) {
  const int64_t at = (p * a.NG + g) * 32;
  for (int v = 0; v < NV; ++v) {
    s[v] = PARAM(a.s, at + v * LANES, a.sf16);
    z[v] = a.zpg ? ZEROS(static_cast<const int8_t*>(a.z) + at + v * LANES)
                 : SET1(static_cast<const float*>(a.z)[0]);
    o[v] = a.hasoff ? PARAM(a.o, at + v * LANES, a.of16) : ZERO();
  }
}

// decode: every row of x against the weights straight from the registers
template <int MM>
static void small_m(const Args& a, int64_t p0, int64_t p1) {
  for (int64_t p = p0; p < p1; ++p) {
    V acc[MM][NV];
    for (int m = 0; m < MM; ++m)
      for (int v = 0; v < NV; ++v) acc[m][v] = ZERO();
    for (int64_t g = 0; g < a.NG; ++g) {
      V s[NV], z[NV], o[NV];
      group_params(a, p, g, s, z, o);
      const int64_t k1 = (g + 1) * a.G < a.K ? (g + 1) * a.G : a.K;
      for (int64_t k = g * a.G; k < k1; ++k) {
        V w[NV];
        weights(a, p, k, s, z, o, w);
        for (int m = 0; m < MM; ++m) {
          const V xb = SET1(a.x[m * a.K + k]);
          for (int v = 0; v < NV; ++v) acc[m][v] = FMA(w[v], xb, acc[m][v]);
        }
      }
    }
    alignas(64) float tile[32];
    for (int m = 0; m < MM; ++m) {
      for (int v = 0; v < NV; ++v) STORE(tile + v * LANES, acc[m][v]);
      write_row(a, m, p, tile);
    }
  }
}

// prefill: rows m0 .. m0 + R of x against a dequantized panel buf[K][32]
template <int R>
static inline void micro(const Args& a, const float* buf, int64_t m0, int64_t p) {
  V acc[R][NV];
  for (int r = 0; r < R; ++r)
    for (int v = 0; v < NV; ++v) acc[r][v] = ZERO();
  const float* x = a.x + m0 * a.K;
  for (int64_t k = 0; k < a.K; ++k) {
    V w[NV];
    for (int v = 0; v < NV; ++v) w[v] = LOAD(buf + k * 32 + v * LANES);
    for (int r = 0; r < R; ++r) {
      const V xb = SET1(x[r * a.K + k]);
      for (int v = 0; v < NV; ++v) acc[r][v] = FMA(w[v], xb, acc[r][v]);
    }
  }
  alignas(64) float tile[32];
  for (int r = 0; r < R; ++r) {
    for (int v = 0; v < NV; ++v) STORE(tile + v * LANES, acc[r][v]);
    write_row(a, m0 + r, p, tile);
  }
}

// rows m0 .. m0 + R of x against panel p, the output's lines asked for (for writing) first:
// they arrive while the K loop runs, not at the write-back (its stores missed the caches:
// ~4% of the kernel's samples in a MiniLM perf profile). Bit-identical. 1 thread CPU time,
// interleaved, Zen 4 under load: MiniLM q,k,v,o 0.95-0.96x, FFN up 0.96-0.99x, FFN down
// 0.99-1.00x of no prefetch; prefetching the next tile's x rows too: no gain (0.99-1.01x).
template <int R>
static inline void tile(const Args& a, const float* buf, int64_t m0, int64_t p) {
  if (edgecc_x86_wonly_prefetch) {
    const int64_t n = a.N - p * 32 < 32 ? a.N - p * 32 : 32;
    for (int r = 0; r < R; ++r) {
      const float* o = a.out + (m0 + r) * a.N + p * 32;
      __builtin_prefetch(o, 1, 3);
      __builtin_prefetch(o + n - 1, 1, 3);
    }
  }
  micro<R>(a, buf, m0, p);
}

template <int R>
static void micro_tail(const Args& a, const float* buf, int64_t m0, int64_t p, int64_t left) {
  if constexpr (R > 1) {
    if (left < R) return micro_tail<R - 1>(a, buf, m0, p, left);
  }
  tile<R>(a, buf, m0, p);
}

// pool items i0 .. i1 of (panel i / nrb, rows rb * (i % nrb) ..), panel-major: a run of one
// panel's items dequantizes it once into the thread's buffer (a chunk of the pool's items is
// consecutive, so a panel is dequantized again only where a chunk starts: K x 32 weights,
// ~0.2 cycles each, against rb x K x 32 / 16 FMA cycles)
static void large_m(const Args& a, int64_t i0, int64_t i1) {
  float* buf = panel_buffer(a.K * 32);
  int64_t have = -1;  // the panel in buf
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t p = i / a.nrb, r0 = (i % a.nrb) * a.rb;
    const int64_t r1 = r0 + a.rb < a.M ? r0 + a.rb : a.M;
    if (p != have) {
      for (int64_t g = 0; g < a.NG; ++g) {
        V s[NV], z[NV], o[NV];
        group_params(a, p, g, s, z, o);
        const int64_t k1 = (g + 1) * a.G < a.K ? (g + 1) * a.G : a.K;
        for (int64_t k = g * a.G; k < k1; ++k) {
          V w[NV];
          weights(a, p, k, s, z, o, w);
          for (int v = 0; v < NV; ++v) STORE(buf + k * 32 + v * LANES, w[v]);
        }
      }
      have = p;
    }
    int64_t m = r0;
    for (; m + MR <= r1; m += MR) tile<MR>(a, buf, m, p);
    if (m < r1) micro_tail<MR - 1>(a, buf, m, p, r1 - m);
  }
}

// items i0 .. i1: panels (decode, M <= SMALL_M) or (panel, row block) pairs (large_m)
static void run(const Args& a, int64_t p0, int64_t p1) {
  if (a.M == 1) return small_m<1>(a, p0, p1);
  if (a.M == 2) return small_m<2>(a, p0, p1);
  if constexpr (SMALL_M >= 4) {
    if (a.M == 3) return small_m<3>(a, p0, p1);
    if (a.M == 4) return small_m<4>(a, p0, p1);
  }
  large_m(a, p0, p1);
}
"""

_AVX512 = r"""
#pragma GCC push_options
#pragma GCC target("avx512f,avx2,fma,f16c,prfchw")
namespace avx512 {
typedef __m512 V;
constexpr int NV = 2, LANES = 16, MR = 12, SMALL_M = 4;
#define LOAD(p) _mm512_loadu_ps(p)
#define STORE(p, v) _mm512_store_ps(p, v)
#define SET1(x) _mm512_set1_ps(x)
#define ZERO() _mm512_setzero_ps()
#define ADD(a, b) _mm512_add_ps(a, b)
#define SUB(a, b) _mm512_sub_ps(a, b)
#define MUL(a, b) _mm512_mul_ps(a, b)
#define FMA(a, b, c) _mm512_fmadd_ps(a, b, c)
// 16 float32 or float16 parameters; 16 int8 zero points as floats
static inline V PARAM(const void* p, int64_t i, int64_t f16) {
  return f16 ? _mm512_cvtph_ps(_mm256_loadu_si256(
                   reinterpret_cast<const __m256i*>(static_cast<const uint16_t*>(p) + i)))
             : _mm512_loadu_ps(static_cast<const float*>(p) + i);
}
static inline V ZEROS(const int8_t* z) {
  return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
      _mm_loadu_si128(reinterpret_cast<const __m128i*>(z))));
}
static inline void CODES(const Args& a, int64_t p, int64_t k, V* q) {
  if (a.bits == 4) {
    const __m512i v = _mm512_cvtepu8_epi32(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(a.codes + (p * a.K + k) * 16)));
    q[0] = _mm512_cvtepi32_ps(_mm512_and_si512(v, _mm512_set1_epi32(15)));
    q[1] = _mm512_cvtepi32_ps(_mm512_srli_epi32(v, 4));
  } else {
    const int8_t* c = reinterpret_cast<const int8_t*>(a.codes) + (p * a.K + k) * 32;
    q[0] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(c))));
    q[1] = _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(c + 16))));
  }
}
""" + _BODY + r"""
#undef LOAD
#undef STORE
#undef SET1
#undef ZERO
#undef ADD
#undef SUB
#undef MUL
#undef FMA
}  // namespace avx512
#pragma GCC pop_options
"""

_BF16 = r"""
// AVX512_BF16 prefill: y = sum_g s_g * (sum_{k in g} bf16(x_k) * (q_k - z_g)) [+ bias]
// q - z (integers of at most 256 in magnitude) are exact in bf16; x is rounded to bf16 (RNE,
// vcvtne2ps2bf16) once per call; each vdpbf16ps adds two exact bf16 products into a float32
// sum (32 multiply-adds, an FMA's 16); the group scale multiplies each group's sums in
// float32. Weights with an offset (Q4_1) or odd groups keep the float32 path.
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512bf16,avx2,fma,f16c,prfchw")
namespace bf16 {
// rows per tile: 2 x MR sums + 2 x MR group sums + 2 weights + 1 broadcast of 32 zmm
constexpr int MR = 6;

// whether the path applies: no offset, groups of whole pairs, every q - z exact in bf16
static bool eligible(const Args& a) {
  if (a.hasoff || a.M <= 4 || (a.NG > 1 && a.G % 2)) return false;
  if (a.zpg) return true;  // int8 zero points: |q - z| <= 255
  const float z = static_cast<const float*>(a.z)[0];
  return z == (float)(int)z && z >= -128 && z <= 128;
}

// rows r0 .. r1 of x as bf16 pairs: xb[m][j] = bf16(x[m, 2j]) | bf16(x[m, 2j + 1]) << 16
static void convert_rows(const Args& a, uint32_t* xb, int64_t r0, int64_t r1) {
  for (int64_t m = r0; m < r1; ++m) {
    const float* x = a.x + m * a.K;
    uint32_t* d = xb + m * a.KP;
    int64_t k = 0;
    for (; k + 32 <= a.K; k += 32) {
      const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_loadu_ps(x + k + 16),
                                             _mm512_loadu_ps(x + k));
      _mm512_storeu_si512(d + k / 2, (__m512i)v);
    }
    if (k < a.K) {  // the last K % 32 values, zeros after them (an odd K's last pair)
      const int64_t n = a.K - k;
      const __mmask16 lo = (__mmask16)((n >= 16 ? 0xFFFFu : (1u << n) - 1));
      const __mmask16 hi = (__mmask16)(n > 16 ? (1u << (n - 16)) - 1 : 0);
      const __m512bh v = _mm512_cvtne2ps_pbh(_mm512_maskz_loadu_ps(hi, x + k + 16),
                                             _mm512_maskz_loadu_ps(lo, x + k));
      _mm512_mask_storeu_epi32(d + k / 2, (__mmask16)((1u << ((n + 1) / 2)) - 1), (__m512i)v);
    }
  }
}

// panel p's q - z as bf16 pairs: wb[j][c] = bf16(d[k = 2j][c]) | bf16(d[2j + 1][c]) << 16
static void panel(const Args& a, int64_t p, uint32_t* wb) {
  const __m512i high = _mm512_set1_epi32((int)0xFFFF0000u);
  for (int64_t g = 0; g < a.NG; ++g) {
    __m512 s[2], z[2], o[2];
    avx512::group_params(a, p, g, s, z, o);
    const int64_t k1 = (g + 1) * a.G < a.K ? (g + 1) * a.G : a.K;
    for (int64_t k = g * a.G; k < k1; k += 2) {
      __m512 q0[2], q1[2] = {_mm512_setzero_ps(), _mm512_setzero_ps()};
      avx512::CODES(a, p, k, q0);
      const bool two = k + 1 < k1;
      if (two) avx512::CODES(a, p, k + 1, q1);
      for (int v = 0; v < 2; ++v) {  // integers: their float32's top half is their bf16
        const __m512i lo = _mm512_srli_epi32(_mm512_castps_si512(_mm512_sub_ps(q0[v], z[v])), 16);
        const __m512i hi = two ? _mm512_and_si512(
            _mm512_castps_si512(_mm512_sub_ps(q1[v], z[v])), high) : _mm512_setzero_si512();
        _mm512_store_si512(wb + (k / 2) * 32 + v * 16, _mm512_or_si512(lo, hi));
      }
    }
  }
}

template <int R>
static inline void micro(const Args& a, const uint32_t* wb, int64_t m0, int64_t p) {
  if (edgecc_x86_wonly_prefetch) {
    const int64_t n = a.N - p * 32 < 32 ? a.N - p * 32 : 32;
    for (int r = 0; r < R; ++r) {
      const float* o = a.out + (m0 + r) * a.N + p * 32;
      __builtin_prefetch(o, 1, 3);
      __builtin_prefetch(o + n - 1, 1, 3);
    }
  }
  __m512 acc[R][2];
  for (int r = 0; r < R; ++r) acc[r][0] = acc[r][1] = _mm512_setzero_ps();
  const uint32_t* x = a.xb + m0 * a.KP;
  const int64_t gp = a.NG > 1 ? a.G / 2 : a.KP;  // pairs per group
  for (int64_t g = 0; g < a.NG; ++g) {
    __m512 t[R][2];
    for (int r = 0; r < R; ++r) t[r][0] = t[r][1] = _mm512_setzero_ps();
    const int64_t j1 = (g + 1) * gp < a.KP ? (g + 1) * gp : a.KP;
    for (int64_t j = g * gp; j < j1; ++j) {
      const __m512bh w0 = (__m512bh)_mm512_load_si512(wb + j * 32);
      const __m512bh w1 = (__m512bh)_mm512_load_si512(wb + j * 32 + 16);
      for (int r = 0; r < R; ++r) {
        const __m512bh xb = (__m512bh)_mm512_set1_epi32((int)x[r * a.KP + j]);
        t[r][0] = _mm512_dpbf16_ps(t[r][0], xb, w0);
        t[r][1] = _mm512_dpbf16_ps(t[r][1], xb, w1);
      }
    }
    const int64_t at = (p * a.NG + g) * 32;
    const __m512 s0 = avx512::PARAM(a.s, at, a.sf16), s1 = avx512::PARAM(a.s, at + 16, a.sf16);
    for (int r = 0; r < R; ++r) {
      acc[r][0] = _mm512_fmadd_ps(t[r][0], s0, acc[r][0]);
      acc[r][1] = _mm512_fmadd_ps(t[r][1], s1, acc[r][1]);
    }
  }
  alignas(64) float tile[32];
  for (int r = 0; r < R; ++r) {
    _mm512_store_ps(tile, acc[r][0]);
    _mm512_store_ps(tile + 16, acc[r][1]);
    write_row(a, m0 + r, p, tile);
  }
}

template <int R>
static void micro_tail(const Args& a, const uint32_t* wb, int64_t m0, int64_t p, int64_t left) {
  if constexpr (R > 1) {
    if (left < R) return micro_tail<R - 1>(a, wb, m0, p, left);
  }
  micro<R>(a, wb, m0, p);
}

// pool items as avx512::large_m's (panel-major (panel, row block) pairs)
static void run(const Args& a, int64_t i0, int64_t i1) {
  uint32_t* wb = reinterpret_cast<uint32_t*>(panel_buffer(a.KP * 32));
  int64_t have = -1;
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t p = i / a.nrb, r0 = (i % a.nrb) * a.rb;
    const int64_t r1 = r0 + a.rb < a.M ? r0 + a.rb : a.M;
    if (p != have) {
      panel(a, p, wb);
      have = p;
    }
    int64_t m = r0;
    for (; m + MR <= r1; m += MR) micro<MR>(a, wb, m, p);
    if (m < r1) micro_tail<MR - 1>(a, wb, m, p, r1 - m);
  }
}

// the caller thread's x buffer (pool workers read it during the call)
static uint32_t* x_buffer(int64_t words) {
  static thread_local uint32_t* buf = 0;
  static thread_local int64_t cap = 0;
  if (words > cap) {
    free(buf);
    cap = words;
    buf = static_cast<uint32_t*>(aligned_alloc(64, ((words * 4 + 63) / 64) * 64));
  }
  return buf;
}
}  // namespace bf16
#pragma GCC pop_options
"""

_AMX = r"""
// AMX-BF16 prefill (Intel Sapphire Rapids+): y = bf16(x) @ (hi + lo)^T [+ bias], where each
// weight w = (q - z) * s [+ o] is dequantized in float32 as the reference computes it
// (avx512::weights, bit-identical), then split into two bfloat16s, hi = bf16(w) and
// lo = bf16(w - hi) (w - hi is exact in float32; |w - hi - lo| <= 2^-16 |w|), so the group
// scales, zero points and offsets fold into the tiles' weights and every tdpbf16ps runs a
// whole 32-k step: per step and 32 x 32 block, 2 A tiles (x: 2 x 16 rows x 16 bf16 pairs,
// straight from the bf16 x buffer), 2 B tiles hi + 4 tdpbf16ps, 2 B tiles lo + 4 tdpbf16ps
// into 4 float32 C tiles (8 tiles in all). x is rounded to bf16 once per call as the
// vdpbf16ps path does (bf16::convert_rows). Each pool task builds its panels' hi / lo
// weights in its own buffer ([hi, lo][2 column tiles][K / 2 pairs][16 columns] bf16
// pairs: a B tile's 16 x 64-byte rows) once per run of items on a panel.
#if defined(__x86_64__) && !defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 11
#define EDGECC_WONLY_AMX 1
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512bf16,avx2,fma,f16c,prfchw,amx-tile,amx-bf16")
namespace amx {

// CPUID.(7,0):EDX bit 22 AMX-BF16, bit 24 AMX-TILE
static bool cpu() {
  unsigned a, b, c, d;
  asm volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0u), "c"(0u));
  if (a < 7) return false;
  asm volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7u), "c"(0u));
  return ((d >> 22) & 1) && ((d >> 24) & 1);
}

// arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA): Linux >= 5.16 hands a process the
// 8 KB tile state only on request (once per process, for all its threads)
static bool os() {
  long ret;
  asm volatile("syscall" : "=a"(ret) : "a"(158L), "D"(0x1023L), "S"(18L)
               : "rcx", "r11", "memory");
  return ret == 0;
}

// whether the tiles run here (the CPU, AVX512_BF16 for x's conversion, the OS: once)
static bool ready() {
  static const bool ok = [] {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16") && __builtin_cpu_supports("avx512bw") &&
           cpu() && os();
  }();
  return ok;
}

// whether the path applies: at least one 16-row tile of x, whole 32-k steps
static bool eligible(const Args& a) { return a.M >= 16 && a.K % 32 == 0; }

// float32 w (16 lanes) -> w rounded to bf16 (round to nearest even), kept as float32 bits
// with the low half zero (finite w: the integer form of vcvtneps2bf16)
static inline __m512i round_bf16(__m512i w) {
  const __m512i odd = _mm512_and_si512(_mm512_srli_epi32(w, 16), _mm512_set1_epi32(1));
  const __m512i r = _mm512_add_epi32(_mm512_add_epi32(w, _mm512_set1_epi32(0x7FFF)), odd);
  return _mm512_and_si512(r, _mm512_set1_epi32((int)0xFFFF0000u));
}

// panel p's weights as hi / lo bf16 pairs in B-tile layout:
// wb[((h * 2 + t) * KP + j) * 16 + c] = pair (k = 2j, 2j + 1) of column 16t + c (h 0: hi)
static void panel(const Args& a, int64_t p, uint32_t* wb) {
  int64_t have = -1;  // the group whose parameters s, z, o hold
  __m512 s[2], z[2], o[2];
  auto at = [&](int64_t k, __m512* w) {
    const int64_t g = k / a.G;
    if (g != have) {
      avx512::group_params(a, p, g, s, z, o);
      have = g;
    }
    avx512::weights(a, p, k, s, z, o, w);
  };
  const __m512i high = _mm512_set1_epi32((int)0xFFFF0000u);
  for (int64_t k = 0; k < a.K; k += 2) {
    __m512 w0[2], w1[2];
    at(k, w0);
    at(k + 1, w1);
    for (int t = 0; t < 2; ++t) {
      const __m512i h0 = round_bf16(_mm512_castps_si512(w0[t]));
      const __m512i h1 = round_bf16(_mm512_castps_si512(w1[t]));
      const __m512i l0 = round_bf16(_mm512_castps_si512(
          _mm512_sub_ps(w0[t], _mm512_castsi512_ps(h0))));
      const __m512i l1 = round_bf16(_mm512_castps_si512(
          _mm512_sub_ps(w1[t], _mm512_castsi512_ps(h1))));
      const int64_t j = k / 2;
      _mm512_store_si512(wb + (t * a.KP + j) * 16,
                         _mm512_or_si512(_mm512_srli_epi32(h0, 16), _mm512_and_si512(h1, high)));
      _mm512_store_si512(wb + ((2 + t) * a.KP + j) * 16,
                         _mm512_or_si512(_mm512_srli_epi32(l0, 16), _mm512_and_si512(l1, high)));
    }
  }
}

// RT x 16 rows from m0 against panel p's hi / lo weights: C tiles 0..3 = [row tile][column
// tile], A tiles 4, 5, B tiles 6, 7; out[RT * 16][32] float32
template <int RT>
static inline void block(const Args& a, const uint32_t* wb, int64_t m0, float* out) {
  _tile_zero(0);
  _tile_zero(1);
  if (RT == 2) {
    _tile_zero(2);
    _tile_zero(3);
  }
  const uint32_t* x = a.xb + m0 * a.KP;
  const int64_t lda = a.KP * 4, steps = a.KP / 16;
  const uint32_t* hi0 = wb;
  const uint32_t* hi1 = wb + a.KP * 16;
  const uint32_t* lo0 = wb + 2 * a.KP * 16;
  const uint32_t* lo1 = wb + 3 * a.KP * 16;
  for (int64_t s = 0; s < steps; ++s) {
    _tile_loadd(4, x + s * 16, lda);
    if (RT == 2) _tile_loadd(5, x + 16 * a.KP + s * 16, lda);
    _tile_loadd(6, hi0 + s * 256, 64);
    _tile_loadd(7, hi1 + s * 256, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    if (RT == 2) {
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
    }
    _tile_loadd(6, lo0 + s * 256, 64);
    _tile_loadd(7, lo1 + s * 256, 64);
    _tile_dpbf16ps(0, 4, 6);
    _tile_dpbf16ps(1, 4, 7);
    if (RT == 2) {
      _tile_dpbf16ps(2, 5, 6);
      _tile_dpbf16ps(3, 5, 7);
    }
  }
  _tile_stored(0, out, 128);
  _tile_stored(1, out + 16, 128);
  if (RT == 2) {
    _tile_stored(2, out + 16 * 32, 128);
    _tile_stored(3, out + 16 * 32 + 16, 128);
  }
}

struct alignas(64) Config {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// pool items as avx512::large_m's (panel-major (panel, row block) pairs; row blocks start at
// multiples of 32, x's buffer has rows up to a multiple of 32)
static void run(const Args& a, int64_t i0, int64_t i1) {
  Config cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.palette = 1;
  for (int t = 0; t < 8; ++t) {
    cfg.colsb[t] = 64;
    cfg.rows[t] = 16;
  }
  _tile_loadconfig(&cfg);
  uint32_t* wb = reinterpret_cast<uint32_t*>(panel_buffer(4 * a.KP * 16));  // hi / lo
  alignas(64) float out[32 * 32];
  int64_t have = -1;
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t p = i / a.nrb, r0 = (i % a.nrb) * a.rb;
    const int64_t r1 = r0 + a.rb < a.M ? r0 + a.rb : a.M;
    if (p != have) {
      panel(a, p, wb);
      have = p;
    }
    for (int64_t m = r0; m < r1; m += 32) {
      const int64_t n = r1 - m < 32 ? r1 - m : 32;
      if (n > 16) block<2>(a, wb, m, out);
      else block<1>(a, wb, m, out);
      for (int64_t r = 0; r < n; ++r) write_row(a, m + r, p, out + r * 32);
    }
  }
  _tile_release();
}
}  // namespace amx
#pragma GCC pop_options
#else
#define EDGECC_WONLY_AMX 0
#endif
"""

_AVX2 = r"""
#pragma GCC push_options
#pragma GCC target("avx2,fma,f16c")
namespace avx2 {
typedef __m256 V;
constexpr int NV = 4, LANES = 8, MR = 3, SMALL_M = 2;
#define LOAD(p) _mm256_loadu_ps(p)
#define STORE(p, v) _mm256_store_ps(p, v)
#define SET1(x) _mm256_set1_ps(x)
#define ZERO() _mm256_setzero_ps()
#define ADD(a, b) _mm256_add_ps(a, b)
#define SUB(a, b) _mm256_sub_ps(a, b)
#define MUL(a, b) _mm256_mul_ps(a, b)
#define FMA(a, b, c) _mm256_fmadd_ps(a, b, c)
static inline V PARAM(const void* p, int64_t i, int64_t f16) {
  return f16 ? _mm256_cvtph_ps(_mm_loadu_si128(
                   reinterpret_cast<const __m128i*>(static_cast<const uint16_t*>(p) + i)))
             : _mm256_loadu_ps(static_cast<const float*>(p) + i);
}
static inline V ZEROS(const int8_t* z) {
  return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
      _mm_loadl_epi64(reinterpret_cast<const __m128i*>(z))));
}
static inline void CODES(const Args& a, int64_t p, int64_t k, V* q) {
  if (a.bits == 4) {
    const uint8_t* c = a.codes + (p * a.K + k) * 16;
    for (int h = 0; h < 2; ++h) {  // bytes 8h .. 8h+7: columns 8h.. (low), 16+8h.. (high)
      const __m256i v = _mm256_cvtepu8_epi32(
          _mm_loadl_epi64(reinterpret_cast<const __m128i*>(c + 8 * h)));
      q[h] = _mm256_cvtepi32_ps(_mm256_and_si256(v, _mm256_set1_epi32(15)));
      q[2 + h] = _mm256_cvtepi32_ps(_mm256_srli_epi32(v, 4));
    }
  } else {
    const int8_t* c = reinterpret_cast<const int8_t*>(a.codes) + (p * a.K + k) * 32;
    for (int v = 0; v < 4; ++v)
      q[v] = _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(
          _mm_loadl_epi64(reinterpret_cast<const __m128i*>(c + 8 * v))));
  }
}
""" + _BODY + r"""
#undef LOAD
#undef STORE
#undef SET1
#undef ZERO
#undef ADD
#undef SUB
#undef MUL
#undef FMA
}  // namespace avx2
#pragma GCC pop_options
"""

_SCALAR = r"""
namespace scalar {
// the reference loop (no SIMD): w = (q - z) * s [+ o], then a float dot product
static float code(const Args& a, int64_t p, int64_t k, int j) {
  if (a.bits == 4) {
    const uint8_t b = a.codes[(p * a.K + k) * 16 + (j & 15)];
    return (float)(j < 16 ? (b & 15) : (b >> 4));
  }
  return (float)reinterpret_cast<const int8_t*>(a.codes)[(p * a.K + k) * 32 + j];
}
static void run(const Args& a, int64_t i0, int64_t i1) {  // items as large_m's
  for (int64_t i = i0; i < i1; ++i) {
    const int64_t p = i / a.nrb, r0 = (i % a.nrb) * a.rb;
    const int64_t r1 = r0 + a.rb < a.M ? r0 + a.rb : a.M;
    for (int64_t m = r0; m < r1; ++m) {
      float acc[32] = {0};
      for (int64_t k = 0; k < a.K; ++k) {
        const int64_t at = (p * a.NG + k / a.G) * 32;
        for (int j = 0; j < 32; ++j) {
          const float z = a.zpg ? (float)static_cast<const int8_t*>(a.z)[at + j]
                                : static_cast<const float*>(a.z)[0];
          float w = (code(a, p, k, j) - z) * param(a.s, at + j, a.sf16);
          if (a.hasoff) w = w + param(a.o, at + j, a.of16);
          acc[j] = acc[j] + w * a.x[m * a.K + k];
        }
      }
      write_row(a, m, p, acc);
    }
  }
}
}  // namespace scalar
"""

_TAIL = r"""
typedef void (*Kernel)(const Args&, int64_t, int64_t);

// isa: 0 = the best this CPU has, 1 = plain C++, 2 = AVX2, 3 = AVX-512 (float32
// activations), 4 = AVX-512 with the bf16 prefill where it applies, 5 = the AMX-BF16 prefill
// where it applies (else as 4) (tests pin one)
static Kernel pick(int64_t isa) {
  if (isa == 0) {
    __builtin_cpu_init();
    if (__builtin_cpu_supports("avx512f")) return avx512::run;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") &&
        __builtin_cpu_supports("f16c"))
      return avx2::run;
    return scalar::run;
  }
  return isa >= 3 ? avx512::run : (isa == 2 ? avx2::run : scalar::run);
}

// whether this call runs the AMX-BF16 prefill: pinned (isa 5) or the best (isa 0, bf16
// activations allowed as for use_bf16, both knobs on), the tiles run here and the shapes fit
static bool use_amx(const Args& a, int64_t isa, int64_t a16) {
#if EDGECC_WONLY_AMX
  if (isa == 0) {
    if (!a16 || !edgecc_x86_wonly_bf16 || !edgecc_x86_wonly_amx) return false;
  } else if (isa != 5) {
    return false;
  }
  return amx::ready() && amx::eligible(a);
#else
  (void)a; (void)isa; (void)a16;
  return false;
#endif
}

// whether this call runs the bf16 prefill: pinned (isa 4) or the best (isa 0, the build
// allows it (a16: edgecc-quantized weights), knob on, the CPU has AVX512_BF16), and the
// weights fit it (bf16::eligible)
static bool use_bf16(const Args& a, int64_t isa, int64_t a16) {
  if (isa == 0) {
    if (!a16 || !edgecc_x86_wonly_bf16) return false;
    __builtin_cpu_init();
    if (!__builtin_cpu_supports("avx512bf16") || !__builtin_cpu_supports("avx512bw"))
      return false;
  } else if (isa != 4 && isa != 5) {  // isa 5 (AMX pinned) where the tiles do not apply
    return false;
  }
  return bf16::eligible(a);
}

}  // namespace

extern "C" {

// out[M, N] = x[M, K] . dequant(W)[N, K]^T (+ bias)
// args: x, codes, scale, zero, offset, bias, meta, out
// meta = [M (-1: symbolic), K, N, G, bits, zero per group (int8), has offset, has bias, isa,
//         scale float16, offset float16, bf16 activations allowed (isa 0)]
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_wlinear(void*, const TVMFFIAny* args, int32_t num_args,
                                  TVMFFIAny* result) {
  if (num_args != 8) {
    TVMFFIErrorSetRaisedFromCStr("ValueError",
                                 "edgecc x86 weight-only kernel: expected 8 arguments");
    return -1;
  }
  result->type_index = kTVMFFINone; result->zero_padding = 0; result->v_int64 = 0;
  const int64_t* meta = data<int64_t>(args, 6);
  Args a;
  a.x = data<float>(args, 0); a.codes = data<uint8_t>(args, 1); a.s = data<void>(args, 2);
  a.z = data<void>(args, 3); a.o = data<void>(args, 4); a.bias = data<float>(args, 5);
  a.out = data<float>(args, 7);
  const DLTensor* xt = tensor_arg(args);  // M from x: the rows may be a symbolic length
  a.M = 1;
  for (int i = 0; i + 1 < xt->ndim; ++i) a.M *= xt->shape[i];
  a.K = meta[1]; a.N = meta[2]; a.G = meta[3]; a.bits = meta[4];
  a.zpg = meta[5]; a.hasoff = meta[6]; a.hasbias = meta[7]; a.sf16 = meta[9];
  a.of16 = meta[10];
  a.NG = (a.K + a.G - 1) / a.G;
  a.KP = (a.K + 1) / 2;
  a.xb = 0;
  const bool tiles = use_amx(a, meta[8], meta[11]);
  const bool bf = tiles || use_bf16(a, meta[8], meta[11]);  // both read x as bf16 pairs
#if EDGECC_WONLY_AMX
  const Kernel fn = tiles ? amx::run : bf ? bf16::run : pick(meta[8]);
#else
  const Kernel fn = bf ? bf16::run : pick(meta[8]);
#endif
  const int64_t panels = (a.N + 31) / 32;
  // prefill (M > 4: the GEMV paths take M <= 2 / 4) in row blocks of edgecc_x86_wonly_rows
  // where a panel has 4 or more of them (MiniLM's 1024 rows); fewer rows (BERT / GPT-2's
  // 128) keep whole panels: their items are small already, and each chunk that starts inside
  // a panel dequantizes it again (2.6% of a panel's work at M = 128)
  const int64_t rows = edgecc_x86_wonly_rows;
  a.rb = a.M > 4 && rows > 0 && a.M >= 4 * rows ? rows : a.M;
  if (tiles) {  // AMX: row blocks of whole 32-row tile pairs, where there are 2+ of them
    const int64_t r = (edgecc_x86_wonly_amx_rows + 31) / 32 * 32;
    a.rb = r > 0 && a.M >= 2 * r ? r : a.M;
  }
  a.nrb = (a.M + a.rb - 1) / a.rb;
  if (a.nrb > 1) __atomic_fetch_add(&edgecc_x86_wonly_row_items, 1, __ATOMIC_RELAXED);
  if (bf) {  // x to bf16 pairs once (a pool job of row blocks), read by every panel's items
    const int64_t m32 = (a.M + 31) / 32 * 32;  // the AMX tiles read whole 32-row pairs
    uint32_t* xb = bf16::x_buffer(m32 * a.KP);
    if (tiles) memset(xb + a.M * a.KP, 0, (m32 - a.M) * a.KP * 4);
    a.xb = xb;
    parallel_for((a.M + 15) / 16, [&](int64_t b, int64_t e) {
      bf16::convert_rows(a, xb, b * 16, e * 16 < a.M ? e * 16 : a.M);
    }, a.M * a.K);
    __atomic_fetch_add(tiles ? &edgecc_x86_wonly_amx_calls : &edgecc_x86_wonly_bf16_calls, 1,
                       __ATOMIC_RELAXED);
  }
  // jobs under SERIAL_WORK (2^16) weights run serially (waking the pool costs more)
  parallel_for(panels * a.nrb, [&](int64_t b, int64_t e) { fn(a, b, e); },
               a.K * a.N * (a.M < 8 ? 1 : a.M / 8));
  return 0;
}

}  // extern "C"
"""

SOURCE = _HEAD + _AVX512 + _BF16 + _AMX + _AVX2 + _SCALAR + _TAIL
