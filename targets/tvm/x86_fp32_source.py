"""C++ source of the x86 float32 kernels (``x86_fp32``): a register-blocked FMA SGEMM with the
weights packed at compile time and bias + clamp (ReLU / ReLU6 / clip) fused into its
write-back, used for linears / matmuls with a constant right operand, convolutions
(im2col into panels, groups 1) and a direct depthwise convolution.

One fixed text (no per-model code): shapes come in a small int64 ``meta`` tensor, weights,
bias and the clamp bounds as tensors (Relax constants). Exported with TVM FFI's C ABI
(``__tvm_ffi_<name>``, destination passing: the output is the last argument) and run on
TVM's thread pool (``TVMBackendParallelLaunch``), as the int8 kernels (``x86_int8_source``).

Micro-kernel (AVX2 + FMA: 6 rows x 16 columns, 12 ymm accumulators; AVX-512F: 12 rows x 32
columns, 24 zmm accumulators, chosen at run time by cpuid so one library runs on both)::

    for k in 0..K-1:   b = panel[k][0:16]                 # (AVX-512: two panels)
                       for r in rows:  acc[r] += broadcast(A[r][k]) * b
    write-back:        y = min(max(acc + bias[row or column], lo), hi)   # from the registers,
                                                             # masked past the last column

The panel operand is packed ``[ceil(N/16)][K][16]`` float32, zero-padded columns: the
weights ``W[K, N]`` at compile time for a linear. For a convolution the rows are the weights
``[OC][C·KH·KW]`` (the output is NCHW without transposes) and the panels are 16 output
pixels: where they are one run of the (padded) input — stride 1 with rows a multiple of 16
wide, or 1x1 — the micro-kernel reads row k of the panel in place at ``input + off[k]``
(no im2col; on maps whose input + output reach ``edgecc_x86_fp32_prefetch_bytes``, 1 MiB,
the next panel group's input and output lines are prefetched: a 1x1 conv reads C rows and
writes OC rows at once, more streams than the hardware prefetcher follows; 1x1s of <= 96
input channels there run pool items of 4 panel pairs, each micro-tile row block over all 4,
``edgecc_x86_fp32_conv_pairs``); otherwise each
task builds the im2col of the panels it multiplies: with
AVX-512, panels whose 16 pixels are a few runs of the input (stride 1 or 2, output rows 5 or
more wide) by masked loads of each run (stride 2: even lanes by permutex2var) — of the
unpadded input when the convolution pads (lanes outside the input masked to zero: no padded
copy, ``edgecc_x86_fp32_unpadded``; the copy was ~16% of a stride-2 3x3 conv's samples in
perf) —,
others by one vector gather per row. Through im2col, a map of two or more panel groups is
split across tasks by group only (each group's panels built once). Same-size 3x3
convolutions (stride 1, pad 1; AVX-512) run their own tiles instead, 6 output channels x 64
pixels (24 accumulators; the GEMM's 12 x 32 / 8 x 32 tiles were 5-10% slower on Zen 4): on
maps whose rows are 1, 2, 4, 8 or 16 wide a copy padded by rows only, with two column masks
for the whole loop (every panel starts a row); on other maps whose rows are not a multiple
of 16 wide, or with fewer than 8 input channels, the unpadded input in place (16
consecutive output pixels are 16 consecutive inputs per tap whatever rows they span, lanes
in the padding masked to zero per panel: no im2col, no copy); the others a padded copy
without masks (``edgecc_x86_fp32_same3x3``). Depthwise 3x3 (stride 1 / 2): AVX-512 runs 16 outputs of a row per
step on the unpadded plane (masked loads for the border and the row's tail, no padded copy),
8 output rows at a time (each input row loaded once for the rows it feeds: ``x86_fp32_dwrows``,
``edgecc_x86_fp32_dw_rows``), stride 2 on planes wider than 16 two output rows at a time, each
input row loaded once and split into even / odd columns (``x86_fp32_dws2``,
``edgecc_x86_fp32_dw_s2_wide``),
or, for small planes (output rows <= 8 wide), 16 channels per vector through a channels-last
tile (16x16 register transposes in and out), except same-size stride-1 planes of <= 128
pixels: flat, 16 consecutive pixels per vector, and stride-2 ones on 16-wide planes: 2 output
rows per vector (``edgecc_x86_fp32_dw_flat``); AVX2 runs 8
outputs of a row per step; other depthwise
shapes a scalar plane. An optional residual (laid out as the output) is added
after the bias, before the clamp. ``edgecc_x86_fp32_path_calls(i)`` counts the calls per
path (the tests' check that nothing fell back: PATH_* in the source, 0..28). Every path sums a
tap's products in the same order with one rounding per FMA, so the paths agree bit for bit
with each other (the per-layer A/B of bench/x86_fp32 checks it), except Winograd F(2x2, 3x3)
for same-size 3x3 convolutions (``x86_fp32_winograd``; ``edgecc_x86_fp32_winograd``, on by
default on AVX-512: within 1e-5 relative). Products are summed in ``k``
order with one rounding per FMA (TVM's loop nest rounds the product and the sum: results
agree to ~1e-6 relative, not bit for bit).
"""

from edgecc.targets.tvm import (x86_fp32_dwrows, x86_fp32_dws1, x86_fp32_dws2, x86_fp32_expand_dw,
                                x86_fp32_winograd, x86_fp32_winograd4, x86_fp32_winograd_oc)
from edgecc.targets.tvm.x86_kernel_ffi import ffi_prelude

SYMBOLS = ("edgecc_x86_sgemm", "edgecc_x86_sconv", "edgecc_x86_sdwconv",
           "edgecc_x86_fp32_path_calls", "edgecc_x86_sexpdw")
PATH_QUERY = "edgecc_x86_fp32_path_calls"  # calls per path (PATH_* in the source); -1: AVX-512

