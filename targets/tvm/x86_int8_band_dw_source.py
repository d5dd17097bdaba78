"""Depthwise on column strips (``dw_band``), spliced into ``x86_int8_source.SOURCE`` after
``dw_rows`` (``x86_int8_dwrows_source`` appends it): an int8 depthwise convolution whose input
rows are wider than one zmm (w > 64: MobileNetV2-224's 224 / 112 planes) and whose kernel fits
4x4, with a ``hi32`` requantized epilogue, run by ``dw_rows``' own row kernel (``dw_rows_t``)
on strips of output columns, each strip's taps one 64-byte window of the row::

    for each channel, for each strip of 16·NB output columns (NB <= 4 blocks of 16 whose
    taps span <= 64 input bytes: 3 blocks at stride 1, 1 at stride 2, 3x3):
        dw_rows_t on the window view: rows at plane + cs (cs: the strip's first input
        column), ws = min(64, w - cs) bytes loaded, the row stride w, the output at
        out + ox with the row stride ow

Before (``dw_perm``, the path these planes took): each channel's plane copied into a padded u8
buffer (51 KB at 224), its int32 sums stored (200 KB) and read back by ``write_channel``.
Here: no copy (masked byte loads of the window, the out-of-plane lanes and rows the padding
value), no int32 round trip. The sums are ``dw_rows``' (Σ (x + 128)·w - 128·Σw + off over
the same taps, int32 wrapping, padding taps zx), so ``dw_perm``'s exactly, and the write-back
is ``requant16_hi`` from the register — the same int8 outputs, bit for bit (tested against
the knob off).

``edgecc_x86_int8_dw_band`` (library symbol, int64, 1) 0: the former path (A/B); calls that
ran it are counted by ``edgecc_x86_int8_dw_band_calls`` (int64; the tests' proof). Pooled by
channels as ``dw_rows``' default; ``edgecc_x86_int8_dw_band_rows`` (int64, 0) k > 0: by k bands
of output rows a thread (A/B; counted by ``edgecc_x86_int8_dw_band_banded``). C++ text only
(the symbols are exported by ``x86_int8_source``).

Measured (MobileNetV2-224 w8a8, 2 threads, Zen 4 KVM under load 6-7; bench/x86_int8_inplace.py
``--columns "off=dw_band:0;rows=dw_band_rows:1"``, 30 rounds): the 7 depthwise calls on 224 /
112 planes 0.63-0.99x of the former path each in place (``off`` 1.01-1.59x of dw_band), ~0.8 ms
of ~19.5 ms of calls (two runs); by bands of rows 1.04-1.48x slower than by channels. Whole model
(bench/x86_int8_knob_ab.py, 200 rounds, load 7.0): ``off`` 1.081x of dw_band paired (p10 /
p90 0.95 / 1.73); int8 / fp32 0.51 with dw_band, 0.60 without; again (300 rounds, load 6.2):
1.062x (0.88 / 1.71), int8 / fp32 0.54 / 0.575. In place the project 1x1 after each such
depthwise took 0.85-0.92x its time with the former path (not understood: the same pooling by
channels), which takes back ~1/3 of the depthwise's gain."""

DW_BAND = "edgecc_x86_int8_dw_band_calls"  # library int64: depthwise calls run by dw_band
DW_BAND_KNOB = "edgecc_x86_int8_dw_band"  # library int64: 1 on (default), 0 the former path

