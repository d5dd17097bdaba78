"""Stride-1 VNNI convolutions without an im2col (``conv_direct4``), spliced into
``x86_int8_source.SOURCE`` before ``qconv``: ResNet-20's 3x3 convolutions on 32x32 / 16x16
maps spent ~1/4 of their VNNI time building panels (im2col, 9 copies of the input).

``x86_int8.emit_conv`` packs the VNNI weight rows tap-major (``k = (ky, kx, c)``, meta[23] 1)
where the input channels are a multiple of 4, so every k quad is 4 channels of one tap. The
input is then padded once into a channel-quad copy ``[C/4][hp][wp][4]`` (x + 128, padding
zx + 128), in which the panel of 16 consecutive output pixels of one row for quad
``(tap, cq)`` is the 64 bytes at ``((cq·hp + oy + ky)·wp + ox + kx)·4`` — exactly the
``[16][4]`` panel the im2col would build — so the tile reads it in place::

    for each band of output rows (2 a thread):  pad its input rows into the thread's copy
        for each 16 pixels of a row, each 8 output channels:
            acc = Σ_q vpdpbusd(panel at copy + qoff[q], weights[q])   # tile_8x16_direct
            write_tile(acc)                                            # the same write-back

Int32 sums of the same products (another order of k: integer addition, wrapping alike), the
same write-back: the outputs are bit-identical. Taken for stride 1, dilation 1, padded maps
whose rows are whole 16-pixel panels (``ow % 16 == 0``; or 8 columns, an even number of rows:
a panel is two rows' 8 pixels, two 32-byte loads) with AVX-512 VNNI and no AMX;
counted by ``edgecc_x86_int8_direct4``; the library's ``edgecc_x86_int8_direct4`` 0 takes the
im2col path (A/B; it reads the tap-major rows with tap-major offsets, the same values).

Stride 2 (``pad_rows_c4s``, AVX-512 VBMI, padded rows of <= 64 bytes): each padded row of the
copy split into its two column phases, ``[C/4][hp][2][wq][4]`` (wq = ceil(wp / 2)), so the 16
outputs ox.. of a row read the 16 consecutive entries ``ox + kx/2`` of phase ``kx % 2`` for
tap kx — a panel in place again; output row oy starts at input row 2·oy. A channel row is one
masked load and one masked ``vpermb`` (the padding lanes zx + 128). ResNet-20's stride-2 3x3
convolutions and 1x1 shortcuts (``emit_conv`` packs 1x1 weights tap-major too: one tap, the
same order) took the im2col with ``perm_panel`` before. ``edgecc_x86_int8_direct4_s2`` 0: the
im2col path (A/B); counted by ``edgecc_x86_int8_direct4_s2_calls``.

The common stride-1 copy (one padding column each side, every quad's 4 channels real, rows of
8 / 16 / 32 columns: every ResNet-20 stride-1 layer but the stem) takes ``pad_rows_c4f``: a
row is two 8-byte padding stores and its 1-2 vector stores, a border row 64-byte stores — the
general loop spilled its locals and called memset per border row, ~30 cycles a row. A native
harness (s22, Zen 4): 16 x 32 x 32 0.67 -> 0.31 us, 32 x 16 x 16 0.69 -> 0.21, 64 x 8 x 8
0.79 -> 0.20 (bytes equal); ResNet-20 w8a8 (``bench/x86_int8_knob_ab.py --columns
fast0=pad_fast:0``, paired medians of 400 and 600 calls,
``bench/results/x86_int8_knob_pad_fast_s22*.json``) the general loop / this 1.055x and 1.088x
at 2 threads, 1.042x and 1.039x at 1 thread (CPU time); MobileNetV2-32 1.016x / 1.001x (its
blocks copy elsewhere).
``edgecc_x86_int8_pad_fast`` 0: the general loop (A/B); counted per call in the global
``edgecc_x86_int8_pad_fast_calls``.

3-channel stems (``emit_conv``'s meta[23] 2, ``x86_int8.PAD_STEM``): the VNNI rows zero-padded
to 4 channels, so the copy's one quad holds the 3 channels and a padding byte (zu; its weights
are 0: the same sums) — ResNet-20's stem 0.83x, MobileNetV2-32's 0.77x of the im2col's time
(1 thread, bench/x86_int8_stem.py); stride 2 keeps the im2col (its padded k read channel 0).

``edgecc_x86_int8_direct4_rows`` v > 0 (default 0, an A/B / ``--tune`` knob): a pooled call is a
job of min(units, v x threads) items of output rows (not one band a thread), each thread padding
lazily only the input rows its chunks read; bit-identical; counted by
``edgecc_x86_int8_direct4_rows_calls`` (tests/targets/tvm/test_x86_int8_direct4_rows.py)."""

DIRECT4 = "edgecc_x86_int8_direct4_calls"  # () -> conv calls run by conv_direct4 so far
DIRECT4_S2 = "edgecc_x86_int8_direct4_s2_calls"  # () -> ... of them with stride 2
PAD_VBMI = "edgecc_x86_int8_pad_vbmi_calls"  # () -> ... of them padded by pad_rows_c4v
DIRECT4_ROWS = "edgecc_x86_int8_direct4_rows_calls"  # () -> ... of them pooled by output rows
C4_IN = "edgecc_x86_int8_c4_in_calls"  # () -> conv calls that read a c4 input in place
C4_OUT = "edgecc_x86_int8_c4_out_calls"  # () -> conv calls whose tiles stored a c4 output
DIRECT_SYMBOLS = (DIRECT4, DIRECT4_S2, PAD_VBMI, DIRECT4_ROWS, C4_IN, C4_OUT)

