"""A VNNI tile written back from its registers (``tile_write``), spliced into
``x86_int8_source.SOURCE`` before the GEMM: for an 8-row x 16-column tile with a ``hi32``
requantized epilogue (every MobileNetV2 / ResNet-20 requantized convolution), the 8
accumulators go straight into ``requant16_hi`` — before, ``tile_8x16_vnni512`` stored them
(8 zmm) and ``write_rows_512`` loaded them back behind a call: on 1x1 convolutions of few
input channels (MobileNetV2's expansions: 2-4 k quads) that round trip was about as many
instructions as the multiply-adds. The same ``requant16_hi`` on the same int32 sums, so the
int8 outputs are bit-identical. Panels from the im2col (``tile_write<0>``) or read in place
from ``conv_direct4``'s channel-quad copy (``<1>``; ``<2>``: two rows' 8 pixels).
``edgecc_x86_int8_tile_write`` 0: the stored tile and ``write_tile`` (A/B); counted per
convolution call by ``edgecc_x86_int8_tile_write_calls``. The 8 sums live in 8 named
registers and the write-back reads e's tables through locals (``edgecc_x86_int8_tile_named``,
0: the array form before, whose sums GCC moved between registers every k quad, and whose
rows reloaded e after each int8 store; A/B), counted by ``edgecc_x86_int8_tile_named_calls``.

``tile_post``: the same for the fused float write-back (``post16_rows``' form: residual
blocks' second convolutions, the stem, strided shortcuts — float and int8 outputs): the 8
sums in registers go straight into post16_rows' float operations, in the same order (the
outputs are bit-identical), with e's fields read once into locals — post16_rows reloaded
them after every float / int8 store (which may alias e) and its tile's sums went through
memory. ``edgecc_x86_int8_tile_post`` 0: the stored tile and post16_rows (A/B); counted per
convolution call by ``edgecc_x86_int8_tile_post_calls``. Its residual form (no activation, a
residual, ReLU, float and int8 outputs: ResNet's second convolutions and conv shortcuts) is
compiled with those flags known (``edgecc_x86_int8_tile_post_resf``, 0: tested per row; counted
per conv_direct4 call by ``edgecc_x86_int8_tile_resf_calls``), and conv_direct4's unfused float
outputs (``tile_plain``: scale and bias, as write_tile's 8-float ops) take it too
(``edgecc_x86_int8_tile_plain``, 0: the stored tile and write_tile; counted by
``edgecc_x86_int8_tile_plain_calls``): all bit-identical; ResNet-20 w8a8 1 thread CPU time
0.996x with both (s15, Zen 4 KVM, load 3: 1-thread profile ~60% in the vpdpbusd loops, the
float write-back ~27% of tile_post_t, its vdivps chain the largest part). C++ text only; the
symbols are exported by ``x86_int8_source``.

Two-panel tiles (``tile_write2`` / ``tile_post2`` / ``tile_plain2``; the template flag TWO of
tile_write_t / tile_post_t): two panels of 16 pixels against the same 8 weight rows, 16 sums
in registers, each weight broadcast loaded once for both panels — per k quad 2 panel loads,
8 broadcasts and 16 vpdpbusd, where two one-panel tiles issue 2 panel loads, 16 broadcasts
and 16 vpdpbusd. Each 8-sum half is written back exactly as its one-panel tile would (the
same sums, the same bytes). conv_direct4 pairs its panels in row order (the next 16 pixels
of a row, else the next row's first; with 8 columns the next row pair) and the GEMM pairs
panel p with p + 1 (1x1 and im2col convolutions); an odd last panel and partial row tiles
stay one-panel. ``edgecc_x86_int8_tile_two`` 0: one panel a tile (A/B); counted per call by
``edgecc_x86_int8_tile_two_calls``. ResNet-20 w8a8, ``bench/x86_int8_knob_ab.py --columns
two0=tile_two:0`` (one panel / two, paired medians, s21): 2 threads 1.108, 1.131, 1.005,
1.108; 1 thread CPU time 1.171, 1.026, 1.030 (the host's noise: the first run read both
builds ~25% slower). MobileNetV2-32 2 threads 0.991-1.029, 224x224 1.023."""

TILE_WRITE = "edgecc_x86_int8_tile_write_calls"  # () -> conv calls with tile_write tiles
TILE_NAMED = "edgecc_x86_int8_tile_named_calls"  # () -> ... of them with the named sums
TILE_POST = "edgecc_x86_int8_tile_post_calls"  # () -> conv calls with tile_post tiles
TILE_TIED = "edgecc_x86_int8_tile_tied_calls"  # () -> ... with the tied vpdpbusd sums
TILE_RESF = "edgecc_x86_int8_tile_resf_calls"  # () -> conv_direct4 calls with tile_post_resf
TILE_PLAIN = "edgecc_x86_int8_tile_plain_calls"  # () -> conv_direct4 calls with tile_plain
POST_FLOOR = "edgecc_x86_int8_post_floor_calls"  # () -> conv calls whose rows skipped qmin
TILE_TWO = "edgecc_x86_int8_tile_two_calls"  # () -> conv_direct4 calls, two-panel tiles
TILE_SYMBOLS = (TILE_WRITE, TILE_NAMED, TILE_POST, TILE_TIED, TILE_RESF, TILE_PLAIN, POST_FLOOR,
                TILE_TWO)

