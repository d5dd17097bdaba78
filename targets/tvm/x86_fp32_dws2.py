"""C fragment of the x86 float32 kernels (spliced into ``x86_fp32_source.SOURCE``): depthwise
3x3 stride 2 (pad 1 on the left, no dilation; AVX-512) on planes wider than
``edgecc_x86_fp32_dw_s2_min_width`` (16; narrower ones run the 16-channel tile or
``dw3x3_s2w16``), ``edgecc_x86_fp32_dw_s2_wide`` (PATH_DW_S2_WIDE): R (1, 2 or 4) output rows
per block, 0 off (planes <= 64 wide: the row blocks of ``x86_fp32_dwrows``, wider ones the
one-row form ``dw3x3_avx512<2>``).

Why: the one-row form builds each of the 9 tap vectors of a 16-output step from two masked
loads and a permutex2var (18 loads, 9 permutes per 16 outputs), and loads each input row for
the two output rows that read it. Here each input row of a step is loaded once as 32
consecutive floats (two masked loads), split into its even and odd columns (two permutes):
the taps kx = 1 and kx = 2 of the 16 outputs; the tap kx = 0 (columns 2 ox - 1) is the odd
vector shifted up one lane with the previous step's last odd column (valignd), so the row
costs 2 loads and 3 shuffles, and a block of R output rows reads 2 R + 1 input rows once. The
wide planes' input comes from memory (MobileNetV2-224's 72-channel 224-wide plane: 14 MB),
so the block also prefetches the rows ``edgecc_x86_fp32_dw_s2_prefetch`` input rows ahead
(0: none).

Measured (1 thread CPU time, in the model, knob A/B interleaved, min over rounds, load ~3-4):
MobileNetV2-224's 72 s2 @224 0.4-0.65x of the one-row form (1746 -> 1134 us without the
prefetch, the prefetch of 3-6 rows a further 0.54-0.88x), 96 s2 @112 0.61x; against the row
blocks (min width 64 -> 16): 288 s2 @56 0.75x, MobileNetV2-32's 72 s2 @32 0.83x. 4-row blocks:
0.94-0.96x of 2 on the 32 / 56-wide planes but 1.32x on the 224-wide one (so 2). The same
prefetch in the stride-1 one-row form was 1.05-1.11x slower (not kept).

Same sums, bit for bit: each output accumulates its taps from zero in (ky, kx) order, one
rounding per FMA, taps of rows outside the plane skipped and columns outside it zero (masked
loads; column -1 the zero vector the row starts from), then + bias and the clamp, exactly as
``dw3x3_avx512``: the tests compare the two with ``array_equal``.
"""

