"""C fragment of the x86 float32 kernels (spliced into ``x86_fp32_source.SOURCE``): depthwise
3x3 (stride 1 or 2, the same in both directions; AVX-512) over blocks of ``DW_ROWS`` (8) output
rows at once, on planes at most ``DW_ROWS_WIDTH`` (64) wide, ``edgecc_x86_fp32_dw_rows``
(PATH_DW_ROWS; 1 the default, 0 off).

Why: the one-row form (``dw3x3_avx512``) sums each 16-output vector as one chain of 9
dependent FMAs and loads its 9 taps afresh; on Zen 4 that ran at about a third of the FMA
peak (MobileNetV2-32's 72-channel 32x32 depthwise: 34.8 us for 0.66 M multiply-adds, one
thread). Here each input row of the block is loaded once (3 masked loads, stride 2: 3
even-lane permutes of 6) and feeds every output row of the block whose window holds it, so a
block of R rows carries R independent chains and (R - 1) * S + 3 row loads instead of 3 R.
The block's loops carry ``#pragma GCC unroll``: without it GCC kept acc[] on the stack (the
blocks ran 0.69-0.85x of the one-row form instead of 0.57-0.64x). Measured in the model (1
thread CPU time, min over interleaved rounds, knob A/B, under load ~3): MobileNetV2-32's
stride-1 planes (16-96 channels, 16-32 wide) 0.58-0.67x of the one-row form, its stride-2 72
@32 0.83x (96 s2 @16 and smaller: the 16-channel tile); MobileNetV2-224's 56 / 28-wide planes
0.65-0.75x (stride 1 and 2), but its 112 / 224-wide ones 1.25-1.54x slower (their input from
memory: a block reads 10-17 rows' streams at once), hence ``DW_ROWS_WIDTH``.

Same sums, bit for bit: each output accumulates its taps from zero in (ky, kx) order, one
rounding per FMA, taps of rows outside the plane skipped and columns outside it loaded as zero
(masked), then + bias and the clamp, exactly as ``dw3x3_avx512``: the tests compare the two
with ``array_equal``. The masks are ``dw3x3_avx512``'s (``lanes``), per 16-output step.

``FLAT_SOURCE``: small same-size planes (stride 1, pad 1, rows <= 8 wide, <= 128 pixels: the
16-channel tile's stride-1 shapes), ``edgecc_x86_fp32_dw_flat`` (PATH_DW_FLAT). A plane is
blocks of 16 consecutive pixels whatever rows they span; per tap row the block's input
vectors are loaded once (lanes outside the plane masked off) and the three column taps come by
valignd, the lanes whose tap lies outside the plane kept by a masked FMA (``mask3_fmadd``:
acc unchanged, the same as + w * 0 since acc is never -0); one-block planes load each tap
masked instead. Bit-identical to the tile, which spent about half its time in transposes.
Measured (1 thread CPU time, knob A/B interleaved, under load ~3.7): 0.73-0.75x of the tile on
MobileNetV2-32's 192 / 288-channel 8x8 planes, 0.64x on its 480-channel 4x4, 0.81x on
MobileNetV2-224's 960-channel 7x7. Also under that knob, stride 2 on 16-wide planes (8-wide
output rows, h <= 16: MobileNetV2-32's 96 s2 @16): 2 output rows per vector from two input
row vectors by one permutex2var per tap (``dw3x3_s2w16``), 0.47x of the tile (1 thread CPU
time, old vs new library interleaved, under load ~2.2), bit-identical.
"""

