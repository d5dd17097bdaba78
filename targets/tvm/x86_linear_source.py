"""C++ source of ``edgecc_x86_linear``: the transformers' float linears (``x86_linear``) as
``x86_fp32``'s SGEMM computes them — the same packed weights, the same sums in the same order,
the same write-back — but with each task's rows packed before they are multiplied, and with
GELU (erf or tanh form) optionally applied in the write-back.

Why: ``edgecc_x86_sgemm`` reads its 12 rows in place (a broadcast from 12 rows ``K`` floats
apart per k) and runs 48-row blocks against one pair of panels at a time. On Zen 4 the
12x32 tile reaches the FMA peak from L1 (58.6 GMAC/s per thread, measured), but in MiniLM's
shapes (1024 x 384 x 1536, 1024 x 1536 x 384, 1024 x 384 x 384) the 12 row streams and the
re-read of each row block per panel pair held it to 47-50 GMAC/s. Here one task item is 12
rows: packed once into ``ap[K][12]`` (one stream, 48 bytes per k), then multiplied by every
panel pair while the packed rows stay in L1/L2 and the panels stream in order (the hardware
prefetcher follows one stream): 51-55 GMAC/s on the same shapes (1 thread, standalone)::

    for each 12-row block (a pool item):  ap[k][r] = x[r0 + r][k]
        for each pair of 16-column panels: acc[12][2] = sum_k ap[k][r] * panel[k][0:32]
                                           y = min(max(acc + bias (+ res), lo), hi)
                                           y = gelu(y)            (mode 1: erf, 2: tanh)

A pool task packs its 12-row blocks in groups of ~256 KiB (``edgecc_x86_linear_group_bytes``;
0: all at once), and multiplies ~256 KiB chunks of panels (``edgecc_x86_linear_panel_bytes``)
by every block of a group, so a chunk stays in L2 while the blocks pass and the group's packed
rows stay in L2 while the chunks pass. (Without groups, MiniLM's task packed up to 1024 rows:
1.5 MiB at K = 384, 6 MiB at K = 1536, read again from L3 for each chunk. 1 thread, CPU time,
interleaved, load 3-4: 1024 x 384 x 384 0.953x, 1024 x 1536 x 384 0.949x, 1024 x 384 x 1536
0.998x, GPT-2's 128-row linears 0.997-1.000x; whole MiniLM (with / without groups) 0.983x,
0.997x, 0.992x (40 rounds); BERT 1.000x, GPT-2 1.001x; 2 threads, load 3: MiniLM 0.981x,
BERT 0.995x (200 rounds), in the noise.) On 2+ threads, a product of few row blocks (BERT / GPT-2 at 128 tokens: 11) also splits
its columns (``edgecc_x86_linear_min_items`` = 32 pool items wanted), so the threads' shares
are within a 12-row x 2-tile item of each other (the SGEMM split its columns too); one thread
does not split (each split packs the rows again: 3.5% of BERT's 1-thread time). Path
counters 3-6 of ``edgecc_x86_attention_paths``: linear calls, fused GELUs, column splits,
and the (task, column split) runs that packed their row blocks in 2+ groups; counter 8: the
calls whose tiles prefetched their output (and residual) lines as they start
(``edgecc_x86_linear_prefetch``, default 1): a tile's write-back otherwise waits on lines in
L3 or memory (the outputs are 1.5-6 MiB; the hardware prefetchers do not follow 12 rows
``n`` floats apart). bench/x86_linear_peak.py, 1 thread, CPU time, 20 interleaved rounds,
load 4: MiniLM's qkv 0.953x, attention output 0.978x, intermediate 0.974x, output 0.987x
(a no-op control column 0.995-1.001x); the register tile alone writing fresh output ran at
0.95-0.97x of its speed writing lines already cached, 0.98-0.99x with the prefetch. Counter
10: the calls whose tiles' k steps prefetched their panels' line (and the packed rows') ``d``
steps ahead (``edgecc_x86_linear_panel_prefetch`` = d, default 8; a panel pair at K = 384 is
48 KiB, more than L1: the tile streams it from L2). bench/x86_linear_peak.py, 1 thread, CPU
time, load 4.5-6.6, two runs of 10 / 14 rounds: without it 1.003-1.011x (every shape's median
> 1; d = 16 0.995-1.003x). A cpu-clock profile of MiniLM at 2 threads (perf record, load ~5):
the tiles' k loop 83% of the process's samples, their write-backs (GELU) ~3.5%, the packing
2.1%, the attention 5%, layer norm 0.9%, the pool's waits ~2%. Counter 11: the calls whose
tiles spread those output (and residual) prefetches over the k loop, one line every 4 k steps
(``edgecc_x86_linear_prefetch`` 3; 1, the default: in calls with a residual; 2: all as the
tile starts, the default before): 48 lines missed in one burst hold L1's miss buffers that the panel loads need.
1 thread, CPU time, load 4-5, old (2) / new (1), four runs of 14-20 rounds: attention output
1.022-1.108x, FFN output 1.015-1.030x; the calls without a residual (the same path in both)
1.012-1.016x in the last run (the noise); spread there, qkv 0.991-1.002x of the burst, the
GELU'd FFN input 1.005-1.019x (so not the default there).

Numerics: the products are summed in k order with one FMA each from 0, then ``+ bias``,
``+ residual``, the clamp — ``edgecc_x86_sgemm``'s operations in its order, so the results are
bit-identical to it; GELU is ``gelu_range``'s expression (``x86_attention_source``), so a
fused GELU is bit-identical to the separate kernel. Generic over the vector type (the
``x86_attention_source`` namespaces): AVX-512 tiles of 12 rows x 2 vectors (two panels),
AVX2 6 rows x 2 vectors (one panel).
"""

