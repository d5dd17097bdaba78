"""C++ text of the int8 depthwise kernels on AVX-512 VBMI + VNNI (``dw_perm``, ``dw_direct``
and ``dw_write_hi``), spliced into ``x86_int8_source.SOURCE`` where it stood (one translation
unit: it uses that source's ``Epilogue``, write-back and ``DwPerm`` helpers, and
``__tvm_ffi_edgecc_x86_qdwconv`` calls it). Its own module only to keep files short; what the
paths do is in ``x86_int8_source``'s docstring.

Planes of 65..256 bytes with <= 4 output vectors (16x16 at stride 2) take ``dw_direct`` too
("wide": each (vector, kernel row)'s taps from one 128-byte window, two masked loads and a
masked ``vpermt2b``, one channel at a time; counted by the library's
``edgecc_x86_int8_dw_direct_wide_calls``, not in ``_dw_direct``; ``edgecc_x86_int8_dw_direct_wide``
0 for A/B), and dw_direct's plan is remembered per shape (``edgecc_x86_int8_dw_plan_cache``
0 for A/B: planning cost ~1-3 us a call). Zen 4, 1 thread CPU time, under load, VM call of one
layer, interleaved: 96@16x16 s2 7.2 -> 4.1 us (wide); 192@8x8 8.9 -> 5.5, 480@4x4 5.3 -> 4.6 us
(plan cache)."""