TILE_KERNELS = r"""
// ---- tile_write (x86_int8_tile_source) ----

// EDGECC_DOT512 (UROWS false) as one vpdpbusd on the accumulator's own register: with the
// sums read by a write-back after the loop (tile_write_t, tile_post), GCC gave the builtin's
// tied operand a fresh register and copied all 8 sums there and back every k quad (16
// vmovdqa64 beside the 8 vpdpbusd); the same instruction on the same operands
#define EDGECC_DOT512_TIED(c, row)                                              \
  do {                                                                          \
    int32_t w_;                                                                 \
    memcpy(&w_, rows + (row) * ld + 4 * k, 4);                                  \
    const __m512i a_ = _mm512_set1_epi32(w_);                                   \
    __asm__("vpdpbusd %2, %1, %0" : "+v"(c) : "v"(v), "v"(a_));                 \
  } while (0)
// one k quad into the 8 named sums c0_..c7_ (tile_write_t, tile_post): tied or not
#define EDGECC_DOT512_8(TIED_)                                                  \
  do {                                                                          \
    if (TIED_) {                                                                \
      EDGECC_DOT512_TIED(c0_, 0); EDGECC_DOT512_TIED(c1_, 1);                   \
      EDGECC_DOT512_TIED(c2_, 2); EDGECC_DOT512_TIED(c3_, 3);                   \
      EDGECC_DOT512_TIED(c4_, 4); EDGECC_DOT512_TIED(c5_, 5);                   \
      EDGECC_DOT512_TIED(c6_, 6); EDGECC_DOT512_TIED(c7_, 7);                   \
    } else {                                                                    \
      EDGECC_DOT512(c0_, 0); EDGECC_DOT512(c1_, 1); EDGECC_DOT512(c2_, 2);      \
      EDGECC_DOT512(c3_, 3); EDGECC_DOT512(c4_, 4); EDGECC_DOT512(c5_, 5);      \
      EDGECC_DOT512(c6_, 6); EDGECC_DOT512(c7_, 7);                             \
    }                                                                           \
  } while (0)
// one k quad of a two-panel tile (TWO: tile_write_t, tile_post_t): each weight broadcast
// once into both panels' sums, c0_..c7_ (panel v) and d0_..d7_ (panel u) — 16 sums, 2 panel
// loads and 8 broadcasts a 16 vpdpbusd, where two 8-sum tiles load 2 panels and 16 broadcasts
#define EDGECC_DOT512_TIED2(c, d, row)                                          \
  do {                                                                          \
    int32_t w_;                                                                 \
    memcpy(&w_, rows + (row) * ld + 4 * k, 4);                                  \
    const __m512i a_ = _mm512_set1_epi32(w_);                                   \
    __asm__("vpdpbusd %2, %1, %0" : "+v"(c) : "v"(v), "v"(a_));                 \
    __asm__("vpdpbusd %2, %1, %0" : "+v"(d) : "v"(u), "v"(a_));                 \
  } while (0)
#define EDGECC_DOT512_16()                                                      \
  do {                                                                          \
    EDGECC_DOT512_TIED2(c0_, d0_, 0); EDGECC_DOT512_TIED2(c1_, d1_, 1);         \
    EDGECC_DOT512_TIED2(c2_, d2_, 2); EDGECC_DOT512_TIED2(c3_, d3_, 3);         \
    EDGECC_DOT512_TIED2(c4_, d4_, 4); EDGECC_DOT512_TIED2(c5_, d5_, 5);         \
    EDGECC_DOT512_TIED2(c6_, d6_, 6); EDGECC_DOT512_TIED2(c7_, d7_, 7);         \
  } while (0)
// e.c4.base set (x86_int8_c4): a tile's 8 rows (output channels r0.., r0 % 8 == 0) of 16
// pixels from pixel c0, as int32 already clamped to int8, stored as two channel quads of the
// next convolution's padded copy [oc/4][hp][wp][4] (x + 128: the consumer's conv_direct4
// reads it in place, no copy): a pixel's 4 channels are one dword, so the rows are packed as
// they come — a shift and a bit select (vpternlogd) a row, lane by lane, no byte narrowing or
// shuffles — and a quad is one 64-byte store once its 4th row is in (8-column maps: two
// 32-byte halves, two output rows). The same int8 values, flipped
struct C4Pack {
  const C4Out& o;
  int r0;
  uint32_t y, x;
  bool wrap;
  __m512i d;
  __attribute__((target("avx2,fma,avx512f,avx512bw")))
  C4Pack(const C4Out& out, int r, int c0) : o(out), r0(r) { at(c0); }
  // the tile's first pixel c0 (a two-panel tile's second half: at(c0b) after row 7)
  __attribute__((target("avx2,fma,avx512f,avx512bw"), always_inline))
  inline void at(int c0) {
    // (one 32-bit division: pixels and widths < 2^31; the second half 8 pixels on, which is
    // the next row's start where a row has 8 columns)
    d = _mm512_setzero_si512();
    y = x = 0, wrap = false;
    if (!o.base) return;  // (tile_post_t: no c4 output)
    y = (uint32_t)c0 / (uint32_t)o.ow, x = (uint32_t)c0 - y * (uint32_t)o.ow;
    wrap = x + 8 >= (uint32_t)o.ow;
  }
  // row r (0-7, in order) of the tile
  __attribute__((target("avx2,fma,avx512f,avx512bw"), always_inline))
  inline void row(int r, __m512i v) {
    const int k = r & 3;  // select by mask (C ? A : B): imm 0xE4
    if (k == 0) { d = v; return; }
    d = _mm512_ternarylogic_epi32(d, _mm512_slli_epi32(v, 8 * k),
                                  _mm512_set1_epi32((int)((1u << (8 * k)) - 1)), 0xE4);
    if (k < 3) return;
    d = _mm512_xor_si512(d, _mm512_set1_epi32((int)0x80808080u));
    const int64_t plane = (r0 / 4 + r / 4) * o.hp;
    int8_t* d0 = o.base + ((plane + y + o.ph) * o.wp + x + o.pw) * 4;
    if (!wrap) { _mm512_storeu_si512(d0, d); return; }
    int8_t* d1 = o.base + ((plane + y + 1 + o.ph) * o.wp + (x + 8 - o.ow) + o.pw) * 4;
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d0), _mm512_castsi512_si256(d));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(d1), _mm512_extracti64x4_epi64(d, 1));
  }
};

// requant16_hi's value before its narrowing, as int32: saturating to int8 and clamping to
// [lo, hi] (within int8) = clamping to [lo, hi] (lo / hi: e.lo + e.zy, e.hi + e.zy as sat8;
// without CLAMP the whole int8 range)
__attribute__((target("avx2,fma,avx512f,avx512bw")))
static inline __m512i requant16_hi32(__m512i v, __m512i m, __m512i a, __m512i s32,
                                     __m512i lo, __m512i hi) {
  const __m512i even = _mm512_add_epi64(_mm512_mul_epi32(v, m), a);
  const __m512i odd = _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(v, 32), m), a);
  const __m512i h = _mm512_mask_shuffle_epi32(odd, 0x5555, even, _MM_PERM_CDAB);
  return _mm512_min_epi32(_mm512_max_epi32(_mm512_srav_epi32(h, s32), lo), hi);
}

extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_tile_write = 1;
// nonzero: tile_write_t's sums in 8 named registers (0: the array form before, A/B)
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_tile_named = 1;
// nonzero: tile_write_t's named sums and tile_post's accumulate by EDGECC_DOT512_TIED (0: the
// builtin, A/B); counted per convolution call by edgecc_x86_int8_tile_tied_calls
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_tile_tied = 1;
int64_t tile_write_calls = 0;  // convolution calls with tiles written from registers (a test's)
std::atomic<int> tile_write_seen{0};  // set once a call (stored only when clear)
int64_t tile_named_calls = 0;  // ... of them whose tiles took the named sums (a test's)
std::atomic<int> tile_named_seen{0};  // set like tile_write_seen
int64_t tile_tied_calls = 0;  // ... of them (or tile_post's) accumulating by EDGECC_DOT512_TIED
std::atomic<int> tile_tied_seen{0};  // set like tile_write_seen

// does tile_write apply to a full 8 x 16 tile of e (the checks write_tile / write_rows_512 make)
static inline bool tile_write_fits(const Epilogue& e, int nr, int nc) {
  return edgecc_x86_int8_tile_write && nr == 8 && nc == 16 && e.channel_is_row && e.requant &&
         e.wide && e.hi32;
}

// rows: 8 weight rows [.][ld]; MODE 0: panel [kq][64] (src), 1: src + qoff[k], 2: 32 bytes at
// src + qoff[k] and at src + next + qoff[k]; then requant16_hi a row, as write_rows_hi
// NAMED: the 8 accumulators as 8 variables (EDGECC_DOT512, as tile_8x16_direct): GCC kept
// the array form's sums in other registers and moved all 8 there and back every k quad (16
// vmovdqa a quad beside the 8 vpdpbusd); the same sums in the same order either way
// TWO (NAMED and TIED only): a second panel at src + off2 (written at column
// c0b) accumulated beside the first with the same weight broadcasts (EDGECC_DOT512_16); each
// 8-row half written back as a tile of its own would be (the same sums, the same bytes)
template <int MODE, bool CLAMP, bool FOLD, bool NAMED, bool TIED, bool TWO = false>
__attribute__((target("avx2,fma,avx512f,avx512bw,avx512vnni")))
static void tile_write_t(const int8_t* rows, int64_t ld, int64_t kq, const uint8_t* src,
                         const int64_t* qoff, int64_t next, const Epilogue& e, int r0, int c0,
                         int64_t off2 = 0, int c0b = 0) {
  static_assert(!TWO || (NAMED && TIED), "TWO: the named, tied sums");
  __m512i c[8];
  auto panel_at = [&](const uint8_t* s, int64_t k) {
    return MODE == 0 ? _mm512_loadu_si512(s + k * 64)
        : MODE == 1 ? _mm512_loadu_si512(s + qoff[k])
        : _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(
              reinterpret_cast<const __m256i*>(s + qoff[k]))), _mm256_loadu_si256(
              reinterpret_cast<const __m256i*>(s + next + qoff[k])), 1);
  };
  auto panel = [&](int64_t k) { return panel_at(src, k); };
  if (NAMED) {
    constexpr bool UROWS = false;
    __m512i c0_ = _mm512_setzero_si512(), c1_ = c0_, c2_ = c0_, c3_ = c0_, c4_ = c0_,
            c5_ = c0_, c6_ = c0_, c7_ = c0_;
    __m512i d0_ = c0_, d1_ = c0_, d2_ = c0_, d3_ = c0_, d4_ = c0_, d5_ = c0_, d6_ = c0_,
            d7_ = c0_;  // TWO: the second panel's sums
    const uint8_t* const src2 = src + off2;
    for (int64_t k = 0; k < kq; ++k) {
      const __m512i v = panel(k);
      if (TWO) {
        const __m512i u = panel_at(src2, k);
        EDGECC_DOT512_16();
      } else {
        EDGECC_DOT512_8(TIED);
      }
    }
    // the write-back takes the 8 named sums as they are (through an array, GCC kept them in
    // other registers and moved all 8 there and back every k quad: 16 vmovdqa64 a quad)
    const Sat8 q = sat8(e);  // e's tables in registers: an int8 store may alias e
    const C4Out o4 = e.c4;  // x86_int8_c4: the next conv's padded channel-quad layout
    int8_t* const out0 = static_cast<int8_t*>(e.out) + r0 * e.ld;
    const int64_t eld = e.ld;
    const int64_t *const mult = e.mult + r0, *const add = (FOLD ? e.fadd : e.add) + r0;
    const int64_t* const shift = e.shift + r0;
    const int32_t* const off = FOLD ? nullptr : e.off + r0;
    auto req = [&](__m512i sum, int r) {
      const __m512i v = FOLD ? sum : _mm512_add_epi32(sum, _mm512_set1_epi32(off[r]));
      return requant16_hi<CLAMP>(v, _mm512_set1_epi64(mult[r]), _mm512_set1_epi64(add[r]),
                                 _mm512_set1_epi32((int32_t)(shift[r] - 32)), q);
    };
    if (o4.base) {  // x86_int8_c4: int32 rows, packed 4 channels a dword
      const __m512i lo = _mm512_set1_epi32(CLAMP ? (int32_t)(e.lo + e.zy) : -128);
      const __m512i hi = _mm512_set1_epi32(CLAMP ? (int32_t)(e.hi + e.zy) : 127);
      auto req32 = [&](__m512i sum, int r) {
        const __m512i v = FOLD ? sum : _mm512_add_epi32(sum, _mm512_set1_epi32(off[r]));
        return requant16_hi32(v, _mm512_set1_epi64(mult[r]), _mm512_set1_epi64(add[r]),
                              _mm512_set1_epi32((int32_t)(shift[r] - 32)), lo, hi);
      };
      C4Pack p(o4, r0, c0);
      p.row(0, req32(c0_, 0)); p.row(1, req32(c1_, 1)); p.row(2, req32(c2_, 2));
      p.row(3, req32(c3_, 3)); p.row(4, req32(c4_, 4)); p.row(5, req32(c5_, 5));
      p.row(6, req32(c6_, 6)); p.row(7, req32(c7_, 7));
      if (!TWO) return;
      C4Pack p2(o4, r0, c0b);
      p2.row(0, req32(d0_, 0)); p2.row(1, req32(d1_, 1)); p2.row(2, req32(d2_, 2));
      p2.row(3, req32(d3_, 3)); p2.row(4, req32(d4_, 4)); p2.row(5, req32(d5_, 5));
      p2.row(6, req32(d6_, 6)); p2.row(7, req32(d7_, 7));
      return;
    }
    int8_t* out = out0 + c0;
    auto row = [&](__m512i sum, int r) {
      _mm_storeu_si128(reinterpret_cast<__m128i*>(out + r * eld), req(sum, r));
    };
    row(c0_, 0); row(c1_, 1); row(c2_, 2); row(c3_, 3);
    row(c4_, 4); row(c5_, 5); row(c6_, 6); row(c7_, 7);
    if (!TWO) return;
    out = out0 + c0b;
    row(d0_, 0); row(d1_, 1); row(d2_, 2); row(d3_, 3);
    row(d4_, 4); row(d5_, 5); row(d6_, 6); row(d7_, 7);
    return;
  }
#pragma GCC unroll 8
  for (int r = 0; r < 8; ++r) c[r] = _mm512_setzero_si512();
  for (int64_t k = 0; k < kq; ++k) {
    const __m512i v = panel(k);
#pragma GCC unroll 8
    for (int r = 0; r < 8; ++r) {
      int32_t w;
      memcpy(&w, rows + r * ld + 4 * k, 4);
      c[r] = _mm512_dpbusd_epi32(c[r], v, _mm512_set1_epi32(w));
    }
  }
  const Sat8 q = sat8(e);
#pragma GCC unroll 8
  for (int r = 0; r < 8; ++r) {
    const int64_t row = r0 + r;
    const __m512i v = FOLD ? c[r] : _mm512_add_epi32(c[r], _mm512_set1_epi32(e.off[row]));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<int8_t*>(e.out) + row * e.ld + c0),
                     requant16_hi<CLAMP>(v, _mm512_set1_epi64(e.mult[row]),
                                         _mm512_set1_epi64(FOLD ? e.fadd[row] : e.add[row]),
                                         _mm512_set1_epi32((int32_t)(e.shift[row] - 32)), q));
  }
}

// the tile for e's form (clamp / folded offset)
template <int MODE, bool NAMED, bool TIED, bool TWO = false>
static void tile_write_as(const int8_t* rows, int64_t ld, int64_t kq, const uint8_t* src,
                          const int64_t* qoff, int64_t next, const Epilogue& e, int r0, int c0,
                          int64_t off2 = 0, int c0b = 0) {
  const bool clamp = !full_int8(e);
  if (e.fadd && clamp)
    tile_write_t<MODE, true, true, NAMED, TIED, TWO>(rows, ld, kq, src, qoff, next, e, r0, c0,
                                                     off2, c0b);
  else if (e.fadd)
    tile_write_t<MODE, false, true, NAMED, TIED, TWO>(rows, ld, kq, src, qoff, next, e, r0, c0,
                                                      off2, c0b);
  else if (clamp)
    tile_write_t<MODE, true, false, NAMED, TIED, TWO>(rows, ld, kq, src, qoff, next, e, r0, c0,
                                                      off2, c0b);
  else
    tile_write_t<MODE, false, false, NAMED, TIED, TWO>(rows, ld, kq, src, qoff, next, e, r0,
                                                       c0, off2, c0b);
}

template <int MODE>
static void tile_write(const int8_t* rows, int64_t ld, int64_t kq, const uint8_t* src,
                       const int64_t* qoff, int64_t next, const Epilogue& e, int r0, int c0) {
  if (!tile_write_seen.load(std::memory_order_relaxed))
    tile_write_seen.store(1, std::memory_order_relaxed);
  if (edgecc_x86_int8_tile_named) {
    if (!tile_named_seen.load(std::memory_order_relaxed))
      tile_named_seen.store(1, std::memory_order_relaxed);
    if (!tile_tied_seen.load(std::memory_order_relaxed) && edgecc_x86_int8_tile_tied)
      tile_tied_seen.store(1, std::memory_order_relaxed);
    if (edgecc_x86_int8_tile_tied)
      tile_write_as<MODE, true, true>(rows, ld, kq, src, qoff, next, e, r0, c0);
    else
      tile_write_as<MODE, true, false>(rows, ld, kq, src, qoff, next, e, r0, c0);
  }
  else
    tile_write_as<MODE, false, false>(rows, ld, kq, src, qoff, next, e, r0, c0);
}

// nonzero: conv_direct4 pairs its tiles (tile_write2 / tile_post2 / tile_plain2: two panels,
// 16 sums, each weight broadcast once for both); 0: a panel a tile (A/B); counted per
// conv_direct4 call by edgecc_x86_int8_tile_two_calls
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_tile_two = 1;
int64_t tile_two_calls = 0;  // conv_direct4 calls with two-panel tiles (a test's)
std::atomic<int> tile_two_seen{0};  // set like tile_write_seen

// a two-panel tile ran (its sums tied too: tile_tied_calls)
static inline void tile_two_mark() {
  if (!tile_two_seen.load(std::memory_order_relaxed))
    tile_two_seen.store(1, std::memory_order_relaxed);
  if (!tile_tied_seen.load(std::memory_order_relaxed))
    tile_tied_seen.store(1, std::memory_order_relaxed);
}

// the two-panel forms' fallback: the panels at src (column c0) and src + off2 (column c0b) as
// two one-panel tiles in turn (one: tile_write / tile_post / tile_plain of a MODE)
using OneTile = void (*)(const int8_t*, int64_t, int64_t, const uint8_t*, const int64_t*,
                         int64_t, const Epilogue&, int, int);
static inline void tiles_apart(OneTile one, const int8_t* rows, int64_t ld, int64_t kq,
                               const uint8_t* src, const int64_t* qoff, int64_t next,
                               const Epilogue& e, int r0, int c0, int64_t off2, int c0b) {
  one(rows, ld, kq, src, qoff, next, e, r0, c0);
  one(rows, ld, kq, src + off2, qoff, next, e, r0, c0b);
}

// tile_write of the panels at src (column c0) and src + off2 (column c0b) as one two-panel
// tile where the named, tied sums apply (else the two tiles one after the other)
template <int MODE>
static void tile_write2(const int8_t* rows, int64_t ld, int64_t kq, const uint8_t* src,
                        const int64_t* qoff, int64_t next, const Epilogue& e, int r0, int c0,
                        int64_t off2, int c0b) {
  if (!(edgecc_x86_int8_tile_named && edgecc_x86_int8_tile_tied))
    return tiles_apart(tile_write<MODE>, rows, ld, kq, src, qoff, next, e, r0, c0, off2, c0b);
  if (!tile_write_seen.load(std::memory_order_relaxed))
    tile_write_seen.store(1, std::memory_order_relaxed);
  if (!tile_named_seen.load(std::memory_order_relaxed))
    tile_named_seen.store(1, std::memory_order_relaxed);
  tile_two_mark();
  tile_write_as<MODE, true, true, true>(rows, ld, kq, src, qoff, next, e, r0, c0, off2, c0b);
}

// ---- tile_post (x86_int8_tile_source) ----
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_tile_post = 1;
int64_t tile_post_calls = 0;  // convolution calls with tiles post-processed from registers
// nonzero: tile_post's residual form (no activation, residual, ReLU, float + int8 outputs:
// ResNet's second convolutions and shortcuts) compiled with those flags known (0: tested per
// row, A/B); counted per conv_direct4 call by edgecc_x86_int8_tile_resf_calls
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_tile_post_resf = 1;
int64_t tile_resf_calls = 0;  // conv_direct4 calls with tile_post_resf tiles (a test's)
std::atomic<int> tile_resf_seen{0};  // set like tile_write_seen
// nonzero: conv_direct4's unfused float outputs (a residual block's second convolution whose
// shortcut is a convolution, which adds it) written from the tile's registers by tile_post_t
// (scale, bias, a 16-float store: write_tile's 8-float ops, the same values); 0: the stored
// tile and write_tile (A/B); counted per conv_direct4 call by edgecc_x86_int8_tile_plain_calls
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_tile_plain = 1;
int64_t tile_plain_calls = 0;  // conv_direct4 calls with tile_plain tiles (a test's)
std::atomic<int> tile_plain_seen{0};  // set like tile_write_seen
std::atomic<int> tile_post_seen{0};  // set like tile_write_seen

// edgecc_x86_int8_post_floor 1: tile_post's int8 rows skip the clamp to qmin where it cannot
// bind — after a ReLU (act or post_relu: vmaxps with 0, which also turns NaN into 0) v >= 0,
// so with qs > 0 and qz >= qmin, RNE(v / qs) + qz >= qz >= qmin: one vmaxps a row less, the
// same bytes. 0: both clamps (A/B); counted per call in post_floor_calls
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_post_floor = 1;
int64_t post_floor_calls = 0;  // convolution calls whose tile_post rows skipped it (a test's)
std::atomic<int> post_floor_seen{0};  // set like tile_write_seen

// does tile_post apply to a full 8 x 16 tile of e (write_tile's post16_rows test)
static inline bool tile_post_fits(const Epilogue& e, int nr, int nc) {
  return edgecc_x86_int8_tile_post && edgecc_x86_int8_post_rows && nr == 8 && nc == 16 &&
         e.channel_is_row && !e.requant && e.post16;
}

// tile_write_t's sums (MODE as there), then post16_rows' float write-back of the 8 rows
// C4 (x86_int8_c4): the int8 rows packed into e.c4's layout (C4Pack), a separate instance
// TWO (TIED only): a second panel at src + off2, written at column c0b, as tile_write_t's
template <int MODE, bool TIED, bool RESF, bool PLAIN = false, bool C4 = false, bool TWO = false>
__attribute__((target("avx2,fma,avx512f,avx512bw,avx512vnni")))
static void tile_post_t(const int8_t* rows, int64_t ld, int64_t kq, const uint8_t* src,
                        const int64_t* qoff, int64_t next, const Epilogue& e, int r0, int c0,
                        int64_t off2 = 0, int c0b = 0) {
  static_assert(!TWO || TIED, "TWO: the tied sums");
  constexpr bool UROWS = false;
  __m512i c0_ = _mm512_setzero_si512(), c1_ = c0_, c2_ = c0_, c3_ = c0_, c4_ = c0_,
          c5_ = c0_, c6_ = c0_, c7_ = c0_;
  __m512i d0_ = c0_, d1_ = c0_, d2_ = c0_, d3_ = c0_, d4_ = c0_, d5_ = c0_, d6_ = c0_,
          d7_ = c0_;  // TWO: the second panel's sums
  auto panel_at = [&](const uint8_t* s, int64_t k) __attribute__((always_inline)) {
    return MODE == 0 ? _mm512_loadu_si512(s + k * 64)
        : MODE == 1 ? _mm512_loadu_si512(s + qoff[k])
        : _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(
              reinterpret_cast<const __m256i*>(s + qoff[k]))), _mm256_loadu_si256(
              reinterpret_cast<const __m256i*>(s + next + qoff[k])), 1);
  };
  const uint8_t* const src2 = src + off2;
  for (int64_t k = 0; k < kq; ++k) {
    const __m512i v = panel_at(src, k);
    if (TWO) {
      const __m512i u = panel_at(src2, k);
      EDGECC_DOT512_16();
    } else {
      EDGECC_DOT512_8(TIED);
    }
  }
  if (PLAIN) {
    if (!tile_plain_seen.load(std::memory_order_relaxed))
      tile_plain_seen.store(1, std::memory_order_relaxed);
  } else {
    if (!post16_seen.load(std::memory_order_relaxed))
      post16_seen.store(1, std::memory_order_relaxed);
    if (!post_rows_seen.load(std::memory_order_relaxed))
      post_rows_seen.store(1, std::memory_order_relaxed);
    if (!tile_post_seen.load(std::memory_order_relaxed))
      tile_post_seen.store(1, std::memory_order_relaxed);
  }
  // e's fields as locals: the float / int8 stores below may alias e
  const int32_t* const off = e.off + r0;
  const float *const scale = e.scale + r0, *const bias = e.bias + r0;
  // RESF (tile_post_resf): no activation, a residual, ReLU after it, float and int8 outputs —
  // known at compile time, so the 8 rows take no flag tests and GCC may interleave them
  // PLAIN (tile_plain): an unfused float output (e.out), scale and bias alone
  const int act = RESF || PLAIN ? 0 : e.act, post_relu = RESF ? 1 : PLAIN ? 0 : e.post_relu;
  const float* const res = PLAIN ? nullptr : e.res;
  float* const fout = PLAIN ? static_cast<float*>(e.out) : e.fout;
  int8_t* const qout = PLAIN ? nullptr : e.qout;
  const bool has_res = RESF || res, has_fout = RESF || PLAIN || fout,
             has_qout = RESF || qout;
  const int64_t eld = e.ld;
  int64_t at0 = (int64_t)r0 * eld + c0;
  const C4Out o4 = C4 ? e.c4 : C4Out{};  // x86_int8_c4: qout in the next conv's layout
  const __m512i lo8 = _mm512_set1_epi32(-128), hi8 = _mm512_set1_epi32(127);
  // (the float clamp to [qmin, qmax] within int8 leaves nothing to saturate: q is never NaN
  // there — vmaxps with qmin, or with 0 after a ReLU, returns the non-NaN operand)
  const bool in8 = e.qmin >= -128.0f && e.qmax <= 127.0f;
  C4Pack pack(o4, r0, c0);  // (x86_int8_c4: the int8 rows as int32, saturated as vpmovsdb)
  const __m512 zero = _mm512_setzero_ps(), six = _mm512_set1_ps(6.0f);
  const __m512 qs = _mm512_set1_ps(e.qs), qz = _mm512_set1_ps(e.qz);
  const __m512 qmin = _mm512_set1_ps(e.qmin), qmax = _mm512_set1_ps(e.qmax);
  // post_floor: no clamp to qmin (it cannot bind after a ReLU: edgecc_x86_int8_post_floor)
  const bool floor_free = has_qout && edgecc_x86_int8_post_floor && (act || post_relu) &&
                          e.qs > 0.0f && e.qz >= e.qmin;
  if (floor_free && !post_floor_seen.load(std::memory_order_relaxed))
    post_floor_seen.store(1, std::memory_order_relaxed);
  // (always_inline: with PLAIN and RESF instances GCC left it out of line in some)
  auto row = [&](__m512i sum, int r) __attribute__((always_inline)) {  // the named sums
    const int64_t at = at0 + r * eld;
    const __m512i a = _mm512_add_epi32(sum, _mm512_set1_epi32(off[r]));
    __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(a), _mm512_set1_ps(scale[r])),
                             _mm512_set1_ps(bias[r]));
    if (act) v = _mm512_max_ps(v, zero);
    if (act == 2) v = _mm512_min_ps(v, six);
    if (has_res) v = _mm512_add_ps(v, _mm512_loadu_ps(res + at));
    if (post_relu) v = _mm512_max_ps(v, zero);
    if (has_fout) _mm512_storeu_ps(fout + at, v);
    if (has_qout) {
      __m512 q = _mm512_roundscale_ps(_mm512_div_ps(v, qs),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      q = _mm512_add_ps(q, qz);
      q = _mm512_min_ps(floor_free ? q : _mm512_max_ps(q, qmin), qmax);
      if (C4)
        pack.row(r, in8 ? _mm512_cvtps_epi32(q)
                        : _mm512_min_epi32(_mm512_max_epi32(_mm512_cvtps_epi32(q), lo8), hi8));
      else
        _mm_storeu_si128(reinterpret_cast<__m128i*>(qout + at),
                         _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(q)));
    }
  };
  row(c0_, 0); row(c1_, 1); row(c2_, 2); row(c3_, 3);
  row(c4_, 4); row(c5_, 5); row(c6_, 6); row(c7_, 7);
  if (!TWO) return;
  at0 = (int64_t)r0 * eld + c0b;
  if (C4) pack.at(c0b);
  row(d0_, 0); row(d1_, 1); row(d2_, 2); row(d3_, 3);
  row(d4_, 4); row(d5_, 5); row(d6_, 6); row(d7_, 7);
}

template <int MODE>
static void tile_post(const int8_t* rows, int64_t ld, int64_t kq, const uint8_t* src,
                      const int64_t* qoff, int64_t next, const Epilogue& e, int r0, int c0) {
  const bool resf = edgecc_x86_int8_tile_post_resf && e.act == 0 && e.res && e.post_relu &&
                    e.fout && e.qout;
  if (resf && !tile_resf_seen.load(std::memory_order_relaxed))
    tile_resf_seen.store(1, std::memory_order_relaxed);
  if (edgecc_x86_int8_tile_tied) {
    if (!tile_tied_seen.load(std::memory_order_relaxed))
      tile_tied_seen.store(1, std::memory_order_relaxed);
    if (e.c4.base) {  // x86_int8_c4
      if (resf) tile_post_t<MODE, true, true, false, true>(rows, ld, kq, src, qoff, next, e, r0,
                                                           c0);
      else tile_post_t<MODE, true, false, false, true>(rows, ld, kq, src, qoff, next, e, r0, c0);
    } else if (resf) {
      tile_post_t<MODE, true, true>(rows, ld, kq, src, qoff, next, e, r0, c0);
    } else {
      tile_post_t<MODE, true, false>(rows, ld, kq, src, qoff, next, e, r0, c0);
    }
  } else if (e.c4.base) {
    tile_post_t<MODE, false, false, false, true>(rows, ld, kq, src, qoff, next, e, r0, c0);
  } else {
    tile_post_t<MODE, false, false>(rows, ld, kq, src, qoff, next, e, r0, c0);
  }
}

// does tile_plain apply to a full 8 x 16 tile of e (write_tile's unfused float form)
static inline bool tile_plain_fits(const Epilogue& e, int nr, int nc) {
  return edgecc_x86_int8_tile_plain && nr == 8 && nc == 16 && e.channel_is_row && !e.requant &&
         !e.fused && e.wide;
}

template <int MODE>
static void tile_plain(const int8_t* rows, int64_t ld, int64_t kq, const uint8_t* src,
                       const int64_t* qoff, int64_t next, const Epilogue& e, int r0, int c0) {
  if (edgecc_x86_int8_tile_tied) {
    if (!tile_tied_seen.load(std::memory_order_relaxed))
      tile_tied_seen.store(1, std::memory_order_relaxed);
    tile_post_t<MODE, true, false, true>(rows, ld, kq, src, qoff, next, e, r0, c0);
  } else {
    tile_post_t<MODE, false, false, true>(rows, ld, kq, src, qoff, next, e, r0, c0);
  }
}

// tile_post of the panels at src (column c0) and src + off2 (column c0b) as one two-panel tile
// where the tied sums apply (else the two tiles one after the other)
template <int MODE>
static void tile_post2(const int8_t* rows, int64_t ld, int64_t kq, const uint8_t* src,
                       const int64_t* qoff, int64_t next, const Epilogue& e, int r0, int c0,
                       int64_t off2, int c0b) {
  if (!edgecc_x86_int8_tile_tied)
    return tiles_apart(tile_post<MODE>, rows, ld, kq, src, qoff, next, e, r0, c0, off2, c0b);
  const bool resf = edgecc_x86_int8_tile_post_resf && e.act == 0 && e.res && e.post_relu &&
                    e.fout && e.qout;
  if (resf && !tile_resf_seen.load(std::memory_order_relaxed))
    tile_resf_seen.store(1, std::memory_order_relaxed);
  tile_two_mark();
  if (e.c4.base) {  // x86_int8_c4
    if (resf) tile_post_t<MODE, true, true, false, true, true>(rows, ld, kq, src, qoff, next, e,
                                                               r0, c0, off2, c0b);
    else tile_post_t<MODE, true, false, false, true, true>(rows, ld, kq, src, qoff, next, e, r0,
                                                           c0, off2, c0b);
  } else if (resf) {
    tile_post_t<MODE, true, true, false, false, true>(rows, ld, kq, src, qoff, next, e, r0, c0,
                                                      off2, c0b);
  } else {
    tile_post_t<MODE, true, false, false, false, true>(rows, ld, kq, src, qoff, next, e, r0, c0,
                                                       off2, c0b);
  }
}

// tile_plain of two panels (as tile_post2)
template <int MODE>
static void tile_plain2(const int8_t* rows, int64_t ld, int64_t kq, const uint8_t* src,
                        const int64_t* qoff, int64_t next, const Epilogue& e, int r0, int c0,
                        int64_t off2, int c0b) {
  if (!edgecc_x86_int8_tile_tied)
    return tiles_apart(tile_plain<MODE>, rows, ld, kq, src, qoff, next, e, r0, c0, off2, c0b);
  tile_two_mark();
  tile_post_t<MODE, true, false, true, false, true>(rows, ld, kq, src, qoff, next, e, r0, c0,
                                                    off2, c0b);
}
"""

