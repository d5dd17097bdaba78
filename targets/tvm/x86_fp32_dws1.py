"""C fragment of the x86 float32 kernels (spliced into ``x86_fp32_source.SOURCE``): depthwise
3x3 stride 1 (no dilation; AVX-512) on planes wider than ``DW_ROWS_WIDTH`` (64) and at most
``DW_S1_WIDTH`` (128) wide, or up to 256 wide when the call's input is at most
``edgecc_x86_fp32_dw_s1_small_bytes`` (6 MiB), ``edgecc_x86_fp32_dw_s1_wide`` (PATH_DW_S1_WIDE): blocks of R (2
or 4) output rows, each input row of a 16-output step loaded once for the R rows it feeds; 0
off (the one-row form ``dw3x3_avx512<1>``).

Why: MobileNetV2-224's 96-channel 112-wide planes (4.8 MB of input) ran 0.72-0.74x of the
one-row form in blocks of 2 or 4 rows (1 thread CPU time, in the model, knob A/B
interleaved, min over 30 rounds, load ~2.3). Not on the 224-wide ones: 2-row blocks ran its
72- and 48-channel planes (14 / 10 MB) 1.25x / 1.09x slower (16 channels: 0.82x), 4-row ones
with a prefetch of 4 rows ahead 1.12-1.40x; hence ``DW_S1_WIDTH``, and the small-input
rule (its 16 @224, 3.2 MB: 0.85x with the rule, the 48 / 72-channel ones unchanged).

Same sums, bit for bit: the taps of each output from zero in (ky, kx) order, one rounding per
FMA, rows outside the plane skipped, columns outside it masked to zero (``dw3x3_avx512``'s
masks), then + bias and the clamp: the tests compare the two with ``array_equal``.
"""

SOURCE = r"""
// ---- depthwise 3x3 stride 1 on wide planes (targets/tvm/x86_fp32_dws1.py) -------------------
const int64_t DW_S1_WIDTH = 128;  // the widest planes of this form, but for small inputs:
const int64_t DW_S1_MAX_WIDTH = 256, DW_S1_SMALL_BYTES = 6 << 20;  // up to 256 wide
// one plane (stride 1 both ways, d.ow <= DW_S1_MAX_WIDTH): blocks of ``rows`` (2 or 4) output
// rows, the tail one row at a time; each block is x86_fp32_dwrows' dw_rows_block<1, R> (the
// input rows of a 16-output step loaded once for the R rows they feed)
__attribute__((target("avx512f")))
static void dw3x3_s1_wide(const Depthwise& d, int64_t ih, int64_t iw, int64_t ph, int64_t pw,
                          int rows) {
  __m512 w[9];
  for (int i = 0; i < 9; ++i) w[i] = _mm512_set1_ps(d.w[i]);
  const __m512 b = _mm512_set1_ps(d.b), lo = _mm512_set1_ps(d.lo), hi = _mm512_set1_ps(d.hi);
  // as dw3x3_avx512 (dw_rows_block's layout: the second load mask is for stride 2 only)
  __mmask16 mk[DW_S1_MAX_WIDTH / 16 + 1][3][2], mo[DW_S1_MAX_WIDTH / 16 + 1];
  const int64_t steps = (d.ow + 15) / 16;
  for (int64_t i = 0; i < steps; ++i) {
    const int n = d.ow - 16 * i < 16 ? (int)(d.ow - 16 * i) : 16;
    mo[i] = (__mmask16)((1u << n) - 1);
    for (int kx = 0; kx < 3; ++kx) {
      mk[i][kx][0] = lanes(16 * i + kx - pw, iw, n);
      mk[i][kx][1] = 0;
    }
  }
  int64_t oy = 0;
  if (rows >= 4)
    for (; oy + 4 <= d.oh; oy += 4)
      dw_rows_block<1, 4>(d, ih, iw, ph, pw, oy, steps, w, b, lo, hi, mk, mo);
  for (; oy + 2 <= d.oh; oy += 2)
    dw_rows_block<1, 2>(d, ih, iw, ph, pw, oy, steps, w, b, lo, hi, mk, mo);
  for (; oy < d.oh; ++oy)
    dw_rows_block<1, 1>(d, ih, iw, ph, pw, oy, steps, w, b, lo, hi, mk, mo);
}
"""
