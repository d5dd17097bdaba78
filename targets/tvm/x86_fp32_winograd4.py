"""Winograd F(4x4, 3x3) for same-size 3x3 float32 convolutions on maps 16 or 32 wide (AVX-512):
a C++ fragment of the ``x86_fp32`` kernel set, spliced after ``x86_fp32_winograd``'s F(2x2, 3x3)
(it reuses its 16-lane GEMM, ``wg_gemm``, with 36 transform positions instead of 16, and its
per-library weights cache, keyed by the tile size too).

Why: in ResNet-20 the same-size 3x3 layers are ~85% of the time, and F(2x2, 3x3)'s 16 GEMMs
(4 multiplies an output per input channel) run at about the FMA peak; F(4x4, 3x3) needs 36 / 16
= 2.25 (0.56x the multiply work) for costlier transforms (6x6 patches).

Per 4x4 output tile (input patch d 6x6 at rows 4ty-1.., columns 4tx-1..), Lavin's matrices
(points 0, ±1, ±2)::

    V = Bᵀ d B        U = G g Gᵀ        M = U ⊙ V (summed over input channels)
    Y = Aᵀ M A        out = clamp((Y + bias) (+ residual), lo, hi)

Tiles are the vector lanes: a panel is 16 consecutive tiles of the row-major tile grid, which on
a 32-wide map is 2 tile rows of 8 (lanes 0-7 read one input row, 8-15 the row 4 below) and on a
16-wide map 4 tile rows of 4 (lanes 0-3, 4-7, 8-11, 12-15 read rows 0, 4, 8, 12 below the
first). Each patch element (i, j) of the 16 tiles is two permutex2var of those rows (zero-masked
outside the map) and a merge, as ``wg_input_narrow`` picks F(2x2)'s; the output's 4 rows of 16
floats of lane group 4v..4v+3 are two permutex2var of Y's columns and a blend. A pool item is
one panel (V: 36 x C x 64 bytes; 36 KiB for 16 channels) x an output-channel chunk; slices of 6
output channels run the 36 GEMMs into a block M (13.5 KiB) transformed straight to the output
(bias, residual, clamp fused). Maps of an even number of panels, at least 2 per pool thread
(32x32: 4), run items of 2 panels instead (``edgecc_x86_fp32_wg4_pairs`` 1, path
``PATH_CONV_WINOGRAD4_PAIRS``, 27): the GEMM's 6 x 2 tiles load V twice and U 6 times for 12
FMAs (one panel: once and 6 times for 6). The same sums per output (bit-identical, tested).
16x16 maps (one panel) of 16k output channels run ``x86_fp32_winograd_oc`` instead: the same
transforms and sums with the output channels in the lanes.
ResNet-20's 16->16 @32, calls alone, 2 threads (bench/x86_fp32_call_threads.py, SCHED_FIFO):
18.1-19.3 us against 22.4-23.9 (the threads' work 31-34 against 38-42); 1 thread within the
noise (28-32 either way).

Eligible (``wg4_eligible``, besides F(2x2)'s conditions): ``edgecc_x86_fp32_winograd_tile`` = 4
(int32, the default; 2 sends them to F(2x2, 3x3)), maps 16 or 32 wide, heights whose tile grid
is whole panels (32 wide: h % 8 == 0; 16 wide: h % 16 == 0), at most ``MAX_C`` (64) input
channels, weights not packed into the build
for F(2x2) (``meta[15]`` != 1). Counted on path ``PATH_CONV_WINOGRAD4`` (21) as well as
``PATH_CONV_WINOGRAD`` (16). 8-wide maps (ResNet-20's 64->64 @8) stay F(2x2): their 2x2 tiles of
4x4 would fill 4 of 16 lanes.

Weights: U = G g Gᵀ (36 positions) is computed in float64 from W and rounded once (G has 1/6,
1/24: inexact in float32), packed per library at the first call like F(2x2)'s (``meta[15]`` 2),
else (kernel tests' fresh weights) per call.

Numerics: F(4x4)'s transforms scale by up to 5 and 8, so rounding grows, and with the input
channels summed. max|a - b| / max|ref| over the output (weights 1/sqrt(9 C), inputs normal,
with / without residual and ReLU), the worst of F(4x4) vs PyTorch float64 and vs the direct
path: 200 random shapes of 8-64 input channels (1-128 output, 16 / 32 wide) <= 6.1e-6, median
3.0e-6; 150 of 8-128 input channels <= 7.7e-6 (C 122), hence ``MAX_C``; ResNet-20's real
layers <= 3.7e-6, its output 2.2e-6 vs F(2x2) (bench/x86_fp32_winograd4.py). F(2x2), direct:
<= 7.3e-7. Not bit-identical to F(2x2) or the direct path; the module's tests assert 1e-5
against both and PyTorch float64.
"""

