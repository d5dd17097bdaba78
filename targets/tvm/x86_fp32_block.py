"""C fragment of the x86 float32 kernels (spliced into ``x86_fp32_expand_dw.SOURCE``): a whole
inverted residual block — expand 1x1, depthwise 3x3, project 1x1 (+ the residual add) — in one
``edgecc_x86_sexpdw`` call of 14 arguments (15 with the residual), on bands of output rows, so
neither the expand's output nor the depthwise's goes through memory (MobileNetV2-224's
12 -> 72 -> 12 @224: the unfused project read the depthwise's 14.4 MB back from DRAM).

    args: x, W1 [E][C], b1, meta1, bounds1, W2 [E][9], b2, meta2, bounds2,
          W3 [P][E], b3, meta3 (sconv's 15), bounds3, (residual [N][P][OH][OW],) out

Each pool item is a band of ``edgecc_x86_fp32_block_rows`` output rows, run in steps of
``edgecc_x86_fp32_block_step`` rows. A step: for each 12-channel chunk of the expansion, the
expand's output of the step's input rows into a chunk buffer (the rows the previous step
already expanded — 2 at stride 1, 1 at stride 2 — copied from a per-band carry instead of
computed again), its depthwise into a step buffer ``[E][step rows x OW]``; then the project
GEMM reads that buffer in place (koff = k x its channel stride) and writes the step's output
rows (+ residual, clamp). Per thread: chunk buffer + carry + step buffer, 0.75 MB for
12 -> 72 -> 12 @224 at 8-row steps (L2 is 1 MB on Zen 4). Bands recompute their 2 (stride 2:
1) halo rows of the expand only at band edges.

Same sums, bit for bit: the expand and the project are the GEMM micro-kernel reading their
inputs in place (taps in k order from zero, one rounding per FMA, + bias (+ residual), clamp
in the write-back) — per output element the same operations as ``sconv``'s 1x1 — and the
depthwise the same row kernels as the fused pair (``x86_fp32_expand_dw``). The tests compare
with the three kernels called in turn (``array_equal``).

The expand may be a stem instead (MobileNetV2's first block: a same-size 3x3 conv of at most
``STEM_MAX_K`` taps, rows a multiple of 16 wide): its panels are im2col'd from the unpadded
input (``rows_panel_unpadded``), all its channels one chunk (E <= 24), then the same steps —
the same sums as ``sconv``'s direct paths, bit for bit (tested).

Rows of any width: the expand's panels are 16 consecutive pixels of the map from the step's
first row (a panel may span two rows: a 1x1 reads pixels, not rows), the last one masked at the
step's end; the map's last panels read from a zero-padded copy (no read past the input).

Eligible (else the fused pair then ``sconv`` through a whole intermediate, or, the expand
output under ``edgecc_x86_fp32_block_min_kib`` KiB, the three kernels in turn; the same sums):
AVX-512, ``edgecc_x86_fp32_block`` and ``edgecc_x86_fp32_expand_dw`` on, expand 1x1 stride 1
no padding, depthwise 3x3 pad 1 stride 1 or 2 (stride 2 on maps wider than 16), output rows at
most 1024 wide, the project 1x1 stride 1 no padding over the depthwise's output. Knobs (int32,
read per call): ``edgecc_x86_fp32_block`` 1 (0: the fallback), ``edgecc_x86_fp32_block_rows``
28, ``edgecc_x86_fp32_block_step`` 8, ``edgecc_x86_fp32_block_min_kib`` 0.
``edgecc_x86_fp32_block_calls`` (int64) counts the calls that ran the fused bands (the tests'
proof that they did).

Measured (bench/x86_fp32_knob.py, MobileNetV2-224, knob A/B in one build, interleaved, 100
rounds): ``edgecc_x86_fp32_block`` 1 vs 0 (the 224 blocks) 0.874x paired 1 thread CPU time
(load 4.4), 0.886x 2 threads wall (load 3.6); the 112 blocks too vs not (min_kib 0 vs 8192)
0.980x 1 thread, 0.971x 2 threads (load 4-5); the 56 blocks too 1.002x, the 28 blocks too
1.017x (1 thread, load 6: hence ``MIN_BYTES``); steps of 4 / 16 / 28 (whole bands) rows vs 8:
1.036x / 0.987x / ~0.97x 1 thread, 2 threads 16 / 28 vs 8: 1.067x / 1.055x (load 4). The
stem block (3 -> 16 -> 8 @224) vs the three kernels (min_kib 0 vs 4096): 0.962x paired 1
thread (load 3.4), 0.998x 2 threads (200 rounds, load 4.4). Whole model, the default build
(7 blocks: the stem's, 3 at 224, 3 at 112) vs ``FUSE_BLOCK`` off (bench/x86_fp32_block.py, two
builds, bit-identical outputs): 0.862x paired 2 threads (quartiles 0.81-0.93, 200 rounds, load
1.8-3.8), 0.841x 1 thread CPU time (0.82-0.89, 100 rounds, load 3.3). MobileNetV2-32's blocks
(all 15 fused, knob A/B): 1.02-1.23x slower at 2 threads (small maps: few bands to split, the
pool's handoffs saved do not pay for it): not fused (``MIN_BYTES``, ``STEM_MIN_BYTES``).
"""