DW_POOL_ROWS = r"""
// ---- one row band of a whole block (x86_int8_block's band form) ----
// set by edgecc_x86_qblock's band form on a pool thread around each entry call it makes there,
// read by the entries: a 1x1 stride-1 qconv (VNNI) builds and multiplies panels [lo, hi) only
// (x86_int8_source), a depthwise on dw_rows / dw_band computes output rows [lo, hi) of every
// channel on this thread (dw_pool_rows, below), skipping dw_direct (whole planes); ran: set by
// the entry that took the span (else it computed its whole call)
struct BandSpan { int on; int ran; int64_t lo, hi; };
static thread_local BandSpan band_span = {0, 0, 0, 0};

// ---- dw_rows' and dw_band's pooling (x86_int8_band_dw_source, before dw_rows) ----
// run(t, oy0, oy1) (channel t = image · c + channel, output rows [oy0, oy1)) for nb images of c
// channels of oh x ow outputs on the pool: by bands of output rows, `bands_a_thread` a thread
// (items of (image, band), each band every channel; counted in `banded`) where that is > 0,
// output rows are whole 64-byte lines (ow % 16 == 0: 4-row steps of 64·k bytes), the pool has
// threads and the work is worth it; else one item a channel, every row. Counts the call in
// `calls` and dw_perm_calls (the VBMI depthwise family).
template <typename Run>
static void dw_pool_rows(const Run& run, int64_t nb, int64_t c, int64_t oh, int64_t ow,
                         int64_t bands_a_thread, int64_t& banded, int64_t& calls) {
  if (band_span.on) {  // a block's band: its output rows of every channel, on this thread
    for (int64_t t = 0; t < nb * c; ++t) run(t, band_span.lo, band_span.hi);
    band_span.ran = 1;
    return;
  }
  const int64_t work = dw_pool_work(nb * c * oh * ow);  // (x86_int8_dw_source)
  const int64_t groups = (oh + 3) / 4;  // dw_rows_t's 4-row steps
  const int64_t bands = bands_a_thread > 0 && ow % 16 == 0 &&
      edgecc_pool_size() > 1 && work >= serial_work()
      ? std::min(groups, bands_a_thread * edgecc_pool_size()) : 0;
  if (bands > 1) {
    parallel_for(nb * bands, [&](int64_t u0, int64_t u1) {
      for (int64_t u = u0; u < u1; ++u) {
        const int64_t b = u / bands, i = u % bands;
        const int64_t oy0 = groups * i / bands * 4;
        const int64_t oy1 = std::min(oh, groups * (i + 1) / bands * 4);
        for (int64_t ch = 0; ch < c; ++ch) run(b * c + ch, oy0, oy1);
      }
    }, work);
    EDGECC_COUNT(banded, 1);
  } else {
    parallel_for(nb * c, [&](int64_t t0, int64_t t1) {
      for (int64_t t = t0; t < t1; ++t) run(t, 0, oh);
    }, work);
  }
  EDGECC_COUNT(dw_perm_calls, 1);
  EDGECC_COUNT(calls, 1);
}
"""[1:]

