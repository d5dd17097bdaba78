"""C fragment of the x86 float32 kernels (spliced into ``x86_fp32_source.SOURCE``): depthwise
3x3 (stride 1 or 2, the same in both directions; AVX-512) over blocks of ``DW_ROWS`` (8) output
rows at once, ``edgecc_x86_fp32_dw_rows`` (PATH_DW_ROWS): 1 (the default) stride 1, 2 stride 1
and 2 (stride 2 measured 0.94-1.00x of the one-row form on planes up to 56 wide, 1.06-1.30x
on MobileNetV2-224's 112-wide one: more input rows in flight than the prefetcher follows, we
think), 0 off.

Why: the one-row form (``dw3x3_avx512``) sums each 16-output vector as one chain of 9
dependent FMAs and loads its 9 taps afresh; on Zen 4 that ran at about a third of the FMA
peak (MobileNetV2-32's 72-channel 32x32 depthwise: 34.8 us for 0.66 M multiply-adds, one
thread). Here each input row of the block is loaded once (3 masked loads, stride 2: 3
even-lane permutes of 6) and feeds every output row of the block whose window holds it, so a
block of R rows carries R independent chains and (R - 1) * S + 3 row loads instead of 3 R.
Measured (1 thread CPU time, knob A/B interleaved, machine under load): stride 1 0.69-0.85x
of the one-row form on MobileNetV2-32's planes (16-96 channels, 16-32 wide), 0.74-0.88x on
MobileNetV2-224's (14-112 wide); planes 8 wide or less keep the 16-channel tile (faster).

Same sums, bit for bit: each output accumulates its taps from zero in (ky, kx) order, one
rounding per FMA, taps of rows outside the plane skipped and columns outside it loaded as zero
(masked), then + bias and the clamp, exactly as ``dw3x3_avx512``: the tests compare the two
with ``array_equal``. The masks are ``dw3x3_avx512``'s (``lanes``), per 16-output step.
"""

SOURCE = r"""
// ---- depthwise 3x3 over blocks of output rows (targets/tvm/x86_fp32_dwrows.py) -------------
const int DW_ROWS = 8;  // output rows per block (the tail's switch below covers 1..DW_ROWS-1)
// one block of R output rows from oy0 (R <= DW_ROWS; S = stride, both directions), every
// 16-output step of the rows; mk / mo: dw3x3_avx512's load and store masks per step
template <int S, int R>
__attribute__((target("avx512f")))
static inline void dw_rows_block(const Depthwise& d, int64_t ih, int64_t iw, int64_t ph,
                                 int64_t pw, int64_t oy0, int64_t steps, const __m512* w,
                                 __m512 b, __m512 lo, __m512 hi, const __mmask16 (*mk)[3][2],
                                 const __mmask16* mo) {
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  constexpr int ROWS = (R - 1) * S + 3;  // input rows the block reads
  for (int64_t i = 0; i < steps; ++i) {
    __m512 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
    for (int j = 0; j < ROWS; ++j) {  // input rows in order: each output's taps in ky order
      const int64_t iy = oy0 * S + j - ph;
      if (iy < 0 || iy >= ih) continue;
      const float* row = d.src + iy * iw + 16 * i * S - pw;
      __m512 v[3];
      for (int kx = 0; kx < 3; ++kx) {
        if (S == 1) {
          v[kx] = _mm512_maskz_loadu_ps(mk[i][kx][0], row + kx);
        } else {
          v[kx] = _mm512_permutex2var_ps(_mm512_maskz_loadu_ps(mk[i][kx][0], row + kx), even,
                                         _mm512_maskz_loadu_ps(mk[i][kx][1], row + kx + 16));
        }
      }
      for (int r = 0; r < R; ++r) {
        const int ky = j - r * S;  // this input row's tap row for output row r
        if (ky < 0 || ky > 2) continue;
        for (int kx = 0; kx < 3; ++kx) acc[r] = _mm512_fmadd_ps(w[ky * 3 + kx], v[kx], acc[r]);
      }
    }
    for (int r = 0; r < R; ++r) {
      __m512 y = _mm512_add_ps(acc[r], b);
      y = _mm512_min_ps(hi, _mm512_max_ps(lo, y));
      _mm512_mask_storeu_ps(d.out + (oy0 + r) * d.ow + 16 * i, mo[i], y);
    }
  }
}

// one plane (d.src unpadded, ``ih`` x ``iw``; d.sh == d.sw == S): blocks of DW_ROWS output
// rows, the last block its own size
template <int S>
__attribute__((target("avx512f")))
static void dw3x3_rows(const Depthwise& d, int64_t ih, int64_t iw, int64_t ph, int64_t pw) {
  __m512 w[9];
  for (int i = 0; i < 9; ++i) w[i] = _mm512_set1_ps(d.w[i]);
  const __m512 b = _mm512_set1_ps(d.b), lo = _mm512_set1_ps(d.lo), hi = _mm512_set1_ps(d.hi);
  __mmask16 mk[DW_STEPS][3][2], mo[DW_STEPS];  // as dw3x3_avx512
  const int64_t steps = (d.ow + 15) / 16;
  for (int64_t i = 0; i < steps; ++i) {
    const int n = d.ow - 16 * i < 16 ? (int)(d.ow - 16 * i) : 16;
    mo[i] = (__mmask16)((1u << n) - 1);
    for (int kx = 0; kx < 3; ++kx) {
      const int64_t c0 = 16 * i * S + kx - pw;
      mk[i][kx][0] = lanes(c0, iw, S == 1 ? n : 2 * n - 1);
      mk[i][kx][1] = S == 1 ? 0 : lanes(c0 + 16, iw, 2 * n - 17);
    }
  }
  int64_t oy = 0;
  for (; oy + DW_ROWS <= d.oh; oy += DW_ROWS)
    dw_rows_block<S, DW_ROWS>(d, ih, iw, ph, pw, oy, steps, w, b, lo, hi, mk, mo);
  switch (d.oh - oy) {
    case 1: dw_rows_block<S, 1>(d, ih, iw, ph, pw, oy, steps, w, b, lo, hi, mk, mo); break;
    case 2: dw_rows_block<S, 2>(d, ih, iw, ph, pw, oy, steps, w, b, lo, hi, mk, mo); break;
    case 3: dw_rows_block<S, 3>(d, ih, iw, ph, pw, oy, steps, w, b, lo, hi, mk, mo); break;
    case 4: dw_rows_block<S, 4>(d, ih, iw, ph, pw, oy, steps, w, b, lo, hi, mk, mo); break;
    case 5: dw_rows_block<S, 5>(d, ih, iw, ph, pw, oy, steps, w, b, lo, hi, mk, mo); break;
    case 6: dw_rows_block<S, 6>(d, ih, iw, ph, pw, oy, steps, w, b, lo, hi, mk, mo); break;
    case 7: dw_rows_block<S, 7>(d, ih, iw, ph, pw, oy, steps, w, b, lo, hi, mk, mo); break;
    default: break;
  }
}
"""
