"""C++ source of the int8 depthwise convolution's packed entry ``edgecc_x86_qdwconv``
(spliced into ``x86_int8_source.SOURCE`` inside its ``extern "C"`` block): reads the meta
vector, picks the path (``dw_rows`` for planes of rows <= 64 bytes, ``dw_band`` for wider rows
(``x86_int8_band_dw_source``: dw_rows' kernel on column strips), ``dw_direct`` /
``dw_perm`` (``x86_int8_dw_source``), else the per-channel loop) and runs it on the pool.

It uses the helpers of the main source defined before it (``data``, ``bad_args``,
``Epilogue``, ``write_channel``, ``parallel_for``, the path counters).

A/B switches (library symbols, ``int64_t``, read at each call without ``getenv``: the
environment variables they replace cost ~0.1 us a lookup on every call; 1 by default, 0
the former path, the same outputs either way): ``edgecc_x86_int8_dw_vbmi`` (the VBMI family
``dw_direct`` / ``dw_rows`` / ``dw_perm``; 0: the paths below it, was
``EDGECC_X86_DW_PERM=0``), ``edgecc_x86_int8_dw_write_hi`` (``dw_direct`` writes the int8
outputs from its registers; 0: its sums through ``write_channel``, was
``EDGECC_X86_DW_DIRECT_HI=0``), ``edgecc_x86_int8_dw_block16`` (small maps and strides
channel-blocked, 16 channels a zmm; 0: the per-channel path, was ``EDGECC_X86_DW_BLOCKED=0``).
None of them is read by ``dw_direct_plan`` (whose cache key holds every input of the plan)."""

DW_KNOBS = ("edgecc_x86_int8_dw_vbmi", "edgecc_x86_int8_dw_write_hi",
            "edgecc_x86_int8_dw_block16")  # the switches above (int64_t, default 1)

