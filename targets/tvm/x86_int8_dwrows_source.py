"""Depthwise rows (``dw_rows``), spliced into ``x86_int8_source.SOURCE`` after the dw_perm /
dw_direct text: an int8 depthwise convolution whose input rows fit one zmm (w <= 64) and whose
kernel fits 4x4 (every MobileNetV2 3x3 layer on 16x16 / 32x32 maps, stride 1 or 2), with a
``hi32`` requantized epilogue (every MobileNetV2 depthwise), straight from the input plane::

    for each output row (4 at a time) and 16-column block:
        a[u] = -128·Σw                                    # the +128 shift's compensation
        for each input row y the 4 rows read:             # stride 1: each row once (slid)
            x = vpermb(idx, row_y ^ 0x80) (padding lanes zx ^ 0x80)   # 16 dwords of 4 taps
            a[u] = vpdpbusd(a[u], x, w_row[y - u])        # one per kernel row
        dw_write_hi(a[u])                                 # requant16_hi from the register

Before (``dw_perm``): each channel's plane copied into a padded u8 buffer (memset, masked
stores), the int32 sums stored to scratch and read back by ``write_channel`` behind a call.
Here there is no copy (a masked byte load of the row, its out-of-plane lanes and rows the
padding value), no int32 round trip, and the kernel rows' weight dwords and -128·Σw come
packed at compile time (``x86_int8.pack_depthwise``). The int32 sums are dw_perm's exactly
(Σ (x + 128)·w - 128·Σw over the same taps, padding taps zx), and the write-back is
``dw_write_hi``'s ``requant16_hi`` — the same int8 outputs, bit for bit.

``edgecc_x86_int8_dw_rows`` (library symbol, 1) 0: the dw_perm path (A/B); counted per call by
``edgecc_x86_int8_dw_rows_calls`` (``DW_ROWS``), and in ``edgecc_x86_int8_dw_perm`` as dw_direct's
calls are (the VBMI depthwise family). Whole blocks of 4 output rows run a FULL form of the
loop (the row count known at compile time: with the run-time count GCC kept every sum as a
select and moved them between registers each row): ``edgecc_x86_int8_dw_full`` (1; 0 = the
run-time form everywhere, A/B), counted per call by the int64 ``edgecc_x86_int8_dw_full_calls``;
MobileNetV2-32's dw_rows layers 0.981x (1 thread, CPU time), the same outputs.
C++ text only; the counter is exported by ``x86_int8_source``."""

from edgecc.targets.tvm.x86_int8_band_dw_source import DW_BAND_KERNELS, DW_POOL_ROWS

DW_ROWS = "edgecc_x86_int8_dw_rows_calls"  # () -> depthwise calls run by dw_rows
DWROWS_SYMBOLS = (DW_ROWS,)

