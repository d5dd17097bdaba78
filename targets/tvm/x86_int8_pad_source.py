"""The VNNI convolution's input side, spliced into ``x86_int8_source.SOURCE`` before the
convolution (kept apart to keep that file under the size the style sets): the padded copy of
x + 128 (``pad_rows``: every channel's rows, memset and flip, in one AVX-512 / AVX2 call, not
a byte loop in ``qconv`` -- inline there it ran scalar, its bound reloaded per byte, because
the bound was captured by qconv's lambdas and a char store may alias it: ~25% of a ResNet-20
w8a8 call at 1 thread on Zen 4), ``edgecc_x86_int8_flip_copy`` (0: that byte loop, for A/B)
with its counter, and ``panel_bases_step`` (a panel's 16 input offsets with one division, not
two a lane). C++ text only; the symbols are exported by ``x86_int8_source``."""

PAD_KERNELS = r"""// panel_bases (the prelude's) with one division a panel, not two a lane: the lanes' (row,
// column) stepped from the first's (perf: its 32 divisions a panel were ~1/3 of qconv's own
// time on MobileNetV2-32, whose 1x1 convolutions build 4-64 panels a call). The same bases.
static inline bool panel_bases_step(int64_t p, int64_t pix, int64_t ow, int64_t sh, int64_t sw,
                                    int64_t wp, int64_t base[16]) {
  const int64_t q0 = p * 16 < pix ? p * 16 : pix - 1;
  int64_t oy = q0 / ow, ox = q0 % ow;
  for (int lane = 0; lane < 16; ++lane) {
    if (p * 16 + lane < pix && lane > 0 && ++ox == ow) { ox = 0; ++oy; }
    base[lane] = oy * sh * wp + ox * sw;  // lanes past pix repeat pix - 1's
  }
  bool contiguous = true;
  for (int lane = 1; lane < 16; ++lane)
    contiguous = contiguous && base[lane] == base[0] + lane;
  return contiguous;
}

// one row of the padded copy: dst[i] = src[i] ^ 0x80 (x + 128 as u8). A helper of its own:
// inline in qconv the byte loop ran scalar, a byte a cycle, reloading its bound per byte (the
// bound lives in qconv's frame, captured by its lambdas, and a char store may alias it) —
// ~25% of a ResNet-20 w8a8 call at 1 thread. edgecc_x86_int8_flip_copy 0: that loop (A/B,
// kept in qconv as it was).
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_flip_copy = 1;
int64_t flip_copies = 0;  // convolution calls whose padded copy ran pad_rows (a test's)
__attribute__((target("avx2,fma,avx512f,avx512bw")))
static inline void flip_row_512(uint8_t* dst, const int8_t* src, int64_t n) {
  const __m512i flip = _mm512_set1_epi8((char)0x80);
  int64_t j = 0;
  for (; j + 64 <= n; j += 64)
    _mm512_storeu_si512(dst + j, _mm512_xor_si512(_mm512_loadu_si512(src + j), flip));
  if (j + 32 <= n) {  // plain 32- / 16-byte moves for the rows' common tails (32, 16 columns)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + j), _mm256_xor_si256(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + j)),
        _mm512_castsi512_si256(flip)));
    j += 32;
  }
  if (j + 16 <= n) {
    _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + j), _mm_xor_si128(
        _mm_loadu_si128(reinterpret_cast<const __m128i*>(src + j)), _mm512_castsi512_si128(flip)));
    j += 16;
  }
  if (j < n) {
    const __mmask64 m = (1ULL << (n - j)) - 1;
    _mm512_mask_storeu_epi8(dst + j, m,
                            _mm512_xor_si512(_mm512_maskz_loadu_epi8(m, src + j), flip));
  }
}
__attribute__((target("avx2,fma,avx512f,avx512bw")))
static inline void flip_row_256(uint8_t* __restrict dst, const int8_t* __restrict src,
                                int64_t n) {
  const __m256i flip = _mm256_set1_epi8((char)0x80);
  int64_t j = 0;
  for (; j + 32 <= n; j += 32)
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + j), _mm256_xor_si256(
        _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + j)), flip));
  for (; j < n; ++j) dst[j] = (uint8_t)src[j] ^ 0x80;
}
// padded rows [y0, y1) of every channel into pad at the whole copy's offsets: the padding
// zu, input rows x ^ 0x80 — the rows' loop inside one call (a call a row cost as much again
// as the copy: its address arithmetic and the mode's branch per 32-byte row)
#define EDGECC_PAD_ROWS(NAME, ROW)                                                          \
  __attribute__((target("avx2,fma,avx512f,avx512bw")))                                     \
  static void NAME(uint8_t* pad, const int8_t* x, int64_t c, int64_t h, int64_t w,          \
                   int64_t hp, int64_t wp, int64_t ph, int64_t pw, int64_t y0, int64_t y1,  \
                   uint8_t zu) {                                                            \
    const int64_t ya = std::max(y0, ph), yb = std::min(y1, ph + h);                        \
    for (int64_t ci = 0; ci < c; ++ci) {                                                    \
      uint8_t* plane = pad + ci * hp * wp;                                                  \
      memset(plane + y0 * wp, zu, (y1 - y0) * wp);                                          \
      const int8_t* src = x + (ci * h + ya - ph) * w;                                       \
      for (int64_t y = ya; y < yb; ++y, src += w) ROW(plane + y * wp + pw, src, w);         \
    }                                                                                       \
  }
EDGECC_PAD_ROWS(pad_rows_512, flip_row_512)
EDGECC_PAD_ROWS(pad_rows_256, flip_row_256)
#undef EDGECC_PAD_ROWS
static void pad_rows(uint8_t* pad, const int8_t* x, int64_t c, int64_t h, int64_t w, int64_t hp,
                     int64_t wp, int64_t ph, int64_t pw, int64_t y0, int64_t y1, uint8_t zu,
                     int mode) {
  if (mode == 2) pad_rows_512(pad, x, c, h, w, hp, wp, ph, pw, y0, y1, zu);
  else pad_rows_256(pad, x, c, h, w, hp, wp, ph, pw, y0, y1, zu);
}
"""