DW_ENTRY_FFI = r"""
// a block's band (x86_int8_block's band form; band_span): d's vectors whose outputs lie in rows
// [lo, hi) of the ow-wide output rows, as a plan of their own. False (d unchanged) where a
// vector straddles the band's edge or none lies in it: then dw_rows takes the band's rows
static bool dw_direct_rows(DwDirect& d, int64_t kh, int64_t ow, int64_t lo, int64_t hi) {
  DwDirect s = d;
  int64_t n = 0;
  for (int64_t v = 0; v < d.nv; ++v) {
    const int64_t r0 = d.oo[v] / ow;
    const int64_t r1 = (d.oo[v] + __builtin_popcount((unsigned)d.lanes[v]) - 1) / ow;
    if (r1 < lo || r0 >= hi) continue;
    if (r0 < lo || r1 >= hi) return false;
    s.oo[n] = d.oo[v];
    s.lanes[n] = d.lanes[v];
    for (int64_t ky = 0; ky < kh; ++ky) {
      const int64_t q = n * kh + ky, from = v * kh + ky;
      memcpy(s.idx[q], d.idx[from], 64);
      s.mask[q] = d.mask[from];
      s.off[q] = d.off[from];
      s.lm[q][0] = d.lm[from][0];
      s.lm[q][1] = d.lm[from][1];
    }
    ++n;
  }
  if (n == 0) return false;
  s.nv = n;
  d = s;
  return true;
}

// the A/B switches (module docstring): 1 the default path, 0 the former one
__attribute__((visibility("default"))) int64_t edgecc_x86_int8_dw_vbmi = 1;
__attribute__((visibility("default"))) int64_t edgecc_x86_int8_dw_write_hi = 1;
__attribute__((visibility("default"))) int64_t edgecc_x86_int8_dw_block16 = 1;
// depthwise convolution (groups = C = OC, NCHW, weights [C][KH*KW] int32):
// meta = [3, requant, lo, hi, zy, N, C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, zx]
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_qdwconv(void*, const TVMFFIAny* args, int32_t num_args,
                                  TVMFFIAny* result) {
  if (bad_args(num_args, 13)) return -1;
  result->type_index = kTVMFFINone; result->zero_padding = 0; result->v_int64 = 0;
  const int64_t* meta = data<int64_t>(args, 2);
  const int64_t nb = meta[5], c = meta[6], h = meta[7], w = meta[8];
  const int64_t kh = meta[9], kw = meta[10], sh = meta[11], sw = meta[12];
  const int64_t ph = meta[13], pw = meta[14], dh = meta[15], dw = meta[16];
  const int64_t oh = meta[17], ow = meta[18];
  const int8_t zx = (int8_t)meta[19];
  const int64_t hp = h + 2 * ph, wp = w + 2 * pw, pix = oh * ow;
  const int8_t* x = data<int8_t>(args, 0);
  const int32_t* wt = data<int32_t>(args, 1);
  Epilogue e = epilogue(args, meta, 1);
  if (!post_args(args, num_args, e)) return bad_post();
  e.wide = isa_level() == ISA_AVX512VNNI;
  count_hi32(e);
  fold_off(e, c, kh * kw, nb * pix);
  // the padded plane split into its sh x sw stride phases (phase (py, px) holds rows py,
  // py + sh, ... and columns px, px + sw, ..., hq x wq), so every tap is one unit-stride
  // run over the whole output plane on a wq-wide grid: tap (ky, kx) of output (oy, ox) is
  // phase[(ky·dh) % sh, (kx·dw) % sw][oy + (ky·dh) / sh][ox + (kx·dw) / sw]; the columns
  // ox >= ow of that grid are computed and dropped (they never touch a valid output)
  const int64_t wq = (wp + sw - 1) / sw, hq = (hp + sh - 1) / sh, span = oh * wq;
  DwPerm plan;
  if (e.wide && has_vbmi() && kh * kw <= DW_TAPS && edgecc_x86_int8_dw_vbmi &&
      dw_perm_plan(ow, wp, sh, sw, kw, dw, plan)) {  // vpermt2b + vpdpbusd
    const uint8_t padv = (uint8_t)zx ^ 0x80;
    // DW_PERM_BATCH channels copied, then computed: a copy's stores have left the store
    // buffer before the windows that span them are loaded (measured: ~1.4x on 32x32)
    const int64_t plane_bytes = (hp * wp + 256 + 63) / 64 * 64;
    DwDirect direct;
    if (dw_direct_plan_cached(plan, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, zx, direct) &&
        (!band_span.on ||  // a block's band (x86_int8_block): its vectors, else dw_rows below
         dw_direct_rows(direct, kh, ow, band_span.lo, band_span.hi))) {
      direct.wrows = wt + c * kh * kw;  // (after the plan: the cached copy has another's)
      direct.wcomp = direct.wrows + 4 * c;
      const int64_t stride = (pix + 15) / 16 * 16 + 16;
      const bool wb = dw_writes_hi(e) && edgecc_x86_int8_dw_write_hi;  // 0: write_channel
      const bool pack = wb && edgecc_x86_int8_dw_pack && dw_packs(direct) && !band_span.on;
      auto channels = [&](int64_t t0, int64_t t1) {
        int32_t* acc = static_cast<int32_t*>(scratch(2, stride * DW_PERM_BATCH * 4));
        for (int64_t t = t0; t < t1; t += DW_PERM_BATCH) {
          const int64_t nt = t1 - t < DW_PERM_BATCH ? t1 - t : DW_PERM_BATCH;
          int64_t ch[DW_PERM_BATCH], at[DW_PERM_BATCH];
          for (int64_t u = 0; u < nt; ++u) {
            at[u] = t + u;
            ch[u] = (t + u) % c;
          }
          dw_direct(direct, x, at, wt, ch, nt, h * w, kh, kw, zx, acc, stride, e, pix, wb,
                    pack);
          if (!wb)
            for (int64_t u = 0; u < nt; ++u)
              write_channel(e, ch[u], acc + u * stride, pix, (t + u) * pix);
        }
      };
      if (band_span.on) {  // a block's band: every channel on this thread (not counted)
        channels(0, nb * c);
        band_span.ran = 1;
        return 0;
      }
      parallel_for(nb * c, channels, dw_pool_work(nb * c * pix));
      EDGECC_COUNT(dw_perm_calls, 1);
      if (pack) EDGECC_COUNT(edgecc_x86_int8_dw_packed_calls, 1);
      if (direct.wide) {
        EDGECC_COUNT(edgecc_x86_int8_dw_direct_wide_calls, 1);
        return 0;
      }
      EDGECC_COUNT(dw_direct_calls, 1);
      if (wb) EDGECC_COUNT(dw_direct_hi_calls, 1);
      return 0;
    }
    if (pix >= DW_PERM_MIN_PIX &&  // rows of <= 64 bytes: no copy (x86_int8_dwrows_source)
        dw_rows(x, wt, e, nb, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, zx))
      return 0;
    if (pix >= DW_PERM_MIN_PIX &&  // wider rows: dw_rows_t on strips (x86_int8_band_dw_source)
        dw_band(x, wt, e, nb, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw, oh, ow, zx))
      return 0;
    if (pix >= DW_PERM_MIN_PIX) {  // (smaller output maps of larger planes: below)
      dw_perm_index(wp, sh, sw, kw, dw, plan);
      parallel_for(nb * c, [&](int64_t t0, int64_t t1) {
        uint8_t* pad = static_cast<uint8_t*>(scratch(1, plane_bytes * DW_PERM_BATCH));
        int32_t* acc = static_cast<int32_t*>(scratch(2, (pix + 16) * 4));
        memset(pad, padv, plane_bytes * DW_PERM_BATCH);  // the padding (interiors: per channel)
        for (int64_t t = t0; t < t1; t += DW_PERM_BATCH) {
          const int64_t nt = t1 - t < DW_PERM_BATCH ? t1 - t : DW_PERM_BATCH;
          for (int64_t u = 0; u < nt; ++u)
            dw_perm_copy(x + (t + u) * h * w, pad + u * plane_bytes, h, w, ph, pw);
          for (int64_t u = 0; u < nt; ++u) {
            dw_perm(plan, wt + ((t + u) % c) * kh * kw, pad + u * plane_bytes, acc, w, kh, kw,
                    sh, sw, pw, dh, oh, ow);
            write_channel(e, (t + u) % c, acc, pix, (t + u) * pix);
          }
        }
      }, dw_pool_work(nb * c * pix));
      EDGECC_COUNT(dw_perm_calls, 1);
      return 0;
    }
  }
  if (e.wide && (pix <= DW_SMALL_PIX || sh > 1 || sw > 1) && kh * kw <= DW_TAPS &&
      edgecc_x86_int8_dw_block16) {  // small maps and strides: 16 channels a zmm (0: below)
    const int64_t blocks = (c + 15) / 16;
    parallel_for(nb * blocks, [&](int64_t t0, int64_t t1) {
      const int64_t cells = hp * wp * 16;
      int32_t* t = static_cast<int32_t*>(scratch(1, cells * 4 + 64));
      int32_t* a = static_cast<int32_t*>(scratch(2, DW_CHUNK * 64 + 64));
      int32_t* col = static_cast<int32_t*>(scratch(3, DW_CHUNK * 4 + 64));
      for (int64_t i = 0; i < cells; ++i) t[i] = zx;  // the padding (interiors: per block)
      for (int64_t u = t0; u < t1; ++u) {
        const int64_t b = u / blocks, c0 = (u % blocks) * 16;
        const int64_t cb = c - c0 < 16 ? c - c0 : 16;
        dw_block16(e, x + b * c * h * w, wt, c0, cb, c, h, w, kh, kw, sh, sw, ph, pw, dh, dw,
                   oh, ow, b * c * pix, t, a, col, u == 0);
      }
    }, dw_pool_work(nb * c * pix));
    EDGECC_COUNT(dw_blocked_calls, 1);
    return 0;
  }
  int64_t tap_at[DW_TAPS];  // each tap's run in the phases (the same for every channel)
  if (kh * kw <= DW_TAPS)
    for (int64_t ky = 0; ky < kh; ++ky)
      for (int64_t kx = 0; kx < kw; ++kx) {
        const int64_t ry = ky * dh, cx = kx * dw;
        tap_at[ky * kw + kx] = (((ry % sh) * sw + cx % sw) * hq + ry / sh) * wq + cx / sw;
      }
  std::atomic<bool> split_seen{false};  // a stride-2 row split by split_columns2
  parallel_for(nb * c, [&](int64_t t0, int64_t t1) {
    bool split2 = false;
    int8_t* phases = static_cast<int8_t*>(scratch(1, sh * sw * hq * wq + wq + 128));
    int32_t* acc = static_cast<int32_t*>(scratch(2, (span + 32) * 4));
    int8_t* line = static_cast<int8_t*>(scratch(3, wp + 64));
    // the padding (and the rows / columns past the plane) is zx once per task: every
    // channel writes only the input's own positions, the same ones for every channel
    memset(phases, zx, sh * sw * hq * wq + wq + 128);
    memset(line, zx, wp + 64);
    for (int64_t t = t0; t < t1; ++t) {
      const int64_t ch = t % c;
      const int8_t* plane = x + t * h * w;
      for (int64_t y = ph; y < ph + h; ++y) {
        const int64_t iy = y - ph, py = y % sh, i = y / sh;
        // one column phase: the padded row straight into it, else via line
        int8_t* row = sw == 1 ? phases + (py * hq + i) * wq : line;
        memcpy(row + pw, plane + iy * w, w);
        if (sw == 2) {  // the two column phases by byte shuffles, 16 (then 8) columns a step
          int8_t* even = phases + ((py * 2) * hq + i) * wq;
          int8_t* odd = even + hq * wq;
          const int64_t n0 = (wp + 1) / 2, n1 = wp / 2;  // the phases' columns (n1 <= n0)
          int64_t j = 0;
          for (; j + 16 <= n1; j += 16) split_columns2(line + 2 * j, even + j, odd + j);
          if (j + 8 <= n1) {  // 8 of each (16x16 maps: 9-column phases)
            split_columns2_8(line + 2 * j, even + j, odd + j);
            j += 8;
          }
          split2 |= j > 0;
          for (int64_t k = j; k < n0; ++k) even[k] = line[2 * k];  // (no store past a row)
          for (int64_t k = j; k < n1; ++k) odd[k] = line[2 * k + 1];
        } else if (sw != 1) {
          for (int64_t px = 0; px < sw; ++px) {
            int8_t* dst = phases + ((py * sw + px) * hq + i) * wq;
            for (int64_t j = 0; px + j * sw < wp; ++j) dst[j] = line[px + j * sw];
          }
        }
      }
      const int32_t* wc = wt + ch * kh * kw;
      if (kh * kw <= DW_TAPS && e.wide) {  // two taps a vpmaddwd, 32 outputs in registers
        dw_taps_512(phases, tap_at, wc, kh * kw, span, acc);
      } else if (kh * kw <= DW_TAPS) {  // two taps a vpmaddwd, 16 outputs in registers
        dw_taps(phases, tap_at, wc, kh * kw, span, acc);
      } else {
        for (int64_t i = 0; i < span; ++i) acc[i] = 0;
        for (int64_t ky = 0; ky < kh; ++ky) {
          const int64_t ry = ky * dh;
          for (int64_t kx = 0; kx < kw; ++kx) {
            const int64_t cx = kx * dw;
            const int32_t wv = wc[ky * kw + kx];
            const int8_t* src =
                phases + (((ry % sh) * sw + cx % sw) * hq + ry / sh) * wq + cx / sw;
            for (int64_t i = 0; i < span; ++i) acc[i] += wv * (int32_t)src[i];
          }
        }
      }
      if (wq != ow)  // drop the grid's extra columns: [oh][wq] -> [oh][ow]
        for (int64_t oy = 1; oy < oh; ++oy) memmove(acc + oy * ow, acc + oy * wq, ow * 4);
      write_channel(e, ch, acc, pix, t * pix);
    }
    if (split2) split_seen.store(true, std::memory_order_relaxed);
  }, nb * c * pix * kh * kw);
  if (split_seen.load(std::memory_order_relaxed))
    EDGECC_COUNT(dw_split2_calls, 1);
  return 0;
}
"""