# lin_pack12(a, lda, k, ap): rows 0..11 of ``a``, columns [0, k16) for the largest multiple
# k16 of 16 <= k, written as ap[c * 12 + r]; returns k16 (the caller packs the rest). AVX-512:
# 16x16 register transposes (12 loads, 64 shuffles, 16 masked stores per 16 columns; the
# scalar packing was 4-5% of a 1024 x 384 x 384 product, measured); AVX2: none (0)
PACK512 = r"""
static int64_t lin_pack12(const float* a, int64_t lda, int64_t k, float* ap) {
  const int64_t k16 = k / 16 * 16;
  for (int64_t k0 = 0; k0 < k16; k0 += 16) {
    __m512 r[16], t[16];
    for (int i = 0; i < 12; ++i) r[i] = _mm512_loadu_ps(a + i * lda + k0);
    for (int i = 12; i < 16; ++i) r[i] = _mm512_setzero_ps();
    for (int i = 0; i < 8; ++i) {
      t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
      t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
    }
    // r[4i + c], 128-bit lane L: rows 4i..4i+3 of column 4L + c
    for (int i = 0; i < 4; ++i) {
      const __m512d a0 = _mm512_castps_pd(t[4 * i]), a1 = _mm512_castps_pd(t[4 * i + 1]);
      const __m512d a2 = _mm512_castps_pd(t[4 * i + 2]), a3 = _mm512_castps_pd(t[4 * i + 3]);
      r[4 * i] = _mm512_castpd_ps(_mm512_unpacklo_pd(a0, a2));
      r[4 * i + 1] = _mm512_castpd_ps(_mm512_unpackhi_pd(a0, a2));
      r[4 * i + 2] = _mm512_castpd_ps(_mm512_unpacklo_pd(a1, a3));
      r[4 * i + 3] = _mm512_castpd_ps(_mm512_unpackhi_pd(a1, a3));
    }
    for (int c = 0; c < 4; ++c) {  // column 4L + c = lane L of r[c], r[4 + c], r[8 + c], r[12 + c]
      const __m512 x0 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0x44);
      const __m512 x1 = _mm512_shuffle_f32x4(r[c], r[4 + c], 0xEE);
      const __m512 y0 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0x44);
      const __m512 y1 = _mm512_shuffle_f32x4(r[8 + c], r[12 + c], 0xEE);
      float* o = ap + (k0 + c) * 12;
      _mm512_mask_storeu_ps(o, 0x0FFF, _mm512_shuffle_f32x4(x0, y0, 0x88));
      _mm512_mask_storeu_ps(o + 4 * 12, 0x0FFF, _mm512_shuffle_f32x4(x0, y0, 0xDD));
      _mm512_mask_storeu_ps(o + 8 * 12, 0x0FFF, _mm512_shuffle_f32x4(x1, y1, 0x88));
      _mm512_mask_storeu_ps(o + 12 * 12, 0x0FFF, _mm512_shuffle_f32x4(x1, y1, 0xDD));
    }
  }
  return k16;
}
"""
PACK256 = r"""
static int64_t lin_pack12(const float*, int64_t, int64_t, float*) { return 0; }
"""