DW_BAND_KERNELS = r"""
// ---- dw_band (x86_int8_band_dw_source): dw_rows_t on column strips of wide planes ----
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_dw_band = 1;
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_dw_band_calls = 0;
// pooled by bands of output rows (this many a thread, each band every channel: the 1x1
// convolutions around it split by pixels in order, so each thread reads mostly rows its own
// core wrote) where output rows are whole 64-byte lines; 0: by channels (the default: by bands
// MobileNetV2-224's 224 / 112 layers took 1.04-1.48x their time by channels, in place, 2
// threads, load 6.3); counted per call by edgecc_x86_int8_dw_band_banded
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_dw_band_rows = 0;
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_dw_band_banded = 0;

struct DwBand {  // one strip of output columns [ox, ox + 16·d.nb)
  int64_t ox;  // its first output column
  int64_t cs;  // the first input column its window loads
  int64_t ws;  // bytes loaded from cs (<= 64)
  DwRows d;    // dw_rows_plan of the window (its local left padding: pw + cs - ox·sw)
};
enum { DW_BAND_MAX = 32 };  // strips a plane (3 blocks each at stride 1: ow <= 1536)

// the strips: false when a 16-column block's taps do not fit 64 bytes or too many strips
static bool dw_band_plan(int64_t w, int64_t kw, int64_t sw, int64_t pw, int64_t dw, int64_t ow,
                         DwBand* s, int64_t& ns) {
  int64_t nbs = 4;  // blocks a strip: the most whose taps span one 64-byte window
  while (nbs > 0 && (16 * nbs - 1) * sw + (kw - 1) * dw + 1 > 64) --nbs;
  if (nbs == 0 || kw > 4) return false;
  ns = 0;
  for (int64_t ox = 0; ox < ow; ox += 16 * nbs) {
    if (ns == DW_BAND_MAX) return false;
    DwBand& b = s[ns++];
    b.ox = ox;
    b.cs = ox * sw - pw > 0 ? ox * sw - pw : 0;
    b.ws = w - b.cs < 64 ? w - b.cs : 64;
    if (b.ws <= 0) return false;
    const int64_t n = ow - ox < 16 * nbs ? ow - ox : 16 * nbs;
    if (!dw_rows_plan(b.ws, kw, sw, pw + b.cs - ox * sw, dw, n, b.d)) return false;
  }
  return true;
}

// the depthwise call on dw_band when it applies (AVX-512 VBMI + VNNI, a hi32 requantized
// epilogue, kh and kw <= 4, rows wider than 64 bytes): true when it ran
static bool dw_band(const int8_t* x, const int32_t* wt, const Epilogue& e, int64_t nb,
                    int64_t c, int64_t h, int64_t w, int64_t kh, int64_t kw, int64_t sh,
                    int64_t sw, int64_t ph, int64_t pw, int64_t dh, int64_t dw, int64_t oh,
                    int64_t ow, int8_t zx) {
  if (!edgecc_x86_int8_dw_band || w <= 64 || !dw_writes_hi(e) || !has_vbmi() || kh > 4)
    return false;
  DwBand strips[DW_BAND_MAX];
  int64_t ns = 0;
  if (!dw_band_plan(w, kw, sw, pw, dw, ow, strips, ns)) return false;
  const int32_t* wrows = wt + c * kh * kw;  // pack_depthwise: rows' dwords, then -128·Σw
  const int32_t* wcomp = wrows + 4 * c;
  const bool slide = sh == 1 && dh == 1;
  const bool clamp = !full_int8(e);
  const int64_t pix = oh * ow;
  auto run = [&](int64_t t, int64_t oy0, int64_t oy1) {  // channel t, output rows [oy0, oy1)
    const int64_t ch = t % c;
    const int32_t start = (int32_t)((uint32_t)wcomp[ch] + (uint32_t)e.off[ch]);
    const int8_t* plane = x + t * h * w;
    int8_t* out = static_cast<int8_t*>(e.out) + t * pix;
    for (int64_t j = 0; j < ns; ++j) {
      const DwBand& b = strips[j];
#define EDGECC_DW_BAND_NB(NB) \
  dw_rows_channel<NB>(b.d, plane + b.cs, wrows + ch * 4, start, h, b.ws, w, kh, sh, ph, dh, \
                      oy0, oy1, ow, zx, e, ch, out + b.ox, slide, clamp, 0)
      switch (b.d.nb) {
        case 1: EDGECC_DW_BAND_NB(1); break;
        case 2: EDGECC_DW_BAND_NB(2); break;
        case 3: EDGECC_DW_BAND_NB(3); break;
        default: EDGECC_DW_BAND_NB(4);
      }
#undef EDGECC_DW_BAND_NB
    }
  };
  dw_pool_rows(run, nb, c, oh, ow, edgecc_x86_int8_dw_band_rows, edgecc_x86_int8_dw_band_banded,
               edgecc_x86_int8_dw_band_calls);
  // dw_rows_t's FULL-form flag taken, not counted: edgecc_x86_int8_dw_full_calls counts
  // dw_rows' calls only (its test's count)
  if (edgecc_x86_int8_counters) dw_full_seen.store(0, std::memory_order_relaxed);
  return true;
}
"""[1:]