DWROWS_KERNELS = DW_POOL_ROWS + r"""
// ---- dw_rows (x86_int8_dwrows_source) ----
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_dw_rows = 1;
// nonzero: dw_rows_t's whole blocks of 4 output rows take the FULL form (0: the run-time
// row count everywhere, A/B); counted per depthwise call by edgecc_x86_int8_dw_full_calls
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_dw_full = 1;
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_dw_full_calls = 0;
std::atomic<int> dw_full_seen{0};  // set by a channel (stored only when clear), taken a call
// depthwise calls run by dw_rows (a test's counter; a library symbol too, for benches)
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_dw_rows_calls = 0;
// pooled dw_rows calls split by bands of output rows, this many a thread (1: each band's
// kh - 1 halo rows are read twice, so fewer bands cost less; 0: by channels, A/B), and how
// many calls were (library symbols: a test's counter, a bench's switch)
// 0 by default: MobileNetV2-32's layers re-run alone at 2 threads under load (~2.6) took
// 1.1-1.6x longer by bands (2 items: no balancing when the worker is descheduled) than by
// channels (72@32x32: 16.5 vs 9.5 us), while the whole model was even either way (a tuning
// knob: --tune may search 0 / 1 / 2)
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_dw_rows_bands = 0;
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_dw_rows_banded = 0;

struct DwRows {
  int64_t nb;  // 16-column output blocks of a row (<= 4)
  int64_t ox[4];
  __mmask16 lanes[4];
  alignas(64) uint8_t idx[4][64];  // [block]: lane 4i + j -> the row byte of tap j of column i
  __mmask64 mask[4];  // lanes whose tap lies in the row (else the padding value)
};

// the blocks' shuffles: false when the shape is not dw_rows' (w > 64, ow > 64, kw > 4)
static bool dw_rows_plan(int64_t w, int64_t kw, int64_t sw, int64_t pw, int64_t dw,
                         int64_t ow, DwRows& d) {
  if (w > 64 || ow > 64 || kw > 4) return false;
  d.nb = (ow + 15) / 16;
  for (int64_t b = 0; b < d.nb; ++b) {
    const int64_t ox0 = b * 16, n = ow - ox0 < 16 ? ow - ox0 : 16;
    d.ox[b] = ox0;
    d.lanes[b] = (__mmask16)((1u << n) - 1);
    __mmask64 m = 0;
    for (int64_t i = 0; i < 16; ++i)
      for (int64_t j = 0; j < 4; ++j) {
        const int64_t col = (ox0 + i) * sw + j * dw - pw;
        const bool in = i < n && j < kw && col >= 0 && col < w;
        d.idx[b][4 * i + j] = (uint8_t)(in ? col : 0);
        if (in) m |= 1ULL << (4 * i + j);
      }
    d.mask[b] = m;
  }
  return true;
}

// one channel: its plane (h x w int8), kernel-row weight dwords wr[0..kh), start =
// -128·Σw + off (int32, wrapping: the same sums as adding off after them, as requant16_hi's
// caller does — so the write-back takes e.add, never fold_off's table); NB column blocks in
// registers (each row loaded once); KH 3: the 3-row kernel unrolled (else kh at run time);
// SLIDE: stride 1, dilation 1 (an input row's shuffle feeds every output row it is a tap row
// of), else each output row reads its kh rows; rows of w bytes ld apart (dw_rows: ld = w;
// x86_int8_band_dw_source's strips: a 64-byte window of a wider row)
// (the pragma, not only the attribute: GCC's lambdas do not take their function's target)
#pragma GCC push_options
#pragma GCC target("avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")
template <int NB, int KH, bool SLIDE, bool CLAMP>
__attribute__((target("avx2,fma,avx512f,avx512bw,avx512vl,avx512vnni,avx512vbmi")))
__attribute__((noinline)) static void dw_rows_t(const DwRows& d, const int8_t* plane,
                                              const int32_t* wr, int32_t start, int64_t h,
                                              int64_t w, int64_t ld, int64_t kh_rt, int64_t sh,
                                              int64_t ph, int64_t dh, int64_t oy0, int64_t oh,
                                              int64_t ow,
                                              int8_t zx, const Epilogue& e, int64_t ch,
                                              int8_t* out, int64_t b0) {
  const int64_t kh = KH ? KH : kh_rt;
  const Sat8 q = sat8(e);
  const __m512i padv = _mm512_set1_epi8((char)((uint8_t)zx ^ 0x80));
  const __m512i mv = _mm512_set1_epi64(e.mult[ch]), av = _mm512_set1_epi64(e.add[ch]);
  const __m512i s32 = _mm512_set1_epi32((int32_t)(e.shift[ch] - 32));
  const __mmask64 lm = w >= 64 ? ~0ULL : (1ULL << w) - 1;
  __m512i wv[4], ix[NB];
  __mmask64 m[NB];
  for (int64_t ky = 0; ky < 4; ++ky) wv[ky] = _mm512_set1_epi32(ky < kh ? wr[ky] : 0);
  for (int b = 0; b < NB; ++b) {
    ix[b] = _mm512_load_si512(d.idx[b0 + b]);
    m[b] = d.mask[b0 + b];
  }
  const __m512i flip = _mm512_set1_epi8((char)0x80), sv = _mm512_set1_epi32(start);
  // FULL: a block of 4 output rows, every u < nr test known true at compile time — with the
  // run-time nr GCC kept each sum as a select and moved the 4·NB sums between registers at
  // every row (~2 vmovdqa a vpdpbusd); the same sums either way (edgecc_x86_int8_dw_full)
  auto block = [&](int64_t oy, auto full) {
    constexpr bool FULL = decltype(full)::value;
    const int64_t nr = FULL ? 4 : (oh - oy < 4 ? oh - oy : 4);
    __m512i a[4][NB];
#pragma GCC unroll 4
    for (int u = 0; u < 4; ++u)
#pragma GCC unroll 4
      for (int b = 0; b < NB; ++b) a[u][b] = sv;
    if (SLIDE) {
      const int64_t rows = (KH && nr == 4) ? 4 + KH - 1 : nr + kh - 1;
#pragma GCC unroll 6
      for (int64_t r = 0; r < rows; ++r) {
        const int64_t y = oy - ph + r;
        const bool in = y >= 0 && y < h;
        const __m512i row =
            _mm512_xor_si512(_mm512_maskz_loadu_epi8(in ? lm : 0, plane + (in ? y * ld : 0)), flip);
#pragma GCC unroll 4
        for (int b = 0; b < NB; ++b) {
          const __m512i x = in ? _mm512_mask_permutexvar_epi8(padv, m[b], ix[b], row) : padv;
#pragma GCC unroll 4
          for (int u = 0; u < 4; ++u) {
            const int64_t ky = r - u;
            if (u < nr && ky >= 0 && ky < kh) a[u][b] = _mm512_dpbusd_epi32(a[u][b], x, wv[ky]);
          }
        }
      }
    } else {
#pragma GCC unroll 4
      for (int64_t ky = 0; ky < kh; ++ky)
#pragma GCC unroll 4
        for (int u = 0; u < 4; ++u) {
          if (u >= nr) continue;
          const int64_t y = (oy + u) * sh + ky * dh - ph;
          const bool in = y >= 0 && y < h;
          const __m512i row = _mm512_xor_si512(
              _mm512_maskz_loadu_epi8(in ? lm : 0, plane + (in ? y * ld : 0)), flip);
#pragma GCC unroll 4
          for (int b = 0; b < NB; ++b) {
            const __m512i x = in ? _mm512_mask_permutexvar_epi8(padv, m[b], ix[b], row) : padv;
            a[u][b] = _mm512_dpbusd_epi32(a[u][b], x, wv[ky]);
          }
        }
    }
#pragma GCC unroll 4
    for (int u = 0; u < 4; ++u)
#pragma GCC unroll 4
      for (int b = 0; b < NB; ++b)
        if (u < nr)
          _mm_mask_storeu_epi8(out + (oy + u) * ow + d.ox[b0 + b], d.lanes[b0 + b],
                               requant16_hi<CLAMP>(a[u][b], mv, av, s32, q));
  };
  const bool full_blocks = edgecc_x86_int8_dw_full != 0;
  for (int64_t oy = oy0; oy < oh; oy += 4) {  // output rows [oy0, oh)
    if (full_blocks && oh - oy >= 4) block(oy, std::true_type{});
    else block(oy, std::false_type{});
  }
  if (full_blocks && oh - oy0 >= 4 && !dw_full_seen.load(std::memory_order_relaxed))
    dw_full_seen.store(1, std::memory_order_relaxed);
}
#pragma GCC pop_options

// the channel on the dw_rows_t instance of its shape
template <int NB>
static void dw_rows_channel(const DwRows& d, const int8_t* plane, const int32_t* wr,
                            int32_t start, int64_t h, int64_t w, int64_t ld, int64_t kh,
                            int64_t sh, int64_t ph, int64_t dh, int64_t oy0, int64_t oh,
                            int64_t ow, int8_t zx, const Epilogue& e, int64_t ch, int8_t* out, bool slide,
                            bool clamp, int64_t b0) {
#define EDGECC_DW_ROWS(KH, SL, CL) \
  dw_rows_t<NB, KH, SL, CL>(d, plane, wr, start, h, w, ld, kh, sh, ph, dh, oy0, oh, ow, zx, e, \
                            ch, out, b0)
  if (kh == 3) {
    if (slide) { if (clamp) EDGECC_DW_ROWS(3, true, true); else EDGECC_DW_ROWS(3, true, false); }
    else if (clamp) EDGECC_DW_ROWS(3, false, true);
    else EDGECC_DW_ROWS(3, false, false);
  } else {
    if (slide) { if (clamp) EDGECC_DW_ROWS(0, true, true); else EDGECC_DW_ROWS(0, true, false); }
    else if (clamp) EDGECC_DW_ROWS(0, false, true);
    else EDGECC_DW_ROWS(0, false, false);
  }
#undef EDGECC_DW_ROWS
}

// the depthwise call on dw_rows when it applies (AVX-512 VBMI + VNNI, a hi32 requantized
// epilogue, kh and kw <= 4, rows of <= 64 bytes, output rows of <= 64): true when it ran
static bool dw_rows(const int8_t* x, const int32_t* wt, const Epilogue& e, int64_t nb,
                    int64_t c, int64_t h, int64_t w, int64_t kh, int64_t kw, int64_t sh,
                    int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t oh,
                    int64_t ow, int8_t zx) {
  DwRows d;
  if (!edgecc_x86_int8_dw_rows || !dw_writes_hi(e) || !has_vbmi() || kh > 4 ||
      !dw_rows_plan(w, kw, sw, pw, dw, ow, d))
    return false;
  const int32_t* wrows = wt + c * kh * kw;  // pack_depthwise: rows' dwords, then -128·Σw
  const int32_t* wcomp = wrows + 4 * c;
  const bool slide = sh == 1 && dh == 1;
  const bool clamp = !full_int8(e);
  const int64_t pix = oh * ow;
  // pooled by bands (edgecc_x86_int8_dw_rows_bands > 0): items of (image, band of output
  // rows), each band every channel — the 1x1
  // convolutions around it split by pixels in order, so with the pool's two-ended claims each
  // thread reads mostly rows its own core wrote (by channels, half the input crossed cores);
  // serial (or bands off): one item a channel, every row. Only where a band's output rows
  // are whole 64-byte lines (ow % 16 == 0: 4-row steps of 64·k bytes): else the threads'
  // bands share a line in every channel's plane (14x14: every line) and store into it in
  // turn — MobileNetV2-224's 576@14x14 took 14x its serial time so (2 threads, under load)
  // (dw_pool_rows: shared with dw_band)
  auto run = [&](int64_t t, int64_t oy0, int64_t oy1) {
    const int64_t ch = t % c;
    const int32_t start = (int32_t)((uint32_t)wcomp[ch] + (uint32_t)e.off[ch]);
    const int8_t* plane = x + t * h * w;
    int8_t* out = static_cast<int8_t*>(e.out) + t * pix;
#define EDGECC_DW_ROWS_NB(NB, B0) \
  dw_rows_channel<NB>(d, plane, wrows + ch * 4, start, h, w, w, kh, sh, ph, dh, oy0, oy1, ow, zx, \
                      e, ch, out, slide, clamp, B0)
    switch (d.nb) {  // all column blocks in one pass (passes of 2: the same time, 144@56x56)
      case 1: EDGECC_DW_ROWS_NB(1, 0); break;
      case 2: EDGECC_DW_ROWS_NB(2, 0); break;
      case 3: EDGECC_DW_ROWS_NB(3, 0); break;
      default: EDGECC_DW_ROWS_NB(4, 0);
    }
#undef EDGECC_DW_ROWS_NB
  };
  dw_pool_rows(run, nb, c, oh, ow, edgecc_x86_int8_dw_rows_bands, edgecc_x86_int8_dw_rows_banded,
               edgecc_x86_int8_dw_rows_calls);
  EDGECC_COUNT_SEEN(dw_full_seen, edgecc_x86_int8_dw_full_calls);
  return true;
}
"""[1:] + DW_BAND_KERNELS  # dw_rows_t on column strips of wider rows (after dw_rows)

DWROWS_FFI = r"""
// how many depthwise convolutions ran on dw_rows (no padded copy, written from registers)
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_int8_dw_rows_calls(void*, const TVMFFIAny*, int32_t,
                                            TVMFFIAny* result) {
  result->type_index = kTVMFFIInt; result->zero_padding = 0;
  result->v_int64 = __atomic_load_n(&edgecc_x86_int8_dw_rows_calls, __ATOMIC_RELAXED);
  return 0;
}
"""