SOURCE = r"""
// ---- depthwise 3x3 stride 2 on wide planes (targets/tvm/x86_fp32_dws2.py) -------------------
// one block of R output rows from oy0 (d.src the unpadded plane, ih x iw; left pad 1): every
// 16-output step i reads input columns [32 i, 32 i + 32) of the block's 2 R + 1 rows once
// (masks ma / mb: those inside the plane), even columns = tap kx 1, odd = kx 2, the odd ones
// shifted up a lane with the previous step's last = kx 0; pf: prefetch distance (floats)
template <int R>
__attribute__((target("avx512f")))
static inline void dw_s2_wide_block(const Depthwise& d, int64_t ih, int64_t iw, int64_t ph,
                                    int64_t oy0, int64_t steps, const __m512* w, __m512 b,
                                    __m512 lo, __m512 hi, const __mmask16* ma,
                                    const __mmask16* mb, const __mmask16* mo, int64_t pf) {
  const __m512i even = _mm512_set_epi32(30, 28, 26, 24, 22, 20, 18, 16, 14, 12, 10, 8, 6, 4, 2, 0);
  const __m512i odd = _mm512_set_epi32(31, 29, 27, 25, 23, 21, 19, 17, 15, 13, 11, 9, 7, 5, 3, 1);
  constexpr int ROWS = 2 * R + 1;  // input rows the block reads
  __m512 prev[ROWS];  // each row's odd columns of the previous step (column -1: the padding)
  for (int j = 0; j < ROWS; ++j) prev[j] = _mm512_setzero_ps();
  for (int64_t i = 0; i < steps; ++i) {
    __m512 acc[R];
    for (int r = 0; r < R; ++r) acc[r] = _mm512_setzero_ps();
#pragma GCC unroll 16
    for (int j = 0; j < ROWS; ++j) {  // input rows in order: each output's taps in ky order
      const int64_t iy = oy0 * 2 + j - ph;
      if (iy < 0 || iy >= ih) continue;
      const float* row = d.src + iy * iw + 32 * i;
      if (pf && j > 0) {  // row j = 0 is the previous block's last
        _mm_prefetch((const char*)(row + pf), _MM_HINT_T0);
        _mm_prefetch((const char*)(row + pf + 16), _MM_HINT_T0);
      }
      const __m512 x0 = _mm512_maskz_loadu_ps(ma[i], row);
      const __m512 x1 = _mm512_maskz_loadu_ps(mb[i], row + 16);
      const __m512 e = _mm512_permutex2var_ps(x0, even, x1);
      const __m512 o = _mm512_permutex2var_ps(x0, odd, x1);
      const __m512 l = _mm512_castsi512_ps(
          _mm512_alignr_epi32(_mm512_castps_si512(o), _mm512_castps_si512(prev[j]), 15));
      prev[j] = o;
#pragma GCC unroll 8
      for (int r = 0; r < R; ++r) {
        const int ky = j - 2 * r;  // this input row's tap row for output row r
        if (ky < 0 || ky > 2) continue;
        acc[r] = _mm512_fmadd_ps(w[ky * 3], l, acc[r]);
        acc[r] = _mm512_fmadd_ps(w[ky * 3 + 1], e, acc[r]);
        acc[r] = _mm512_fmadd_ps(w[ky * 3 + 2], o, acc[r]);
      }
    }
    for (int r = 0; r < R; ++r) {
      __m512 y = _mm512_add_ps(acc[r], b);
      y = _mm512_min_ps(hi, _mm512_max_ps(lo, y));
      _mm512_mask_storeu_ps(d.out + (oy0 + r) * d.ow + 16 * i, mo[i], y);
    }
  }
}

// one plane (stride 2 both ways, left pad 1, d.ow <= 16 * DW_STEPS): blocks of ``rows`` (1, 2
// or 4) output rows, the tail one row at a time
__attribute__((target("avx512f")))
static void dw3x3_s2_wide(const Depthwise& d, int64_t ih, int64_t iw, int64_t ph, int rows,
                          int64_t pf_rows) {
  __m512 w[9];
  for (int i = 0; i < 9; ++i) w[i] = _mm512_set1_ps(d.w[i]);
  const __m512 b = _mm512_set1_ps(d.b), lo = _mm512_set1_ps(d.lo), hi = _mm512_set1_ps(d.hi);
  __mmask16 ma[DW_STEPS], mb[DW_STEPS], mo[DW_STEPS];
  const int64_t steps = (d.ow + 15) / 16;
  for (int64_t i = 0; i < steps; ++i) {
    const int n = d.ow - 16 * i < 16 ? (int)(d.ow - 16 * i) : 16;
    mo[i] = (__mmask16)((1u << n) - 1);
    ma[i] = lanes(32 * i, iw, 16);
    mb[i] = lanes(32 * i + 16, iw, 16);
  }
  const int64_t pf = pf_rows * iw;
  int64_t oy = 0;
  if (rows >= 4)
    for (; oy + 4 <= d.oh; oy += 4)
      dw_s2_wide_block<4>(d, ih, iw, ph, oy, steps, w, b, lo, hi, ma, mb, mo, pf);
  if (rows >= 2)
    for (; oy + 2 <= d.oh; oy += 2)
      dw_s2_wide_block<2>(d, ih, iw, ph, oy, steps, w, b, lo, hi, ma, mb, mo, pf);
  for (; oy < d.oh; ++oy)
    dw_s2_wide_block<1>(d, ih, iw, ph, oy, steps, w, b, lo, hi, ma, mb, mo, pf);
}
"""