SOURCE = r"""
// ---- depthwise 3x3 over blocks of output rows (targets/tvm/x86_fp32_dwrows.py) -------------
const int DW_ROWS = 8;  // output rows per block (the tail's switch below covers 1..DW_ROWS-1)
// planes at most this wide only: in MobileNetV2-224 (1 thread, in the model, min over rounds)
// blocks ran its 112- and 224-wide planes 1.25-1.54x slower (their input from memory: a block
// reads 10-17 rows' streams at once), its 56- and 28-wide ones 0.65-0.75x
const int64_t DW_ROWS_WIDTH = 64;
// one block of R output rows from oy0 (R <= DW_ROWS; S = stride, both directions), every
// 16-output step of the rows; mk / mo: dw3x3_avx512's load and store masks per step; NT: full,
// 64-byte aligned output vectors by non-temporal stores (x86_fp32_expand_dw; its caller fences)
template <int S, int R, bool NT = false>
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
#pragma GCC unroll 32
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
#pragma GCC unroll 16
      for (int r = 0; r < R; ++r) {
        const int ky = j - r * S;  // this input row's tap row for output row r
        if (ky < 0 || ky > 2) continue;
        for (int kx = 0; kx < 3; ++kx) acc[r] = _mm512_fmadd_ps(w[ky * 3 + kx], v[kx], acc[r]);
      }
    }
    for (int r = 0; r < R; ++r) {
      __m512 y = _mm512_add_ps(acc[r], b);
      y = _mm512_min_ps(hi, _mm512_max_ps(lo, y));
      float* o = d.out + (oy0 + r) * d.ow + 16 * i;
      if (NT && mo[i] == (__mmask16)0xFFFF && ((uintptr_t)o & 63) == 0) _mm512_stream_ps(o, y);
      else _mm512_mask_storeu_ps(o, mo[i], y);
    }
  }
}

// one plane (d.src unpadded, ``ih`` x ``iw``; d.sh == d.sw == S): blocks of DW_ROWS output
// rows, the last block its own size
template <int S, bool NT = false>
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
    dw_rows_block<S, DW_ROWS, NT>(d, ih, iw, ph, pw, oy, steps, w, b, lo, hi, mk, mo);
  switch (d.oh - oy) {
    case 1: dw_rows_block<S, 1, NT>(d, ih, iw, ph, pw, oy, steps, w, b, lo, hi, mk, mo); break;
    case 2: dw_rows_block<S, 2, NT>(d, ih, iw, ph, pw, oy, steps, w, b, lo, hi, mk, mo); break;
    case 3: dw_rows_block<S, 3, NT>(d, ih, iw, ph, pw, oy, steps, w, b, lo, hi, mk, mo); break;
    case 4: dw_rows_block<S, 4, NT>(d, ih, iw, ph, pw, oy, steps, w, b, lo, hi, mk, mo); break;
    case 5: dw_rows_block<S, 5, NT>(d, ih, iw, ph, pw, oy, steps, w, b, lo, hi, mk, mo); break;
    case 6: dw_rows_block<S, 6, NT>(d, ih, iw, ph, pw, oy, steps, w, b, lo, hi, mk, mo); break;
    case 7: dw_rows_block<S, 7, NT>(d, ih, iw, ph, pw, oy, steps, w, b, lo, hi, mk, mo); break;
    default: break;
  }
}
"""