DIRECT_KERNELS = r"""
// ---- conv_direct4 (x86_int8_direct_source) ----
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_direct4 = 1;
int64_t direct4_calls = 0;  // convolution calls run by conv_direct4 (a test's)
// nonzero: strided convolutions (stride 2, rows <= 64 bytes) take conv_direct4 on a
// column-phase copy (A/B: 0 = the im2col path); counted by direct4_s2_calls
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_direct4_s2 = 1;
int64_t direct4_s2_calls = 0;  // convolution calls run by conv_direct4 with stride 2 (a test's)

// nonzero: pad_rows_c4 writes a row's left / right padding (1-2 columns of 4 bytes) by plain
// stores, not two memset calls a row (A/B: 0)
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_pad_inline = 1;

// padded rows [y0, y1) of x + 128 as [C/4][hp][wp][4] bytes (padding zu): 16 columns of 4
// channels a call of interleave4
// (c_real < c: channels c_real.. of the last quad are zu, x has c_real channels)
static void pad_rows_c4(uint8_t* dst, const int8_t* x, int64_t c, int64_t h, int64_t w,
                        int64_t hp, int64_t wp, int64_t ph, int64_t pw, int64_t y0, int64_t y1,
                        uint8_t zu, int64_t c_real) {
  const __m128i flip = _mm_set1_epi8((char)0x80);
  const int64_t cs = h * w;  // a channel's plane
  for (int64_t cq = 0; cq < c / 4; ++cq)
    for (int64_t y = y0; y < y1; ++y) {
      uint8_t* row = dst + (cq * hp + y) * wp * 4;
      if (y < ph || y >= ph + h) { memset(row, zu, wp * 4); continue; }
      if (pw <= 2 && wp - pw - w <= 2 && edgecc_x86_int8_pad_inline) {  // a store or two each
        const uint32_t z4 = 0x01010101u * zu;
        for (int64_t i = 0; i < pw; ++i) memcpy(row + i * 4, &z4, 4);
        for (int64_t i = pw + w; i < wp; ++i) memcpy(row + i * 4, &z4, 4);
      } else {
        memset(row, zu, pw * 4);
        memset(row + (pw + w) * 4, zu, (wp - pw - w) * 4);
      }
      const int8_t* s = x + (cq * 4 * h + (y - ph)) * w;
      if (cq * 4 + 4 > c_real) {  // a padded quad: its real channels byte by byte
        for (int64_t i = 0; i < w; ++i)
          for (int j = 0; j < 4; ++j)
            row[(pw + i) * 4 + j] = cq * 4 + j < c_real ? (uint8_t)s[j * cs + i] ^ 0x80 : zu;
        continue;
      }
      int64_t i = 0;
      for (; i + 16 <= w; i += 16)
        interleave4(s + i, s + cs + i, s + 2 * cs + i, s + 3 * cs + i,
                    reinterpret_cast<int8_t*>(row + (pw + i) * 4), flip);
      for (; i < w; ++i)
        for (int j = 0; j < 4; ++j) row[(pw + i) * 4 + j] = (uint8_t)s[j * cs + i] ^ 0x80;
    }
}

// pad_rows_c4 with AVX-512 VBMI: 16 columns of a row's 4 channels by 4 masked loads and one
// vpermb into [16][4] bytes (the last columns masked: 8-column maps took pad_rows_c4's
// scalar tail, 32 byte stores a row), stored masked; the same bytes as pad_rows_c4.
// edgecc_x86_int8_pad_vbmi 0: pad_rows_c4 (A/B); counted per call in pad_vbmi_calls
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_pad_vbmi = 1;
// nonzero: pad_rows_c4v takes 32 columns at a time by two vpermt2b (0: 16 by vpermb, A/B)
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_pad_wide32 = 1;
int64_t pad_vbmi_calls = 0;  // conv_direct4 calls whose stride-1 copy ran pad_rows_c4v
std::atomic<int> pad_vbmi_seen{0};  // set once a call (stored only when clear)
// nonzero: pad_rows_c4v's common rows (one padding column each side, every channel of the
// quads real, 8 / 16 / 32 columns) by pad_rows_c4f (0: the general loop, A/B); counted per
// conv_direct4 call in edgecc_x86_int8_pad_fast_calls (a global: the tests read it)
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_pad_fast = 1;
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_pad_fast_calls = 0;
std::atomic<int> pad_fast_seen{0};  // set once a call (stored only when clear)

// pad_rows_c4v for rows of w = 8, 16 or 32 columns with one padding column each side (wp =
// w + 2) and 4 real channels in every quad: a row is two 8-byte zu stores (the left padding
// dword and the last column's dword with the right padding one) and then the row's 1-2
// vector stores over the data columns (the last data dword rewritten), a border row 64-byte
// stores and one masked tail; the same bytes as the general loop. That loop, with every
// shape's case in one body, ran ~30 cycles a row on Zen 4 (its locals spilled, a memset
// call per border row): a 16 x 32 x 32 copy 0.67 us, this one 0.31 (s22 native harness)
__attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512vbmi")))
static void pad_rows_c4f(uint8_t* dst, const int8_t* x, int64_t c, int64_t h, int64_t w,
                         int64_t hp, int64_t ph, int64_t y0, int64_t y1, uint8_t zu,
                         __m512i perm, __m512i lo32, __m512i hi32) {
  const int64_t rb = (w + 2) * 4, cs = h * w, tail = rb % 64;
  const __m512i flip = _mm512_set1_epi8((char)0x80), zv = _mm512_set1_epi8((char)zu);
  const __mmask64 tmask = (1ull << tail) - 1;  // (rb % 64 is 8 or 40 here)
  const uint64_t z8 = 0x0101010101010101ull * zu;
  for (int64_t cq = 0; cq < c / 4; ++cq) {
    uint8_t* const plane = dst + cq * hp * rb;
    const int8_t* const xq = x + cq * 4 * cs;
    for (int64_t y = y0; y < y1; ++y) {
      uint8_t* const row = plane + y * rb;
      if (y < ph || y >= ph + h) {  // a border row: zu throughout
        int64_t b = 0;
        for (; b + 64 <= rb; b += 64) _mm512_storeu_si512(row + b, zv);
        _mm512_mask_storeu_epi8(row + b, tmask, zv);
        continue;
      }
      memcpy(row, &z8, 8);           // the left padding (and column 0, rewritten below)
      memcpy(row + rb - 8, &z8, 8);  // the last column (rewritten below), the right padding
      const int8_t* const s = xq + (y - ph) * w;
      if (w == 32) {  // two channels a zmm, two vpermt2b
        auto pair = [&](int64_t j) {
          return _mm512_xor_si512(_mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(
              reinterpret_cast<const __m256i*>(s + j * cs))), _mm256_loadu_si256(
              reinterpret_cast<const __m256i*>(s + (j + 1) * cs)), 1), flip);
        };
        const __m512i a = pair(0), b = pair(2);
        _mm512_storeu_si512(row + 4, _mm512_permutex2var_epi8(a, lo32, b));
        _mm512_storeu_si512(row + 68, _mm512_permutex2var_epi8(a, hi32, b));
        continue;
      }
      // 16 or 8 columns: a channel's row a 128-bit lane (8 columns: its low 8 bytes), one vpermb
      auto ch = [&](int64_t j) {
        const __m128i* p = reinterpret_cast<const __m128i*>(s + j * cs);
        return w == 16 ? _mm_loadu_si128(p) : _mm_loadl_epi64(p);
      };
      __m512i v = _mm512_castsi128_si512(ch(0));
      v = _mm512_inserti32x4(v, ch(1), 1);
      v = _mm512_inserti32x4(v, ch(2), 2);
      v = _mm512_inserti32x4(v, ch(3), 3);
      const __m512i r = _mm512_permutexvar_epi8(perm, _mm512_xor_si512(v, flip));
      if (w == 16) _mm512_storeu_si512(row + 4, r);
      else _mm256_storeu_si256(reinterpret_cast<__m256i*>(row + 4), _mm512_castsi512_si256(r));
    }
  }
}

__attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512vbmi")))
static void pad_rows_c4v(uint8_t* dst, const int8_t* x, int64_t c, int64_t h, int64_t w,
                         int64_t hp, int64_t wp, int64_t ph, int64_t pw, int64_t y0, int64_t y1,
                         uint8_t zu, int64_t c_real) {
  // the byte permutations, built once (a call pads a band or, direct4_rows, a row or two)
  // (constexpr: constant-initialized, no guard)
  struct C4Perms {
    alignas(64) uint8_t idx[64];     // vpermb: column j/4 of channel j%4 (16 bytes each)
    alignas(64) uint8_t i32[2][64];  // vpermt2b: column j/4 (+16) of channel j%4 (32 each)
    constexpr C4Perms() : idx{}, i32{} {
      for (int j = 0; j < 64; ++j) {
        idx[j] = (uint8_t)((j % 4) * 16 + j / 4);
        i32[0][j] = (uint8_t)((j % 4) * 32 + j / 4);
        i32[1][j] = (uint8_t)((j % 4) * 32 + 16 + j / 4);
      }
    }
  };
  static constexpr C4Perms perms{};
  const __m512i perm = _mm512_load_si512(perms.idx), flip = _mm512_set1_epi8((char)0x80);
  const __m128i zf = _mm_set1_epi8((char)(zu ^ 0x80));  // a padded channel: zu once flipped
  const __m256i zf32 = _mm256_set1_epi8((char)(zu ^ 0x80));
  const __m512i lo32 = _mm512_load_si512(perms.i32[0]), hi32 = _mm512_load_si512(perms.i32[1]);
  const bool wide32 = edgecc_x86_int8_pad_wide32 != 0;
  const uint32_t z4 = 0x01010101u * zu;
  const int64_t cs = h * w, right = wp - pw - w;
  if (edgecc_x86_int8_pad_fast && pw == 1 && right == 1 && c_real >= c &&
      (w == 8 || w == 16 || (w == 32 && wide32))) {
    pad_rows_c4f(dst, x, c, h, w, hp, ph, y0, y1, zu, perm, lo32, hi32);
    if (!pad_fast_seen.load(std::memory_order_relaxed))
      pad_fast_seen.store(1, std::memory_order_relaxed);
    return;
  }
  for (int64_t cq = 0; cq < c / 4; ++cq)
    for (int64_t y = y0; y < y1; ++y) {
      uint8_t* row = dst + (cq * hp + y) * wp * 4;
      if (y < ph || y >= ph + h) { memset(row, zu, wp * 4); continue; }
      if (pw <= 2 && right <= 2) {
        for (int64_t i = 0; i < pw; ++i) memcpy(row + i * 4, &z4, 4);
        for (int64_t i = pw + w; i < wp; ++i) memcpy(row + i * 4, &z4, 4);
      } else {
        memset(row, zu, pw * 4);
        memset(row + (pw + w) * 4, zu, right * 4);
      }
      const int8_t* s = x + (cq * 4 * h + (y - ph)) * w;
      const int64_t nc = std::min<int64_t>(4, c_real - cq * 4);  // the quad's real channels
      int64_t i = 0;
      for (; i + 32 <= w && wide32; i += 32) {  // 32 columns: two vpermt2b of 2 channel pairs
        auto ch = [&](int64_t j) {
          return j < nc ? _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s + j * cs + i))
                        : zf32;
        };
        const __m512i a = _mm512_xor_si512(_mm512_inserti64x4(
            _mm512_castsi256_si512(ch(0)), ch(1), 1), flip);
        const __m512i b = _mm512_xor_si512(_mm512_inserti64x4(
            _mm512_castsi256_si512(ch(2)), ch(3), 1), flip);
        _mm512_storeu_si512(row + (pw + i) * 4, _mm512_permutex2var_epi8(a, lo32, b));
        _mm512_storeu_si512(row + (pw + i + 16) * 4, _mm512_permutex2var_epi8(a, hi32, b));
      }
      for (; i < w; i += 16) {
        const int64_t n = std::min<int64_t>(16, w - i);
        const __mmask16 in = (__mmask16)((1u << n) - 1);
        const __mmask64 out = n == 16 ? ~0ull : (1ull << (n * 4)) - 1;
        __m512i v = _mm512_castsi128_si512(_mm_maskz_loadu_epi8(in, s + i));
        v = _mm512_inserti32x4(v, nc > 1 ? _mm_maskz_loadu_epi8(in, s + cs + i) : zf, 1);
        v = _mm512_inserti32x4(v, nc > 2 ? _mm_maskz_loadu_epi8(in, s + 2 * cs + i) : zf, 2);
        v = _mm512_inserti32x4(v, nc > 3 ? _mm_maskz_loadu_epi8(in, s + 3 * cs + i) : zf, 3);
        _mm512_mask_storeu_epi8(row + (pw + i) * 4, out,
                                _mm512_permutexvar_epi8(perm, _mm512_xor_si512(v, flip)));
      }
    }
}

// pad_rows_c4 for column stride sw (2): each padded row split into its sw column phases,
// [C/4][hp][sw][wq][4] bytes (wq = ceil(wp / sw)), so 16 outputs of a row read 16 consecutive
// entries of one phase for every tap. A channel row by one masked load and one masked vpermb
// (x + 128 at the valid columns, zu elsewhere), four channels interleaved by interleave4 (16
// entries a call; the last call may write up to 15 entries past the row, into the next row
// (written after it) or the buffer's 64 spare bytes; exact: the last call of a row writes only
// the row's own entries — for a copy padded before rows it already holds, direct4_chunk's
// backward extension, whose last row would otherwise spill into the first held row). Needs
// w <= 64 and sw·wq <= 64 (VBMI).
__attribute__((target("avx2,fma,avx512f,avx512bw,avx512vbmi")))
static void pad_rows_c4s(uint8_t* dst, const int8_t* x, int64_t c, int64_t h, int64_t w,
                         int64_t hp, int64_t wq, int64_t sw, int64_t ph, int64_t pw, int64_t y0,
                         int64_t y1, uint8_t zu, int64_t rows_used = 1 << 30,
                         bool exact = false) {
  const int64_t n = sw * wq, row_bytes = n * 4;  // entries of a copied row
  alignas(64) uint8_t idx[64];
  uint64_t valid = 0;
  for (int64_t j = 0; j < 64; ++j) {  // entry j = (phase p, index i): padded column i·sw + p
    const int64_t col = j < n ? (j % wq) * sw + j / wq - pw : -1;
    idx[j] = (uint8_t)(col >= 0 && col < w ? col : 0);
    if (col >= 0 && col < w) valid |= 1ull << j;
  }
  const __m512i perm = _mm512_load_si512(idx), pad = _mm512_set1_epi8((char)zu);
  const __m512i flip = _mm512_set1_epi8((char)0x80);
  const __mmask64 load = w >= 64 ? ~0ull : (1ull << w) - 1;
  const int64_t cs = h * w;
  alignas(64) uint8_t ch[4][64];
  for (int64_t cq = 0; cq < c / 4; ++cq)
    for (int64_t y = y0; y < y1; ++y) {
      if (y % sw >= rows_used) continue;  // no output row reads it (1x1)
      uint8_t* row = dst + (cq * hp + y) * row_bytes;
      if (y < ph || y >= ph + h) { memset(row, zu, row_bytes); continue; }
      const int8_t* s = x + (cq * 4 * h + (y - ph)) * w;
      for (int j = 0; j < 4; ++j)
        _mm512_store_si512(ch[j], _mm512_mask_permutexvar_epi8(
            pad, valid, perm, _mm512_xor_si512(_mm512_maskz_loadu_epi8(load, s + j * cs), flip)));
      for (int64_t i = 0; i < n; i += 16) {
        alignas(64) int8_t tail[64];
        const bool spill = exact && i + 16 > n;
        interleave4(reinterpret_cast<const int8_t*>(ch[0] + i),
                    reinterpret_cast<const int8_t*>(ch[1] + i),
                    reinterpret_cast<const int8_t*>(ch[2] + i),
                    reinterpret_cast<const int8_t*>(ch[3] + i),
                    spill ? tail : reinterpret_cast<int8_t*>(row + i * 4), _mm_setzero_si128());
        if (spill) memcpy(row + i * 4, tail, (n - i) * 4);
      }
    }
}

// nonzero: stride-2 copies skip the rows no output row reads (kh < sh: 1x1 shortcuts)
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_pad_skip = 1;

// tile_8x16_vnni512<false> with quad q's panel at src + qoff[q] (the copy, in place); HALF
// (8-column maps): lanes 8-15 are the next output row's 8 pixels, at src + next + qoff[q]
extern "C++" {  // (spliced inside qconv's extern "C" block)
template <bool HALF>
__attribute__((target("avx2,fma,avx512f,avx512bw,avx512vnni")))
static void tile_8x16_direct(const int8_t* rows, int64_t ld, int64_t kq, const uint8_t* src,
                             const int64_t* qoff, int32_t* acc, int64_t next) {
  constexpr bool UROWS = false;
  __m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0,
          c6 = c0, c7 = c0;
  for (int64_t k = 0; k < kq; ++k) {
    const __m512i v = HALF ? _mm512_inserti64x4(_mm512_castsi256_si512(_mm256_loadu_si256(
                                 reinterpret_cast<const __m256i*>(src + qoff[k]))),
                             _mm256_loadu_si256(reinterpret_cast<const __m256i*>(
                                 src + next + qoff[k])), 1)
                           : _mm512_loadu_si512(src + qoff[k]);
    EDGECC_DOT512(c0, 0); EDGECC_DOT512(c1, 1); EDGECC_DOT512(c2, 2); EDGECC_DOT512(c3, 3);
    EDGECC_DOT512(c4, 4); EDGECC_DOT512(c5, 5); EDGECC_DOT512(c6, 6); EDGECC_DOT512(c7, 7);
  }
  _mm512_storeu_si512(acc + 0, c0); _mm512_storeu_si512(acc + 16, c1);
  _mm512_storeu_si512(acc + 32, c2); _mm512_storeu_si512(acc + 48, c3);
  _mm512_storeu_si512(acc + 64, c4); _mm512_storeu_si512(acc + 80, c5);
  _mm512_storeu_si512(acc + 96, c6); _mm512_storeu_si512(acc + 112, c7);
}
}  // extern "C++"

struct Direct4 {
  const int8_t* rows; int64_t oc, kq;  // tap-major VNNI rows [ceil(oc/8)*8][kq*4]
  Epilogue e;                          // this batch item's, ld = oh*ow
  const int8_t* x; int64_t c, h, w, hp, wp, ph, pw, kh, kw, oh, ow;
  uint8_t zu; const int64_t* qoff;     // per quad (tap, cq): ((cq*hp + ky)*wp + kx)*4
  int64_t sh = 1, sw = 1, wq = 0;      // strides; wq: a column phase's entries (sw > 1)
  int64_t c_real = 1 << 30;            // x's channels where c pads them to a quad (the stem)
  const uint8_t* c4in = nullptr;       // x86_int8_c4: x is the padded copy already (in place)
  int64_t row_bytes() const { return sw > 1 ? sw * wq * 4 : wp * 4; }  // a copied row
};

// qconv's im2col offsets koff[k] in the VNNI rows' k order, (c, ky, kx) or tap-major
// (ky, kx, c); returns how many
// (c_real < c: the rows' channels padded to c with zero weights; those k read channel 0)
static int64_t conv_koff(int64_t* koff, bool tap_major, int64_t c, int64_t kh, int64_t kw,
                         int64_t hp, int64_t wp, int64_t dh, int64_t dw,
                         int64_t c_real = 1 << 30) {
  int64_t kk = 0;
  for (int64_t ci = 0; ci < c && !tap_major; ++ci)
    for (int64_t ky = 0; ky < kh; ++ky)
      for (int64_t kx = 0; kx < kw; ++kx) koff[kk++] = (ci * hp + ky * dh) * wp + kx * dw;
  for (int64_t ky = 0; ky < kh && tap_major; ++ky)
    for (int64_t kx = 0; kx < kw; ++kx)
      for (int64_t ci = 0; ci < c; ++ci)
        koff[kk++] = ((ci < c_real ? ci : 0) * hp + ky * dh) * wp + kx * dw;
  return kk;
}

// does conv_direct4 take a (tap-major, padded) convolution of this geometry on this CPU
static inline bool direct4_fits(int64_t sh, int64_t sw, int64_t dh, int64_t dw, int64_t oh,
                                int64_t ow) {
  return edgecc_x86_int8_direct4 && sh == 1 && sw == 1 && dh == 1 && dw == 1 &&
         !amx_conv_ready() && (ow % 16 == 0 || (ow == 8 && oh % 2 == 0));
}

// stride 2 (both axes) on pad_rows_c4s's column-phase copy: rows of <= 64 bytes, VBMI
static inline bool direct4_s2_fits(int64_t sh, int64_t sw, int64_t dh, int64_t dw, int64_t w,
                                   int64_t wp, int64_t oh, int64_t ow) {
  return edgecc_x86_int8_direct4 && edgecc_x86_int8_direct4_s2 && sh == 2 && sw == 2 &&
         dh == 1 && dw == 1 && w <= 64 && (wp + 1) / 2 * 2 <= 64 && has_vbmi() &&
         !amx_conv_ready() && (ow % 16 == 0 || (ow == 8 && oh % 2 == 0));
}

// qoff for a tap-major kernel of c channels on a padded map hp x wp
// (sw > 1: on the column-phase copy of phases of wq entries, tap kx in phase kx % sw)
static void direct4_offsets(int64_t* qoff, int64_t c, int64_t kh, int64_t kw, int64_t hp,
                            int64_t wp, int64_t sw = 1, int64_t wq = 0) {
  int64_t q = 0;
  for (int64_t ky = 0; ky < kh; ++ky)
    for (int64_t kx = 0; kx < kw; ++kx)
      for (int64_t cq = 0; cq < c / 4; ++cq)
        qoff[q++] = sw > 1 ? (((cq * hp + ky) * sw + kx % sw) * wq + kx / sw) * 4
                           : ((cq * hp + ky) * wp + kx) * 4;
}

// padded input rows [y0, y1) of d's copy into buf (its rows at their whole-map offsets)
// (exact: rows [y1, ...) are held already — no write past row y1 - 1, see pad_rows_c4s)
static void direct4_pad(const Direct4& d, uint8_t* buf, int64_t y0, int64_t y1,
                        bool exact = false) {
  // (kh < sh: rows y with y % sh >= kh are read by no output row: 1x1 stride-2 shortcuts skip
  // half the copy; edgecc_x86_int8_pad_skip 0 copies every row, A/B)
  if (d.sw > 1) pad_rows_c4s(buf, d.x, d.c, d.h, d.w, d.hp, d.wq, d.sw, d.ph, d.pw, y0, y1, d.zu,
                             edgecc_x86_int8_pad_skip && d.sh == d.sw ? d.kh : 1 << 30, exact);
  else if (edgecc_x86_int8_pad_vbmi && has_vbmi()) {
    pad_rows_c4v(buf, d.x, d.c, d.h, d.w, d.hp, d.wp, d.ph, d.pw, y0, y1, d.zu, d.c_real);
    if (!pad_vbmi_seen.load(std::memory_order_relaxed))
      pad_vbmi_seen.store(1, std::memory_order_relaxed);
  } else {
    pad_rows_c4(buf, d.x, d.c, d.h, d.w, d.hp, d.wp, d.ph, d.pw, y0, y1, d.zu, d.c_real);
  }
}

// the input rows output rows [r0, r1) read
static inline void direct4_rows_in(const Direct4& d, int64_t r0, int64_t r1, int64_t& y0,
                                   int64_t& y1) {
  y0 = r0 * d.sh, y1 = std::min(d.hp, (r1 - 1) * d.sh + d.kh);
}

// every tile of output rows [r0, r1) (a panel: 16 pixels of a row, or with 8 columns two
// rows' 8), their input rows already padded in buf. edgecc_x86_int8_tile_two (default 1): the
// panels taken two at a time in row order (the next 16 pixels of the row, else the next row's
// first) as two-panel tiles (tile_write2 / tile_post2 / tile_plain2: 16 sums, each weight
// broadcast once for both panels); an odd last panel of the range alone. The same sums and
// write-backs per output (bit-identical), in another order of tiles
static void direct4_tiles(const Direct4& d, const uint8_t* buf, int64_t r0, int64_t r1) {
  alignas(64) int32_t acc[128];
  const int64_t ld = d.kq * 4, rb = d.row_bytes(), next = d.sh * rb;  // next: an output row
  const bool half = d.ow == 8;
  const int64_t step = half ? 2 : 1;  // output rows a panel
  // one panel's tile for output channels r.. (the 8 x 16 forms, else the stored tile)
  auto one = [&](int64_t oy, int64_t ox, int64_t r) {
    const uint8_t* src = buf + oy * next + ox * 4;
    const int pix = (int)(oy * d.ow + ox);
    const int nr = (int)std::min<int64_t>(8, d.oc - r);
    if (tile_write_fits(d.e, nr, 16)) {  // from registers
      if (half) tile_write<2>(d.rows + r * ld, ld, d.kq, src, d.qoff, next, d.e, (int)r, pix);
      else tile_write<1>(d.rows + r * ld, ld, d.kq, src, d.qoff, 0, d.e, (int)r, pix);
      return;
    }
    if (tile_post_fits(d.e, nr, 16)) {  // float, registers
      if (half) tile_post<2>(d.rows + r * ld, ld, d.kq, src, d.qoff, next, d.e, (int)r, pix);
      else tile_post<1>(d.rows + r * ld, ld, d.kq, src, d.qoff, 0, d.e, (int)r, pix);
      return;
    }
    if (tile_plain_fits(d.e, nr, 16)) {  // unfused float
      if (half) tile_plain<2>(d.rows + r * ld, ld, d.kq, src, d.qoff, next, d.e, (int)r, pix);
      else tile_plain<1>(d.rows + r * ld, ld, d.kq, src, d.qoff, 0, d.e, (int)r, pix);
      return;
    }
    if (half) tile_8x16_direct<true>(d.rows + r * ld, ld, d.kq, src, d.qoff, acc, next);
    else tile_8x16_direct<false>(d.rows + r * ld, ld, d.kq, src, d.qoff, acc, 0);
    write_tile(d.e, acc, (int)r, nr, pix, 16);
  };
  // two panels' tiles for output channels r.. (the second at (yb, xb)); false: no 2-panel form
  auto two = [&](int64_t ya, int64_t xa, int64_t yb, int64_t xb, int64_t r) {
    const uint8_t* src = buf + ya * next + xa * 4;
    const int64_t off2 = (yb - ya) * next + (xb - xa) * 4;
    const int pa = (int)(ya * d.ow + xa), pb = (int)(yb * d.ow + xb);
    const int nr = (int)std::min<int64_t>(8, d.oc - r);
    const int8_t* w = d.rows + r * ld;
    if (tile_write_fits(d.e, nr, 16)) {
      if (half) tile_write2<2>(w, ld, d.kq, src, d.qoff, next, d.e, (int)r, pa, off2, pb);
      else tile_write2<1>(w, ld, d.kq, src, d.qoff, 0, d.e, (int)r, pa, off2, pb);
      return true;
    }
    if (tile_post_fits(d.e, nr, 16)) {
      if (half) tile_post2<2>(w, ld, d.kq, src, d.qoff, next, d.e, (int)r, pa, off2, pb);
      else tile_post2<1>(w, ld, d.kq, src, d.qoff, 0, d.e, (int)r, pa, off2, pb);
      return true;
    }
    if (tile_plain_fits(d.e, nr, 16)) {
      if (half) tile_plain2<2>(w, ld, d.kq, src, d.qoff, next, d.e, (int)r, pa, off2, pb);
      else tile_plain2<1>(w, ld, d.kq, src, d.qoff, 0, d.e, (int)r, pa, off2, pb);
      return true;
    }
    return false;
  };
  const bool pairs = edgecc_x86_int8_tile_two != 0;
  int64_t oy = r0, ox = 0;
  auto advance = [&]() {
    ox += 16;
    if (ox >= d.ow) ox = 0, oy += step;
  };
  while (oy < r1) {
    const int64_t ya = oy, xa = ox;
    advance();
    if (!pairs || oy >= r1) {  // a panel alone
      for (int64_t r = 0; r < d.oc; r += 8) one(ya, xa, r);
      continue;
    }
    const int64_t yb = oy, xb = ox;
    advance();
    for (int64_t r = 0; r < d.oc; r += 8)
      if (!two(ya, xa, yb, xb, r)) one(ya, xa, r), one(yb, xb, r);
  }
}

// output rows [r0, r1): their input rows padded into buf, then every tile
static void direct4_band(const Direct4& d, uint8_t* buf, int64_t r0, int64_t r1) {
  int64_t y0, y1;
  direct4_rows_in(d, r0, r1, y0, y1);
  direct4_pad(d, buf, y0, y1);
  direct4_tiles(d, buf, r0, r1);
}

// edgecc_x86_int8_direct4_rows v > 0: a pooled conv_direct4 is a job of min(units, v x threads)
// items of output-row units (a row; two with 8 columns), not of direct4_bands bands a
// thread: the pool's guided two-ended chunks let the thread that starts first take over rows
// of the one that starts late (with one band a thread the caller waits for the worker's whole
// band), and each thread pads into its own copy only the input rows its chunks read that it
// has not padded yet this call (Direct4Held: its padded range, per thread) — its
// chunks are one contiguous run, so the copy grows as a band's did, and only the kh - 1 halo
// rows where the two runs meet are padded twice. The same tiles on the same bytes:
// bit-identical outputs. 0 (default): the bands. Counted per call in direct4_rows_calls
// (serial calls too: one chunk). ResNet-20 w8a8 in place, 2 threads, Zen 4 KVM under load 5-6
// (the other vCPU busy), paired sums: v = 2 / 4 / 16 1.01x / 1.01x / 1.02x of the bands'
// time (each claim moves the pool's line between cores); a --tune candidate for quiet hosts
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_direct4_rows = 0;
int64_t direct4_rows_calls = 0;  // conv_direct4 calls run as a job of row units (a test's)
// the input rows [y0, y1) one thread's copy (buf) holds in this call: a slot of the call's
// own frame, claimed by the thread's copy (per-thread scratch) — no ids or thread-locals a
// second library loaded in the process could share
struct Direct4Held {
  std::atomic<const uint8_t*> buf{nullptr};
  int64_t y0 = 0, y1 = 0;
};
constexpr int DIRECT4_HELD = 8;  // threads tracked a call (more: their chunks pad in full)

// output rows [r0, r1): the input rows they read that buf does not hold yet padded (the
// held range extended where it touches, else restarted), then every tile
static void direct4_chunk(const Direct4& d, Direct4Held* held, uint8_t* buf, int64_t r0,
                          int64_t r1) {
  int64_t y0, y1;
  direct4_rows_in(d, r0, r1, y0, y1);
  Direct4Held* p = nullptr;
  for (int i = 0; i < DIRECT4_HELD && !p; ++i) {
    const uint8_t* seen = held[i].buf.load(std::memory_order_relaxed);
    if (seen == buf) { p = &held[i]; break; }
    if (!seen && held[i].buf.compare_exchange_strong(seen, buf, std::memory_order_relaxed)) {
      p = &held[i];
      p->y0 = p->y1 = 0;  // holds nothing yet
      break;
    }
    if (seen == buf) p = &held[i];  // (not taken by another thread: it was this one's)
  }
  if (p && p->y1 > p->y0 && y0 <= p->y1 && y1 >= p->y0) {
    if (y0 < p->y0) direct4_pad(d, buf, y0, p->y0, true), p->y0 = y0;
    if (y1 > p->y1) direct4_pad(d, buf, p->y1, y1), p->y1 = y1;
  } else {
    direct4_pad(d, buf, y0, y1);
    if (p) p->y0 = y0, p->y1 = y1;
  }
  direct4_tiles(d, buf, r0, r1);
}

// the call: bands of output rows (direct4_bands a thread, fewer where a band's kh - 1 halo rows
// would be over half its own: as qconv's bands), each padded into its thread's copy (scratch 1)
// (edgecc_x86_int8_direct4_bands: bands a thread at most; 1: one band a thread — the pool's
// two-ended job still lets the caller take the worker's band if it starts late; at 2 threads
// on Zen 4, ResNet-20 w8a8 per call (bench/x86_int8_calls_ab.py --threads 2, load 1.8): 32x32
// convs 0.98x, 16x16 0.97x, the stem 0.96x of 2 a thread (half the halo rows copied twice,
// one claim less); 2: as before, a --tune knob)
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_direct4_bands = 1;
// edgecc_x86_int8_direct4_trace 1 (a debug view, default 0; bench/x86_int8_thread_cost.py):
// every band of a bands call logged at edgecc_x86_int8_direct4_trace_log[8 x (next % 4096)]:
// the TSC at its start, after its copy, at its end, its output rows r0, r1, the TSC ticks of
// its first row of panels, 1 when a pool worker ran it, the layer (c << 32 | h << 16 | oc).
// The same copy and tiles on the same bytes (the tiles split after their first row):
// bit-identical outputs. Counted by edgecc_x86_int8_direct4_trace_next (bands logged).
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_direct4_trace = 0;
extern "C" __attribute__((visibility("default")))
int64_t edgecc_x86_int8_direct4_trace_log[4096 * 8] = {};
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_direct4_trace_next = 0;
static void direct4_band_traced(const Direct4& d, uint8_t* buf, int64_t r0, int64_t r1,
                                pthread_t caller) {
  const int64_t t0 = (int64_t)__rdtsc();
  int64_t y0, y1;
  direct4_rows_in(d, r0, r1, y0, y1);
  direct4_pad(d, buf, y0, y1);
  const int64_t t1 = (int64_t)__rdtsc();
  const int64_t first = std::min(r1, r0 + (d.ow == 8 ? 2 : 1));  // its first row of panels
  direct4_tiles(d, buf, r0, first);
  const int64_t tf = (int64_t)__rdtsc();
  direct4_tiles(d, buf, first, r1);
  const int64_t t2 = (int64_t)__rdtsc();
  const int64_t i = __atomic_fetch_add(&edgecc_x86_int8_direct4_trace_next, 1, __ATOMIC_RELAXED);
  int64_t* r = edgecc_x86_int8_direct4_trace_log + 8 * (i & 4095);
  r[0] = t0; r[1] = t1; r[2] = t2; r[3] = r0; r[4] = r1; r[5] = tf - t1;
  r[6] = pthread_equal(caller, pthread_self()) ? 0 : 1;
  r[7] = d.c << 32 | d.h << 16 | d.oc;
}
// the tile forms a conv_direct4 call ran (conv_direct4 and the pair entry's two convolutions)
static inline void count_direct4_tiles() {
  EDGECC_COUNT_SEEN(tile_resf_seen, tile_resf_calls);  // tile_post's residual form
  EDGECC_COUNT_SEEN(tile_plain_seen, tile_plain_calls);  // unfused float tiles
  EDGECC_COUNT_SEEN(tile_two_seen, tile_two_calls);  // two-panel tiles
}

static void conv_direct4(const Direct4& d, int64_t threads, int64_t job_work) {
  const int64_t halo = std::max(d.kh - 1, (int64_t)1);
  const int64_t unit = d.ow == 8 ? 2 : 1, units = d.oh / unit;  // output rows of whole panels
  const int64_t per = std::max<int64_t>(1, edgecc_x86_int8_direct4_bands);
  const int64_t bands = threads > 1 && job_work >= serial_work()
      ? std::min(units, std::max(threads, std::min(per * threads, d.oh / (2 * halo)))) : 1;
  const int64_t bytes = d.c * d.hp * d.row_bytes() / 4 + 64;
  if (d.c4in) {  // x86_int8_c4: the producer wrote the padded copy; its bands read it in place
    parallel_for(bands, [&](int64_t i0, int64_t i1) {
      for (int64_t i = i0; i < i1; ++i)
        direct4_tiles(d, d.c4in, i * units / bands * unit, (i + 1) * units / bands * unit);
    }, job_work);
  } else if (edgecc_x86_int8_direct4_rows) {  // units of output rows, each thread's copy
                                               // grown lazily
    Direct4Held held[DIRECT4_HELD];
    const int64_t items = bands > 1 ? std::min(units, edgecc_x86_int8_direct4_rows * threads) : 1;
    parallel_for(items, [&](int64_t i0, int64_t i1) {
      uint8_t* own = static_cast<uint8_t*>(scratch(1, bytes));
      direct4_chunk(d, held, own, i0 * units / items * unit, i1 * units / items * unit);
    }, bands > 1 ? job_work : 0);
    EDGECC_COUNT(direct4_rows_calls, 1);
  } else {
    const bool trace = edgecc_x86_int8_direct4_trace != 0;
    const pthread_t caller = trace ? pthread_self() : pthread_t{};
    parallel_for(bands, [&](int64_t i0, int64_t i1) {
      uint8_t* own = static_cast<uint8_t*>(scratch(1, bytes));
      for (int64_t i = i0; i < i1; ++i)
        if (__builtin_expect(trace, 0))
          direct4_band_traced(d, own, i * units / bands * unit, (i + 1) * units / bands * unit,
                              caller);
        else
          direct4_band(d, own, i * units / bands * unit, (i + 1) * units / bands * unit);
    }, job_work);
  }
  count_direct4_tiles();
}

// ---- x86_int8_c4: int8 activations kept in the next conv's padded channel-quad layout ----
// qconv meta[24] 1: x is [C/4][h + 2ph][w + 2pw][4] (x + 128, borders zx + 128), written by
// the producer below, read in place by conv_direct4 (no pad_rows_c4v copy); meta[25] 1: the
// int8 output is stored so, with meta[26] / meta[27] the consumer's padding and meta[28] its
// zero point (the border). x86_int8_c4.py marks both calls. Where the fast path does not apply
// (not conv_direct4's stride-1 path, tiles that are not tile_write / tile_post, AVX2, the knob
// 0) the call runs on NCHW copies (c4_fallback): the same values either way.
// edgecc_x86_int8_c4 0: always c4_fallback (A/B, tests)
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_c4 = 1;
int64_t c4_in_calls = 0;   // conv calls that read their c4 input in place (a test's)
int64_t c4_out_calls = 0;  // conv calls whose tiles stored their c4 output (a test's)
constexpr int64_t C4_META = 29;  // qconv's meta entries with the c4 fields

// meta[i] of a qconv call, 0 where its meta has no c4 fields
static inline int64_t c4_meta(const TVMFFIAny* args, int i) {
  const DLTensor* t = tensor_arg(args + 2);
  return t->shape[0] >= C4_META ? data<int64_t>(args, 2)[i] : 0;
}

// the padded copy's borders (rows [0, ph), [ph + h, hp); columns [0, pw), [pw + w, wp)) = zu
// (a pixel's 4 bytes by one store: two memset calls a row took ~2% of ResNet-20's run)
static void c4_border(uint8_t* dst, int64_t c, int64_t h, int64_t w, int64_t ph, int64_t pw,
                      uint8_t zu) {
  const int64_t hp = h + 2 * ph, wp = w + 2 * pw;
  const uint32_t z4 = 0x01010101u * zu;
  for (int64_t cq = 0; cq < c / 4; ++cq) {
    uint8_t* plane = dst + cq * hp * wp * 4;
    memset(plane, zu, ph * wp * 4);
    memset(plane + (ph + h) * wp * 4, zu, (hp - ph - h) * wp * 4);
    if (pw == 1) {  // (3x3 convolutions: a store at each end of a row)
      uint8_t* row = plane + ph * wp * 4;
      for (int64_t y = 0; y < h; ++y, row += wp * 4) {
        memcpy(row, &z4, 4);
        memcpy(row + (wp - 1) * 4, &z4, 4);
      }
      continue;
    }
    for (int64_t y = ph; y < ph + h; ++y) {
      uint8_t* row = plane + y * wp * 4;
      for (int64_t i = 0; i < pw; ++i) memcpy(row + i * 4, &z4, 4);
      for (int64_t i = pw + w; i < wp; ++i) memcpy(row + i * 4, &z4, 4);
    }
  }
}

// NCHW int8 (one batch item) from the padded channel-quad copy
static void c4_unpad(int8_t* dst, const uint8_t* src, int64_t c, int64_t h, int64_t w,
                     int64_t ph, int64_t pw) {
  const int64_t hp = h + 2 * ph, wp = w + 2 * pw;
  for (int64_t ci = 0; ci < c; ++ci)
    for (int64_t y = 0; y < h; ++y)
      for (int64_t x = 0; x < w; ++x)
        dst[(ci * h + y) * w + x] =
            (int8_t)(src[((ci / 4 * hp + y + ph) * wp + x + pw) * 4 + ci % 4] ^ 0x80);
}

// does the fast path take this call: conv_direct4 stride 1 (direct), and with a c4 output
// every tile written back by tile_write / tile_post (8-channel tiles, their forms)
static bool c4_fits(bool direct, bool out, const Epilogue& e, int64_t oc) {
  return edgecc_x86_int8_c4 && direct && (!out || (oc % 8 == 0 && (e.requant
      ? tile_write_fits(e, 8, 16) && edgecc_x86_int8_tile_named
      : tile_post_fits(e, 8, 16) && e.qout)));
}

// the output's c4 form for the tiles (its borders written: Relax reuses buffers)
static C4Out c4_output(const int64_t* meta, Epilogue& e) {
  const int64_t oc = meta[9], oh = meta[18], ow = meta[19], ph = meta[26], pw = meta[27];
  C4Out o;
  o.base = e.requant ? static_cast<int8_t*>(e.out) : e.qout;
  o.ph = ph, o.pw = pw, o.hp = oh + 2 * ph, o.wp = ow + 2 * pw, o.ow = ow;
  c4_border(reinterpret_cast<uint8_t*>(o.base), oc, oh, ow, ph, pw,
            (uint8_t)((uint8_t)(int8_t)meta[28] ^ 0x80));
  return o;
}

// the call on NCHW copies: x unpadded from its c4 form, the int8 output (the last argument)
// written NCHW and then padded into its c4 form by pad_rows_c4 (borders included)
typedef int (*QconvEntry)(void*, const TVMFFIAny*, int32_t, TVMFFIAny*);
static int c4_fallback(const TVMFFIAny* args, int32_t num_args, TVMFFIAny* result,
                       QconvEntry entry) {
  const int64_t* meta = data<int64_t>(args, 2);
  const int64_t nb = meta[5], c = meta[6], h = meta[7], w = meta[8], oc = meta[9];
  const int64_t ph = meta[14], pw = meta[15], oh = meta[18], ow = meta[19];
  if (nb != 1 || num_args > 16) return -1;
  int64_t m[C4_META];
  memcpy(m, meta, sizeof(m));
  m[24] = m[25] = 0;
  TVMFFIAny a[16];
  memcpy(a, args, num_args * sizeof(TVMFFIAny));
  DLTensor tm, tx, ty;
  int64_t sm[1] = {C4_META}, sx[4] = {1, c, h, w}, sy[4] = {1, oc, oh, ow};
  a[2] = typed_tensor_arg(tm, m, sm, 1, kDLInt, 64);
  // (malloc: a rare path — the fast path's conditions fail only off AVX-512 VNNI or by knobs)
  int8_t* xin = meta[24] ? static_cast<int8_t*>(malloc(c * h * w)) : nullptr;
  int8_t* yout = meta[25] ? static_cast<int8_t*>(malloc(oc * oh * ow)) : nullptr;
  if ((meta[24] && !xin) || (meta[25] && !yout)) { free(xin); free(yout); return -1; }
  if (xin) {
    c4_unpad(xin, data<uint8_t>(args, 0), c, h, w, ph, pw);
    a[0] = typed_tensor_arg(tx, xin, sx, 4, kDLInt, 8);
  }
  if (yout) a[num_args - 1] = typed_tensor_arg(ty, yout, sy, 4, kDLInt, 8);
  const int rc = entry(nullptr, a, num_args, result);
  if (rc == 0 && yout) {
    const int64_t p4 = meta[26], q4 = meta[27];
    pad_rows_c4(data<uint8_t>(args, num_args - 1), yout, oc, oh, ow, oh + 2 * p4,
                ow + 2 * q4, p4, q4, 0, oh + 2 * p4, (uint8_t)((uint8_t)(int8_t)meta[28] ^ 0x80),
                oc);
  }
  free(xin);
  free(yout);
  return rc;
}
"""