SOURCE = r"""
// ---- expand 1x1 + depthwise 3x3 + project 1x1 (+ residual) on row bands ----------------
// (targets/tvm/x86_fp32_block.py)
// 1: the fused bands; 0: the fused pair, then the project through an intermediate
__attribute__((weak, visibility("default"))) int32_t edgecc_x86_fp32_block = 1;
__attribute__((weak, visibility("default"))) int32_t edgecc_x86_fp32_block_rows = 28;
__attribute__((weak, visibility("default"))) int32_t edgecc_x86_fp32_block_step = 8;
// blocks whose expand output is smaller than this many KiB run the three kernels in turn
__attribute__((weak, visibility("default"))) int32_t edgecc_x86_fp32_block_min_kib = 0;
// a stem expand (3x3) of at most this many taps (C * 9)
const int64_t STEM_MAX_K = 64;
// calls that ran the fused bands
__attribute__((weak, visibility("default"))) int64_t edgecc_x86_fp32_block_calls = 0;

// the fallback's intermediate (the scratch slots are the called kernels')
static float* block_mid(size_t bytes) {
  static thread_local float* buf = 0;
  static thread_local size_t size = 0;
  if (size < bytes) {
    free(buf);
    size = (bytes + 4095) / 4096 * 4096;
    buf = static_cast<float*>(aligned_alloc(64, size));
  }
  return buf;
}

static int expand_dw_project(const TVMFFIAny* args, int32_t num_args, TVMFFIAny* result) {
  set_none(result);
  const int64_t* m1 = data<int64_t>(args, 3);
  const int64_t* m2 = data<int64_t>(args, 7);
  const int64_t* m3 = data<int64_t>(args, 11);
  const int64_t nb = m1[0], c = m1[1], h = m1[2], w = m1[3], e = m1[4];
  const int64_t s = m2[6], oh = m2[12], ow = m2[13], pc = m3[4];
  const bool expand_1x1 = expand_is_1x1(m1, h, w);
  // a stem: a same-size 3x3 of few input channels, its panels built from the unpadded input
  const bool expand_3x3 = m1[5] == 3 && m1[6] == 3 && m1[7] == 1 && m1[8] == 1 && m1[9] == 1
                          && m1[10] == 1 && m1[11] == 1 && m1[12] == 1 && m1[13] == h
                          && m1[14] == w && w % 16 == 0 && c * 9 <= STEM_MAX_K;
  const int64_t k1 = expand_3x3 ? c * 9 : c;  // the expand's taps
  const bool dw_3x3 = dw_is_3x3(m2, e, h, w, s);
  const bool project_1x1 = m3[0] == nb && m3[1] == e && m3[2] == oh && m3[3] == ow
                           && m3[5] == 1 && m3[6] == 1 && m3[7] == 1 && m3[8] == 1
                           && m3[9] == 0 && m3[10] == 0 && m3[13] == oh && m3[14] == ow;
  const int64_t band = edgecc_x86_fp32_block_rows;
  const int64_t sub = edgecc_x86_fp32_block_step > 0 && edgecc_x86_fp32_block_step < band
                      ? edgecc_x86_fp32_block_step : band;
  const float* residual = num_args == 15 ? data<float>(args, 13) : 0;
  float* out = data<float>(args, num_args - 1);
  const bool small = e * h * w * 4 < ((int64_t)edgecc_x86_fp32_block_min_kib << 10);
  if (!(AVX512 && edgecc_x86_fp32_block && edgecc_x86_fp32_expand_dw
        && (expand_1x1 || expand_3x3) && dw_3x3
        && project_1x1 && ow <= 16 * DW_STEPS && band >= 1 && !small)) {
    // the fused pair (or its own fallback; small: the expand and the depthwise) into an
    // intermediate, then the project
    int64_t shape1[4] = {nb, e, h, w}, shape2[4] = {nb, e, oh, ow};
    float* buf = block_mid((nb * e * oh * ow + (small || expand_3x3 ? nb * e * h * w : 0)) * 4
                           + 128);
    DLTensor mid[2];
    const TVMFFIAny midarg[2] = {float_tensor_arg(mid[0], buf + nb * e * oh * ow + 16, shape1),
                                 float_tensor_arg(mid[1], buf, shape2)};
    if (small || expand_3x3) {  // the expand (or the stem) into mid[0], its depthwise into mid[1]
      TVMFFIAny a0[6] = {args[0], args[1], args[2], args[3], args[4], midarg[0]};
      TVMFFIAny a1[6] = {midarg[0], args[5], args[6], args[7], args[8], midarg[1]};
      if (__tvm_ffi_edgecc_x86_sconv(0, a0, 6, result)) return -1;
      if (__tvm_ffi_edgecc_x86_sdwconv(0, a1, 6, result)) return -1;
    } else {
      TVMFFIAny a1[10] = {args[0], args[1], args[2], args[3], args[4],
                          args[5], args[6], args[7], args[8], midarg[1]};
      if (__tvm_ffi_edgecc_x86_sexpdw(0, a1, 10, result)) return -1;
    }
    TVMFFIAny a2[7] = {midarg[1], args[9], args[10], args[11], args[12], args[13], args[13]};
    if (num_args == 15) a2[6] = args[14];
    return __tvm_ffi_edgecc_x86_sconv(0, a2, num_args - 8, result);
  }
  ++edgecc_x86_fp32_block_calls;
  const float* x = data<float>(args, 0);
  const float* w1 = data<float>(args, 1);
  const float* b1 = data<float>(args, 2);
  const float* bounds1 = data<float>(args, 4);
  const float* w2 = data<float>(args, 5);
  const float* b2 = data<float>(args, 6);
  const float* bounds2 = data<float>(args, 8);
  const float* w3 = data<float>(args, 9);
  const float* b3 = data<float>(args, 10);
  const float* bounds3 = data<float>(args, 12);
  const int64_t pix = h * w, opix = oh * ow;
  const int64_t max_rows = (sub - 1) * s + 3;            // input rows of a step, at most
  const int64_t keep_max = 3 - s;                        // rows a step shares with the next
  const int64_t ldb = max_rows * w + 16;                 // chunk buffer: channel stride
  // expand channels per chunk: a stem's all (its panels built once per step)
  const int64_t chunk = expand_3x3 && e <= 2 * EXPAND_DW_CHUNK ? e : EXPAND_DW_CHUNK;
  const int64_t ldd = (sub * ow + 15) / 16 * 16 + 16;    // step buffer: channel stride
  const int64_t buf_floats = chunk * ldb + e * keep_max * w + e * ldd + 2 * k1 * 16 + 64;
  // tap offsets: the expand's (input channels of x), then the project's (the step buffer)
  int64_t* koff = static_cast<int64_t*>(scratch(2, (c + e + 1) * sizeof(int64_t)));
  for (int64_t ci = 0; ci < c; ++ci) koff[ci] = ci * pix;
  for (int64_t k = 0; k < e; ++k) koff[c + k] = k * ldd;
  const int64_t* koff3 = koff + c;
  const int64_t bands = (oh + band - 1) / band;
  const int s2_rows = dw_s2_rows();
  Depthwise d = dw3x3_at(bounds2, s, ow);
  for (int64_t n = 0; n < nb; ++n) {
    const float* src = x + n * c * pix;
    float* dst = out + n * pc * opix;
    const float* res = residual ? residual + n * pc * opix : 0;
    const Unpadded u{src, c, h, w, 3, 3, 1, 1, 1, 1, 1, w, pix};  // a stem's panels
    parallel_for(bands, [&](int64_t i0, int64_t i1) {
      float* cb = static_cast<float*>(scratch(0, buf_floats * 4));
      float* carry = cb + chunk * ldb;                   // [E][keep_max][w]
      float* db = carry + e * keep_max * w;              // [E][ldd]
      float* tail = db + e * ldd;  // [2][K][16]: the map's last panels (1x1), a stem's panels
      for (int64_t bi = i0; bi < i1; ++bi) {
        const int64_t y0 = bi * band, y1 = y0 + band < oh ? y0 + band : oh;
        int64_t kept = 0;  // rows at the top of this step's input the carry holds
        for (int64_t ya = y0; ya < y1; ya += sub) {
          const int64_t yb = ya + sub < y1 ? ya + sub : y1;
          const int64_t ra = ya * s - 1 > 0 ? ya * s - 1 : 0;
          const int64_t rb = (yb - 1) * s + 2 < h ? (yb - 1) * s + 2 : h;
          // the next step's first input row: the rows [rn, rb) go to the carry
          const int64_t rn = yb < y1 ? yb * s - 1 : rb;
          const int64_t ph = ya == 0 ? 1 : 0;  // the map's top padding: the first rows only
          for (int64_t e0 = 0; e0 < e; e0 += chunk) {
            const int64_t e1 = e0 + chunk < e ? e0 + chunk : e;
            for (int64_t ch = e0; ch < e1; ++ch)
              if (kept) memcpy(cb + (ch - e0) * ldb, carry + ch * keep_max * w, kept * w * 4);
            // the expand's channels [e0, e1) of input rows [ra + kept, rb): column j of the
            // GEMM is pixel j of the map, row ch at cb + (ch - e0) * ldb + (pixel - ra * w)
            // (panels of 16 pixels from the first row's start, the last one masked at rb: rows
            // of any width; panels past the map's end read from a zero-padded copy)
            const int64_t q1 = rb * w;
            Gemm g{w1, k1, 0, k1, b1, 1, bounds1[0], bounds1[1], cb - e0 * ldb - ra * w, ldb, e,
                   q1, 0};
            for (int64_t q = (ra + kept) * w; expand_3x3 && q < q1; q += 32) {
              const int np = q + 16 < q1 ? 2 : 1;  // (q: a multiple of 16, w is)
              for (int j = 0; j < np; ++j) rows_panel_unpadded<1>(tail + j * k1 * 16, u, q / 16 + j);
              Panels pb{{tail, tail + k1 * 16}, 0};
              gemm_rows<false>(g, e0, e1, pb, np, q);
            }
            for (int64_t q = (ra + kept) * w; !expand_3x3 && q < q1; q += 32) {
              const int np = q + 16 < q1 ? 2 : 1;
              if (q + 16 * np <= pix) {
                Panels pb{{src + q, src + q + 16}, koff, 0};
                gemm_rows<true>(g, e0, e1, pb, np, q);
                continue;
              }
              for (int j = 0; j < np; ++j)
                for (int64_t ci = 0; ci < c; ++ci) {
                  float* t = tail + (j * c + ci) * 16;
                  const int64_t q0 = q + 16 * j, n = pix - q0 < 16 ? pix - q0 : 16;
                  for (int64_t i = 0; i < 16; ++i) t[i] = i < n ? src[ci * pix + q0 + i] : 0.0f;
                }
              Panels pb{{tail, tail + c * 16}, 0};
              gemm_rows<false>(g, e0, e1, pb, np, q);
            }
            Depthwise t = d;
            t.oh = yb - ya; t.ld = w;
            for (int64_t ch = e0; ch < e1; ++ch) {
              const float* plane = cb + (ch - e0) * ldb;
              t.src = plane; t.w = w2 + ch * 9; t.b = b2[ch];
              t.out = db + ch * ldd;
              if (s == 2) dw3x3_s2_wide(t, rb - ra, w, ph, s2_rows, 0);
              else dw3x3_rows<1>(t, rb - ra, w, ph, 1);
              if (rn < rb) memcpy(carry + ch * keep_max * w, plane + (rn - ra) * w, (rb - rn) * w * 4);
            }
          }
          kept = rb - rn;
          // the project of the step's output rows, reading the step buffer in place
          const int64_t cols = (yb - ya) * ow;
          Gemm gp{w3, e, 0, e, b3, 1, bounds3[0], bounds3[1], dst + ya * ow, opix, pc, cols,
                  res ? res + ya * ow : 0};
          for (int64_t p = 0, pe = (cols + 15) / 16; p < pe; p += 2) {
            Panels pb{{db + p * 16, db + p * 16 + 16}, koff3, 0};
            gemm_rows<true>(gp, 0, pc, pb, p + 2 <= pe ? 2 : 1, p * 16);
          }
        }
      }
    }, e * pix * (c + 9) + pc * e * opix);
  }
  return 0;
}
"""