TILE_FFI = r"""
// how many convolution calls wrote tiles back from registers (tile_write)
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_int8_tile_write_calls(void*, const TVMFFIAny*, int32_t,
                                               TVMFFIAny* result) {
  result->type_index = kTVMFFIInt; result->zero_padding = 0;
  result->v_int64 = __atomic_load_n(&tile_write_calls, __ATOMIC_RELAXED);
  return 0;
}

// how many of them took tile_write_t's named sums (edgecc_x86_int8_tile_named)
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_int8_tile_named_calls(void*, const TVMFFIAny*, int32_t,
                                               TVMFFIAny* result) {
  result->type_index = kTVMFFIInt; result->zero_padding = 0;
  result->v_int64 = __atomic_load_n(&tile_named_calls, __ATOMIC_RELAXED);
  return 0;
}

// how many convolution calls post-processed tiles from registers (tile_post)
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_int8_tile_post_calls(void*, const TVMFFIAny*, int32_t,
                                              TVMFFIAny* result) {
  result->type_index = kTVMFFIInt; result->zero_padding = 0;
  result->v_int64 = __atomic_load_n(&tile_post_calls, __ATOMIC_RELAXED);
  return 0;
}

// how many conv_direct4 calls took tile_post's residual form (edgecc_x86_int8_tile_post_resf)
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_int8_tile_resf_calls(void*, const TVMFFIAny*, int32_t,
                                              TVMFFIAny* result) {
  result->type_index = kTVMFFIInt; result->zero_padding = 0;
  result->v_int64 = __atomic_load_n(&tile_resf_calls, __ATOMIC_RELAXED);
  return 0;
}

// how many convolution calls' tile_post rows skipped the clamp to qmin (post_floor)
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_int8_post_floor_calls(void*, const TVMFFIAny*, int32_t,
                                               TVMFFIAny* result) {
  result->type_index = kTVMFFIInt; result->zero_padding = 0;
  result->v_int64 = __atomic_load_n(&post_floor_calls, __ATOMIC_RELAXED);
  return 0;
}

// how many conv_direct4 calls wrote unfused float tiles from registers (tile_plain)
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_int8_tile_plain_calls(void*, const TVMFFIAny*, int32_t,
                                               TVMFFIAny* result) {
  result->type_index = kTVMFFIInt; result->zero_padding = 0;
  result->v_int64 = __atomic_load_n(&tile_plain_calls, __ATOMIC_RELAXED);
  return 0;
}

// how many conv_direct4 calls took two-panel tiles (edgecc_x86_int8_tile_two)
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_int8_tile_two_calls(void*, const TVMFFIAny*, int32_t,
                                             TVMFFIAny* result) {
  result->type_index = kTVMFFIInt; result->zero_padding = 0;
  result->v_int64 = __atomic_load_n(&tile_two_calls, __ATOMIC_RELAXED);
  return 0;
}

// how many convolution calls accumulated tiles by EDGECC_DOT512_TIED (edgecc_x86_int8_tile_tied)
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_int8_tile_tied_calls(void*, const TVMFFIAny*, int32_t,
                                              TVMFFIAny* result) {
  result->type_index = kTVMFFIInt; result->zero_padding = 0;
  result->v_int64 = __atomic_load_n(&tile_tied_calls, __ATOMIC_RELAXED);
  return 0;
}
"""