DW_KERNELS = r"""
// depthwise with AVX-512 VBMI + VNNI (dw_perm): the channel's padded plane as u8 (x ^ 0x80,
// the padding zx ^ 0x80) in scratch; for each vector of 16 outputs and kernel row, a 128-byte
// window of that row (two loads) is shuffled by vpermt2b into 16 dwords of 4 taps each
// (x[c·sw + k·dw], k = 4g .. 4g+3) and one vpdpbusd per 4 taps adds them times the row's
// weights (taps past kw: weight 0). Maps narrower than 16 put several output rows in one
// vector (rows·ow lanes, contiguous outputs). The +128 of the u8 operand is taken off by
// starting the sums at -128·Σw: the int32 sums are the per-channel path's, exactly, and go
// through the same write_channel.
int64_t dw_perm_calls = 0;  // depthwise calls that ran on dw_perm (a test's counter)
int64_t dw_direct_calls = 0;  // ... of them without the padded copy (dw_direct)
// smaller output maps of planes larger than 64 bytes: dw_block16 (dw_perm's per-channel set-up
// outweighs one vector); planes of <= 64 bytes: dw_direct
enum { DW_PERM_MIN_PIX = 32, DW_PERM_BATCH = 4 };
// the pool's work measure of a channel-blocked / dw_perm depthwise output: its cost in
// VNNI GEMM multiply-adds (the units of SERIAL_WORK), ~1.5 cycles an output (requantized
// write-back included) against ~64 multiply-adds a cycle: 8x8 / 4x4 maps of 192-480
// channels (~10 us on one thread) now run on the pool
// (a library symbol, so bench/x86_int8_serial.py can A/B it in one process)
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_dw_output_work = 64;
// ... but calls of fewer outputs than edgecc_x86_int8_dw_serial_outputs run on the calling
// thread: MobileNetV2-32's 8x8 / 4x4 maps (and stride-2 outputs of 16x16 / 8x8), 4.6k-18k
// outputs, 2-6 us on one thread, took 1.03-1.3x as long pooled at 2 threads in every
// measurement (bench/x86_int8_dw_threads.py --mode calls: in place, loaded; each call re-run
// alone, bench/x86_int8_pool_calls.py) — the worker's half crosses cores twice (its input
// written by the serial 1x1 convolution before, its output read by the one after) for ~1 us
// of work. 0: the pool's threshold alone (A/B); counted per call kept serial by it alone by
// edgecc_x86_int8_dw_serial_calls. Scheduling only: the same outputs.
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_dw_serial_outputs = 20000;
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_dw_serial_calls = 0;
// the pool's work measure of a depthwise call of `outputs` outputs (0 below the threshold)
static inline int64_t dw_pool_work(int64_t outputs) {
  const int64_t work = outputs * edgecc_x86_int8_dw_output_work;
  if (outputs >= edgecc_x86_int8_dw_serial_outputs) return work;
  if (work >= serial_work() && serial_work() > 0 && edgecc_pool_size() > 1)
    EDGECC_COUNT(edgecc_x86_int8_dw_serial_calls, 1);
  return serial_work() > 0 ? 0 : work;  // (serial_work() 0: every job pooled, as asked)
}
struct DwPerm {
  int64_t rows, lanes, groups;  // output rows a vector, its lanes per row, 4-tap groups
  int64_t span;  // bytes of a row's window the taps read (32 / 64: one load and vpermb)
  alignas(64) uint8_t idx[2][64];
};
bool has_vbmi() {
  static const int ready = cpu_init();
  (void)ready;
  static const bool v = __builtin_cpu_supports("avx512vbmi");
  return v;
}
// the vector layout (rows, lanes, groups, span; not the shuffles: dw_perm_index); false
// when the taps of a vector do not fit one 128-byte window (or kw > 8)
static bool dw_perm_plan(int64_t ow, int64_t wp, int64_t sh, int64_t sw, int64_t kw,
                         int64_t dw, DwPerm& p) {
  if (kw > 8) return false;
  p.groups = (kw + 3) / 4;
  p.lanes = ow >= 16 ? 16 : ow;
  p.rows = ow >= 16 ? 1 : 16 / ow;
  while (p.rows >= 1 && ((p.rows - 1) * sh * wp + (p.lanes - 1) * sw + (kw - 1) * dw) >= 128)
    --p.rows;
  if (p.rows < 1) return false;
  p.span = (p.rows - 1) * sh * wp + (p.lanes - 1) * sw + (kw - 1) * dw + 1;
  return true;
}
// dw_perm's shuffles (p.idx) for the layout dw_perm_plan chose: only the padded-copy path
// reads them (its 16 x 4 lanes a group, with divisions, ~0.3 us a call: not for dw_direct /
// dw_rows, which plan their own)
static void dw_perm_index(int64_t wp, int64_t sh, int64_t sw, int64_t kw, int64_t dw,
                          DwPerm& p) {
  for (int64_t g = 0; g < p.groups; ++g)
    for (int64_t i = 0; i < 16; ++i)
      for (int64_t j = 0; j < 4; ++j) {
        const int64_t r = i / p.lanes, col = i % p.lanes, k = 4 * g + j;
        p.idx[g][4 * i + j] = (uint8_t)(r < p.rows && k < kw
                                         ? r * sh * wp + col * sw + k * dw : 0);
      }
}
// the channel's plane into its padded u8 copy (x ^ 0x80; the padding is already there)
__attribute__((target("avx2,fma,avx512f,avx512bw")))
static void dw_perm_copy(const int8_t* plane, uint8_t* pad, int64_t h, int64_t w, int64_t ph,
                         int64_t pw) {
  const int64_t wp = w + 2 * pw;
  const __m512i flip = _mm512_set1_epi8((char)0x80);
  for (int64_t y = 0; y < h; ++y) {
    const int8_t* src = plane + y * w;
    uint8_t* dst = pad + (y + ph) * wp + pw;
    for (int64_t j = 0; j < w; j += 64) {
      const __mmask64 m = w - j >= 64 ? ~0ULL : (1ULL << (w - j)) - 1;
      _mm512_mask_storeu_epi8(dst + j, m,
                              _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, src + j), flip));
    }
  }
}
// one channel's int32 sums (acc[oh·ow]) from its padded copy
// the 16 dwords of 4 taps a lane from the window at src (WIN: 32 or 64 bytes, one load and
// vpermb; 128: two loads and vpermt2b)
template <int WIN>
__attribute__((target("avx2,fma,avx512f,avx512bw,avx512vnni,avx512vbmi")))
static inline __m512i dw_window(const uint8_t* src, __m512i ix) {
  if (WIN == 32)
    return _mm512_permutexvar_epi8(
        ix, _mm512_castsi256_si512(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src))));
  if (WIN == 64) return _mm512_permutexvar_epi8(ix, _mm512_loadu_si512(src));
  return _mm512_permutex2var_epi8(_mm512_loadu_si512(src), ix, _mm512_loadu_si512(src + 64));
}
// 4 output rows of one 16-column block, KH (compile-time) kernel rows of one 4-tap group:
// every branch below folds away
template <int WIN, int KH>
__attribute__((target("avx2,fma,avx512f,avx512bw,avx512vnni,avx512vbmi")))
static inline void dw_slide4(const uint8_t* base, int64_t wp, __m512i ix, const __m512i* wv,
                             __m512i* a) {
#pragma GCC unroll 16
  for (int r = 0; r < 4 + KH - 1; ++r) {
    const __m512i x0 = dw_window<WIN>(base + r * wp, ix);
#pragma GCC unroll 4
    for (int u = 0; u < 4; ++u) {
      const int ky = r - u;
      if (ky >= 0 && ky < KH) a[u] = _mm512_dpbusd_epi32(a[u], x0, wv[ky]);
    }
  }
}
template <int WIN>
__attribute__((target("avx2,fma,avx512f,avx512bw,avx512vnni,avx512vbmi")))
__attribute__((noinline)) static void dw_perm_t(const DwPerm& p, const int32_t* wc,
                                              const uint8_t* pad, int32_t* acc, int64_t w,
                                              int64_t kh, int64_t kw, int64_t sh, int64_t sw,
                                              int64_t pw, int64_t dh, int64_t oh, int64_t ow) {
  const int64_t wp = w + 2 * pw;
  int32_t wd[2 * DW_TAPS];  // [ky][group]: 4 int8 weights a dword
  int32_t sum = 0;
  for (int64_t ky = 0; ky < kh; ++ky)
    for (int64_t g = 0; g < p.groups; ++g) {
      uint32_t v = 0;
      for (int64_t j = 0; j < 4; ++j) {
        const int64_t k = 4 * g + j;
        const int32_t wv = k < kw ? wc[ky * kw + k] : 0;
        sum += wv;
        v |= (uint32_t)(uint8_t)(int8_t)wv << (8 * j);
      }
      wd[ky * p.groups + g] = (int32_t)v;
    }
  const __m512i start = _mm512_set1_epi32(-128 * sum);
  const __m512i i0 = _mm512_load_si512(p.idx[0]), i1 = _mm512_load_si512(p.idx[1]);
  // the plane's vectors: rows > 1, one per group of output rows; else 16-lane steps of each
  // row. Four at a time (independent sums: vpdpbusd's latency is hidden)
  const int64_t vpr = p.rows > 1 ? 1 : (ow + 15) / 16;
  const int64_t nv = p.rows > 1 ? (oh + p.rows - 1) / p.rows : oh * vpr;
  auto place = [&](int64_t v, int64_t* bo, int64_t* oo, __mmask16* m) {
    int64_t oy, ox, n;
    if (p.rows > 1) {
      oy = v * p.rows; ox = 0;
      n = (oh - oy < p.rows ? oh - oy : p.rows) * ow;
    } else {
      oy = v / vpr; ox = (v % vpr) * 16;
      n = ow - ox < 16 ? ow - ox : 16;
    }
    *bo = oy * sh * wp + ox * sw;
    *oo = oy * ow + ox;
    *m = (__mmask16)((1u << n) - 1);
  };
  const int64_t g = p.groups, rs = dh * wp;
  if (p.rows == 1 && sh == 1 && dh == 1) {
    __m512i w3[3];  // the kernel rows' weights (one group), for dw_slide4
    for (int64_t ky = 0; ky < 3; ++ky) w3[ky] = _mm512_set1_epi32(ky < kh ? wd[ky * g] : 0);
    // 4 output rows of a 16-column block at a time: each input row's window is shuffled
    // once and added into every output row it is a tap row of (kh + 3 shuffles, not 4·kh)
    for (int64_t ox = 0; ox < ow; ox += 16) {
      const int64_t n = ow - ox < 16 ? ow - ox : 16;
      const __mmask16 m = (__mmask16)((1u << n) - 1);
      for (int64_t oy = 0; oy < oh; oy += 4) {
        const int64_t nr = oh - oy < 4 ? oh - oy : 4;
        __m512i a[4] = {start, start, start, start};
        const uint8_t* base = pad + oy * wp + ox * sw;
        if (nr == 4 && g == 1 && kh == 3) {  // 3x3 (and 3x1 .. 3x4), unrolled
          dw_slide4<WIN, 3>(base, wp, i0, w3, a);
          for (int u = 0; u < 4; ++u) _mm512_mask_storeu_epi32(acc + (oy + u) * ow + ox, m, a[u]);
          continue;
        }
        for (int64_t r = 0; r < nr + kh - 1; ++r) {
          const __m512i x0 = dw_window<WIN>(base + r * wp, i0);
          const __m512i x1 = g > 1 ? dw_window<WIN>(base + r * wp, i1) : x0;
          for (int u = 0; u < 4; ++u) {
            const int64_t ky = r - u;
            if (ky < 0 || ky >= kh || u >= nr) continue;
            a[u] = _mm512_dpbusd_epi32(a[u], x0, _mm512_set1_epi32(wd[ky * g]));
            if (g > 1) a[u] = _mm512_dpbusd_epi32(a[u], x1, _mm512_set1_epi32(wd[ky * g + 1]));
          }
        }
        for (int u = 0; u < nr; ++u)
          _mm512_mask_storeu_epi32(acc + (oy + u) * ow + ox, m, a[u]);
      }
    }
    return;
  }
  int64_t v = 0;
  for (; v + 4 <= nv; v += 4) {
    int64_t bo[4], oo[4];
    __mmask16 m[4];
    __m512i a[4];
    for (int u = 0; u < 4; ++u) {
      place(v + u, bo + u, oo + u, m + u);
      a[u] = start;
    }
    if (kh == 3 && g == 1) {  // 3x3 (3x1 .. 3x4), unrolled
#pragma GCC unroll 3
      for (int ky = 0; ky < 3; ++ky) {
        const __m512i w0 = _mm512_set1_epi32(wd[ky]);
#pragma GCC unroll 4
        for (int u = 0; u < 4; ++u)
          a[u] = _mm512_dpbusd_epi32(a[u], dw_window<WIN>(pad + bo[u] + ky * rs, i0), w0);
      }
      for (int u = 0; u < 4; ++u) _mm512_mask_storeu_epi32(acc + oo[u], m[u], a[u]);
      continue;
    }
    for (int64_t ky = 0; ky < kh; ++ky) {
      const __m512i w0 = _mm512_set1_epi32(wd[ky * g]);
      const __m512i w1 = _mm512_set1_epi32(g > 1 ? wd[ky * g + 1] : 0);
      for (int u = 0; u < 4; ++u) {
        const uint8_t* src = pad + bo[u] + ky * rs;
        a[u] = _mm512_dpbusd_epi32(a[u], dw_window<WIN>(src, i0), w0);
        if (g > 1) a[u] = _mm512_dpbusd_epi32(a[u], dw_window<WIN>(src, i1), w1);
      }
    }
    for (int u = 0; u < 4; ++u) _mm512_mask_storeu_epi32(acc + oo[u], m[u], a[u]);
  }
  for (; v < nv; ++v) {
    int64_t bo, oo;
    __mmask16 m;
    place(v, &bo, &oo, &m);
    __m512i a = start;
    for (int64_t ky = 0; ky < kh; ++ky) {
      const uint8_t* src = pad + bo + ky * rs;
      a = _mm512_dpbusd_epi32(a, dw_window<WIN>(src, i0), _mm512_set1_epi32(wd[ky * g]));
      if (g > 1)
        a = _mm512_dpbusd_epi32(a, dw_window<WIN>(src, i1), _mm512_set1_epi32(wd[ky * g + 1]));
    }
    _mm512_mask_storeu_epi32(acc + oo, m, a);
  }
}
// small input planes (h·w <= 64 bytes: one load), kw <= 4, at most 4 output vectors of
// DwPerm's layout and 16 (vector, kernel row) pairs: no padded copy — each pair's 4-tap
// dwords come straight from the loaded plane (x ^ 0x80) by one masked vpermb, the lanes of
// taps in the padding (or past kw) taking zx ^ 0x80 (their weight is 0 past kw).
// planes of 65..256 bytes (16x16 at stride 2: 8x8 outputs in 4 vectors) take dw_direct too,
// "wide": each pair's 4-tap dwords come from a 128-byte window of the plane (two masked loads,
// one masked vpermt2b, the padding lanes' zx passed through from the index), one channel at a
// time — no padded copy, no int32 round trip (1: on; 0: the dw_perm copy, for A/B; a library
// symbol). Counted apart from dw_direct (edgecc_x86_int8_dw_direct_wide_calls), not in it.
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_dw_direct_wide = 1;
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_dw_direct_wide_calls = 0;
struct DwDirect {
  int64_t nv;  // output vectors of a plane
  int64_t oo[4];  // each vector's first output
  __mmask16 lanes[4];
  alignas(64) uint8_t idx[16][64];  // [vector · kh + ky]
  __mmask64 mask[16];
  // planes of 65..256 bytes (wide): each pair's taps lie in one 128-byte window of the plane
  // at off[pair] (a multiple of 64: two masked loads, lm[pair][0..1] the plane's bytes)
  bool wide;
  int64_t off[16];
  __mmask64 lm[16][2];
  // packed at compile time after the c·kh·kw taps (x86_int8.emit_depthwise): each channel's
  // kernel rows as 4 int8 dwords (kh, kw <= 4), then -128·Σw per channel
  const int32_t* wrows;
  const int32_t* wcomp;
};
static bool dw_direct_plan(const DwPerm& p, int64_t h, int64_t w, int64_t kh, int64_t kw,
                           int64_t sh, int64_t sw, int64_t ph, int64_t pw, int64_t dh,
                           int64_t dw, int64_t oh, int64_t ow, int8_t zx, DwDirect& d) {
  d.wide = h * w > 64;
  if (h * w > (edgecc_x86_int8_dw_direct_wide ? 256 : 64) || kw > 4 || p.groups != 1)
    return false;
  const int64_t vpr = p.rows > 1 ? 1 : (ow + 15) / 16;
  d.nv = p.rows > 1 ? (oh + p.rows - 1) / p.rows : oh * vpr;
  if (d.nv > 4 || d.nv * kh > 16) return false;
  for (int64_t v = 0; v < d.nv; ++v) {
    const int64_t oy0 = p.rows > 1 ? v * p.rows : v / vpr;
    const int64_t ox0 = p.rows > 1 ? 0 : (v % vpr) * 16;
    const int64_t n = p.rows > 1 ? (oh - oy0 < p.rows ? oh - oy0 : p.rows) * ow
                                 : (ow - ox0 < 16 ? ow - ox0 : 16);
    d.oo[v] = oy0 * ow + ox0;
    d.lanes[v] = (__mmask16)((1u << n) - 1);
    for (int64_t ky = 0; ky < kh; ++ky) {
      uint8_t* ix = d.idx[v * kh + ky];
      __mmask64 m = 0;
      int64_t lo = h * w, hi = -1;  // the pair's plane bytes (wide: its window's)
      for (int pass = 0; pass < 2; ++pass) {
        for (int64_t i = 0; i < 16; ++i)
          for (int64_t j = 0; j < 4; ++j) {
            const int64_t oy = oy0 + (p.rows > 1 ? i / ow : 0);
            const int64_t ox = ox0 + (p.rows > 1 ? i % ow : i);
            const int64_t y = oy * sh + ky * dh - ph, x = ox * sw + j * dw - pw;
            const bool in = i < n && j < kw && y >= 0 && y < h && x >= 0 && x < w;
            const int64_t b = y * w + x;
            if (pass == 0) {
              if (in) {
                lo = b < lo ? b : lo;
                hi = b > hi ? b : hi;
              }
            } else if (in) {
              ix[4 * i + j] = (uint8_t)(b - d.off[v * kh + ky]);
              m |= 1ULL << (4 * i + j);
            } else {  // wide: mask2's pass-through, zx ^ 0x80 after the flip; else unused
              ix[4 * i + j] = d.wide ? (uint8_t)zx : 0;
            }
          }
        if (pass == 0) {  // the window: 64 bytes at 0, or (wide) 128 at lo rounded down
          const int64_t off = d.wide && hi >= 0 ? lo / 64 * 64 : 0;
          if (hi >= off + (d.wide ? 128 : 64)) return false;
          d.off[v * kh + ky] = off;
          for (int r = 0; r < 2; ++r) {
            const int64_t left = h * w - off - 64 * r;  // the plane's bytes in load r
            d.lm[v * kh + ky][r] = left >= 64 ? ~0ULL : left > 0 ? (1ULL << left) - 1 : 0;
          }
        }
      }
      d.mask[v * kh + ky] = m;
    }
  }
  return kh <= 4;
}
// dw_direct_plan per shape, remembered (its loops over every pair's 64 lanes cost ~1-3 us a
// call, the whole of a 40-channel map's work): the last 32 shapes, per thread (a heap array:
// no large static TLS in a dlopen'ed library), keyed by every input of the plan. 0: planned
// on every call (A/B; a library symbol)
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_dw_plan_cache = 1;
static bool dw_direct_plan_cached(const DwPerm& p, int64_t h, int64_t w, int64_t kh,
                                  int64_t kw, int64_t sh, int64_t sw, int64_t ph, int64_t pw,
                                  int64_t dh, int64_t dw, int64_t oh, int64_t ow, int8_t zx,
                                  DwDirect& d) {
  if (!edgecc_x86_int8_dw_plan_cache)
    return dw_direct_plan(p, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, zx, d);
  enum { N = 32, K = 14 };
  struct Entry { int64_t key[K]; bool ok; DwDirect d; };
  static thread_local Entry* cache = nullptr;
  static thread_local int used = 0, next = 0;
  if (!cache) cache = new Entry[N];
  const int64_t key[K] = {h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, zx,
                          edgecc_x86_int8_dw_direct_wide};
  for (int i = 0; i < used; ++i)
    if (!memcmp(cache[i].key, key, sizeof key)) {
      d = cache[i].d;
      return cache[i].ok;
    }
  Entry& en = cache[next];
  next = (next + 1) % N;
  if (used < N) ++used;
  memcpy(en.key, key, sizeof key);
  en.ok = dw_direct_plan(p, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, zx, en.d);
  d = en.d;
  return en.ok;
}
// the requantized hi32 write-back of one vector of channel ch straight from its register
// (write_channel_512's requant16_hi, the same int8 values): lanes of dst only
__attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl")))
static inline void dw_write_hi(const Epilogue& e, const Sat8& q, bool clamp, int64_t ch,
                               __m512i v, int8_t* dst, __mmask16 lanes) {
  const __m512i m = _mm512_set1_epi64(e.mult[ch]);
  const __m512i s32 = _mm512_set1_epi32((int32_t)(e.shift[ch] - 32));
  __m128i y;
  if (e.fadd) {
    const __m512i a = _mm512_set1_epi64(e.fadd[ch]);
    y = clamp ? requant16_hi<true>(v, m, a, s32, q) : requant16_hi<false>(v, m, a, s32, q);
  } else {
    const __m512i a = _mm512_set1_epi64(e.add[ch]);
    v = _mm512_add_epi32(v, _mm512_set1_epi32(e.off[ch]));
    y = clamp ? requant16_hi<true>(v, m, a, s32, q) : requant16_hi<false>(v, m, a, s32, q);
  }
  _mm_mask_storeu_epi8(dst, lanes, y);
}
// whether dw_direct writes the int8 outputs itself (dw_write_hi) instead of the int32 sums:
// a requantized hi32 epilogue on the AVX-512 write-back (every MobileNetV2 depthwise)
static inline bool dw_writes_hi(const Epilogue& e) { return e.requant && e.wide && e.hi32; }
int64_t dw_direct_hi_calls = 0;  // dw_direct calls written back from registers (a test's)
// a channel's NV vectors written as dw_write_hi would, its sums already holding off (the
// start: dw_direct_t / _wide_t): the channel's multiplier, add and shift broadcast once (not
// per vector: the int8 stores may alias the tables, so they were loaded again each time) and
// e.add taken, never fold_off's table (whose add has off·mult in it)
template <int NV>
__attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl")))
static inline void dw_write_hi_nv(const Epilogue& e, const Sat8& q, bool clamp, int64_t ch,
                                  const __m512i* v, int8_t* dst, const DwDirect& d) {
  const __m512i m = _mm512_set1_epi64(e.mult[ch]), a = _mm512_set1_epi64(e.add[ch]);
  const __m512i s32 = _mm512_set1_epi32((int32_t)(e.shift[ch] - 32));
  __m128i y[NV];
  for (int i = 0; i < NV; ++i)
    y[i] = clamp ? requant16_hi<true>(v[i], m, a, s32, q) : requant16_hi<false>(v[i], m, a, s32, q);
  for (int i = 0; i < NV; ++i) _mm_mask_storeu_epi8(dst + d.oo[i], d.lanes[i], y[i]);
}

// the packed write-back (edgecc_x86_int8_dw_pack 1, the default; 0: one 16-byte store a
// vector, A/B): 4 vectors whose 64 outputs are contiguous — 4 channels' 4x4 maps of one
// vector each (MobileNetV2-32's 480@4x4: 0.96x, 1 thread) — requantized as requant16_hi does,
// narrowed together by two packs (packssdw, packsswb: int32 -> int16 -> int8 saturating is
// vpmovsdb's int32 -> int8 saturation), put in order by one vpermd, clamped once, one 64-byte
// store: per 4 vectors 3 shuffles, 2 clamps and a store instead of 4 vpmovsdb (2 uops each on
// Zen 4), 8 clamps and 4 masked stores. The same int8 values. Counted per call by
// edgecc_x86_int8_dw_packed_calls.
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_dw_pack = 1;
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_dw_packed_calls = 0;
// requant16_hi's int32 quotients, before their narrowing to int8
__attribute__((target("avx2,fma,avx512f,avx512bw")))
static inline __m512i hi32_quotients(__m512i v, __m512i m, __m512i a, __m512i s32) {
  const __m512i even = _mm512_add_epi64(_mm512_mul_epi32(v, m), a);
  const __m512i odd = _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(v, 32), m), a);
  const __m512i h = _mm512_mask_shuffle_epi32(odd, 0x5555, even, _MM_PERM_CDAB);
  return _mm512_srav_epi32(h, s32);
}
// h[0..3]'s 64 quotients as int8 (saturated, clamped to q when CLAMP) at dst[0..64)
template <bool CLAMP>
__attribute__((target("avx2,fma,avx512f,avx512bw")))
static inline void store_packed64(const __m512i* h, int8_t* dst, const Sat8& q) {
  // 128-bit lane L of p: the dwords of h0, h1, h2, h3's outputs 4L..4L+3 (dword 4L + k
  // holds vector k's), wanted at dword 4k + L
  const __m512i p = _mm512_packs_epi16(_mm512_packs_epi32(h[0], h[1]),
                                       _mm512_packs_epi32(h[2], h[3]));
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  __m512i y = _mm512_permutexvar_epi32(order, p);
  if (CLAMP)
    y = _mm512_min_epi8(_mm512_max_epi8(y, _mm512_broadcast_i32x4(q.lo8)),
                        _mm512_broadcast_i32x4(q.hi8));
  _mm512_storeu_si512(dst, y);
}
// whether dw_direct's write-back packs: one full vector a channel (a 4x4 map), 4 channels a
// batch (a channel's 4 vectors of an 8x8 map packed so measured even: 1.00x, 1 thread)
static inline bool dw_packs(const DwDirect& d) {
  return !d.wide && d.nv == 1 && d.oo[0] == 0 && d.lanes[0] == 0xFFFF;
}

// nt <= DW_PERM_BATCH channels (ch[u], plane x + at[u]·h·w): with WB the int8 outputs at
// e.out + at[u]·pix (dw_write_hi), else the int32 sums to acc + u·stride
template <int NV, bool WB>
__attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")))
__attribute__((noinline)) static void dw_direct_t(const DwDirect& d, const int8_t* x,
                                                  const int64_t* at, const int32_t* wt,
                                                  const int64_t* ch, int64_t nt, int64_t hw,
                                                  int64_t kh, int64_t kw, int8_t zx,
                                                  int32_t* acc, int64_t stride,
                                                  const Epilogue& e, int64_t pix, bool pack) {
  const __m512i flip = _mm512_set1_epi8((char)0x80);
  const __m512i padv = _mm512_set1_epi8((char)((uint8_t)zx ^ 0x80));
  const __mmask64 lm = hw >= 64 ? ~0ULL : (1ULL << hw) - 1;
  __m512i xv[DW_PERM_BATCH], a[DW_PERM_BATCH][NV];
  const int32_t* wd[DW_PERM_BATCH];
  // every loop over xv / a unrolled to DW_PERM_BATCH with u < nt tests (the channel loops
  // here and in the write-back): with run-time bounds GCC kept xv and a in stack arrays
  // (stored after the set-up and after the ky loop, reloaded by the write-back); the same
  // sums (tests/targets/tvm/test_x86_int8_tile_registers.py reads the disassembly)
#pragma GCC unroll 4
  for (int u = 0; u < DW_PERM_BATCH; ++u) {
    if (u >= nt) continue;
    xv[u] = _mm512_xor_si512(_mm512_maskz_loadu_epi8(lm, x + at[u] * hw), flip);
    wd[u] = d.wrows + ch[u] * 4;  // the rows' dwords and -128·Σw: packed at compile time
    // WB: off in the start too (int32, wrapping: the sums dw_write_hi's vpaddd would make)
    const int32_t s0 = WB ? (int32_t)((uint32_t)d.wcomp[ch[u]] + (uint32_t)e.off[ch[u]])
                          : d.wcomp[ch[u]];
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) a[u][v] = _mm512_set1_epi32(s0);
  }
  for (int64_t ky = 0; ky < kh; ++ky) {
#pragma GCC unroll 4
    for (int v = 0; v < NV; ++v) {
      const __m512i ix = _mm512_load_si512(d.idx[v * kh + ky]);
      const __mmask64 m = d.mask[v * kh + ky];
#pragma GCC unroll 4
      for (int u = 0; u < DW_PERM_BATCH; ++u)
        if (u < nt)
          a[u][v] = _mm512_dpbusd_epi32(a[u][v], _mm512_mask_permutexvar_epi8(padv, m, ix, xv[u]),
                                        _mm512_set1_epi32(wd[u][ky]));
    }
  }
  if (WB) {
    const Sat8 q = sat8(e);
    const bool clamp = !full_int8(e);
    if (NV == 1 && pack && nt == DW_PERM_BATCH) {  // 4 channels' 16 outputs: 64 in a row
      __m512i h[DW_PERM_BATCH];
#pragma GCC unroll 4
      for (int u = 0; u < DW_PERM_BATCH; ++u)
        h[u] = hi32_quotients(a[u][0], _mm512_set1_epi64(e.mult[ch[u]]),
                              _mm512_set1_epi64(e.add[ch[u]]),
                              _mm512_set1_epi32((int32_t)(e.shift[ch[u]] - 32)));
      int8_t* dst = static_cast<int8_t*>(e.out) + at[0] * pix;  // at[u] = at[0] + u
      if (clamp) store_packed64<true>(h, dst, q);
      else store_packed64<false>(h, dst, q);
      return;
    }
#pragma GCC unroll 4
    for (int u = 0; u < DW_PERM_BATCH; ++u)
      if (u < nt)
        dw_write_hi_nv<NV>(e, q, clamp, ch[u], a[u],
                           static_cast<int8_t*>(e.out) + at[u] * pix, d);
    return;
  }
#pragma GCC unroll 4
  for (int u = 0; u < DW_PERM_BATCH; ++u)
    if (u < nt)
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v)
        _mm512_mask_storeu_epi32(acc + u * stride + d.oo[v], d.lanes[v], a[u][v]);
}
// wide planes (DwDirect::wide), one channel at a time: its NV vectors in registers
template <int NV, bool WB>
__attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")))
__attribute__((noinline)) static void dw_direct_wide_t(const DwDirect& d, const int8_t* x,
                                                       const int64_t* at, const int64_t* ch,
                                                       int64_t nt, int64_t hw, int64_t kh,
                                                       int32_t* acc, int64_t stride,
                                                       const Epilogue& e, int64_t pix) {
  const __m512i flip = _mm512_set1_epi8((char)0x80);
  for (int64_t u = 0; u < nt; ++u) {
    const int8_t* plane = x + at[u] * hw;
    const int32_t* wd = d.wrows + ch[u] * 4;
    __m512i a[NV];
    const int32_t s0 = WB ? (int32_t)((uint32_t)d.wcomp[ch[u]] + (uint32_t)e.off[ch[u]])
                          : d.wcomp[ch[u]];  // WB: off in the start (as dw_direct_t)
    for (int v = 0; v < NV; ++v) a[v] = _mm512_set1_epi32(s0);
    for (int64_t ky = 0; ky < kh; ++ky) {
      const __m512i wv = _mm512_set1_epi32(wd[ky]);
#pragma GCC unroll 4
      for (int v = 0; v < NV; ++v) {
        const int64_t q = v * kh + ky;
        const int8_t* src = plane + d.off[q];
        const __m512i t0 = _mm512_maskz_loadu_epi8(d.lm[q][0], src);
        const __m512i t1 = _mm512_maskz_loadu_epi8(d.lm[q][1], src + 64);
        const __m512i ix = _mm512_load_si512(d.idx[q]);
        const __m512i xs =
            _mm512_xor_si512(_mm512_mask2_permutex2var_epi8(t0, ix, d.mask[q], t1), flip);
        a[v] = _mm512_dpbusd_epi32(a[v], xs, wv);
      }
    }
    if (WB) {
      dw_write_hi_nv<NV>(e, sat8(e), !full_int8(e), ch[u], a,
                         static_cast<int8_t*>(e.out) + at[u] * pix, d);
    } else {
      for (int v = 0; v < NV; ++v)
        _mm512_mask_storeu_epi32(acc + u * stride + d.oo[v], d.lanes[v], a[v]);
    }
  }
}
template <bool WB>
static void dw_direct_nv(const DwDirect& d, const int8_t* x, const int64_t* at,
                         const int32_t* wt, const int64_t* ch, int64_t nt, int64_t hw,
                         int64_t kh, int64_t kw, int8_t zx, int32_t* acc, int64_t stride,
                         const Epilogue& e, int64_t pix, bool pk) {
  if (d.wide) {
    switch (d.nv) {
      case 1: dw_direct_wide_t<1, WB>(d, x, at, ch, nt, hw, kh, acc, stride, e, pix); break;
      case 2: dw_direct_wide_t<2, WB>(d, x, at, ch, nt, hw, kh, acc, stride, e, pix); break;
      case 3: dw_direct_wide_t<3, WB>(d, x, at, ch, nt, hw, kh, acc, stride, e, pix); break;
      default: dw_direct_wide_t<4, WB>(d, x, at, ch, nt, hw, kh, acc, stride, e, pix);
    }
    return;
  }
  switch (d.nv) {
    case 1: dw_direct_t<1, WB>(d, x, at, wt, ch, nt, hw, kh, kw, zx, acc, stride, e, pix, pk); break;
    case 2: dw_direct_t<2, WB>(d, x, at, wt, ch, nt, hw, kh, kw, zx, acc, stride, e, pix, pk); break;
    case 3: dw_direct_t<3, WB>(d, x, at, wt, ch, nt, hw, kh, kw, zx, acc, stride, e, pix, pk); break;
    default: dw_direct_t<4, WB>(d, x, at, wt, ch, nt, hw, kh, kw, zx, acc, stride, e, pix, pk);
  }
}
// wb (dw_writes_hi): the outputs written here, else the sums (write_channel after it); pack
// (with wb and dw_packs(d) only): the packed write-back
static void dw_direct(const DwDirect& d, const int8_t* x, const int64_t* at, const int32_t* wt,
                      const int64_t* ch, int64_t nt, int64_t hw, int64_t kh, int64_t kw,
                      int8_t zx, int32_t* acc, int64_t stride, const Epilogue& e, int64_t pix,
                      bool wb, bool pack) {
  if (wb)
    dw_direct_nv<true>(d, x, at, wt, ch, nt, hw, kh, kw, zx, acc, stride, e, pix, pack);
  else
    dw_direct_nv<false>(d, x, at, wt, ch, nt, hw, kh, kw, zx, acc, stride, e, pix, false);
}

static void dw_perm(const DwPerm& p, const int32_t* wc, const uint8_t* pad, int32_t* acc,
                    int64_t w, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t pw,
                    int64_t dh, int64_t oh, int64_t ow) {
  if (p.span <= 32)
    dw_perm_t<32>(p, wc, pad, acc, w, kh, kw, sh, sw, pw, dh, oh, ow);
  else if (p.span <= 64)
    dw_perm_t<64>(p, wc, pad, acc, w, kh, kw, sh, sw, pw, dh, oh, ow);
  else
    dw_perm_t<128>(p, wc, pad, acc, w, kh, kw, sh, sw, pw, dh, oh, ow);
}

"""[1:-1]  # the text between the quotes' line breaks