DIRECT_FFI = r"""
// how many convolution calls ran conv_direct4 (panels read in place from a channel-quad copy)
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_int8_direct4_calls(void*, const TVMFFIAny*, int32_t,
                                            TVMFFIAny* result) {
  result->type_index = kTVMFFIInt; result->zero_padding = 0;
  result->v_int64 = __atomic_load_n(&direct4_calls, __ATOMIC_RELAXED);
  return 0;
}

// how many of them had stride 2 (the column-phase copy of pad_rows_c4s)
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_int8_direct4_s2_calls(void*, const TVMFFIAny*, int32_t,
                                               TVMFFIAny* result) {
  result->type_index = kTVMFFIInt; result->zero_padding = 0;
  result->v_int64 = __atomic_load_n(&direct4_s2_calls, __ATOMIC_RELAXED);
  return 0;
}

// how many conv_direct4 calls ran as a job of output-row units (edgecc_x86_int8_direct4_rows)
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_int8_direct4_rows_calls(void*, const TVMFFIAny*, int32_t,
                                                 TVMFFIAny* result) {
  result->type_index = kTVMFFIInt; result->zero_padding = 0;
  result->v_int64 = __atomic_load_n(&direct4_rows_calls, __ATOMIC_RELAXED);
  return 0;
}

// how many convolution calls read their input in place from its c4 form (x86_int8_c4)
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_int8_c4_in_calls(void*, const TVMFFIAny*, int32_t, TVMFFIAny* result) {
  result->type_index = kTVMFFIInt; result->zero_padding = 0;
  result->v_int64 = __atomic_load_n(&c4_in_calls, __ATOMIC_RELAXED);
  return 0;
}

// how many convolution calls' tiles stored their int8 output in its c4 form (x86_int8_c4)
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_int8_c4_out_calls(void*, const TVMFFIAny*, int32_t,
                                           TVMFFIAny* result) {
  result->type_index = kTVMFFIInt; result->zero_padding = 0;
  result->v_int64 = __atomic_load_n(&c4_out_calls, __ATOMIC_RELAXED);
  return 0;
}

// how many stride-1 conv_direct4 calls padded their copy by pad_rows_c4v (VBMI)
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_int8_pad_vbmi_calls(void*, const TVMFFIAny*, int32_t,
                                             TVMFFIAny* result) {
  result->type_index = kTVMFFIInt; result->zero_padding = 0;
  result->v_int64 = __atomic_load_n(&pad_vbmi_calls, __ATOMIC_RELAXED);
  return 0;
}
"""