# the build fuses a block whose expand output is at least this many bytes (x86_fp32._blocks;
# ``edgecc_x86_fp32_block_min_kib`` moves the line up at run time): MobileNetV2-224's blocks at
# 224 and 112 (16 -> 96 @112: 4.8 MB), not those at 56 / 28 (module docstring)
MIN_BYTES = 4 << 20
# a stem expand (3x3, at most STEM_MAX_K taps) fuses from this many bytes of output
# (MobileNetV2-224's 3 -> 16 @224: 3.2 MB; not MobileNetV2-32's 64 KB)
STEM_MIN_BYTES = 2 << 20
STEM_MAX_K = 64  # the kernel's STEM_MAX_K


def eligible(expand_weight_shape, expand_attrs: dict, dw_weight_shape, dw_attrs: dict) -> bool:
    """Whether an expand conv (no residual) feeding a depthwise 3x3 (its only user) can start a
    whole block's call (the project checked by the caller): the fused pair's rule at
    ``MIN_BYTES`` on rows of any width, or a stem — a same-size 3x3 of at most ``STEM_MAX_K``
    taps, rows a multiple of 16 wide, at least ``STEM_MIN_BYTES`` of output — before the
    pair's depthwise rule."""
    from edgecc.targets.tvm import x86_fp32_expand_dw

    if x86_fp32_expand_dw.eligible(expand_weight_shape, expand_attrs, dw_weight_shape, dw_attrs,
                                   MIN_BYTES, any_width=True):
        return True
    e, c, kh, kw = expand_weight_shape
    _, _, h, w = expand_attrs["x"]
    stem = ((kh, kw) == (3, 3) and c * 9 <= STEM_MAX_K and expand_attrs["stride"] == [1, 1]
            and expand_attrs["pad"] == [1, 1] and expand_attrs["dilation"] == [1, 1]
            and list(expand_attrs["y"][2:]) == [h, w] and w % 16 == 0
            and e * h * w * 4 >= STEM_MIN_BYTES)
    as_1x1 = dict(expand_attrs, pad=[0, 0])  # the pair's depthwise rule on the same map
    return stem and x86_fp32_expand_dw.eligible((e, c, 1, 1), as_1x1, dw_weight_shape, dw_attrs,
                                                0, any_width=True)