# inside each ISA namespace of x86_attention_source (V, W, vload, vset1, ... and verf / vtanh
# from its _BODY are in scope)
BODY = r"""
// ---- linear (x86_linear_source.py) --------------------------------------------------------
struct Lin {
  const float* a; const float* panels; const float* bias; const float* res;
  float* c; int64_t m, k, n; float lo, hi; int gelu; float c1, c2;
  int64_t prefetch;  // edgecc_x86_linear_prefetch at the call (lin_tile)
  int64_t panel_prefetch;  // edgecc_x86_linear_panel_prefetch at the call (lin_tile)
  bool spread;  // the write-back's prefetches spread over the k loop (lin_tile)
  static int64_t lanes() { return W; }
};
const int LIN_MR = W == 16 ? 12 : 6;

static inline V lin_gelu(const Lin& g, V x) {
  const V half = vset1(0.5f), one = vset1(1.0f);
  if (g.gelu == 1) return vmul(x, vadd(half, vmul(verf(vmul(x, vset1(g.c1))), half)));
  const V inner = vmul(vadd(x, vmul(vmul(vmul(x, x), x), vset1(g.c2))), vset1(g.c1));
  return vmul(vmul(x, half), vadd(vtanh(inner), one));
}

// spread write-back prefetches (Lin::spread): one line asked for every this many k steps
const int64_t LIN_PF_EVERY = 4;

// rows [r0, r0 + MR) (packed: ap[k * MR + r]) times the columns [c0, c0 + NV * W)
template <int MR, int NV>
static void lin_tile(const Lin& g, const float* ap, int64_t r0, int64_t c0) {
  V acc[MR][NV];
#pragma GCC unroll 16
  for (int r = 0; r < MR; ++r)
#pragma GCC unroll 4
    for (int j = 0; j < NV; ++j) acc[r][j] = vzero();
  const float* b[NV];
  for (int j = 0; j < NV; ++j) {
    const int64_t col = c0 + j * W;
    b[j] = g.panels + (col / 16) * g.k * 16 + col % 16;
  }
  // g.spread (prefetch 1 with a residual, 3): the same lines asked for one every
  // LIN_PF_EVERY k steps from the start instead of all at once (48 misses to L3 or memory
  // in one burst, with a residual, hold L1's miss buffers the k loop's panel loads need:
  // MiniLM's residual linears 0.97-0.985x, the others 0.99-1.02x, 1 thread, CPU time)
  const char* lines[2 * MR * NV];
  int nl = 0;
  if (g.spread)
    for (int r = 0; r < MR; ++r)
      for (int j = 0; j < NV; ++j) {
        const int64_t col = c0 + j * W;
        if (col >= g.n) break;
        lines[nl++] = (const char*)(g.c + (r0 + r) * g.n + col);
        if (g.res) lines[nl++] = (const char*)(g.res + (r0 + r) * g.n + col);
      }
  if (g.prefetch && !g.spread) {
    // the tile's output lines (and its residual's) asked for as it starts, ~MR x NV x k
    // FMAs before its write-back stores to them: a store to a line not in cache waits for
    // it (MiniLM's outputs, 1.5-6 MiB, are in L3 or memory), and the hardware prefetchers
    // do not follow MR rows n floats apart (bench/x86_linear_peak.py: the tile alone
    // 0.95-0.97x of its time without them, writing fresh output)
    for (int r = 0; r < MR; ++r)
      for (int j = 0; j < NV; ++j) {
        const int64_t col = c0 + j * W;
        if (col >= g.n) break;
        _mm_prefetch((const char*)(g.c + (r0 + r) * g.n + col), _MM_HINT_T0);
        if (g.res) _mm_prefetch((const char*)(g.res + (r0 + r) * g.n + col), _MM_HINT_T0);
      }
  }
#define EDGECC_LIN_K_STEP(k)                                                              \
  {                                                                                       \
    V bv[NV];                                                                             \
    for (int j = 0; j < NV; ++j) bv[j] = vload(b[j] + (k) * 16);                          \
    const float* a = ap + (k) * MR;                                                       \
    _Pragma("GCC unroll 16") for (int r = 0; r < MR; ++r) {                               \
      const V v = vset1(a[r]);                                                            \
      _Pragma("GCC unroll 4") for (int j = 0; j < NV; ++j) acc[r][j] =                    \
          vfma(v, bv[j], acc[r][j]);                                                      \
    }                                                                                     \
  }
  // with edgecc_x86_linear_panel_prefetch = d > 0: each k step asks for its panels' line
  // d steps ahead (one 64-byte line per panel per k) and the packed rows' 48 bytes: a
  // panel pair at K = 384 is 48 KiB, more than L1, so the tile streams it from L2
  int64_t k = 0;
  const int64_t pd = g.panel_prefetch;
  if (pd > 0) {
    for (; k + pd < g.k; ++k) {
      for (int j = 0; j < NV; ++j) _mm_prefetch((const char*)(b[j] + (k + pd) * 16), _MM_HINT_T0);
      _mm_prefetch((const char*)(ap + (k + pd) * MR), _MM_HINT_T0);
      if ((k & (LIN_PF_EVERY - 1)) == 0 && k / LIN_PF_EVERY < nl)
        _mm_prefetch(lines[k / LIN_PF_EVERY], _MM_HINT_T0);
      EDGECC_LIN_K_STEP(k)
    }
  }
  // those the loop did not reach (short K, pd 0)
  for (int64_t i = (k + LIN_PF_EVERY - 1) / LIN_PF_EVERY; i < nl; ++i)
    _mm_prefetch(lines[i], _MM_HINT_T0);
  for (; k < g.k; ++k) EDGECC_LIN_K_STEP(k)
#undef EDGECC_LIN_K_STEP
  // every loop over acc unrolled (its zeroing, the k loop's, the write-back's): with any of
  // them rolled GCC -O3 kept acc in a stack array (zeroed on entry, stored after the k loop,
  // reloaded here: 48 extra zmm stores and 24 loads a 12 x 32 tile); the same values, bit
  // for bit (tests/targets/tvm/test_x86_linear_tile_registers.py reads the disassembly)
  const V lo = vset1(g.lo), hi = vset1(g.hi);
#pragma GCC unroll 4
  for (int j = 0; j < NV; ++j) {
    const int64_t col = c0 + j * W;
    const int n = g.n - col >= W ? W : (int)(g.n - col);
    if (n <= 0) break;
    const V bias = n == W ? vload(g.bias + col) : vloadn(g.bias + col, n);
#pragma GCC unroll 16
    for (int r = 0; r < MR; ++r) {
      float* out = g.c + (r0 + r) * g.n + col;
      V v = vadd(acc[r][j], bias);
      if (g.res) {
        const float* res = g.res + (r0 + r) * g.n + col;
        v = vadd(v, n == W ? vload(res) : vloadn(res, n));
      }
      v = vmin(hi, vmax(lo, v));
      if (g.gelu) v = lin_gelu(g, v);
      if (n == W) vstore(out, v); else vstoren(out, v, n);
    }
  }
}

// pack rows [r0, r0 + MR) as ap[k * MR + r] (k outer: MR reads of lines already loaded,
// contiguous writes; MR known to the compiler), then multiply them by every panel
// rows [r0, r0 + MR) packed as ap[k * MR + r] (k outer: MR reads of lines already loaded,
// contiguous writes; MR known to the compiler)
template <int MR>
static void lin_pack(const Lin& g, float* ap, int64_t r0) {
  const float* a = g.a + r0 * g.k;
  const int64_t k0 = MR == 12 ? lin_pack12(a, g.k, g.k, ap) : 0;
  for (int64_t k = k0; k < g.k; ++k)
    for (int r = 0; r < MR; ++r) ap[k * MR + r] = a[r * g.k + k];
}

// the packed rows [r0, r0 + MR) times the columns [c0, c1) (c0 a multiple of 2 W)
template <int MR>
static void lin_cols(const Lin& g, const float* ap, int64_t r0, int64_t c0, int64_t c1) {
  for (int64_t c = c0; c < c1; c += 2 * W) {
    // the second vector exists in the panels when its 16-column panel does
    if (c + W < round_up(g.n, 16)) lin_tile<MR, 2>(g, ap, r0, c);
    else lin_tile<MR, 1>(g, ap, r0, c);
  }
}

#define EDGECC_LIN_ROWS(F, ...)                                                           \
  switch (mr) {  /* AVX2: mr <= LIN_MR = 6 */                                             \
    case 1: F<1>(__VA_ARGS__); break;   case 2: F<2>(__VA_ARGS__); break;                 \
    case 3: F<3>(__VA_ARGS__); break;   case 4: F<4>(__VA_ARGS__); break;                 \
    case 5: F<5>(__VA_ARGS__); break;   case 6: F<6>(__VA_ARGS__); break;                 \
    case 7: F<7>(__VA_ARGS__); break;   case 8: F<8>(__VA_ARGS__); break;                 \
    case 9: F<9>(__VA_ARGS__); break;   case 10: F<10>(__VA_ARGS__); break;               \
    case 11: F<11>(__VA_ARGS__); break; default: F<12>(__VA_ARGS__); break;               \
  }

// row blocks [b0, b1) of LIN_MR rows (the last one shorter), in groups of about
// ``group_bytes`` of packed rows (0: one group): a group's blocks all packed into ap first,
// then the columns [cb, ce) (cb a multiple of 2 W) in chunks of about ``chunk_bytes`` of
// panels (0: all at once), each chunk multiplied by every block of the group before the
// next, so it stays in L2 while they pass — and the group's packed rows stay in L2 while
// the chunks pass (without groups, MiniLM's 1024 packed rows, 1.5-6 MiB, came from L3)
static void lin_blocks(const Lin& g, int64_t b0, int64_t b1, float* ap, int64_t chunk_bytes,
                       int64_t cb, int64_t ce, int64_t group_bytes) {
  int64_t group = group_bytes > 0 ? group_bytes / (LIN_MR * g.k * 4) : b1 - b0;
  if (group < 1) group = 1;
  int64_t chunk = chunk_bytes > 0 ? chunk_bytes / (g.k * 4) / (2 * W) * (2 * W) : ce - cb;
  if (chunk < 2 * W) chunk = 2 * W;
  if (b1 - b0 > group) __atomic_fetch_add(&path_calls[PATH_LINEAR_GROUPS], 1, __ATOMIC_RELAXED);
  for (int64_t g0 = b0; g0 < b1; g0 += group) {
    const int64_t g1 = g0 + group < b1 ? g0 + group : b1;
    for (int64_t blk = g0; blk < g1; ++blk) {
      const int64_t r0 = blk * LIN_MR;
      const int mr = g.m - r0 < LIN_MR ? (int)(g.m - r0) : LIN_MR;
      float* p = ap + (blk - g0) * LIN_MR * g.k;
      EDGECC_LIN_ROWS(lin_pack, g, p, r0)
    }
    for (int64_t c0 = cb; c0 < ce; c0 += chunk) {
      const int64_t c1 = c0 + chunk < ce ? c0 + chunk : ce;
      for (int64_t blk = g0; blk < g1; ++blk) {
        const int64_t r0 = blk * LIN_MR;
        const int mr = g.m - r0 < LIN_MR ? (int)(g.m - r0) : LIN_MR;
        const float* p = ap + (blk - g0) * LIN_MR * g.k;
        EDGECC_LIN_ROWS(lin_cols, g, p, r0, c0, c1)
      }
    }
  }
}
#undef EDGECC_LIN_ROWS
"""

# after BODY: a pool item is (column split, row block), items of one split consecutive
ITEMS = r"""
// pool items [i0, i1) of ``nb`` row blocks x column splits of ``cps`` columns (split-major)
static void lin_items(const Lin& g, int64_t i0, int64_t i1, float* ap, int64_t chunk_bytes,
                      int64_t nb, int64_t cps, int64_t group_bytes) {
  for (int64_t s = i0 / nb; s * nb < i1; ++s) {
    const int64_t b0 = (i0 > s * nb ? i0 : s * nb) - s * nb;
    const int64_t b1 = (i1 < (s + 1) * nb ? i1 : (s + 1) * nb) - s * nb;
    const int64_t cb = s * cps, ce = cb + cps < g.n ? cb + cps : g.n;
    lin_blocks(g, b0, b1, ap, chunk_bytes, cb, ce, group_bytes);
  }
}
"""