FLAT_SOURCE = r"""
// ---- depthwise 3x3 on small same-size planes, flat (targets/tvm/x86_fp32_dwrows.py) ---------
const int DW_FLAT_BLOCKS = 8;  // 16-pixel blocks of a plane the flat form handles (<= 128 pixels)

// The masks of an h x w plane (the same for every plane of a call): computed once per call
// (dw3x3_flat_job), not per pool chunk (each chunk recomputed them: ~20 chunks of a 192-channel
// 8 x 8 call at 2 threads cost it 1.4-1.7x its serial time)
template <int NB>
struct FlatMasks {
  __mmask16 m[NB][9], mo[NB], lm[3][NB + 2];
};

template <int NB>
static void flat_masks(FlatMasks<NB>& f, int64_t h, int64_t w) {
  const int64_t plane = h * w;
  __mmask16 (&m)[NB][9] = f.m;
  __mmask16 (&mo)[NB] = f.mo;
  for (int b = 0; b < NB; ++b) {
    unsigned rows[3] = {0, 0, 0}, cols[3] = {0, 0, 0}, in = 0;
    for (int j = 0; j < 16; ++j) {
      const int64_t p = 16 * b + j;
      if (p >= plane) break;
      const int64_t y = p / w, xx = p % w;
      in |= 1u << j;
      for (int k = 0; k < 3; ++k) {
        if (y + k - 1 >= 0 && y + k - 1 < h) rows[k] |= 1u << j;
        if (xx + k - 1 >= 0 && xx + k - 1 < w) cols[k] |= 1u << j;
      }
    }
    mo[b] = (__mmask16)in;
    for (int t = 0; t < 9; ++t) m[b][t] = (__mmask16)(rows[t / 3] & cols[t % 3]);
  }
  // per tap row ky: the NB + 2 vectors at (ky - 1) * w + 16 * (k - 1), k = 0..NB+1 (lanes
  // outside the plane masked off, so no load leaves it); tap (ky, kx) of block b is lanes
  // kx - 1.. of vectors b, b + 1 (valignd), its lanes outside the plane skipped by the mask
  // (acc kept: the same as + w * 0, acc never being -0)
  for (int ky = 0; ky < 3; ++ky)
    for (int k = 0; k < NB + 2; ++k) {
      const int64_t s0 = (ky - 1) * w + 16 * (k - 1);
      f.lm[ky][k] = lanes(s0, plane, 16);
    }
}

// planes [t0, t1) (index n * c + ch) of a stride-1, pad-1, same-size depthwise 3x3 whose plane
// is NB blocks of 16 pixels: each block is 16 consecutive output pixels of the plane, and tap
// (ky, kx) of them the 16 consecutive inputs at offset (ky - 1) * w + kx - 1 whatever rows they
// span, lanes outside the plane masked to zero (rows: R[ky], columns: C[kx]). No tile, no
// transposes: the 16-channel tile (dw3x3_channels) spent about half its time transposing.
template <int NB>
__attribute__((target("avx512f")))
static void dw3x3_flat(const Depthwise& d, const float* x, const float* wt, const float* bias,
                       float* out, int64_t c, int64_t h, int64_t w, const FlatMasks<NB>& f,
                       int64_t t0, int64_t t1) {
  const int64_t plane = h * w;
  const __mmask16 (&m)[NB][9] = f.m;
  const __mmask16 (&mo)[NB] = f.mo;
  const __mmask16 (&lm)[3][NB + 2] = f.lm;
  const __m512 lo = _mm512_set1_ps(d.lo), hi = _mm512_set1_ps(d.hi);
  for (int64_t i = t0; i < t1; ++i) {
    const int64_t ch = i % c;
    const float* src = x + i * plane;
    __m512 acc[NB];
    for (int b = 0; b < NB; ++b) acc[b] = _mm512_setzero_ps();
    if (NB == 1) {  // one block: a masked load per tap (3 loads either way, no valignd)
      for (int t = 0; t < 9; ++t) {
        const __m512 wv = _mm512_set1_ps(wt[ch * 9 + t]);
        const float* tap = src + (t / 3 - 1) * w + t % 3 - 1;
        acc[0] = _mm512_fmadd_ps(wv, _mm512_maskz_loadu_ps(m[0][t], tap), acc[0]);
      }
    }
#pragma GCC unroll 16
    for (int ky = 0; NB > 1 && ky < 3; ++ky) {  // taps in (ky, kx) order for every pixel
      const float* base = src + (ky - 1) * w - 16;
      __m512 v[NB + 2];
#pragma GCC unroll 16
      for (int k = 0; k < NB + 2; ++k) v[k] = _mm512_maskz_loadu_ps(lm[ky][k], base + 16 * k);
      const __m512 w0 = _mm512_set1_ps(wt[ch * 9 + ky * 3]);
      const __m512 w1 = _mm512_set1_ps(wt[ch * 9 + ky * 3 + 1]);
      const __m512 w2 = _mm512_set1_ps(wt[ch * 9 + ky * 3 + 2]);
#pragma GCC unroll 16
      for (int b = 0; b < NB; ++b) {
        const __m512 left = _mm512_castsi512_ps(_mm512_alignr_epi32(
            _mm512_castps_si512(v[b + 1]), _mm512_castps_si512(v[b]), 15));
        const __m512 right = _mm512_castsi512_ps(_mm512_alignr_epi32(
            _mm512_castps_si512(v[b + 2]), _mm512_castps_si512(v[b + 1]), 1));
        acc[b] = _mm512_mask3_fmadd_ps(w0, left, acc[b], m[b][ky * 3]);
        acc[b] = _mm512_mask3_fmadd_ps(w1, v[b + 1], acc[b], m[b][ky * 3 + 1]);
        acc[b] = _mm512_mask3_fmadd_ps(w2, right, acc[b], m[b][ky * 3 + 2]);
      }
    }
    const __m512 bv = _mm512_set1_ps(bias[ch]);
    float* o = out + i * plane;
    for (int b = 0; b < NB; ++b) {
      const __m512 y = _mm512_min_ps(hi, _mm512_max_ps(lo, _mm512_add_ps(acc[b], bv)));
      _mm512_mask_storeu_ps(o + 16 * b, mo[b], y);
    }
  }
}

// planes [t0, t1) of a stride-2, pad-1 depthwise 3x3 on 16-wide input planes (h <= 16 rows,
// output rows 8 wide): 16 outputs per vector = 2 output rows; tap (ky, kx) of output rows
// oy, oy + 1 is input rows 2 oy + ky - 1 and 2 oy + ky + 1 (one vector each), columns
// 2 ox + kx - 1 picked by one permutex2var; lanes outside the plane kept by the masked FMA
// (as the tile's zero border: acc + w * 0). No tile, no transposes.
__attribute__((target("avx512f")))
static void dw3x3_s2w16(const Depthwise& d, const float* x, const float* wt, const float* bias,
                        float* out, int64_t c, int64_t h, int64_t t0, int64_t t1) {
  const int64_t oh = d.oh, plane = h * 16, oplane = oh * 8;
  __m512i idx[3];
  __mmask16 cm[3];
  for (int kx = 0; kx < 3; ++kx) {
    alignas(64) int32_t lane[16];
    unsigned valid = 0;
    for (int j = 0; j < 16; ++j) {
      const int col = 2 * (j % 8) + kx - 1;
      lane[j] = (j >= 8 ? 16 : 0) + (col < 0 ? 0 : col);
      if (col >= 0 && col < 16) valid |= 1u << j;
    }
    idx[kx] = _mm512_load_si512(lane);
    cm[kx] = (__mmask16)valid;
  }
  const __m512 lo = _mm512_set1_ps(d.lo), hi = _mm512_set1_ps(d.hi);
  for (int64_t i = t0; i < t1; ++i) {
    const int64_t ch = i % c;
    const float* src = x + i * plane;
    float* o = out + i * oplane;
    __m512 w[9];
    for (int t = 0; t < 9; ++t) w[t] = _mm512_set1_ps(wt[ch * 9 + t]);
    const __m512 bv = _mm512_set1_ps(bias[ch]);
    for (int64_t oy = 0; oy < oh; oy += 2) {
      __m512 acc = _mm512_setzero_ps();
      for (int ky = 0; ky < 3; ++ky) {  // taps in (ky, kx) order, as the tile
        const int64_t ra = 2 * oy + ky - 1, rb = ra + 2;
        const bool a_in = ra >= 0 && ra < h, b_in = rb >= 0 && rb < h;
        const __m512 va = a_in ? _mm512_loadu_ps(src + ra * 16) : _mm512_setzero_ps();
        const __m512 vb = b_in ? _mm512_loadu_ps(src + rb * 16) : _mm512_setzero_ps();
        const __mmask16 rm = (__mmask16)((a_in ? 0x00FFu : 0u) | (b_in ? 0xFF00u : 0u));
        for (int kx = 0; kx < 3; ++kx)
          acc = _mm512_mask3_fmadd_ps(w[ky * 3 + kx], _mm512_permutex2var_ps(va, idx[kx], vb),
                                      acc, rm & cm[kx]);
      }
      const __m512 y = _mm512_min_ps(hi, _mm512_max_ps(lo, _mm512_add_ps(acc, bv)));
      _mm512_mask_storeu_ps(o + oy * 8, oy + 1 < oh ? (__mmask16)0xFFFF : (__mmask16)0x00FF, y);
    }
  }
}

// planes [0, items) as one pool job of ``work`` (parallel_for), the masks computed once
template <int NB>
static void dw3x3_flat_job(const Depthwise& d, const float* x, const float* wt, const float* bias,
                           float* out, int64_t c, int64_t h, int64_t w, int64_t items,
                           int64_t work) {
  FlatMasks<NB> f;
  const bool once = edgecc_x86_fp32_dw_flat_once != 0;
  if (once) flat_masks<NB>(f, h, w);
  parallel_for(items, [&](int64_t t0, int64_t t1) {
    if (once) {
      dw3x3_flat<NB>(d, x, wt, bias, out, c, h, w, f, t0, t1);
      return;
    }
    FlatMasks<NB> own;  // per chunk (the A/B's other side: the same masks, the same sums)
    flat_masks<NB>(own, h, w);
    dw3x3_flat<NB>(d, x, wt, bias, out, c, h, w, own, t0, t1);
  }, work);
}

static void dw3x3_flat_planes(const Depthwise& d, const float* x, const float* wt,
                              const float* bias, float* out, int64_t c, int64_t h, int64_t w,
                              int64_t items, int64_t work) {
  switch ((h * w + 15) / 16) {
    case 1: dw3x3_flat_job<1>(d, x, wt, bias, out, c, h, w, items, work); break;
    case 2: dw3x3_flat_job<2>(d, x, wt, bias, out, c, h, w, items, work); break;
    case 3: dw3x3_flat_job<3>(d, x, wt, bias, out, c, h, w, items, work); break;
    case 4: dw3x3_flat_job<4>(d, x, wt, bias, out, c, h, w, items, work); break;
    case 5: dw3x3_flat_job<5>(d, x, wt, bias, out, c, h, w, items, work); break;
    case 6: dw3x3_flat_job<6>(d, x, wt, bias, out, c, h, w, items, work); break;
    case 7: dw3x3_flat_job<7>(d, x, wt, bias, out, c, h, w, items, work); break;
    default: dw3x3_flat_job<8>(d, x, wt, bias, out, c, h, w, items, work); break;
  }
}
"""