SOURCE = r"""
// edgecc x86 float32 kernels (targets/tvm/x86_fp32_source.py)
#pragma GCC optimize("O3")
#pragma GCC target("avx2,fma")  // the floor (x86_fp32.supported); AVX-512 per function
#include <tvm/ffi/c_api.h>
#include <cpuid.h>
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

""" + ffi_prelude(1 << 16) + r"""

// a 1x1 / in-place convolution whose input plus output is at least this many bytes prefetches
// the next panel group's lines (PATH_CONV_PREFETCH); a knob for the tests' A/B (the same sums,
// so the outputs are bit-identical either way): 2^62 turns it off
extern "C" {
__attribute__((visibility("default"))) int64_t edgecc_x86_fp32_prefetch_bytes = 1 << 20;
// depthwise 3x3 planes with output rows at most this wide run 16 channels per vector
// (PATH_DW_CHANNELS); 0: a row per vector (the same sums: the tests' bit-for-bit A/B)
__attribute__((visibility("default"))) int64_t edgecc_x86_fp32_dw_channels_width = 8;
// depthwise 3x3 planes of the AVX-512 row form (stride 1 / 2 both ways, <= 64 wide) run blocks
// of 8 output rows (PATH_DW_ROWS; x86_fp32_dwrows.py); 0: one row at a time (the same sums:
// the tests' bit-for-bit A/B). int32, as end_to_end.KNOBS looks knobs up
__attribute__((weak, visibility("default"))) int32_t edgecc_x86_fp32_dw_rows = 1;
// small same-size depthwise 3x3 planes (stride 1, pad 1, <= 128 pixels, of the 16-channel tile's
// shapes) run flat: 16 consecutive pixels per vector, taps by valignd; stride-2 ones on 16-wide
// planes 2 output rows per vector (PATH_DW_FLAT; x86_fp32_dwrows.py); 0: the tile (the same
// sums: the tests' bit-for-bit A/B). int32
__attribute__((weak, visibility("default"))) int32_t edgecc_x86_fp32_dw_flat = 1;
// ... their masks computed once per call (1), or per pool chunk (0: as before; the same masks
// and sums, the A/B's other side). int32, read per call
__attribute__((weak, visibility("default"))) int32_t edgecc_x86_fp32_dw_flat_once = 1;
// depthwise 3x3 stride 2 (left pad 1) on planes wider than the min width below: each input row of a
// 16-output step loaded once and split into even / odd columns, blocks of this many output
// rows (1, 2, 4; PATH_DW_S2_WIDE; x86_fp32_dws2.py); 0: the one-row form (the same sums: the
// tests' bit-for-bit A/B). int32, as end_to_end.KNOBS looks knobs up
__attribute__((weak, visibility("default"))) int32_t edgecc_x86_fp32_dw_s2_wide = 2;
// ... and prefetches the input rows this many rows ahead (0: none; the same sums). int32
__attribute__((weak, visibility("default"))) int32_t edgecc_x86_fp32_dw_s2_prefetch = 4;
// ... on planes wider than this (the narrower ones: the row blocks of x86_fp32_dwrows). int32
__attribute__((weak, visibility("default"))) int32_t edgecc_x86_fp32_dw_s2_min_width = 16;
// depthwise 3x3 stride 1 on planes 65..128 wide (up to 256 for small inputs, below): blocks of
// this many output rows (2, 4;
// PATH_DW_S1_WIDE; x86_fp32_dws1.py), 0: the one-row form (the same sums: the tests'
// bit-for-bit A/B). int32, as end_to_end.KNOBS looks knobs up
__attribute__((weak, visibility("default"))) int32_t edgecc_x86_fp32_dw_s1_wide = 2;
// ... and on planes up to 256 wide whose input is at most this many bytes. int64
__attribute__((visibility("default"))) int64_t edgecc_x86_fp32_dw_s1_small_bytes = 6 << 20;
// 1x1 stride-1 convolutions on maps large enough to prefetch (PATH_CONV_PREFETCH; AVX-512) of
// at most CONV_PAIRS_MAX_K (96) input channels:
// each pool item multiplies this many consecutive pairs of full panels (32 pixels each) per
// micro-tile row block, so a block's weights serve them all and each output row is written in
// runs of 32 x this many pixels (PATH_CONV_PAIRS); 1: a pair per item (the same sums: the
// tests' bit-for-bit A/B). int32, as end_to_end.KNOBS looks knobs up
__attribute__((weak, visibility("default"))) int32_t edgecc_x86_fp32_conv_pairs = 4;
// padded convolutions through row-run im2col panels (AVX-512, stride 1 / 2, output rows 5+
// wide) read the unpadded input with masked loads (PATH_CONV_UNPADDED) instead of copying it
// into a zero-bordered buffer first; 0: the copy (the same panels: the tests' bit-for-bit A/B)
__attribute__((visibility("default"))) int64_t edgecc_x86_fp32_unpadded = 1;
// same-size 3x3 convolutions (stride 1, pad 1, no dilation; AVX-512) in 6 x 64 tiles
// (PATH_CONV_SAME3X3): rows 1, 2, 4, 8, 16 wide read a copy padded by rows with two column
// masks (PATH_CONV_SAME3X3_COLUMNS), other rows not a multiple of 16 wide the unpadded input
// with per-panel masks, the others a padded copy (PATH_CONV_SAME3X3_PADDED; also with < 8
// input channels: MobileNetV2's 3->16 stem @224 0.87x, @32 0.94x of the masks, 1 thread).
// 0: the in-place / im2col paths below; 2: per-panel masks for all; 3: per-panel masks where
// chosen, the in-place path for the others; 4: as 1 without the column masks; 5: as 1 with
// per-panel masks for < 8 input channels (before) (the same sums in every case: the tests'
// bit-for-bit A/B)
__attribute__((visibility("default"))) int64_t edgecc_x86_fp32_same3x3 = 1;
// convolutions through im2col panels (AVX-512, 8+ panels) multiply them in the same 6 x 64
// tiles (PATH_CONV_IM2COL_TILES); 0: the GEMM's 12 x 32 (the same sums: the tests' A/B)
__attribute__((visibility("default"))) int64_t edgecc_x86_fp32_im2col_tiles = 1;
// same-size 3x3 convolutions through a padded copy (PATH_CONV_SAME3X3_PADDED / _COLUMNS):
// where the copy is large enough for the pool, each pool task copies the padded rows its tiles
// read into its own buffer, in the tiles' job (PATH_CONV_SAME3X3_WINDOW); 0: one shared copy,
// a pool job of its own before the tiles' (the same values either way: the tests' A/B)
__attribute__((visibility("default"))) int64_t edgecc_x86_fp32_same3x3_window = 1;
// stride-2 3x3 convolutions (pad 1, no dilation; AVX-512) read phase planes of their input in
// the 6 x 64 tiles (PATH_CONV_S2_PHASES), 1x1 stride-2 ones (no pad) a copy of its even rows
// and columns (PATH_CONV_S2_EVENS); 0: im2col panels (the same sums: the tests' A/B)
__attribute__((visibility("default"))) int64_t edgecc_x86_fp32_s2_phases = 1;
// 1: a stride-2 map of one panel group on 2+ threads splits into two groups (each thread
// builds and reads the rows of its own half); 0: one group, its copy built before the job
__attribute__((visibility("default"))) int64_t edgecc_x86_fp32_s2_halves = 1;
// stride-2 calls so far: a pool task's copy is keyed by its call (s2_rows)
static std::atomic<uint64_t> s2_call_ids{0};
// same-size 3x3 convolutions (stride 1, pad 1, even maps, 8+ input channels; AVX-512) through
// Winograd F(2x2, 3x3) (PATH_CONV_WINOGRAD; x86_fp32_winograd.py): 1 (the default); 0: the
// direct paths. Not the same sums (within 1e-5 relative); a tuning candidate
// (end_to_end.KNOBS looks it up by this name, as int32)
__attribute__((weak, visibility("default"))) int32_t edgecc_x86_fp32_winograd = 1;
// Winograd weights packed into the library's cache (meta[15] == 2: once per constant; tests)
__attribute__((visibility("default"))) int64_t edgecc_x86_fp32_winograd_packs = 0;
// the most panels (16 tiles each) one Winograd pool item transforms and multiplies, 1-4: 1 (the
// default) keeps a 16-channel item's V (16 KiB) in L1; 4: the grouping before (4 panels on maps
// of 8+ panels, else half of them). The same sums either way (x86_fp32_winograd.py). int32, as
// end_to_end.KNOBS looks knobs up
__attribute__((weak, visibility("default"))) int32_t edgecc_x86_fp32_wg_group_panels = 1;
// Winograd on maps 8 or 16 wide: the input transform reads the panel's rows into registers and
// picks each patch element by permutex2var (PATH_CONV_WINOGRAD_NARROW); 0: the per-run masked
// loads (the same values: the tests' bit-for-bit A/B). int32
__attribute__((weak, visibility("default"))) int32_t edgecc_x86_fp32_wg_narrow = 1;
// Winograd's output tile on maps 16 or 32 wide: 4 (the default), F(4x4, 3x3)
// (PATH_CONV_WINOGRAD4; x86_fp32_winograd4.py: 0.56x the multiplies, not the same sums, within
// 1e-5 relative); 2: F(2x2, 3x3) everywhere. int32, as end_to_end.KNOBS looks knobs up
__attribute__((weak, visibility("default"))) int32_t edgecc_x86_fp32_winograd_tile = 4;
// F(4x4): 1: maps of an even number of panels, 2+ per pool thread (32x32: 4), run items of 2
// panels, the GEMM's 6 x 2 tiles (2 loads of V and 6 of U for 12 FMAs; one panel: 1 and 6 for
// 6); 0: items of 1 panel (x86_fp32_winograd4)
__attribute__((visibility("default"))) int64_t edgecc_x86_fp32_wg4_pairs = 1;
// F(2x2) on 8x8 maps and F(4x4) on 16x16 maps of 16k output channels: 1, channels in the
// lanes (x86_fp32_winograd_oc, PATH_CONV_WINOGRAD_OC); 0: winograd_conv / winograd4_conv (the
// same sums)
__attribute__((visibility("default"))) int64_t edgecc_x86_fp32_wg_oc = 1;
// 1: wg_oc's GEMMs prefetch the next position's Uᵀ (x86_fp32_winograd_oc); 0: not (same sums)
__attribute__((visibility("default"))) int64_t edgecc_x86_fp32_wg_oc_prefetch = 1;
}

namespace {

// ---- run-time ISA choice ----------------------------------------------------------------
static bool detect_avx512() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE)) return false;
  unsigned lo, hi;
  __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  if ((lo & 0xE6) != 0xE6) return false;  // XMM, YMM, opmask, ZMM state enabled by the OS
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  return (b & bit_AVX512F) != 0;
}
static const bool AVX512 = detect_avx512() && getenv("EDGECC_X86_FP32_NO_AVX512") == 0;

int bad_args(int n, bool residual_ok = false) {
  if (n == 6 || (residual_ok && n == 7)) return 0;
  TVMFFIErrorSetRaisedFromCStr("ValueError", residual_ok
      ? "edgecc x86 fp32 kernel: expected 6 or 7 arguments"
      : "edgecc x86 fp32 kernel: expected 6 arguments");
  return 1;
}

// ---- GEMM ----------------------------------------------------------------------------
// C[r][c] = clamp(sum_k A[r*lda + k] * B_k[c] + bias, lo, hi): B_k the 16 columns of a panel
// at row k, read from ``Panels`` (packed panels, or the convolution's input in place)
struct Gemm {
  const float* a; int64_t lda;      // rows
  const float* panels; int64_t k;   // packed [n_panels][k][16] (linears)
  const float* bias; int bias_per_row;
  float lo, hi;
  float* c; int64_t ldc; int64_t rows, cols;
  const float* res;                 // 0, or a residual laid out as c, added before the clamp
};

// the B operand of one micro-tile: up to two 16-column panels, each at base[q]; row k of a
// panel at base[q] + k * 16 (packed) or base[q] + off[k] (DIRECT: a convolution's NCHW input
// read in place, off[k] the offset of tap k = (ci, ky, kx), base[q] its 16 pixels' start)
struct Panels { const float* base[2]; const int64_t* off; int64_t pf = 0; };

// one tile of acc (mr x nc, stored [mr][ld_t]) -> C, with bias and clamp
static inline void write_tile(const Gemm& g, const float* t, int ld_t, int64_t r0, int mr,
                              int64_t c0, int nc) {
  for (int r = 0; r < mr; ++r) {
    float* out = g.c + (r0 + r) * g.ldc + c0;
    const float* src = t + r * ld_t;
    if (g.res) {  // clamp((acc + bias) + residual): TVM's order for conv + bias + add
      const float* res = g.res + (r0 + r) * g.ldc + c0;
      for (int j = 0; j < nc; ++j) {
        float v = (src[j] + g.bias[g.bias_per_row ? r0 + r : c0 + j]) + res[j];
        v = v < g.lo ? g.lo : v;
        out[j] = v > g.hi ? g.hi : v;
      }
    } else if (g.bias_per_row) {
      const float b = g.bias[r0 + r];
      for (int j = 0; j < nc; ++j) {
        float v = src[j] + b;
        v = v < g.lo ? g.lo : v;
        out[j] = v > g.hi ? g.hi : v;
      }
    } else {
      const float* b = g.bias + c0;
      for (int j = 0; j < nc; ++j) {
        float v = src[j] + b[j];
        v = v < g.lo ? g.lo : v;
        out[j] = v > g.hi ? g.hi : v;
      }
    }
  }
}

template <int MR, bool DIRECT>
__attribute__((target("avx2,fma")))
static void kernel_avx2(const Gemm& g, int64_t r0, const Panels& pb, int64_t c0) {
  __m256 acc[MR][2];
  for (int r = 0; r < MR; ++r) acc[r][0] = acc[r][1] = _mm256_setzero_ps();
  const float* b = pb.base[0];
  const float* a = g.a + r0 * g.lda;
  for (int64_t k = 0; k < g.k; ++k) {
    const float* bk = b + (DIRECT ? pb.off[k] : k * 16);
    const __m256 b0 = _mm256_loadu_ps(bk), b1 = _mm256_loadu_ps(bk + 8);
    for (int r = 0; r < MR; ++r) {
      const __m256 v = _mm256_broadcast_ss(a + r * g.lda + k);
      acc[r][0] = _mm256_fmadd_ps(v, b0, acc[r][0]);
      acc[r][1] = _mm256_fmadd_ps(v, b1, acc[r][1]);
    }
  }
  const int nc = g.cols - c0 < 16 ? (int)(g.cols - c0) : 16;
  if (nc == 16) {  // full tile: write-back from the registers (write_tile's order)
    const __m256 lo = _mm256_set1_ps(g.lo), hi = _mm256_set1_ps(g.hi);
    for (int r = 0; r < MR; ++r) {
      float* out = g.c + (r0 + r) * g.ldc + c0;
      for (int q = 0; q < 2; ++q) {
        const __m256 b = g.bias_per_row ? _mm256_set1_ps(g.bias[r0 + r])
                                         : _mm256_loadu_ps(g.bias + c0 + 8 * q);
        __m256 v = _mm256_add_ps(acc[r][q], b);
        if (g.res) v = _mm256_add_ps(v, _mm256_loadu_ps(g.res + (r0 + r) * g.ldc + c0 + 8 * q));
        _mm256_storeu_ps(out + 8 * q, _mm256_min_ps(hi, _mm256_max_ps(lo, v)));
      }
    }
    return;
  }
  alignas(64) float t[MR * 16];
  for (int r = 0; r < MR; ++r) {
    _mm256_store_ps(t + r * 16, acc[r][0]);
    _mm256_store_ps(t + r * 16 + 8, acc[r][1]);
  }
  write_tile(g, t, 16, r0, MR, c0, nc);
}

// The AVX-512 tiles' write-back from the registers (acc[MR][NP], rows r0.., columns c0..):
// clamp((acc + bias) (+ residual)), the scalar order of write_tile (max / min keep a NaN, as
// its compares do), masked past the last column; PF: a statement after each vector's store.
// A macro, not a function: a helper taking acc by reference made GCC store the accumulators
// to the stack every iteration. Its loops unrolled: rolled, GCC -O3 kept acc in a stack array
// (zeroed on entry, stored after the K loop, reloaded here: 48 extra zmm stores a 12 x 32 tile;
// 1x1 12->72 @32 1.50x, MobileNetV2-224's 1x1s 1.05-1.35x, 1 thread; the same sums, bit for
// bit). tests/targets/tvm/test_x86_fp32_tile_registers.py reads the disassembly.
#define EDGECC_TILE_WRITE_BACK(PF)                                                                     \
  do {                                                                                                 \
  const int64_t left = g.cols - c0;                                                                    \
  __mmask16 mask[NP];                                                                                  \
  for (int q = 0; q < NP; ++q) {                                                                       \
    const int64_t n = left - 16 * q;                                                                   \
    mask[q] = n >= 16 ? (__mmask16)0xFFFF : n <= 0 ? (__mmask16)0 : (__mmask16)((1u << n) - 1);        \
  }                                                                                                    \
  const __m512 lo = _mm512_set1_ps(g.lo), hi = _mm512_set1_ps(g.hi);                                   \
  __m512 bcol[NP];                                                                                     \
  if (!g.bias_per_row)                                                                                 \
    for (int q = 0; q < NP; ++q) bcol[q] = _mm512_maskz_loadu_ps(mask[q], g.bias + c0 + 16 * q);       \
  _Pragma("GCC unroll 16")                                                                             \
  for (int r = 0; r < MR; ++r) {                                                                       \
    float* out = g.c + (r0 + r) * g.ldc + c0;                                                          \
    const __m512 brow = _mm512_set1_ps(g.bias_per_row ? g.bias[r0 + r] : 0.0f);                        \
    _Pragma("GCC unroll 4")                                                                            \
    for (int q = 0; q < NP; ++q) {                                                                     \
      __m512 v = _mm512_add_ps(acc[r][q], g.bias_per_row ? brow : bcol[q]);                            \
      if (g.res)                                                                                       \
        v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask[q], g.res + (r0 + r) * g.ldc + c0 + 16 * q));  \
      v = _mm512_min_ps(hi, _mm512_max_ps(lo, v));                                                     \
      _mm512_mask_storeu_ps(out + 16 * q, mask[q], v);                                                 \
      PF;                                                                                              \
    }                                                                                                  \
  }                                                                                                    \
  } while (0)


// PFI / PFO (DIRECT only): prefetch the input rows / the output rows ``pb.pf`` floats ahead
// (the next panel group's), for maps too large for the hardware prefetcher's streams
template <int MR, int NP, bool DIRECT, bool PFI, bool PFO>
__attribute__((target("avx512f")))
static void kernel_avx512(const Gemm& g, int64_t r0, const Panels& pb, int64_t c0) {
  __m512 acc[MR][NP];
  for (int r = 0; r < MR; ++r)
    for (int q = 0; q < NP; ++q) acc[r][q] = _mm512_setzero_ps();
  const float* a = g.a + r0 * g.lda;
  for (int64_t k = 0; k < g.k; ++k) {
    const int64_t o = DIRECT ? pb.off[k] : k * 16;
    __m512 bv[NP];
    for (int q = 0; q < NP; ++q) bv[q] = _mm512_loadu_ps(pb.base[q] + o);
    if (PFI)
      for (int q = 0; q < NP; ++q) _mm_prefetch((const char*)(pb.base[q] + o + pb.pf), _MM_HINT_T0);
    for (int r = 0; r < MR; ++r) {
      const __m512 v = _mm512_set1_ps(a[r * g.lda + k]);
      for (int q = 0; q < NP; ++q) acc[r][q] = _mm512_fmadd_ps(v, bv[q], acc[r][q]);
    }
  }
  // write-back from the registers, prefetching the next panel group's output rows (PFO)
  EDGECC_TILE_WRITE_BACK(if (PFO) _mm_prefetch((const char*)(out + 16 * q + pb.pf), _MM_HINT_ET0));
}

template <int NP, bool DIRECT, bool PFI = false, bool PFO = false>
static void avx512_rows(const Gemm& g, int64_t r, int mr, const Panels& b, int64_t c0) {
  switch (mr) {
    case 1: kernel_avx512<1, NP, DIRECT, PFI, PFO>(g, r, b, c0); break;
    case 2: kernel_avx512<2, NP, DIRECT, PFI, PFO>(g, r, b, c0); break;
    case 3: kernel_avx512<3, NP, DIRECT, PFI, PFO>(g, r, b, c0); break;
    case 4: kernel_avx512<4, NP, DIRECT, PFI, PFO>(g, r, b, c0); break;
    case 5: kernel_avx512<5, NP, DIRECT, PFI, PFO>(g, r, b, c0); break;
    case 6: kernel_avx512<6, NP, DIRECT, PFI, PFO>(g, r, b, c0); break;
    case 7: kernel_avx512<7, NP, DIRECT, PFI, PFO>(g, r, b, c0); break;
    case 8: kernel_avx512<8, NP, DIRECT, PFI, PFO>(g, r, b, c0); break;
    case 9: kernel_avx512<9, NP, DIRECT, PFI, PFO>(g, r, b, c0); break;
    case 10: kernel_avx512<10, NP, DIRECT, PFI, PFO>(g, r, b, c0); break;
    case 11: kernel_avx512<11, NP, DIRECT, PFI, PFO>(g, r, b, c0); break;
    default: kernel_avx512<12, NP, DIRECT, PFI, PFO>(g, r, b, c0); break;
  }
}

template <bool DIRECT>
static void avx2_rows(const Gemm& g, int64_t r, int mr, const Panels& b, int64_t c0) {
  switch (mr) {
    case 1: kernel_avx2<1, DIRECT>(g, r, b, c0); break;
    case 2: kernel_avx2<2, DIRECT>(g, r, b, c0); break;
    case 3: kernel_avx2<3, DIRECT>(g, r, b, c0); break;
    case 4: kernel_avx2<4, DIRECT>(g, r, b, c0); break;
    case 5: kernel_avx2<5, DIRECT>(g, r, b, c0); break;
    default: kernel_avx2<6, DIRECT>(g, r, b, c0); break;
  }
}

static int64_t row_step() { return AVX512 ? 12 : 6; }
static int64_t panel_step() { return AVX512 ? 2 : 1; }

// rows [r0, r1) times the np (<= panel_step()) panels of ``b`` (output columns from c0), in
// micro-tiles of balanced height (16 rows: 8 + 8, not 12 + 4)
template <bool DIRECT>
static void gemm_rows(const Gemm& g, int64_t r0, int64_t r1, const Panels& b, int np,
                      int64_t c0) {
  const int64_t step = row_step();
  for (int64_t r = r0; r < r1;) {
    const int64_t left = r1 - r, tiles = (left + step - 1) / step;
    const int mr = (int)((left + tiles - 1) / tiles);
    if (!AVX512) avx2_rows<DIRECT>(g, r, mr, b, c0);
    else if (DIRECT && b.pf && r == r0)  // the group's input: prefetched by its first tile
      np == 2 ? avx512_rows<2, DIRECT, true, true>(g, r, mr, b, c0)
              : avx512_rows<1, DIRECT, true, true>(g, r, mr, b, c0);
    else if (DIRECT && b.pf)
      np == 2 ? avx512_rows<2, DIRECT, false, true>(g, r, mr, b, c0)
              : avx512_rows<1, DIRECT, false, true>(g, r, mr, b, c0);
    else if (np == 2) avx512_rows<2, DIRECT>(g, r, mr, b, c0);
    else avx512_rows<1, DIRECT>(g, r, mr, b, c0);
    r += mr;
  }
}

// the packed panels [p0, p1) (AVX-512: in pairs) times the rows [r0, r1)
static void gemm_block(const Gemm& g, int64_t r0, int64_t r1, int64_t p0, int64_t p1) {
  for (int64_t p = p0; p < p1; p += panel_step()) {
    const int np = p + panel_step() <= p1 ? (int)panel_step() : (int)(p1 - p);
    Panels b{{g.panels + p * g.k * 16, g.panels + (p + 1) * g.k * 16}, 0};
    gemm_rows<false>(g, r0, r1, b, np, p * 16);
  }
}

// im2col of one panel whose 16 pixels are not one run (stride 2, rows narrower than 16):
// row j of the panel = src[koff[j] + bp[lane]], one vector gather per row
__attribute__((target("avx512f")))
static void gather_panel_avx512(float* panel, const float* src, const int64_t* koff,
                                int64_t k, const int64_t* bp) {
  alignas(64) int32_t id[16];
  for (int l = 0; l < 16; ++l) id[l] = (int32_t)(bp[l] - bp[0]);
  const __m512i vi = _mm512_load_si512(id);
  const float* s0 = src + bp[0];
  for (int64_t j = 0; j < k; ++j)
    _mm512_storeu_ps(panel + j * 16, _mm512_mask_i32gather_ps(_mm512_setzero_ps(), 0xFFFF, vi,
                                                               s0 + koff[j], 4));
}

// im2col of a panel whose 16 pixels are a few runs of inputs S apart (stride S = 1 or 2,
// output rows 5 or more wide: at most 4 runs): row j of the panel = masked loads of each run
// at src + koff[j] (the pointer shifted so lane l of run [l0, l1) reads its pixel; stride 2:
// the even elements of two masked loads, permutex2var), no vector gather. False (nothing
// written) when the panel has more runs.
template <int S>
__attribute__((target("avx512f")))
static bool rows_panel_avx512(float* panel, const float* src, const int64_t* koff, int64_t k,
                              const int64_t* bp) {
  __mmask16 lane[4], lo[4], hi[4];
  const float* at[4];
  int runs = 0;
  for (int l0 = 0; l0 < 16;) {
    int l1 = l0 + 1;
    while (l1 < 16 && bp[l1] == bp[l1 - 1] + S) ++l1;
    if (runs == 4) return false;
    lane[runs] = (__mmask16)(((1u << l1) - 1) & ~((1u << l0) - 1));
    if (S == 2) {  // elements [2 l0, 2 l1 - 1) of the 32 at ``at``
      const int e0 = 2 * l0, e1 = 2 * l1 - 1;
      lo[runs] = (__mmask16)(((e1 >= 16 ? 0xFFFFu : (1u << e1) - 1)) & ~((1u << (e0 < 16 ? e0 : 16)) - 1));
      hi[runs] = e1 <= 16 ? (__mmask16)0
          : (__mmask16)(((1u << (e1 - 16)) - 1) & ~((1u << (e0 > 16 ? e0 - 16 : 0)) - 1));
    }
    at[runs++] = src + bp[l0] - S * l0;
    l0 = l1;
  }
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  for (int64_t j = 0; j < k; ++j) {
    __m512 v = _mm512_setzero_ps();
    for (int r = 0; r < runs; ++r) {
      const float* p = at[r] + koff[j];
      if (S == 1) {
        v = _mm512_mask_loadu_ps(v, lane[r], p);
      } else {
        const __m512 e = _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(lo[r], p), even,
                                                _mm512_maskz_loadu_ps(hi[r], p + 16));
        v = _mm512_mask_mov_ps(v, lane[r], e);
      }
    }
    _mm512_storeu_ps(panel + j * 16, v);
  }
  return true;
}

// lanes [a, b) of 16 (clipped), as a mask
static inline __mmask16 lanes(int64_t a, int64_t b) {
  a = a < 0 ? 0 : a;
  b = b > 16 ? 16 : b;
  return a >= b ? (__mmask16)0 : (__mmask16)(((1u << b) - 1) & ~((1u << a) - 1));
}

// the geometry of a convolution's input as im2col_unpadded reads it
struct Unpadded {
  const float* x; int64_t c, h, w, kh, kw, sh, ph, pw, dh, dw, ow, pix;
};

// im2col of panel p (pixels p*16 .. p*16+15, lanes past the map zero) straight from the
// UNPADDED input (stride S = 1 or 2, output rows 5 or more wide, KW <= 16): its pixels are at
// most 4 runs (one output row each); row (ci, ky, kx) of a run = a masked load of input row
// iy = oy*SH + ky*DH - PH (S = 2: of 32 elements, even ones by permutex2var), lanes whose
// input column is outside [0, W) or whose iy is outside [0, H) zero: the padding the copy
// wrote, so the panel is the same as rows_panel_avx512's from the padded copy
template <int S>
__attribute__((target("avx512f")))
static void rows_panel_unpadded(float* panel, const Unpadded& u, int64_t p) {
  int64_t oy[4], at[4][16];
  __mmask16 lane[4], lo[4][16], hi[4][16];
  int runs = 0;
  for (int64_t l0 = 0; l0 < 16 && p * 16 + l0 < u.pix && runs < 4;) {
    const int64_t q = p * 16 + l0, y = q / u.ow, x0 = q % u.ow;
    int64_t l1 = l0 + (u.ow - x0 < 16 - l0 ? u.ow - x0 : 16 - l0);
    if (p * 16 + l1 > u.pix) l1 = u.pix - p * 16;
    oy[runs] = y;
    lane[runs] = lanes(l0, l1);
    for (int64_t kx = 0; kx < u.kw; ++kx) {
      // lane l reads input column (x0 + l - l0) * S + kx*DW - PW = at + S*l: element e = S*l
      const int64_t a = (x0 - l0) * S + kx * u.dw - u.pw;
      at[runs][kx] = a;
      // elements [S*l0, S*(l1-1)+1) that are columns inside [0, W)
      const int64_t e0 = S * l0 > -a ? S * l0 : -a;
      const int64_t e1 = S * (l1 - 1) + 1 < u.w - a ? S * (l1 - 1) + 1 : u.w - a;
      lo[runs][kx] = lanes(e0, e1);
      hi[runs][kx] = S == 2 ? lanes(e0 - 16, e1 - 16) : (__mmask16)0;
    }
    ++runs;
    l0 = l1;
  }
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  float* row = panel;
  for (int64_t ci = 0; ci < u.c; ++ci)
    for (int64_t ky = 0; ky < u.kh; ++ky) {
      const float* plane = u.x + ci * u.h * u.w;
      for (int64_t kx = 0; kx < u.kw; ++kx, row += 16) {
        __m512 v = _mm512_setzero_ps();
        for (int r = 0; r < runs; ++r) {
          const int64_t iy = oy[r] * u.sh + ky * u.dh - u.ph;
          if (iy < 0 || iy >= u.h) continue;
          const float* src = plane + iy * u.w + at[r][kx];
          if (S == 1) {
            v = _mm512_mask_loadu_ps(v, lo[r][kx], src);
          } else {
            const __m512 e = _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(lo[r][kx], src), even,
                                                    _mm512_maskz_loadu_ps(hi[r][kx], src + 16));
            v = _mm512_mask_mov_ps(v, lane[r], e);
          }
        }
        _mm512_storeu_ps(row, v);
      }
    }
}

__attribute__((target("avx2,fma")))
static void gather_panel_avx2(float* panel, const float* src, const int64_t* koff, int64_t k,
                              const int64_t* bp) {
  alignas(32) int32_t id[16];
  for (int l = 0; l < 16; ++l) id[l] = (int32_t)(bp[l] - bp[0]);
  const __m256i lo = _mm256_load_si256((const __m256i*)id);
  const __m256i hi = _mm256_load_si256((const __m256i*)(id + 8));
  const float* s0 = src + bp[0];
  for (int64_t j = 0; j < k; ++j) {
    _mm256_storeu_ps(panel + j * 16, _mm256_i32gather_ps(s0 + koff[j], lo, 4));
    _mm256_storeu_ps(panel + j * 16 + 8, _mm256_i32gather_ps(s0 + koff[j], hi, 4));
  }
}

// ---- same-size 3x3 convolution, read in place (stride 1, pad 1, no dilation) ----------------
// Output pixel q = oy * W + ox of a same-size map reads input q + (ky - 1) * W + (kx - 1) for tap
// (ky, kx), so 16 consecutive output pixels (a panel, whatever rows it spans: an 8-wide map's
// panel is two rows) are 16 consecutive inputs per tap. Lanes whose input is outside the map
// (the padding: top / bottom row, first / last column, past the map) are masked to zero, the
// 9 masks of a panel computed once per panel group. The micro-kernel reads the UNPADDED input
// in place: no padded copy (16->16 @32 made one per call) and no im2col (8-wide maps built
// im2col panels). Same products in the same (ci, ky, kx) order as the im2col / padded paths
// (a masked lane adds w * 0), so the outputs are bit-identical to theirs. Maps whose rows are
// a multiple of 16 wide (each panel inside one row) with 8+ input channels read a padded copy
// instead, unmasked: the masks' loads cost 3-5% there (16->16 @32, 32->32 @16).
// koff[k]: tap k = (ci, ky, kx)'s offset from the output pixel, ci * H * W + (ky - 1) * W + kx - 1
// (pad: from the window's corner in the padded copy, (ci * (H + 2) + ky) * wp + kx)
struct Same3x3 {
  const float* x; int64_t c, h, w, pix; const int64_t* koff;
  const float* pad; int64_t wp;  // the zero-bordered copy (rows wp wide: W + 2, or W), or 0
  int mode;                      // kernel_same3x3's MODE
};

// the 9 tap masks of the panel whose first pixel is p0 (taps in (ky, kx) order)
static void same3x3_masks(const Same3x3& s, int64_t p0, __mmask16* m) {
  const __mmask16 valid = lanes(0, s.pix - p0);
  const __mmask16 top = lanes(0, s.w - p0), bottom = lanes((s.h - 1) * s.w - p0, 16);
  __mmask16 first = 0, last = 0;  // lanes in column 0 / column W - 1
  for (int64_t l = (s.w - p0 % s.w) % s.w; l < 16; l += s.w) first |= (__mmask16)(1u << l);
  for (int64_t l = (2 * s.w - 1 - p0 % s.w) % s.w; l < 16; l += s.w) last |= (__mmask16)(1u << l);
  const __mmask16 row[3] = {(__mmask16)(valid & ~top), valid, (__mmask16)(valid & ~bottom)};
  const __mmask16 col[3] = {(__mmask16)~first, (__mmask16)0xFFFF, (__mmask16)~last};
  for (int ky = 0; ky < 3; ++ky)
    for (int kx = 0; kx < 3; ++kx) m[ky * 3 + kx] = row[ky] & col[kx];
}

// _mm512_maskz_loadu_ps as an asm statement that reads no memory the compiler tracks: GCC
// takes the builtin's masked load as possibly reading any memory, acc included, and then keeps
// a micro-kernel's accumulators on the stack (a store each per iteration). Only for inputs no
// kernel writes while it runs.
__attribute__((target("avx512f"), always_inline))
static inline __m512 masked_load(__mmask16 m, const float* p) {
  __m512 v;
  __asm__("vmovups (%1), %0%{%2%}%{z%}" : "=v"(v) : "r"(p), "Yk"(m));
  return v;
}

// rows r0.. (MR output channels) x NP panels from pixel c0; panel q's tap k at b[q] + koff[k]
// MODE 1 (MASKED): b the unpadded map, lanes masked by m [NP][9]; 0: b the padded copy (no
// masks); 2 (COLUMNS): b a copy padded by rows only (rows W | 16 wide: every panel starts a
// row), the taps (ci, ky, kx = 0 / 2) masked by m[0] / m[1] (not column 0 / W - 1), the same
// for every panel: two mask registers for the whole loop, no mask loads
const int PLAIN = 0, MASKED = 1, COLUMNS = 2;
template <int MR, int NP, int MODE>
__attribute__((target("avx512f")))
static void kernel_same3x3(const Gemm& g, int64_t r0, const float* const* b, const int64_t* koff,
                           int64_t c0, const __mmask16* m) {
  __m512 acc[MR][NP];
  for (int r = 0; r < MR; ++r)
    for (int q = 0; q < NP; ++q) acc[r][q] = _mm512_setzero_ps();
  // one loop over k = (ci, ky, kx), as kernel_avx512's (nested ci / tap loops made GCC store
  // the accumulators to the stack every iteration); t: the tap, for its masks
  const float* a = g.a + r0 * g.lda;
  const int64_t n = g.k, lda = g.lda;
  // a tap's pointer may point before the map (its lanes there are masked: no access)
  const float* x[NP];
  for (int q = 0; q < NP; ++q) x[q] = b[q];
  if (MODE == COLUMNS) {
    const __mmask16 m0 = m[0], m2 = m[1];
    for (int64_t k = 0; k < n; k += 3) {  // kx = 0, 1, 2 (koff[k]: kx = 0's offset)
      const int64_t o = koff[k];
#pragma GCC unroll 3
      for (int kx = 0; kx < 3; ++kx) {
        __m512 bv[NP];
        for (int q = 0; q < NP; ++q)
          bv[q] = kx == 1 ? _mm512_loadu_ps(x[q] + o + 1)
                          : masked_load(kx == 0 ? m0 : m2, x[q] + o + kx);
        for (int r = 0; r < MR; ++r) {
          const __m512 v = _mm512_set1_ps(a[r * lda + k + kx]);
          for (int q = 0; q < NP; ++q) acc[r][q] = _mm512_fmadd_ps(v, bv[q], acc[r][q]);
        }
      }
    }
  } else {
    for (int64_t k = 0, t = 0; k < n; ++k) {
      const int64_t o = koff[k];
      __m512 bv[NP];
      for (int q = 0; q < NP; ++q)
        bv[q] = MODE == MASKED ? masked_load(m[q * 9 + t], x[q] + o) : _mm512_loadu_ps(x[q] + o);
      for (int r = 0; r < MR; ++r) {
        const __m512 v = _mm512_set1_ps(a[r * lda + k]);
        for (int q = 0; q < NP; ++q) acc[r][q] = _mm512_fmadd_ps(v, bv[q], acc[r][q]);
      }
      if (MODE == MASKED) t = t == 8 ? 0 : t + 1;
    }
  }
  EDGECC_TILE_WRITE_BACK((void)0);  // kernel_avx512's write-back
}


// a group: up to S3_NP panels x tiles of up to S3_MR output channels (24 accumulators; 8 x 2
// and 12 x 2 measured 1-3% slower on Zen 4)
const int S3_NP = 4, S3_MR = 6;

template <int NP, int MODE>
static void same3x3_tile(const Gemm& g, int64_t r, int mr, const float* const* b,
                         const int64_t* koff, int64_t c0, const __mmask16* m) {
  switch (mr) {
    case 1: kernel_same3x3<1, NP, MODE>(g, r, b, koff, c0, m); break;
    case 2: kernel_same3x3<2, NP, MODE>(g, r, b, koff, c0, m); break;
    case 3: kernel_same3x3<3, NP, MODE>(g, r, b, koff, c0, m); break;
    case 4: kernel_same3x3<4, NP, MODE>(g, r, b, koff, c0, m); break;
    case 5: kernel_same3x3<5, NP, MODE>(g, r, b, koff, c0, m); break;
    default: kernel_same3x3<S3_MR, NP, MODE>(g, r, b, koff, c0, m); break;
  }
}

template <int MODE>
static void same3x3_np(const Gemm& g, int64_t r, int mr, int np, const float* const* b,
                       const int64_t* koff, int64_t c0, const __mmask16* m) {
  switch (np) {
    case 1: same3x3_tile<1, MODE>(g, r, mr, b, koff, c0, m); break;
    case 2: same3x3_tile<2, MODE>(g, r, mr, b, koff, c0, m); break;
    case 3: same3x3_tile<3, MODE>(g, r, mr, b, koff, c0, m); break;
    default: same3x3_tile<S3_NP, MODE>(g, r, mr, b, koff, c0, m); break;
  }
}

// rows [r0, r1) times the np (1..S3_NP) panels b (columns from pixel c0; tap k at b[q] +
// koff[k]; masks m as kernel_same3x3's MODE says), in micro-tiles of balanced height
static void tiles_rows(const Gemm& g, int64_t r0, int64_t r1, const float* const* b,
                       const int64_t* koff, int np, int64_t c0, int mode, const __mmask16* m) {
  for (int64_t r = r0; r < r1;) {
    const int64_t left = r1 - r, tiles = (left + S3_MR - 1) / S3_MR;
    const int mr = (int)((left + tiles - 1) / tiles);
    if (mode == MASKED) same3x3_np<MASKED>(g, r, mr, np, b, koff, c0, m);
    else if (mode == COLUMNS) same3x3_np<COLUMNS>(g, r, mr, np, b, koff, c0, m);
    else same3x3_np<PLAIN>(g, r, mr, np, b, koff, c0, m);
    r += mr;
  }
}

// a same-size 3x3 convolution's rows [r0, r1) times its np (1..S3_NP) panels from pixel c0
static void same3x3_rows(const Gemm& g, int64_t r0, int64_t r1, const Same3x3& s, int np,
                         int64_t c0) {
  __mmask16 m[S3_NP * 9];
  const float* b[S3_NP];
  for (int q = 0; q < np; ++q) {
    const int64_t p = c0 + 16 * q;  // padded: the window of (oy, ox) starts at (oy, ox)
    b[q] = s.pad ? s.pad + p / s.w * s.wp + p % s.w : s.x + p;
    if (s.mode == MASKED) same3x3_masks(s, p, m + 9 * q);
  }
  if (s.mode == COLUMNS) {  // lane l is column l % W of every panel
    m[0] = m[1] = 0xFFFF;
    for (int64_t l = 0; l < 16; l += s.w) {
      m[0] &= (__mmask16)~(1u << l);
      m[1] &= (__mmask16)~(1u << (l + s.w - 1));
    }
  }
  tiles_rows(g, r0, r1, b, s.koff, np, c0, s.mode, m);
}

// the C planes H x W of src into padded [C][H + 2 PH][W + 2 PW] with a zero border; on the
// pool too (serial, it was ~10% of a 3x3 conv's time on 2 threads)
static void pad_copy(float* padded, const float* src, int64_t c, int64_t h, int64_t w, int64_t ph,
                     int64_t pw) {
  const int64_t hp = h + 2 * ph, wp = w + 2 * pw;
  parallel_for(c, [&](int64_t c0, int64_t c1) {
    memset(padded + c0 * hp * wp, 0, (c1 - c0) * hp * wp * 4);
    for (int64_t ci = c0; ci < c1; ++ci)
      for (int64_t y = 0; y < h; ++y)
        memcpy(padded + (ci * hp + y + ph) * wp + pw, src + (ci * h + y) * w, w * 4);
  }, c * hp * wp * 8);
}

// padded rows [y0, y1) (of hp = h + 2, pad 1 row; spw 0 or 1 column, rows swp wide) of every
// channel of src into padded, the layout pad_copy writes: a pool task's own copy of the rows
// its tiles read (a task's tiles read nothing else but lanes past the map, unused)
static void pad_rows(float* padded, const float* src, int64_t c, int64_t h, int64_t w,
                     int64_t spw, int64_t y0, int64_t y1) {
  const int64_t hp = h + 2, swp = w + 2 * spw;
  for (int64_t ci = 0; ci < c; ++ci)
    for (int64_t y = y0; y < y1; ++y) {
      float* row = padded + (ci * hp + y) * swp;
      if (y == 0 || y == hp - 1) {
        memset(row, 0, swp * 4);
        continue;
      }
      if (spw) row[0] = row[swp - 1] = 0.0f;
      memcpy(row + spw, src + (ci * h + y - 1) * w, w * 4);
    }
}

// a stride-2 3x3 convolution's input (pad 1) as phase planes [C][2][3][OH + 1][OW], rows
// [r0, r1) of each: plane (ci, py, kx) at (r, ox) holds the zero-padded input's (2r + py,
// 2ox + kx), so tap (ci, ky, kx) of output pixel p = oy * OW + ox is plane (ci, ky & 1, kx)'s
// element p + (ky >> 1) * OW: 16 consecutive pixels are 16 consecutive floats, as the 6 x 64
// tiles read them (no im2col panels: 1.5 input sizes, not 2.25, each float written once)
__attribute__((target("avx512f")))
static void s2_phases(float* out, const float* x, int64_t c, int64_t h, int64_t w, int64_t oh,
                      int64_t ow, int64_t r0, int64_t r1) {
  const int64_t plane = (oh + 1) * ow;
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  for (int64_t ci = 0; ci < c; ++ci)
    for (int64_t py = 0; py < 2; ++py)
      for (int64_t r = r0; r < r1; ++r) {
        float* d = out + (ci * 2 + py) * 3 * plane + r * ow;  // kx = 0; + plane: 1, 2
        const int64_t y = 2 * r + py - 1;  // the input row
        if (y < 0 || y >= h) {
          for (int kx = 0; kx < 3; ++kx) memset(d + kx * plane, 0, ow * 4);
          continue;
        }
        const float* row = x + (ci * h + y) * w;
        for (int64_t o = 0; o < ow; o += 16) {
          const int64_t i = 2 * o;  // x[2 ox - 1], x[2 ox], x[2 ox + 1] for ox = o..o + 15
          const __m512 v0 = _mm512_maskz_loadu_ps(lanes(0, w - i), row + i);
          const __m512 v1 = _mm512_maskz_loadu_ps(lanes(0, w - i - 16), row + i + 16);
          const __m512 e = _mm512_permutex2var_ps(v0, even, v1);
          const __m512 od = _mm512_permutex2var_ps(v0, odd, v1);
          const __m512 before = _mm512_set1_ps(o ? row[i - 1] : 0.0f);
          const __m512 z = _mm512_castsi512_ps(_mm512_alignr_epi32(
              _mm512_castps_si512(od), _mm512_castps_si512(before), 15));
          const __mmask16 m = lanes(0, ow - o);
          _mm512_mask_storeu_ps(d + o, m, z);
          _mm512_mask_storeu_ps(d + plane + o, m, e);
          _mm512_mask_storeu_ps(d + 2 * plane + o, m, od);
        }
      }
}

// a 1x1 stride-2 convolution's input (no pad) as [C][OH][OW], rows [r0, r1): x at (2r, 2ox),
// the one phase plane it reads (16 consecutive pixels are 16 consecutive floats)
__attribute__((target("avx512f")))
static void s2_evens(float* out, const float* x, int64_t c, int64_t h, int64_t w, int64_t oh,
                     int64_t ow, int64_t r0, int64_t r1) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  for (int64_t ci = 0; ci < c; ++ci)
    for (int64_t r = r0; r < r1; ++r) {
      float* d = out + (ci * oh + r) * ow;
      const float* row = x + (ci * h + 2 * r) * w;
      for (int64_t o = 0; o < ow; o += 16) {
        const int64_t i = 2 * o;
        const __m512 v0 = _mm512_maskz_loadu_ps(lanes(0, w - i), row + i);
        const __m512 v1 = _mm512_maskz_loadu_ps(lanes(0, w - i - 16), row + i + 16);
        _mm512_mask_storeu_ps(d + o, lanes(0, ow - o), _mm512_permutex2var_ps(v0, even, v1));
      }
    }
}

// which path each call took (the tests' proof that nothing fell back): see PATH_* below
const int N_PATHS = 29;
const int64_t CONV_PAIRS_MAX_K = 96;  // edgecc_x86_fp32_conv_pairs: 1x1s of at most this many input channels
static int64_t path_calls[N_PATHS] = {};
enum { PATH_CONV_DIRECT = 0, PATH_CONV_IM2COL = 1, PATH_DW_3X3 = 2, PATH_DW_GENERIC = 3,
       PATH_DW_3X3_AVX512 = 4, PATH_CONV_ROWS = 5, PATH_DW_CHANNELS = 6,
       PATH_CONV_PREFETCH = 7, PATH_CONV_UNPADDED = 8, PATH_CONV_SAME3X3 = 9,
       PATH_CONV_SAME3X3_PADDED = 10, PATH_CONV_IM2COL_TILES = 11,
       PATH_CONV_SAME3X3_COLUMNS = 12, PATH_CONV_SAME3X3_WINDOW = 13,
       PATH_CONV_S2_PHASES = 14, PATH_CONV_S2_EVENS = 15, PATH_CONV_WINOGRAD = 16,
       PATH_CONV_WINOGRAD_PACKED = 17, PATH_DW_ROWS = 18,
       PATH_DW_FLAT = 19, PATH_CONV_WINOGRAD_NARROW = 20, PATH_CONV_WINOGRAD4 = 21,
       PATH_DW_S2_WIDE = 22, PATH_CONV_PAIRS = 23,
       PATH_DW_S1_WIDE = 24, PATH_EXPAND_DW = 25, PATH_CONV_S2_HALVES = 26,
       PATH_CONV_WINOGRAD4_PAIRS = 27, PATH_CONV_WINOGRAD_OC = 28 };

struct Depthwise {
  const float* src; int64_t ld;  // one (padded) input plane
  const float* w; float b; float lo, hi; float* out;
  int64_t kh, kw, sh, sw, dh, dw, oh, ow;
};

// one channel: out[oy][ox] = clamp(sum_{ky,kx} w[ky][kx] * src[oy*sh + ky*dh][ox*sw + kx*dw] + b)
// (taps summed in (ky, kx) order; KH = 0: sizes and strides from ``d``). A run of up to
// DW_RUN outputs of a row accumulates tap by tap, so the inner loop runs along the row
// (vectorized: contiguous loads for stride 1) instead of over the taps of one output.
const int DW_RUN = 64;

template <int KH, int KW, int SW>
static void dw_plane(const Depthwise& d) {
  const int64_t kh = KH ? KH : d.kh, kw = KW ? KW : d.kw, sw = SW ? SW : d.sw;
  const int64_t dh = KH ? 1 : d.dh, dw = KW ? 1 : d.dw;  // the 3x3 forms: no dilation
  for (int64_t oy = 0; oy < d.oh; ++oy) {
    const float* __restrict s = d.src + oy * d.sh * d.ld;
    float* __restrict o = d.out + oy * d.ow;
    for (int64_t x0 = 0; x0 < d.ow; x0 += DW_RUN) {
      const int n = d.ow - x0 < DW_RUN ? (int)(d.ow - x0) : DW_RUN;
      alignas(64) float a[DW_RUN];
      for (int j = 0; j < DW_RUN; ++j) a[j] = 0.0f;
      for (int64_t ky = 0; ky < kh; ++ky)
        for (int64_t kx = 0; kx < kw; ++kx) {
          const float wt = d.w[ky * kw + kx];
          const float* __restrict t = s + ky * dh * d.ld + x0 * sw + kx * dw;
          for (int j = 0; j < n; ++j) a[j] += wt * t[j * sw];
        }
      for (int j = 0; j < n; ++j) {
        float v = a[j] + d.b;
        v = v < d.lo ? d.lo : v;
        o[x0 + j] = v > d.hi ? d.hi : v;
      }
    }
  }
}

// 3x3, stride SW (1 or 2), no dilation: 8 outputs of a row per step, the accumulator in a
// register (taps in (ky, kx) order, as dw_plane); stride 2 deinterleaves two loads' even
// lanes. Columns a vector step cannot read inside the row are left to the scalar tail.
template <int SW>
__attribute__((target("avx2,fma")))
static void dw3x3(const Depthwise& d) {
  __m256 w[9];
  for (int i = 0; i < 9; ++i) w[i] = _mm256_set1_ps(d.w[i]);
  const __m256 b = _mm256_set1_ps(d.b), lo = _mm256_set1_ps(d.lo), hi = _mm256_set1_ps(d.hi);
  const int64_t ld = d.ld;
  // the last column a vector step reads: SW == 1: ox + 7 + 2; SW == 2: 2 * ox + 2 + 15
  int64_t vec_end = 0;
  while (vec_end + 8 <= d.ow && (SW == 1 ? vec_end + 9 : 2 * vec_end + 17) < ld) vec_end += 8;
  for (int64_t oy = 0; oy < d.oh; ++oy) {
    const float* s = d.src + oy * d.sh * ld;
    float* o = d.out + oy * d.ow;
    for (int64_t ox = 0; ox < vec_end; ox += 8) {
      __m256 acc = _mm256_setzero_ps();
      for (int ky = 0; ky < 3; ++ky)
        for (int kx = 0; kx < 3; ++kx) {
          const float* t = s + ky * ld + ox * SW + kx;
          __m256 v;
          if (SW == 1) {
            v = _mm256_loadu_ps(t);
          } else {
            const __m256 p = _mm256_loadu_ps(t), q = _mm256_loadu_ps(t + 8);
            v = _mm256_castpd_ps(_mm256_permute4x64_pd(
                _mm256_castps_pd(_mm256_shuffle_ps(p, q, _MM_SHUFFLE(2, 0, 2, 0))),
                _MM_SHUFFLE(3, 1, 2, 0)));
          }
          acc = _mm256_fmadd_ps(w[ky * 3 + kx], v, acc);
        }
      acc = _mm256_add_ps(acc, b);
      acc = _mm256_min_ps(hi, _mm256_max_ps(lo, acc));  // NaN stays NaN, as the scalar clamp
      _mm256_storeu_ps(o + ox, acc);
    }
    for (int64_t ox = vec_end; ox < d.ow; ++ox) {
      float a = 0.0f;
      for (int ky = 0; ky < 3; ++ky)
        for (int kx = 0; kx < 3; ++kx) a += d.w[ky * 3 + kx] * s[ky * ld + ox * SW + kx];
      a += d.b;
      a = a < d.lo ? d.lo : a;
      o[ox] = a > d.hi ? d.hi : a;
    }
  }
}

// AVX-512 form of dw3x3, reading the unpadded plane (ld = its width ``iw``, ``ih`` rows):
// 16 outputs of a row per step, the row's last step masked (no scalar tail, so 4- and 8-wide
// planes run vectorized too); taps outside the plane are masked loads of zero (columns) or
// skipped (rows: + w * 0 changes nothing), so no padded copy is made. Stride 2 takes the
// even lanes of two masked loads (permutex2var). Taps in (ky, kx) order, as dw3x3.
const int DW_STEPS = 64;  // 16-output steps per row the AVX-512 form handles (rows <= 1024)

static inline __mmask16 lanes(int64_t first, int64_t end, int64_t limit) {
  // lanes e of a 16-float load at column ``first`` with 0 <= first + e < end and e < limit
  int64_t lo = -first > 0 ? -first : 0, hi = end - first;
  if (hi > limit) hi = limit;
  if (hi > 16) hi = 16;
  if (hi <= lo) return 0;
  return (__mmask16)(((1u << hi) - 1) & ~((1u << lo) - 1));
}

template <int SW>
__attribute__((target("avx512f")))
static void dw3x3_avx512(const Depthwise& d, int64_t ih, int64_t iw, int64_t ph, int64_t pw) {
  __m512 w[9];
  for (int i = 0; i < 9; ++i) w[i] = _mm512_set1_ps(d.w[i]);
  const __m512 b = _mm512_set1_ps(d.b), lo = _mm512_set1_ps(d.lo), hi = _mm512_set1_ps(d.hi);
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  // the load masks of each 16-output step and tap column, once per plane (rows: all alike);
  // stride 2: lane j reads column 2j of the tap's run, j < n: elements [0, 2n - 1)
  __mmask16 mk[DW_STEPS][3][2], mo[DW_STEPS];
  const int64_t steps = (d.ow + 15) / 16;
  for (int64_t i = 0; i < steps; ++i) {
    const int n = d.ow - 16 * i < 16 ? (int)(d.ow - 16 * i) : 16;
    mo[i] = (__mmask16)((1u << n) - 1);
    for (int kx = 0; kx < 3; ++kx) {
      const int64_t c0 = 16 * i * SW + kx - pw;
      mk[i][kx][0] = lanes(c0, iw, SW == 1 ? n : 2 * n - 1);
      mk[i][kx][1] = SW == 1 ? 0 : lanes(c0 + 16, iw, 2 * n - 17);
    }
  }
  for (int64_t oy = 0; oy < d.oh; ++oy) {
    float* o = d.out + oy * d.ow;
    for (int64_t i = 0; i < steps; ++i) {
      __m512 acc = _mm512_setzero_ps();
      for (int ky = 0; ky < 3; ++ky) {
        const int64_t iy = oy * d.sh + ky - ph;
        if (iy < 0 || iy >= ih) continue;
        const float* row = d.src + iy * iw + 16 * i * SW - pw;
        for (int kx = 0; kx < 3; ++kx) {
          __m512 v;
          if (SW == 1) {
            v = _mm512_maskz_loadu_ps(mk[i][kx][0], row + kx);
          } else {
            v = _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(mk[i][kx][0], row + kx), even,
                                       _mm512_maskz_loadu_ps(mk[i][kx][1], row + kx + 16));
          }
          acc = _mm512_fmadd_ps(w[ky * 3 + kx], v, acc);
        }
      }
      acc = _mm512_add_ps(acc, b);
      acc = _mm512_min_ps(hi, _mm512_max_ps(lo, acc));
      _mm512_mask_storeu_ps(o + 16 * i, mo[i], acc);
    }
  }
}

// 16x16 floats in registers transposed: r[i][j] -> r[j][i] (unpack ps / pd, then two
// 128-bit lane shuffles)
__attribute__((target("avx512f")))
static inline void transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; ++i) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; ++i) {
    const __m512d a = _mm512_castps_pd(t[4 * i]), b = _mm512_castps_pd(t[4 * i + 2]);
    const __m512d c = _mm512_castps_pd(t[4 * i + 1]), d = _mm512_castps_pd(t[4 * i + 3]);
    r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a, b));
    r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a, b));
    r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(c, d));
    r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(c, d));
  }
  for (int i = 0; i < 2; ++i)
    for (int j = 0; j < 4; ++j) {
      t[8 * i + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + 4 + j], 0x88);
      t[8 * i + 4 + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + 4 + j], 0xDD);
    }
  for (int j = 0; j < 8; ++j) {
    r[j] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0x88);
    r[j + 8] = _mm512_shuffle_f32x4(t[j], t[j + 8], 0xDD);
  }
}

// Small planes (output rows at most 8 wide): 16 channels per vector instead of a row per
// vector. The channels' planes go into a channels-last tile [hp][wp][16] with a zero border
// (scratch slot 3): blocks of 16 consecutive pixels of the 16 planes (one masked load per
// channel) transposed in registers, each pixel's vector stored at its place. Each output pixel
// is the 9 taps' FMAs of 16 channels (taps in (ky, kx) order from zero, the same chain as
// dw3x3 per lane) into a pixel-major buffer [oh * ow][16] (after the tile), transposed back in
// blocks of 16 pixels (one masked store per channel). Lanes past ``nc`` channels are zero.
// ``nc`` (<= 16) channels from ``ch0``; x / out point at the batch's first channel.
const int64_t DW_TILE_FLOATS = 8192;  // the tile's limit: hp * wp * 16 floats (32 KB)

__attribute__((target("avx512f")))
static void dw3x3_channels(const Depthwise& d, const float* x, const float* wt, const float* bias,
                           float* out, int64_t ch0, int nc, int64_t ih, int64_t iw, int64_t ph,
                           int64_t pw, float* tile) {
  const int64_t hp = ih + 2 * ph, wp = iw + 2 * pw, plane = ih * iw, oplane = d.oh * d.ow;
  const __mmask16 m = (__mmask16)((1u << nc) - 1);
  // the zero border only (the interior is overwritten below)
  for (int64_t y = 0; y < hp; ++y) {
    if (y < ph || y >= ph + ih) {
      memset(tile + y * wp * 16, 0, wp * 64);
    } else {
      memset(tile + y * wp * 16, 0, pw * 64);
      memset(tile + (y * wp + pw + iw) * 16, 0, (wp - pw - iw) * 64);
    }
  }
  const float* xc = x + ch0 * plane;
  __m512 r[16];
  for (int64_t p0 = 0; p0 < plane; p0 += 16) {
    const int n = plane - p0 < 16 ? (int)(plane - p0) : 16;
    const __mmask16 pm = (__mmask16)((1u << n) - 1);
    for (int ch = 0; ch < 16; ++ch)
      r[ch] = ch < nc ? _mm512_maskz_loadu_ps(pm, xc + ch * plane + p0) : _mm512_setzero_ps();
    transpose16(r);
    for (int j = 0; j < n; ++j) {
      const int64_t y = (p0 + j) / iw, xx = (p0 + j) % iw;
      _mm512_store_ps(tile + ((y + ph) * wp + xx + pw) * 16, r[j]);
    }
  }
  __m512 w[9];  // the 16 channels' 9 taps: rows of 9 floats transposed (no gathers: slow on Zen 4)
  for (int ch = 0; ch < 16; ++ch)
    r[ch] = ch < nc ? _mm512_maskz_loadu_ps(0x1FF, wt + (ch0 + ch) * 9) : _mm512_setzero_ps();
  transpose16(r);
  for (int t = 0; t < 9; ++t) w[t] = r[t];
  const __m512 b = _mm512_maskz_loadu_ps(m, bias + ch0);
  const __m512 lo = _mm512_set1_ps(d.lo), hi = _mm512_set1_ps(d.hi);
  float* obuf = tile + DW_TILE_FLOATS;  // [oh * ow][16]
  for (int64_t oy = 0; oy < d.oh; ++oy)
    for (int64_t ox = 0; ox < d.ow; ++ox) {
      __m512 acc = _mm512_setzero_ps();
      for (int ky = 0; ky < 3; ++ky) {
        const float* t = tile + ((oy * d.sh + ky) * wp + ox * d.sw) * 16;
        for (int kx = 0; kx < 3; ++kx)
          acc = _mm512_fmadd_ps(w[ky * 3 + kx], _mm512_load_ps(t + kx * 16), acc);
      }
      acc = _mm512_add_ps(acc, b);
      acc = _mm512_min_ps(hi, _mm512_max_ps(lo, acc));
      _mm512_store_ps(obuf + (oy * d.ow + ox) * 16, acc);
    }
  float* oc = out + ch0 * oplane;
  for (int64_t p0 = 0; p0 < oplane; p0 += 16) {
    const int n = oplane - p0 < 16 ? (int)(oplane - p0) : 16;
    const __mmask16 pm = (__mmask16)((1u << n) - 1);
    for (int j = 0; j < 16; ++j)
      r[j] = j < n ? _mm512_load_ps(obuf + (p0 + j) * 16) : _mm512_setzero_ps();
    transpose16(r);
    for (int ch = 0; ch < nc; ++ch) _mm512_mask_storeu_ps(oc + ch * oplane + p0, pm, r[ch]);
  }
}

""" + x86_fp32_dwrows.SOURCE + x86_fp32_dwrows.FLAT_SOURCE + x86_fp32_dws1.SOURCE + x86_fp32_dws2.SOURCE + x86_fp32_winograd.SOURCE + x86_fp32_winograd4.SOURCE + x86_fp32_winograd_oc.SOURCE + r"""
// a stride-2 pool task's copy (scratch slot 1, per thread) of output rows [y0, y1) of call
// ``id``: build(r0, r1) runs for the rows this thread has not built yet in this call (a
// thread's claims of one job are contiguous: two-ended jobs), so no rows are built twice by
// one thread (rchunks items of one group each built the group's rows before)
template <typename F>
static void s2_rows(uint64_t id, int64_t y0, int64_t y1, const F& build) {
  static thread_local uint64_t built_id = 0;
  static thread_local int64_t b0 = 0, b1 = 0;
  if (built_id != id || y1 < b0 || y0 > b1) {  // none of it built (or not adjacent): all
    build(y0, y1);
    built_id = id, b0 = y0, b1 = y1;
    return;
  }
  if (y0 < b0) build(y0, b0);
  if (y1 > b1) build(b1, y1);
  b0 = y0 < b0 ? y0 : b0, b1 = y1 > b1 ? y1 : b1;
}

// panel_bases (the prelude's: a division per lane) without the divisions where the map's
// pixels are its input's offsets (stride 1, unpadded rows: 1x1 convolutions): the same
// offsets; the pool items of a 1x1 called it per item (MobileNetV2-32's 32x32 1x1s: 32 items)
static inline bool conv_panel_bases(int64_t p, int64_t pix, int64_t ow, int64_t sh, int64_t sw,
                                    int64_t wp, int64_t base[16]) {
  if (sh != 1 || sw != 1 || wp != ow) return panel_bases(p, pix, ow, sh, sw, wp, base);
  for (int lane = 0; lane < 16; ++lane)
    base[lane] = p * 16 + lane < pix ? p * 16 + lane : pix - 1;
  return p * 16 + 15 < pix;
}

static void set_none(TVMFFIAny* result) {
  result->type_index = kTVMFFINone; result->zero_padding = 0; result->v_int64 = 0;
}

}  // namespace

extern "C" {

// linear:  out[M][N] = clamp(x[M][K] . W[K][N] + bias[N] (+ residual[M][N]), lo, hi)
// args: x, panels [ceil(N/16)][K][16], bias [N], meta = [M, K, N], bounds = [lo, hi],
// (residual,) out
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_sgemm(void*, const TVMFFIAny* args, int32_t num_args,
                                TVMFFIAny* result) {
  if (bad_args(num_args, true)) return -1;
  set_none(result);
  const int64_t* meta = data<int64_t>(args, 3);
  const float* bounds = data<float>(args, 4);
  const int64_t m = meta[0], k = meta[1], n = meta[2];
  Gemm g{data<float>(args, 0), k, data<float>(args, 1), k, data<float>(args, 2), 0,
         bounds[0], bounds[1], data<float>(args, num_args - 1), n, m, n,
         num_args == 7 ? data<float>(args, 5) : 0};
  const int64_t groups = ((n + 15) / 16 + panel_step() - 1) / panel_step();
  // row blocks of 4 micro-tiles; a task's items share a panel group (it stays in cache)
  const int64_t rb = 4 * row_step(), n_rb = (m + rb - 1) / rb;
  const int64_t panels = (n + 15) / 16;
  parallel_for(groups * n_rb, [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t grp = i / n_rb, blk = i % n_rb;
      const int64_t p0 = grp * panel_step(), p1 = p0 + panel_step() < panels ? p0 + panel_step() : panels;
      const int64_t r0 = blk * rb, r1 = r0 + rb < m ? r0 + rb : m;
      gemm_block(g, r0, r1, p0, p1);
    }
  }, m * n * k);
  return 0;
}

// convolution (groups 1, NCHW / OIHW):
//   out = clamp(W[OC][K] . im2col(x)[K][OH*OW] + bias (+ residual), lo, hi)
// args: x, W [OC][C*KH*KW], bias [OC], meta = [N, C, H, W, OC, KH, KW, SH, SW, PH, PW, DH,
// DW, OH, OW (, 1: W is followed by U[OC][16][C], the Winograd weights; 2: W is a constant
// of the build, its U packed once into the library's cache)], bounds,
// (residual [N][OC][OH][OW],) out
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_sconv(void*, const TVMFFIAny* args, int32_t num_args,
                                TVMFFIAny* result) {
  if (bad_args(num_args, true)) return -1;
  set_none(result);
  const int64_t* meta = data<int64_t>(args, 3);
  const float* bounds = data<float>(args, 4);
  const int64_t nb = meta[0], c = meta[1], h = meta[2], w = meta[3], oc = meta[4];
  const int64_t kh = meta[5], kw = meta[6], sh = meta[7], sw = meta[8];
  const int64_t ph = meta[9], pw = meta[10], dh = meta[11], dw = meta[12];
  const int64_t oh = meta[13], ow = meta[14];
  const int64_t k = c * kh * kw, pix = oh * ow;
  const int64_t hp = h + 2 * ph, wp = w + 2 * pw;
  const int64_t n_panels = (pix + 15) / 16, step = panel_step();
  const int64_t groups = (n_panels + step - 1) / step;
  const float* x = data<float>(args, 0);
  float* out = data<float>(args, num_args - 1);
  const float* residual = num_args == 7 ? data<float>(args, 5) : 0;
  // same-size 3x3 maps whose rows are not a multiple of 16 wide (the in-place path cannot read
  // them: im2col panels) or with few input channels (the padded copy weighs more there); the
  // others read the padded copy in place, which measured faster than the masked loads
  // (16->16 @32 and 32->32 @16: 1.04-1.10x; 64->64 @8 0.97x, 3->16 @32 0.91x; Zen 4, 1 thread)
  // same-size 3x3 (stride 1, pad 1): rows not a multiple of 16 wide or few input channels read
  // the unpadded map with masked loads (the padded copy weighs more there: 64->64 @8 0.94x,
  // 3->16 @32 0.91x of the paths below), the others a padded copy unmasked (the masks cost
  // 3-5% on 16->16 @32 and 32->32 @16), both in 6 x 4 tiles
  const bool same3x3 = kh == 3 && kw == 3 && sh == 1 && sw == 1 && ph == 1 && pw == 1
                       && dh == 1 && dw == 1 && oh == h && ow == w;
  if (same3x3 && wg_eligible(edgecc_x86_fp32_winograd, c, h, w)) {
    ++path_calls[PATH_CONV_WINOGRAD];
    // meta[15]: 1, the weights tensor carries U[OC][16][C] after W (the build's packing); 2,
    // W is a constant of the build: U from the library's cache (packed on its first call);
    // else (kernel tests' fresh weights) transformed in the call
    const int64_t flag = tensor_arg(args + 3)->shape[0] > 15 ? meta[15] : 0;
    const float* wt = data<float>(args, 1);
    if (flag != 1 && wg4_eligible(edgecc_x86_fp32_winograd_tile, c, h, w)) {
      ++path_calls[PATH_CONV_WINOGRAD4];  // F(4x4, 3x3): its U from the cache (form 4)
      if (wg4_oc_eligible(edgecc_x86_fp32_wg_oc, h, w, oc)) {  // channels in the lanes (form 6)
        ++path_calls[PATH_CONV_WINOGRAD_OC];
        const float* ut = flag == 2 ? wg_cached(args + 1, wt, oc, c, 6) : 0;
        if (ut) ++path_calls[PATH_CONV_WINOGRAD_PACKED];
        winograd_oc_conv<4>(x, wt, 0, ut, data<float>(args, 2), residual, out, nb, c, oc,
                            bounds[0], bounds[1]);
        return 0;
      }
      const float* u4 = flag == 2 ? wg_cached(args + 1, wt, oc, c, 4) : 0;
      if (u4) ++path_calls[PATH_CONV_WINOGRAD_PACKED];
      winograd4_conv(x, wt, u4, data<float>(args, 2), residual, out, nb, c, h, w, oc, bounds[0],
                     bounds[1]);
      return 0;
    }
    if (edgecc_x86_fp32_wg_narrow == 1 && wg_oc_eligible(edgecc_x86_fp32_wg_oc, c, h, w, oc)) {
      ++path_calls[PATH_CONV_WINOGRAD_OC];  // channels in the lanes: its Uᵀ cached (form 5)
      ++path_calls[PATH_CONV_WINOGRAD_NARROW];  // its input transform: wg_input_narrow<8>
      const float* ut = flag == 2 ? wg_cached(args + 1, wt, oc, c, 5) : 0;
      if (ut || flag == 1) ++path_calls[PATH_CONV_WINOGRAD_PACKED];  // 1: U from the build
      winograd_oc_conv<2>(x, wt, flag == 1 ? wt + oc * k : 0, ut, data<float>(args, 2),
                          residual, out, nb, c, oc, bounds[0], bounds[1]);
      return 0;
    }
    const float* u = flag == 1 ? wt + oc * k : flag == 2 ? wg_cached(args + 1, wt, oc, c) : 0;
    if (u) ++path_calls[PATH_CONV_WINOGRAD_PACKED];
    winograd_conv(x, wt, u, data<float>(args, 2), residual, out, nb, c, h, w, oc, bounds[0],
                  bounds[1]);
    return 0;
  }
  const int64_t same_knob = edgecc_x86_fp32_same3x3;
  const bool same_size = AVX512 && same_knob && same3x3;
  // rows 1, 2, 4, 8 or 16 wide: a copy padded by rows only, two column masks (COLUMNS; the
  // per-panel masks' loads cost 7% on 64->64 @8, 1 thread; 32->32 @16 the same as PLAIN)
  const bool same_columns = same_size && 16 % w == 0 && same_knob == 1;
  const bool same_masked = same_size && !same_columns
                           && (ow % 16 != 0 || (c < 8 && same_knob == 5) || same_knob == 2);
  if (same_masked || same_columns
      || (same_size && (same_knob == 1 || same_knob == 4 || same_knob == 5))) {
    ++path_calls[PATH_CONV_SAME3X3];
    const int mode = same_masked ? MASKED : same_columns ? COLUMNS : PLAIN;
    if (mode == PLAIN) ++path_calls[PATH_CONV_SAME3X3_PADDED];
    if (mode == COLUMNS) ++path_calls[PATH_CONV_SAME3X3_COLUMNS];
    const int64_t spw = mode == COLUMNS ? 0 : 1, swp = w + 2 * spw;  // the copy's column pad
    // + 64: the last panel's lanes past the map read up to 16 floats past the copy (unused)
    const int64_t pad_bytes = (c * hp * swp + 64) * 4;
    // a copy per pool task, of the rows it reads, in the tiles' job: one pool job a call, not
    // two (the shared copy's job and its wait; 2 threads, interleaved wall: 16->16 @32 +res
    // 1.64x, 32->32 @16 1.17x). Only where pad_copy would run on the pool: a smaller copy runs
    // before the one job anyway, and per task it is made again by every task (64->64 @8,
    // one panel group, 4 tasks: 0.90x)
    const bool window = !same_masked && edgecc_x86_fp32_same3x3_window
                        && c * hp * swp * 8 >= serial_work();
    if (window) ++path_calls[PATH_CONV_SAME3X3_WINDOW];
    float* padded = same_masked || window ? 0 : static_cast<float*>(scratch(1, pad_bytes));
    if (padded) memset(padded + c * hp * swp, 0, 64 * 4);
    int64_t* koff = static_cast<int64_t*>(scratch(2, (k + 1) * sizeof(int64_t)));
    for (int64_t ci = 0, kk = 0; ci < c; ++ci)  // nested: no divisions per tap
      for (int64_t ky = 0; ky < 3; ++ky)
        for (int64_t kx = 0; kx < 3; ++kx, ++kk)
          koff[kk] = same_masked ? ci * h * w + (ky - 1) * w + kx - 1
                                 : (ci * hp + ky) * swp + kx - (1 - spw);
    // panel groups x output-channel chunks (at least 8 items where a chunk keeps 2 tiles), as
    // the in-place path splits them, but chunks of equal height (same3x3_rows balances the
    // tiles inside one: 64 channels in 4 chunks are 16 + 16 + 16 + 16 rows, 6 + 5 + 5 each,
    // not 18 + 18 + 18 + 10: 2 threads got 36 / 28 rows)
    const int64_t s3_groups = (n_panels + S3_NP - 1) / S3_NP;
    int64_t rchunks = 1;
    while (s3_groups * rchunks < 8 && (rchunks * 2) * 2 * S3_MR <= oc) rchunks *= 2;
    const int64_t rlen = (oc + rchunks - 1) / rchunks;
    for (int64_t b = 0; b < nb; ++b) {
      const float* src = x + b * c * h * w;
      if (padded) pad_copy(padded, src, c, h, w, ph, spw);
      const Same3x3 s{src, c, h, w, pix, koff, padded, swp, mode};
      Gemm g{data<float>(args, 1), k, 0, k, data<float>(args, 2), 1, bounds[0], bounds[1],
             out + b * oc * pix, pix, oc, pix, residual ? residual + b * oc * pix : 0};
      parallel_for(s3_groups * rchunks, [&](int64_t i0, int64_t i1) {
        Same3x3 t = s;
        if (window) {  // the padded rows of output rows [y0, y1) and the rows around them
          float* own = static_cast<float*>(scratch(1, pad_bytes));
          const int64_t q0 = i0 / rchunks * S3_NP * 16, q1 = ((i1 - 1) / rchunks + 1) * S3_NP * 16;
          const int64_t y0 = q0 / w, y1 = ((q1 < pix ? q1 : pix) - 1) / w + 1;
          pad_rows(own, src, c, h, w, spw, y0, y1 + 2);
          memset(own + c * hp * swp, 0, 64 * 4);
          t.pad = own;
        }
        for (int64_t i = i0; i < i1; ++i) {
          const int64_t grp = i / rchunks, rc = i % rchunks;
          const int64_t p0 = grp * S3_NP, p1 = p0 + S3_NP < n_panels ? p0 + S3_NP : n_panels;
          const int64_t r0 = rc * rlen, r1 = r0 + rlen < oc ? r0 + rlen : oc;
          if (r0 < r1) same3x3_rows(g, r0, r1, t, (int)(p1 - p0), p0 * 16);
        }
      }, oc * k * pix);
    }
    return 0;
  }
  // stride-2 3x3 (pad 1): the tiles read phase planes of the input (s2_phases), split as the
  // same-size path's; maps of 2+ panel groups copy each task's rows in the tiles' job, one
  // group's map is copied once before it (its tasks split the output channels)
  // 1x1 stride 2 (no pad; ResNet's shortcuts): the same over the one plane it reads (s2_evens)
  const bool s2_1x1 = kh == 1 && kw == 1 && ph == 0 && pw == 0;
  if (AVX512 && edgecc_x86_fp32_s2_phases && sh == 2 && sw == 2 && dh == 1 && dw == 1
      && ((kh == 3 && kw == 3 && ph == 1 && pw == 1) || s2_1x1)
      && oh == (h - 1) / 2 + 1 && ow == (w - 1) / 2 + 1) {
    ++path_calls[s2_1x1 ? PATH_CONV_S2_EVENS : PATH_CONV_S2_PHASES];
    const int64_t plane = s2_1x1 ? pix : (oh + 1) * ow, per_c = s2_1x1 ? plane : 6 * plane;
    const int64_t bytes = (c * per_c + 64) * 4;
    int64_t* koff = static_cast<int64_t*>(scratch(2, (k + 1) * sizeof(int64_t)));
    if (s2_1x1)
      for (int64_t ci = 0; ci < c; ++ci) koff[ci] = ci * plane;
    else
      for (int64_t ci = 0, kk = 0; ci < c; ++ci)
        for (int64_t ky = 0; ky < 3; ++ky)
          for (int64_t kx = 0; kx < 3; ++kx, ++kk)
            koff[kk] = ((ci * 2 + (ky & 1)) * 3 + kx) * plane + (ky >> 1) * ow;
    // the rows of output rows [y0, y1) (3x3: and the row below)
    auto build = [&](float* dst, const float* src, int64_t y0, int64_t y1) {
      if (s2_1x1) s2_evens(dst, src, c, h, w, oh, ow, y0, y1);
      else s2_phases(dst, src, c, h, w, oh, ow, y0, y1 + 1);
      memset(dst + c * per_c, 0, 64 * 4);  // read by lanes past the map (unused)
    };
    // a map of one group (<= S3_NP panels) on 2+ threads: two groups of half the panels each
    // (PATH_CONV_S2_HALVES), each thread building the rows of its own (s2_rows). One group's
    // copy built by the caller before the job was read by the worker from the other core.
    // ResNet-20's 32->64 @16, 2 threads: 48.7 us one group (1 thread 39.6), 29.5 in halves;
    // its 1x1 shortcut 9.1 -> 7.3 (bench/x86_fp32_call_threads.py, SCHED_FIFO, calls alone)
    const int64_t gnp = n_panels <= S3_NP && n_panels >= 2 && edgecc_x86_fp32_s2_halves
                        && edgecc_pool_size() > 1 ? (n_panels + 1) / 2 : S3_NP;
    const int64_t s3_groups = (n_panels + gnp - 1) / gnp;
    if (gnp < S3_NP) ++path_calls[PATH_CONV_S2_HALVES];
    int64_t rchunks = 1;
    while (s3_groups * rchunks < 8 && (rchunks * 2) * 2 * S3_MR <= oc) rchunks *= 2;
    const int64_t rlen = (oc + rchunks - 1) / rchunks;
    const bool per_task = s3_groups >= 2;
    float* shared = per_task ? 0 : static_cast<float*>(scratch(1, bytes));
    for (int64_t b = 0; b < nb; ++b) {
      const float* src = x + b * c * h * w;
      if (shared) build(shared, src, 0, oh);
      Gemm g{data<float>(args, 1), k, 0, k, data<float>(args, 2), 1, bounds[0], bounds[1],
             out + b * oc * pix, pix, oc, pix, residual ? residual + b * oc * pix : 0};
      const uint64_t id = s2_call_ids.fetch_add(1, std::memory_order_relaxed) + 1;
      parallel_for(s3_groups * rchunks, [&](int64_t i0, int64_t i1) {
        float* phases = shared;
        if (!phases) {  // the rows of this task's output rows [y0, y1), once per thread
          phases = static_cast<float*>(scratch(1, bytes));
          const int64_t q0 = i0 / rchunks * gnp * 16, q1 = ((i1 - 1) / rchunks + 1) * gnp * 16;
          const int64_t y0 = q0 / ow, y1 = ((q1 < pix ? q1 : pix) - 1) / ow + 1;
          s2_rows(id, y0, y1, [&](int64_t r0, int64_t r1) { build(phases, src, r0, r1); });
        }
        for (int64_t i = i0; i < i1; ++i) {
          const int64_t grp = i / rchunks, rc = i % rchunks;
          const int64_t p0 = grp * gnp, p1 = p0 + gnp < n_panels ? p0 + gnp : n_panels;
          const int64_t r0 = rc * rlen, r1 = r0 + rlen < oc ? r0 + rlen : oc;
          const float* bq[S3_NP];
          for (int q = 0; q < S3_NP; ++q) bq[q] = phases + (p0 + q) * 16;
          if (r0 < r1) tiles_rows(g, r0, r1, bq, koff, (int)(p1 - p0), p0 * 16, PLAIN, 0);
        }
      }, oc * k * pix);
    }
    return 0;
  }
  // stride 1 with output rows a multiple of 16 wide, or 1x1: every full panel is read in place
  const bool in_place = sh == 1 && sw == 1 && (ow % 16 == 0 || wp == ow);
  // stride 1 or 2, output rows 5 or more wide: im2col panels by row runs (masked loads),
  // not gathers; padded: from the unpadded input (no copy)
  const bool row_runs = AVX512 && !in_place && (sw == 1 || sw == 2) && ow >= 5;
  const bool unpadded = row_runs && (ph || pw) && kw <= 16 && edgecc_x86_fp32_unpadded;
  const bool pad = (ph || pw) && !unpadded;
  float* padded = pad ? static_cast<float*>(scratch(1, (c * hp * wp + 16) * 4)) : 0;
  int64_t* koff = static_cast<int64_t*>(scratch(2, (k + 1) * sizeof(int64_t)));
  int64_t kk = 0;  // k = (ci, ky, kx) -> its offset in the (padded) input
  for (int64_t ci = 0; ci < c; ++ci)
    for (int64_t ky = 0; ky < kh; ++ky)
      for (int64_t kx = 0; kx < kw; ++kx) koff[kk++] = (ci * hp + ky * dh) * wp + kx * dw;
  // small maps: split the output channels too, so both threads have work; through im2col
  // only a map of one panel group (a task builds the panels of its items' groups, so two
  // tasks on one group built it twice: 64->64 3x3 on 8x8, 2 groups, ran 4 tasks, 2 builds
  // per group, and the split tiles were 12,12,12 / 10,9,9 rows, not 11,11,11,11,10,10)
  // through im2col with AVX-512, maps of 2+ groups of S3_NP panels: those groups in the 6 x 64
  // tiles (ResNet-20 stride-2 3x3 16->32 @32 0.95x, 1x1 stride 2 0.94x of 12 x 32, 1 thread).
  // Not on one group: its tasks split the rows, each building the group's panels (stride-2
  // 32->64 @16, 4 panels: 2 threads 1.6x slower than the 12 x 32 GEMM's 2 groups)
  const bool wide = AVX512 && !in_place && n_panels >= 2 * S3_NP && edgecc_x86_fp32_im2col_tiles;
  const int64_t gstep = wide ? S3_NP : step, ggroups = (n_panels + gstep - 1) / gstep;
  const int64_t rstep = 2 * (wide ? S3_MR : row_step());
  int64_t rchunks = 1;
  while ((in_place || ggroups < 2) && ggroups * rchunks < 8 && (rchunks * 2) * rstep <= oc)
    rchunks *= 2;
  const int64_t rlen = wide ? (oc + rchunks - 1) / rchunks
      : ((oc + rchunks - 1) / rchunks + row_step() - 1) / row_step() * row_step();
  int64_t* kpacked = 0;  // the wide tiles' tap offsets in a packed panel: k * 16
  if (wide) {
    ++path_calls[PATH_CONV_IM2COL_TILES];
    kpacked = static_cast<int64_t*>(scratch(4, (k + 1) * sizeof(int64_t)));
    for (int64_t j = 0; j < k; ++j) kpacked[j] = j * 16;
  }
  // maps larger than about half of L2: the next panel group's input and output lines are
  // prefetched (1x1 convs on large maps read C and write OC rows at once, more streams
  // than the hardware prefetcher follows: 1.1-1.5x on MobileNetV2-224's 1x1 convs)
  const int64_t pf = in_place && (c + oc) * pix * 4 >= edgecc_x86_fp32_prefetch_bytes
                     ? 16 * step : 0;
  if (pf && AVX512) ++path_calls[PATH_CONV_PREFETCH];
  // 1x1 on large maps: items of ``pairs`` full panel pairs, each row block over all of them;
  // the panels past the last full item's (the map's tail) run the items below
  // (input channels <= CONV_PAIRS_MAX_K: MobileNetV2-224's expand 1x1s, 0.87-0.94x per layer
  // with 2 or 4 pairs, 1 thread; those of 160+ channels 1.00-1.02x)
  const int64_t pairs = pf && AVX512 && kh == 1 && kw == 1 && !pad && k <= CONV_PAIRS_MAX_K
                        && edgecc_x86_fp32_conv_pairs > 1 ? edgecc_x86_fp32_conv_pairs : 1;
  const int64_t pair_items = pairs > 1 ? pix / (32 * pairs) : 0;
  const int64_t g_first = pair_items * pairs;  // the first group (of ``step`` panels) left
  if (pair_items) ++path_calls[PATH_CONV_PAIRS];
  ++path_calls[in_place ? PATH_CONV_DIRECT : PATH_CONV_IM2COL];
  if (row_runs) ++path_calls[PATH_CONV_ROWS];
  if (unpadded) ++path_calls[PATH_CONV_UNPADDED];
  for (int64_t b = 0; b < nb; ++b) {
    const float* src = x + b * c * h * w;
    const Unpadded u{src, c, h, w, kh, kw, sh, ph, pw, dh, dw, ow, pix};
    if (pad) {
      pad_copy(padded, src, c, h, w, ph, pw);
      src = padded;
    }
    Gemm g{data<float>(args, 1), k, 0, k, data<float>(args, 2), 1, bounds[0], bounds[1],
           out + b * oc * pix, pix, oc, pix, residual ? residual + b * oc * pix : 0};
    // items i < pair_n: the pair items; the others the groups from g_first: one pool job
    const int64_t pair_n = pair_items * rchunks, ppf = 32 * pairs;  // ppf: the next item's lines
    auto pair_item = [&](int64_t i) {
      const int64_t q0 = i / rchunks * pairs, rc = i % rchunks;
      const int64_t r0 = rc * rlen, r1 = r0 + rlen < oc ? r0 + rlen : oc;
      for (int64_t r = r0; r < r1;) {  // gemm_rows' balanced micro-tile heights
        const int64_t left = r1 - r, tiles = (left + 11) / 12;
        const int mr = (int)((left + tiles - 1) / tiles);
        for (int64_t q = q0; q < q0 + pairs; ++q) {
          Panels pb{{src + q * 32, src + q * 32 + 16}, koff, ppf};
          if (r == r0) avx512_rows<2, true, true, true>(g, r, mr, pb, q * 32);
          else avx512_rows<2, true, false, true>(g, r, mr, pb, q * 32);
        }
        r += mr;
      }
    };
    parallel_for(pair_n + (ggroups - g_first) * rchunks, [&](int64_t i0, int64_t i1) {
      float* panels = 0;
      int64_t built = -1;
      for (int64_t i = i0; i < i1; ++i) {
        if (i < pair_n) {
          pair_item(i);
          continue;
        }
        const int64_t grp = g_first + (i - pair_n) / rchunks, rc = (i - pair_n) % rchunks;
        const int64_t p0 = grp * gstep, p1 = p0 + gstep < n_panels ? p0 + gstep : n_panels;
        const int64_t r0 = rc * rlen, r1 = r0 + rlen < oc ? r0 + rlen : oc;
        int64_t base[S3_NP][16];
        bool run[S3_NP] = {};  // panel p - p0 is one run of 16 consecutive pixels
        for (int64_t p = p0; p < p1; ++p) run[p - p0] = conv_panel_bases(p, pix, ow, sh, sw, wp, base[p - p0]);
        const bool direct = !wide && !unpadded && run[0] && (p1 - p0 == 1 || run[1]);  // in place
        if (direct) {
          Panels pb{{src + base[0][0], src + base[p1 - p0 - 1][0]}, koff, pf};
          if (r0 < r1) gemm_rows<true>(g, r0, r1, pb, (int)(p1 - p0), p0 * 16);
          continue;
        }
        if (!panels) panels = static_cast<float*>(scratch(0, gstep * k * 16 * 4 + 64));
        if (built != grp) {  // im2col of this group's panels, straight into their layout
          for (int64_t p = p0; p < p1; ++p) {
            float* panel = panels + (p - p0) * k * 16;
            const int64_t* bp = base[p - p0];
            if (unpadded) {
              if (sw == 1) rows_panel_unpadded<1>(panel, u, p);
              else rows_panel_unpadded<2>(panel, u, p);
            } else if (run[p - p0]) {
              for (int64_t j = 0; j < k; ++j) memcpy(panel + j * 16, src + koff[j] + bp[0], 64);
            } else if (row_runs && (sw == 1 ? rows_panel_avx512<1>(panel, src, koff, k, bp)
                                            : rows_panel_avx512<2>(panel, src, koff, k, bp))) {
            } else if (AVX512) {
              gather_panel_avx512(panel, src, koff, k, bp);
            } else {
              gather_panel_avx2(panel, src, koff, k, bp);
            }
          }
          built = grp;
        }
        if (wide) {
          const float* b[S3_NP];
          for (int q = 0; q < S3_NP; ++q) b[q] = panels + q * k * 16;
          if (r0 < r1) tiles_rows(g, r0, r1, b, kpacked, (int)(p1 - p0), p0 * 16, PLAIN, 0);
          continue;
        }
        Panels pb{{panels, panels + k * 16}, 0};
        if (r0 < r1) gemm_rows<false>(g, r0, r1, pb, (int)(p1 - p0), p0 * 16);
      }
    }, oc * k * pix);
  }
  return 0;
}

// depthwise convolution (groups = C = OC, NCHW, weights [C][KH*KW]):
// args: x, W, bias [C], meta = [N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW], bounds, out
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_sdwconv(void*, const TVMFFIAny* args, int32_t num_args,
                                  TVMFFIAny* result) {
  if (bad_args(num_args)) return -1;
  set_none(result);
  const int64_t* meta = data<int64_t>(args, 3);
  const float* bounds = data<float>(args, 4);
  Depthwise d;
  d.lo = bounds[0]; d.hi = bounds[1];
  const int64_t nb = meta[0], c = meta[1], h = meta[2], w = meta[3];
  d.kh = meta[4]; d.kw = meta[5]; d.sh = meta[6]; d.sw = meta[7];
  const int64_t ph = meta[8], pw = meta[9];
  d.dh = meta[10]; d.dw = meta[11]; d.oh = meta[12]; d.ow = meta[13];
  const int64_t hp = h + 2 * ph, wp = w + 2 * pw;
  const float* x = data<float>(args, 0);
  const float* wt = data<float>(args, 1);
  const float* bias = data<float>(args, 2);
  float* out = data<float>(args, 5);
  const bool k33 = d.kh == 3 && d.kw == 3 && d.dh == 1 && d.dw == 1;
  ++path_calls[k33 && (d.sw == 1 || d.sw == 2) ? PATH_DW_3X3 : PATH_DW_GENERIC];
  // AVX-512: small planes (rows <= 8 wide) 16 channels per vector, others a row per vector
  const bool channels = AVX512 && k33 && (d.sw == 1 || d.sw == 2)
                        && d.ow <= edgecc_x86_fp32_dw_channels_width
                        && hp * wp * 16 <= DW_TILE_FLOATS && c * h * w < (1LL << 31) / 16;
  const bool vec512 = !channels && AVX512 && k33 && (d.sw == 1 || d.sw == 2)
                      && d.ow <= 16 * DW_STEPS;
  if (vec512) ++path_calls[PATH_DW_3X3_AVX512];
  // blocks of output rows (x86_fp32_dwrows): the same sums, each input row loaded once
  const bool rows = vec512 && d.sh == d.sw && w <= DW_ROWS_WIDTH && edgecc_x86_fp32_dw_rows;
  // stride 2 on wide planes (x86_fp32_dws2): the same sums, each input row loaded once
  const int s2_rows = edgecc_x86_fp32_dw_s2_wide;
  const bool s2_wide = vec512 && w > edgecc_x86_fp32_dw_s2_min_width && d.sh == 2 && d.sw == 2
                       && pw == 1 && (s2_rows == 1 || s2_rows == 2 || s2_rows == 4);
  if (s2_wide) ++path_calls[PATH_DW_S2_WIDE];
  if (rows && !s2_wide) ++path_calls[PATH_DW_ROWS];
  const int s1_rows = edgecc_x86_fp32_dw_s1_wide;
  const bool s1_wide = vec512 && !rows && d.sh == 1 && d.sw == 1
                       && (d.ow <= DW_S1_WIDTH || (d.ow <= DW_S1_MAX_WIDTH && nb * c * h * w * 4
                                                   <= edgecc_x86_fp32_dw_s1_small_bytes))
                       && (s1_rows == 2 || s1_rows == 4);
  if (s1_wide) ++path_calls[PATH_DW_S1_WIDE];
  const int64_t s2_pf = edgecc_x86_fp32_dw_s2_prefetch > 0 ? edgecc_x86_fp32_dw_s2_prefetch : 0;
  // small same-size planes: flat, 16 consecutive pixels per vector (x86_fp32_dwrows)
  if (channels && d.sh == 1 && d.sw == 1 && ph == 1 && pw == 1 && d.oh == h && d.ow == w
      && h * w <= 16 * DW_FLAT_BLOCKS && edgecc_x86_fp32_dw_flat) {
    ++path_calls[PATH_DW_FLAT];
    dw3x3_flat_planes(d, x, wt, bias, out, c, h, w, nb * c, nb * c * d.oh * d.ow * 9);
    return 0;
  }
  // stride 2 on 16-wide planes (8-wide output rows): 2 output rows per vector (x86_fp32_dwrows)
  if (channels && d.sh == 2 && d.sw == 2 && ph == 1 && pw == 1 && w == 16 && d.ow == 8
      && h <= 16 && edgecc_x86_fp32_dw_flat) {
    ++path_calls[PATH_DW_FLAT];
    parallel_for(nb * c, [&](int64_t t0, int64_t t1) {
      dw3x3_s2w16(d, x, wt, bias, out, c, h, t0, t1);
    }, nb * c * d.oh * d.ow * 9);
    return 0;
  }
  if (channels) {
    ++path_calls[PATH_DW_CHANNELS];
    const int64_t groups = (c + 15) / 16;
    parallel_for(nb * groups, [&](int64_t t0, int64_t t1) {
      float* tile = static_cast<float*>(scratch(3, 2 * DW_TILE_FLOATS * 4));
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t n = t / groups, ch0 = (t % groups) * 16;
        const int nc = c - ch0 < 16 ? (int)(c - ch0) : 16;
        dw3x3_channels(d, x + n * c * h * w, wt, bias, out + n * c * d.oh * d.ow, ch0, nc, h, w,
                       ph, pw, tile);
      }
    }, nb * c * d.oh * d.ow * 9);
    return 0;
  }
  parallel_for(nb * c, [&](int64_t t0, int64_t t1) {
    if (vec512) {  // reads the unpadded planes (no copy)
      for (int64_t t = t0; t < t1; ++t) {
        const int64_t ch = t % c;
        Depthwise e = d;
        e.src = x + t * h * w; e.ld = w;
        e.w = wt + ch * 9; e.b = bias[ch]; e.out = out + t * d.oh * d.ow;
        if (s2_wide) dw3x3_s2_wide(e, h, w, ph, s2_rows, s2_pf);
        else if (s1_wide) dw3x3_s1_wide(e, h, w, ph, pw, s1_rows);
        else if (rows && d.sw == 1) dw3x3_rows<1>(e, h, w, ph, pw);
        else if (rows) dw3x3_rows<2>(e, h, w, ph, pw);
        else if (d.sw == 1) dw3x3_avx512<1>(e, h, w, ph, pw);
        else dw3x3_avx512<2>(e, h, w, ph, pw);
      }
      return;
    }
    // the border stays zero: only the interior is rewritten per channel
    float* padded = (ph || pw) ? static_cast<float*>(scratch(1, (hp * wp + 16) * 4)) : 0;
    if (padded) memset(padded, 0, (hp * wp + 16) * 4);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t ch = t % c;
      const float* plane = x + t * h * w;
      Depthwise e = d;
      e.src = plane; e.ld = w;
      if (padded) {
        for (int64_t y = 0; y < h; ++y) memcpy(padded + (y + ph) * wp + pw, plane + y * w, w * 4);
        e.src = padded; e.ld = wp;
      }
      e.w = wt + ch * d.kh * d.kw; e.b = bias[ch]; e.out = out + t * d.oh * d.ow;
      if (k33 && d.sw == 1) dw3x3<1>(e);
      else if (k33 && d.sw == 2) dw3x3<2>(e);
      else dw_plane<0, 0, 0>(e);
    }
  }, nb * c * d.oh * d.ow * d.kh * d.kw);
  return 0;
}

// how many calls of this library took each path (PATH_*: 0 convolutions reading their input
// in place, 1 convolutions through im2col panels, 2 / 3 depthwise 3x3 (stride 1 or 2) / other,
// 4 the depthwise 3x3 calls of 2 that ran the AVX-512 16-lane form, 5 the convolutions of 1
// whose panels (stride 1 or 2, output rows 5 or more wide) were built from row runs, not
// gathers, 6 the depthwise 3x3 calls of 2 on small planes run 16 channels per vector, 7 the
// convolutions of 0 on large maps with software prefetch (AVX-512), 8 the padded convolutions
// of 5 whose panels were read from the unpadded input (no padded copy), 9 same-size 3x3
// convolutions in 6 x 64 tiles (masked loads of the unpadded input, or 10: of a padded copy,
// or 12: of a copy padded by rows with two column masks), 11 the convolutions of 1 whose
// panels ran the 6 x 64 tiles, 13 the calls of 10 / 12 whose pool tasks each copied the
// padded rows they read (copies of 64 KiB+ / 8 bytes a float: edgecc_x86_fp32_same3x3_window),
// 14 stride-2 3x3 convolutions in 6 x 64 tiles over phase planes (s2_phases), 15 1x1 stride-2
// ones over their even rows and columns (s2_evens), 16 same-size 3x3 convolutions through
// Winograd F(2x2, 3x3) (edgecc_x86_fp32_winograd), 17 the calls of 16 whose weights came
// transformed from the build (meta[15] = 1) or the library's cache (meta[15] = 2));
// 18: the depthwise calls of 4 that ran blocks of output rows (x86_fp32_dwrows); 19: the
// depthwise 3x3 calls on small same-size planes run flat, or stride 2 on 16-wide planes 2 rows
// per vector (x86_fp32_dwrows, not counted in 6); 20: the calls of 16 on maps 8 or 16 wide
// whose input transform read rows into registers (edgecc_x86_fp32_wg_narrow); 21: F(4x4, 3x3)
// Winograd calls; 22: the depthwise calls of 4 that ran stride 2 on wide planes with each input
// row loaded once (x86_fp32_dws2, edgecc_x86_fp32_dw_s2_wide); 23: the calls of 7 (1x1)
// whose items ran several panel pairs per row block (edgecc_x86_fp32_conv_pairs); 24: the
// depthwise calls of 4 on stride-1 planes 65..128 wide in row blocks (x86_fp32_dws1);
// 25: edgecc_x86_sexpdw calls that ran the fused row bands (x86_fp32_expand_dw);
// 26: the calls of 14 / 15 on maps of one panel group split in halves (edgecc_x86_fp32_s2_halves);
// 27: the calls of 21 that ran items of 2 panels (edgecc_x86_fp32_wg4_pairs); 28: the calls of
// 16 on 8x8 maps with output channels in the lanes (x86_fp32_winograd_oc, edgecc_x86_fp32_wg_oc)
// index -1: 1 when the AVX-512 micro-kernel runs, 0 for AVX2
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_fp32_path_calls(void*, const TVMFFIAny* args, int32_t num_args,
                                         TVMFFIAny* result) {
  const int64_t i = num_args == 1 ? args[0].v_int64 : -2;
  if (i < -1 || i >= N_PATHS) {
    TVMFFIErrorSetRaisedFromCStr("ValueError", "edgecc_x86_fp32_path_calls: one index, -1..25");
    return -1;
  }
  result->type_index = kTVMFFIInt; result->zero_padding = 0;
  result->v_int64 = i < 0 ? (AVX512 ? 1 : 0) : path_calls[i];
  return 0;
}

""" + x86_fp32_expand_dw.SOURCE + r"""
}  // extern "C"
"""