E = 36  # the 6x6 transform's positions
MAX_C = 64  # the most input channels F(4x4) takes (its error grows with them: Numerics)


def eligible(c: int, h: int, w: int) -> bool:
    """Whether a convolution F(2x2, 3x3) takes (``x86_fp32_winograd.eligible``) runs F(4x4)
    instead under the default tile knob (the kernel's ``wg4_eligible``)."""
    return (w in (16, 32) and h % 4 == 0 and ((h // 4) * (w // 4)) % 16 == 0
            and 8 <= c <= MAX_C)


SOURCE = r"""
// ---- Winograd F(4x4, 3x3) (targets/tvm/x86_fp32_winograd4.py) -----------------------------
const int WG4_E = 36;

// lane tables of a W-wide map (W 16 / 32): in_idx[j] / in_col[j] pick patch column j of the 16
// tiles from a pair of row vectors (lanes 0-7: A0 A1, 8-15: B0 B1; zero outside the map);
// out_idx[v] interleaves Y's columns 0 1 (and 2 3) of lanes 4v .. 4v + 3 into 16 outputs
struct Wg4Tables { __m512i in_idx[6]; __mmask16 in_col[6]; __m512i out_idx[4]; };

template <int W>
__attribute__((target("avx512f")))
static void wg4_tables(Wg4Tables& t) {
  const int tw = W / 4;
  for (int j = 0; j < 6; ++j) {
    alignas(64) int32_t id[16];
    unsigned m = 0;
    for (int l = 0; l < 16; ++l) {
      const int cx = 4 * (l % tw) + j - 1;
      const bool in = cx >= 0 && cx < W;
      // W 32: columns 0-31 of one row (A0 A1); W 16: lanes 0-3 (8-11) row +0 (A0 / B0),
      // lanes 4-7 (12-15) the row 4 below (A1 / B1)
      id[l] = (W == 16 ? ((l / 4) & 1) * 16 : 0) + (in ? cx : 0);
      m |= (unsigned)in << l;
    }
    t.in_idx[j] = _mm512_load_si512(id);
    t.in_col[j] = (__mmask16)m;
  }
  for (int v = 0; v < 4; ++v) {
    alignas(64) int32_t id[16];
    for (int k = 0; k < 4; ++k)
      for (int j = 0; j < 4; ++j) id[4 * k + j] = (j & 1) * 16 + 4 * v + k;
    t.out_idx[v] = _mm512_load_si512(id);
  }
}

// r = Bᵀ d over 6 vectors: rows (4, 0, -5, 0, 1, 0), (0, -4, -4, 1, 1, 0), (0, 4, -4, -1, 1, 0),
// (0, -2, -1, 2, 1, 0), (0, 2, -1, -2, 1, 0), (0, 4, 0, -5, 0, 1)
__attribute__((target("avx512f")))
static inline void wg4_bt(const __m512* d, __m512* r) {
  const __m512 four = _mm512_set1_ps(4.0f), five = _mm512_set1_ps(5.0f), two = _mm512_set1_ps(2.0f);
  r[0] = _mm512_fmadd_ps(four, d[0], _mm512_fnmadd_ps(five, d[2], d[4]));
  const __m512 t1 = _mm512_fnmadd_ps(four, d[2], d[4]), t2 = _mm512_fnmadd_ps(four, d[1], d[3]);
  r[1] = _mm512_add_ps(t1, t2);
  r[2] = _mm512_sub_ps(t1, t2);
  const __m512 t3 = _mm512_sub_ps(d[4], d[2]), t4 = _mm512_mul_ps(two, _mm512_sub_ps(d[3], d[1]));
  r[3] = _mm512_add_ps(t3, t4);
  r[4] = _mm512_sub_ps(t3, t4);
  r[5] = _mm512_fmadd_ps(four, d[1], _mm512_fnmadd_ps(five, d[3], d[5]));
}

// y = Aᵀ m over 6 vectors: rows (1, 1, 1, 1, 1, 0), (0, 1, -1, 2, -2, 0), (0, 1, 1, 4, 4, 0),
// (0, 1, -1, 8, -8, 1)
__attribute__((target("avx512f")))
static inline void wg4_at(const __m512* m, __m512* y) {
  const __m512 a = _mm512_add_ps(m[1], m[2]), b = _mm512_sub_ps(m[1], m[2]);
  const __m512 c = _mm512_add_ps(m[3], m[4]), d = _mm512_sub_ps(m[3], m[4]);
  y[0] = _mm512_add_ps(_mm512_add_ps(m[0], a), c);
  y[1] = _mm512_fmadd_ps(_mm512_set1_ps(2.0f), d, b);
  y[2] = _mm512_fmadd_ps(_mm512_set1_ps(4.0f), c, a);
  y[3] = _mm512_add_ps(_mm512_fmadd_ps(_mm512_set1_ps(8.0f), d, b), m[5]);
}

// row y of a W-wide plane from column c0 (16 floats), zero outside rows 0 .. h - 1
__attribute__((target("avx512f")))
static inline __m512 wg4_row(const float* plane, int64_t y, int64_t h, int64_t c0, int W) {
  return y >= 0 && y < h ? _mm512_loadu_ps(plane + y * W + c0) : _mm512_setzero_ps();
}

// V[ci][e][16] (v + (ci * 36 + e) * 16) = Bᵀ d B of panel p's 16 tiles, every input channel
template <int W>
__attribute__((target("avx512f")))
static void wg4_input(float* v, const float* x, int64_t c, int64_t h, int64_t p,
                      const Wg4Tables& t) {
  const int64_t y0 = 4 * (p * 16 / (W / 4)) - 1;  // first input row the panel reads
  for (int64_t ci = 0; ci < c; ++ci, v += WG4_E * 16) {
    const float* plane = x + ci * h * W;
    __m512 s[6][6];  // row i of d, then d B
    for (int i = 0; i < 6; ++i) {
      __m512 a0, a1, b0, b1;
      if (W == 32) {
        a0 = wg4_row(plane, y0 + i, h, 0, W); a1 = wg4_row(plane, y0 + i, h, 16, W);
        b0 = wg4_row(plane, y0 + i + 4, h, 0, W); b1 = wg4_row(plane, y0 + i + 4, h, 16, W);
      } else {
        a0 = wg4_row(plane, y0 + i, h, 0, W); a1 = wg4_row(plane, y0 + i + 4, h, 0, W);
        b0 = wg4_row(plane, y0 + i + 8, h, 0, W); b1 = wg4_row(plane, y0 + i + 12, h, 0, W);
      }
      __m512 d[6];
      for (int j = 0; j < 6; ++j) {
        const __m512 lo = _mm512_maskz_permutex2var_ps(t.in_col[j] & 0x00FF, a0, t.in_idx[j], a1);
        const __m512 hi = _mm512_maskz_permutex2var_ps(t.in_col[j] & 0xFF00, b0, t.in_idx[j], b1);
        d[j] = _mm512_mask_mov_ps(lo, 0xFF00, hi);
      }
      wg4_bt(d, s[i]);
    }
    for (int j = 0; j < 6; ++j) {
      const __m512 col[6] = {s[0][j], s[1][j], s[2][j], s[3][j], s[4][j], s[5][j]};
      __m512 r[6];
      wg4_bt(col, r);
      for (int i = 0; i < 6; ++i) _mm512_store_ps(v + (i * 6 + j) * 16, r[i]);
    }
  }
}

// U[co][e][ci] = G g Gᵀ of W[co][ci][3][3] (36 positions), in float64, rounded once
static void wg4_weights(float* u, const float* wt, int64_t oc, int64_t c) {
  static const double G[6][3] = {{0.25, 0, 0}, {-1.0 / 6, -1.0 / 6, -1.0 / 6},
                                 {-1.0 / 6, 1.0 / 6, -1.0 / 6}, {1.0 / 24, 1.0 / 12, 1.0 / 6},
                                 {1.0 / 24, -1.0 / 12, 1.0 / 6}, {0, 0, 1}};
  for (int64_t co = 0; co < oc; ++co)
    for (int64_t ci = 0; ci < c; ++ci) {
      const float* g = wt + (co * c + ci) * 9;
      double t[6][3];
      for (int a = 0; a < 6; ++a)
        for (int k = 0; k < 3; ++k)
          t[a][k] = G[a][0] * g[k] + G[a][1] * g[3 + k] + G[a][2] * g[6 + k];
      for (int a = 0; a < 6; ++a)
        for (int b = 0; b < 6; ++b)
          u[(co * WG4_E + a * 6 + b) * c + ci] =
              (float)(t[a][0] * G[b][0] + t[a][1] * G[b][1] + t[a][2] * G[b][2]);
    }
}

// one output channel of panel p: Y = Aᵀ M A (m: M[36][16]), clamp((Y + bias) (+ res)) stored
// as 4 rows x 16 floats per lane group 4v .. 4v + 3 (W 16: a tile row; W 32: half of one)
template <int W>
__attribute__((target("avx512f")))
static void wg4_output(const float* m, float* out, const float* res, float bias, float lo,
                       float hi, int64_t p, const Wg4Tables& t) {
  __m512 a[4][6];  // Aᵀ M
  for (int j = 0; j < 6; ++j) {
    __m512 col[6], y[4];
    for (int i = 0; i < 6; ++i) col[i] = _mm512_load_ps(m + (i * 6 + j) * 16);
    wg4_at(col, y);
    for (int i = 0; i < 4; ++i) a[i][j] = y[i];
  }
  const __m512 b = _mm512_set1_ps(bias), vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
  const int64_t tw = W / 4;
  for (int i = 0; i < 4; ++i) {
    __m512 y[4];
    wg4_at(a[i], y);
    for (int v = 0; v < 4; ++v) {
      const int64_t tile = p * 16 + 4 * v, at = (4 * (tile / tw) + i) * W + 4 * (tile % tw);
      const __m512 f = _mm512_permutex2var_ps(y[0], t.out_idx[v], y[1]);
      const __m512 s = _mm512_permutex2var_ps(y[2], t.out_idx[v], y[3]);
      __m512 z = _mm512_add_ps(_mm512_mask_blend_ps(0xCCCC, f, s), b);
      if (res) z = _mm512_add_ps(z, _mm512_loadu_ps(res + at));
      _mm512_storeu_ps(out + at, _mm512_min_ps(vhi, _mm512_max_ps(vlo, z)));
    }
  }
}

// whether winograd4_conv runs a convolution winograd_conv could (wg_eligible held) under tile
// knob ``tile``: maps 16 / 32 wide of whole panels, at most WG4_MAX_C input channels
const int64_t WG4_MAX_C = 64;
static bool wg4_eligible(int64_t tile, int64_t c, int64_t h, int64_t w) {
  return tile == 4 && c <= WG4_MAX_C && (w == 16 || w == 32) && h % 4 == 0
         && ((h / 4) * (w / 4)) % 16 == 0;
}

// out[b] = clamp(conv3x3(x[b], W) + bias (+ res[b]), lo, hi) through F(4x4, 3x3); ``packed``:
// U[oc][36][c] from the library's cache, else 0: transformed here
template <int W>
static void winograd4_conv_w(const float* x, const float* wt, const float* packed,
                             const float* bias, const float* res, float* out, int64_t nb,
                             int64_t c, int64_t h, int64_t oc, float lo, float hi) {
  const int64_t pix = h * W, n_panels = (h / 4) * (W / 4) / 16;
  const float* u = packed;
  if (!u) {
    float* own = static_cast<float*>(scratch(4, WG4_E * oc * c * 4 + 64));
    wg4_weights(own, wt, oc, c);
    u = own;
  }
  // output-channel chunks only until every pool thread has an item (as winograd_conv)
  int64_t threads = edgecc_pool_size(), rchunks = 1;
  if (edgecc_x86_num_tasks > 0 && edgecc_x86_num_tasks < threads) threads = edgecc_x86_num_tasks;
  // items of 2 panels where every pool thread still gets one (PATH_CONV_WINOGRAD4_PAIRS)
  const int64_t gp = edgecc_x86_fp32_wg4_pairs && n_panels % 2 == 0 && n_panels >= 2 * threads
                     ? 2 : 1, groups = n_panels / gp;
  if (gp == 2) ++path_calls[PATH_CONV_WINOGRAD4_PAIRS];
  while (groups * rchunks < threads && (rchunks * 2) * 2 * WG_MR <= oc) rchunks *= 2;
  const int64_t rlen = (oc + rchunks - 1) / rchunks;
  for (int64_t b = 0; b < nb; ++b) {
    const float* src = x + b * c * pix;
    float* dst = out + b * oc * pix;
    const float* rb = res ? res + b * oc * pix : 0;
    parallel_for(groups * rchunks, [&](int64_t i0, int64_t i1) {
      float* v = static_cast<float*>(scratch(0, gp * WG4_E * c * 16 * 4 + 64));
      float* m = static_cast<float*>(scratch(3, gp * WG_MR * WG4_E * 16 * 4 + 64));
      Wg4Tables t;
      wg4_tables<W>(t);
      int64_t built = -1;
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t grp = i / rchunks, rc = i % rchunks;
        if (built != grp) {
          for (int64_t q = 0; q < gp; ++q)
            wg4_input<W>(v + q * c * WG4_E * 16, src, c, h, grp * gp + q, t);
          built = grp;
        }
        const int64_t r0 = rc * rlen, r1 = r0 + rlen < oc ? r0 + rlen : oc;
        for (int64_t r = r0; r < r1;) {  // slices of balanced height (16: 6 + 5 + 5)
          const int64_t left = r1 - r, n = (left + WG_MR - 1) / WG_MR;
          const int mr = (int)((left + n - 1) / n);
          if (gp == 2) wg_gemm_rows<2, WG4_E>(mr, u + r * WG4_E * c, v, c, m);
          else wg_gemm_rows<1, WG4_E>(mr, u + r * WG4_E * c, v, c, m);
          for (int k = 0; k < mr; ++k)
            for (int64_t q = 0; q < gp; ++q)
              wg4_output<W>(m + (k * gp + q) * WG4_E * 16, dst + (r + k) * pix,
                            rb ? rb + (r + k) * pix : 0, bias[r + k], lo, hi, grp * gp + q, t);
          r += mr;
        }
      }
    }, oc * c * 9 * pix);
  }
}

static void winograd4_conv(const float* x, const float* wt, const float* packed,
                           const float* bias, const float* res, float* out, int64_t nb,
                           int64_t c, int64_t h, int64_t w, int64_t oc, float lo, float hi) {
  if (w == 16) winograd4_conv_w<16>(x, wt, packed, bias, res, out, nb, c, h, oc, lo, hi);
  else winograd4_conv_w<32>(x, wt, packed, bias, res, out, nb, c, h, oc, lo, hi);
}
"""
