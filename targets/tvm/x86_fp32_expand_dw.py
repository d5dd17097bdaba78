"""C fragment of the x86 float32 kernels (spliced into ``x86_fp32_source.SOURCE``): an inverted
residual block's expand 1x1 convolution and the depthwise 3x3 after it in one call,
``edgecc_x86_sexpdw`` (PATH_EXPAND_DW), on bands of output rows: each pool item computes the
expand's output for a chunk of its channels (``EXPAND_DW_CHUNK``, 12: one micro-tile) over the
input rows the band's depthwise reads into a per-thread buffer (``scratch(0)``, tens to a few
hundred KiB: it stays in L2), then runs the depthwise of those channels on it, writing the
band's output rows. The expand's output (MobileNetV2-224's 12 -> 72 @224: 14.4 MB) never goes
through memory: the unfused pair wrote it and read it back (through L3 at best).

    args: x, W1 [E][C], b1 [E], meta1 (sconv's 15), bounds1,
          W2 [E][9], b2 [E], meta2 (sdwconv's 14), bounds2, out

(14 or 15 arguments: the block's project 1x1 (+ residual) too, ``x86_fp32_block``.)

Rows of the band: the depthwise's input rows [r0, r1) of output rows [y0, y1) (stride 1:
y0 - 1 .. y1, stride 2: 2 y0 - 1 .. 2 y1 - 1, clipped to the map); the buffer is those rows of
the chunk's channels, and the depthwise kernels read it as a plane of ``r1 - r0`` rows whose
top padding is 1 at the map's first band, 0 after (``iy = oy * S + ky - ph``: the rows outside
[0, ih) are the map's padding, skipped as before). Rows a band shares with the next are computed
by both (halo: 2 / R of the expand's work for R-row bands at stride 1).

Same sums, bit for bit: the expand is the GEMM micro-kernel over the same panels (16 input
pixels in place, taps in k order, one rounding per FMA, + bias and the clamp in the
write-back) and the depthwise the same row-block kernels (``x86_fp32_dws1`` /
``x86_fp32_dws2``, or the one-row form on rows wider than 256), on the same values: the tests
compare the fused call with the unfused pair (``array_equal``).

Eligible (else the call runs the two kernels in turn through a whole intermediate in
``scratch(4)``, the same sums): AVX-512, the knob on, expand 1x1 stride 1 no padding, depthwise
3x3 pad 1 stride 1 or 2 (both directions; stride 2 on maps wider than 16), rows a multiple of
16 wide (every panel of a band is 16 pixels of one run of the input) and at most 1024 wide.

Knobs (int32, read per call, for the tests' A/B and ``--tune``): ``edgecc_x86_fp32_expand_dw``
1 (0: the unfused pair through the scratch intermediate), ``edgecc_x86_fp32_expand_dw_rows``
output rows per band (28), ``edgecc_x86_fp32_expand_dw_step`` output rows per step inside a
band (its rows expanded just before their depthwise; 0, the default: the whole band at once),
``edgecc_x86_fp32_expand_dw_stream`` 12: the stride-1 depthwise of outputs of at least this
many MiB writes its full, 64-byte aligned output vectors with non-temporal stores
(``dw3x3_rows<1, true>``: no read-for-ownership of the lines it overwrites; a perf profile had
~30% of the depthwise's samples at its stores), so MobileNetV2-224's 72 @224 (14.4 MB) but
not its 48 @224 (9.6 MB: its next 1x1, reading it from DRAM, lost more than the stores won);
0: cached stores always (the same values; at 112 x 112, 4.8 MB, streamed stores were 1.16x
slower, 1.4x with the next 1x1). Whole MobileNetV2-224, 1 thread CPU time, knob A/B
interleaved, 40 rounds, load 6-7, two runs: 12 vs 0 0.926x / 0.994x, 12 vs 8 0.972x / 0.980x.

The build (``x86_fp32.FUSE_EXPAND_DW``, ``eligible``) fuses pairs whose expand output is at
least ``MIN_BYTES`` (8 MiB: MobileNetV2-224's 8 -> 48 and two 12 -> 72 @224, one stride 2).
Measured per layer (1 thread CPU time, min of 25 interleaved rounds, load ~5.7): 12 -> 72 @224
stride 1 0.85x of the pair, stride 2 0.74x, 8 -> 48 @224 0.79x (28-row bands; 16 / 56 / 112
rows within a few %, steps of 2-4 rows 1.05-1.3x slower); 16 -> 96 @112 (4.8 MB) 0.95-1.08x
(hence ``MIN_BYTES``). Whole MobileNetV2-224, the fused build vs the unfused one
(bench/x86_fp32_expand_dw.py, bit-identical outputs), load 1.5-2: 2 threads wall 0.914x paired
(quartiles 0.81-1.12, 400 repeats; 56-row bands 1.037x), 1 thread CPU time 0.929x (0.92-0.95). The depthwise on a band is ``x86_fp32_dwrows``' 8-row blocks at stride
1 (from L2 they do not lose as the 224-wide planes from memory did), ``x86_fp32_dws2``'s at 2.
"""

from edgecc.targets.tvm.x86_fp32_block import SOURCE as BLOCK_SOURCE

SOURCE = r"""
// ---- expand 1x1 + depthwise 3x3 on row bands (targets/tvm/x86_fp32_expand_dw.py) --------
// 1: the fused bands (PATH_EXPAND_DW); 0: the expand and the depthwise in turn (the same sums)
__attribute__((weak, visibility("default"))) int32_t edgecc_x86_fp32_expand_dw = 1;
// output rows per band (>= 1)
__attribute__((weak, visibility("default"))) int32_t edgecc_x86_fp32_expand_dw_rows = 28;
// output rows per step inside a band (its input rows expanded just before); 0: the whole band
__attribute__((weak, visibility("default"))) int32_t edgecc_x86_fp32_expand_dw_step = 0;
// the stride-1 depthwise of outputs of at least this many MiB streams its stores; 0: never
__attribute__((weak, visibility("default"))) int32_t edgecc_x86_fp32_expand_dw_stream = 12;
const int64_t EXPAND_DW_CHUNK = 12;  // expand channels per item: one micro-tile's rows

int __tvm_ffi_edgecc_x86_sconv(void*, const TVMFFIAny* args, int32_t num_args, TVMFFIAny* result);
int __tvm_ffi_edgecc_x86_sdwconv(void*, const TVMFFIAny* args, int32_t num_args,
                                  TVMFFIAny* result);

static int expand_dw_project(const TVMFFIAny* args, int32_t num_args, TVMFFIAny* result);

// shared by the pair and the whole block (x86_fp32_block): the expand a unit-stride 1x1 over
// the whole h x w map (m: the sconv call's meta), the depthwise a 3x3 of e channels at
// stride s (1, or 2 on maps wider than 16) with unit dilation (m: the sdwconv call's meta)
static inline bool expand_is_1x1(const int64_t* m, int64_t h, int64_t w) {
  return m[5] == 1 && m[6] == 1 && m[7] == 1 && m[8] == 1 && m[9] == 0 && m[10] == 0
         && m[13] == h && m[14] == w;
}
static inline bool dw_is_3x3(const int64_t* m, int64_t e, int64_t h, int64_t w, int64_t s) {
  return m[1] == e && m[2] == h && m[3] == w && m[4] == 3 && m[5] == 3 && m[7] == s
         && (s == 1 || (s == 2 && w > 16)) && m[8] == 1 && m[9] == 1 && m[10] == 1
         && m[11] == 1;
}
// an fp32 n x c x h x w tensor over ``data`` (``shape`` outlives the call) as a call argument
// (x86_fp32_block's too)
static inline TVMFFIAny float_tensor_arg(DLTensor& t, void* data, int64_t* shape) {
  return typed_tensor_arg(t, data, shape, 4, kDLFloat, 32);
}
// the depthwise 3x3's fixed fields (stride s, output width ow, clamp bounds) and its
// stride-2 rows per block (edgecc_x86_fp32_dw_s2_wide: 1 or 4, else 2)
static inline Depthwise dw3x3_at(const float* bounds, int64_t s, int64_t ow) {
  Depthwise d;
  d.lo = bounds[0]; d.hi = bounds[1];
  d.kh = 3; d.kw = 3; d.sh = s; d.sw = s; d.dh = 1; d.dw = 1; d.ow = ow;
  return d;
}
static inline int dw_s2_rows() {
  return edgecc_x86_fp32_dw_s2_wide == 1 || edgecc_x86_fp32_dw_s2_wide == 4
         ? edgecc_x86_fp32_dw_s2_wide : 2;
}

__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_sexpdw(void*, const TVMFFIAny* args, int32_t num_args,
                                 TVMFFIAny* result) {
  if (num_args == 14 || num_args == 15) return expand_dw_project(args, num_args, result);
  if (num_args != 10) {
    TVMFFIErrorSetRaisedFromCStr("ValueError", "edgecc_x86_sexpdw: expected 10, 14 or 15 arguments");
    return -1;
  }
  set_none(result);
  const int64_t* m1 = data<int64_t>(args, 3);
  const int64_t* m2 = data<int64_t>(args, 7);
  const int64_t nb = m1[0], c = m1[1], h = m1[2], w = m1[3], e = m1[4];
  const int64_t s = m2[6], oh = m2[12], ow = m2[13];
  const bool expand_1x1 = expand_is_1x1(m1, h, w), dw_3x3 = dw_is_3x3(m2, e, h, w, s);
  const int64_t band = edgecc_x86_fp32_expand_dw_rows;
  const int64_t sub = edgecc_x86_fp32_expand_dw_step > 0 && edgecc_x86_fp32_expand_dw_step < band
                      ? edgecc_x86_fp32_expand_dw_step : band;
  if (!(AVX512 && edgecc_x86_fp32_expand_dw && expand_1x1 && dw_3x3 && w % 16 == 0
        && ow <= 16 * DW_STEPS && band >= 1)) {
    // the unfused pair through a whole intermediate (slot 4: neither kernel uses it here)
    int64_t shape[4] = {nb, e, h, w};
    DLTensor mid;
    const TVMFFIAny midarg = float_tensor_arg(mid, scratch(4, nb * e * h * w * 4 + 64), shape);
    TVMFFIAny a1[6] = {args[0], args[1], args[2], args[3], args[4], midarg};
    TVMFFIAny a2[6] = {midarg, args[5], args[6], args[7], args[8], args[9]};
    if (__tvm_ffi_edgecc_x86_sconv(0, a1, 6, result)) return -1;
    return __tvm_ffi_edgecc_x86_sdwconv(0, a2, 6, result);
  }
  ++path_calls[PATH_EXPAND_DW];
  const float* x = data<float>(args, 0);
  const float* w1 = data<float>(args, 1);
  const float* b1 = data<float>(args, 2);
  const float* bounds1 = data<float>(args, 4);
  const float* w2 = data<float>(args, 5);
  const float* b2 = data<float>(args, 6);
  const float* bounds2 = data<float>(args, 8);
  float* out = data<float>(args, 9);
  const int64_t pix = h * w, opix = oh * ow;
  // streamed stores only for outputs too large to stay in cache for the next layer (at 112 x
  // 112, 4.8 MB, they were slower: 1.16x the depthwise, 1.4x with the next 1x1 reading it)
  const bool stream = edgecc_x86_fp32_expand_dw_stream > 0
                     && e * opix * 4 >= ((int64_t)edgecc_x86_fp32_expand_dw_stream << 20);
  int64_t* koff = static_cast<int64_t*>(scratch(2, (c + 1) * sizeof(int64_t)));
  for (int64_t ci = 0; ci < c; ++ci) koff[ci] = ci * pix;
  const int64_t bands = (oh + band - 1) / band, chunks = (e + EXPAND_DW_CHUNK - 1) / EXPAND_DW_CHUNK;
  const int64_t max_rows = (band - 1) * s + 3;  // input rows of a band, at most
  const int s2_rows = dw_s2_rows();
  Depthwise d = dw3x3_at(bounds2, s, ow);
  for (int64_t n = 0; n < nb; ++n) {
    const float* src = x + n * c * pix;
    float* dst = out + n * e * opix;
    parallel_for(bands * chunks, [&](int64_t i0, int64_t i1) {
      float* buf = static_cast<float*>(scratch(0, EXPAND_DW_CHUNK * max_rows * w * 4 + 64));
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t bi = i / chunks, e0 = i % chunks * EXPAND_DW_CHUNK;
        const int64_t e1 = e0 + EXPAND_DW_CHUNK < e ? e0 + EXPAND_DW_CHUNK : e;
        const int64_t y0 = bi * band, y1 = y0 + band < oh ? y0 + band : oh;
        const int64_t r0 = y0 * s - 1 > 0 ? y0 * s - 1 : 0;
        const int64_t r1 = (y1 - 1) * s + 2 < h ? (y1 - 1) * s + 2 : h;
        const int64_t cols = (r1 - r0) * w;
        // the expand's channels [e0, e1) of input rows [r0, r1) go to buf [e1 - e0][cols]
        Gemm g{w1, c, 0, c, b1, 1, bounds1[0], bounds1[1], buf - e0 * cols, cols, e, cols, 0};
        int64_t done = r0;  // the buffer's rows [r0, done) hold the expand's output
        // steps of ``sub`` output rows: the rows they read expanded just before (still in L1 /
        // L2), then their depthwise, channel by channel
        for (int64_t ya = y0; ya < y1; ya += sub) {
          const int64_t yb = ya + sub < y1 ? ya + sub : y1;
          const int64_t ra = ya * s - 1 > 0 ? ya * s - 1 : 0;
          const int64_t rb = (yb - 1) * s + 2 < h ? (yb - 1) * s + 2 : h;
          for (int64_t p = (done - r0) * w / 16, pe = (rb - r0) * w / 16; p < pe; p += 2) {
            const float* base = src + r0 * w + p * 16;
            Panels pb{{base, base + 16}, koff, 0};
            gemm_rows<true>(g, e0, e1, pb, p + 2 <= pe ? 2 : 1, p * 16);
          }
          done = rb > done ? rb : done;
          const int64_t ph = ya == 0 ? 1 : 0;  // the map's top padding: the first rows only
          Depthwise t = d;
          t.oh = yb - ya;
          for (int64_t ch = e0; ch < e1; ++ch) {
            t.src = buf + (ch - e0) * cols + (ra - r0) * w; t.ld = w;
            t.w = w2 + ch * 9; t.b = b2[ch];
            t.out = dst + ch * opix + ya * ow;
            if (s == 2) dw3x3_s2_wide(t, rb - ra, w, ph, s2_rows, 0);
            else if (stream) dw3x3_rows<1, true>(t, rb - ra, w, ph, 1);
            else dw3x3_rows<1>(t, rb - ra, w, ph, 1);
          }
        }
      }
      _mm_sfence();  // the streamed stores before the pool's join
    }, e * pix * (c + 9));
  }
  return 0;
}
""" + BLOCK_SOURCE + r"""
"""

SYMBOL = "edgecc_x86_sexpdw"
# the build fuses a pair whose expand output is at least this many bytes (smaller ones stay in
# cache between the two calls anyway)
MIN_BYTES = 8 << 20


def eligible(expand_weight_shape, expand_attrs: dict, dw_weight_shape, dw_attrs: dict,
             min_bytes: int | None = None, any_width: bool = False) -> bool:
    """Whether an expand 1x1 conv (no residual) feeding a depthwise 3x3 (its only user) of
    these weights / plan attrs (``x86_fp32._Plan.attrs``) can be one ``edgecc_x86_sexpdw`` call
    that runs the fused bands (the kernel's own rule, module docstring) on a map large enough
    (an expand output of at least ``min_bytes``, by default ``MIN_BYTES``); ``any_width``: rows
    of any width (the whole block's call, ``x86_fp32_block``, reads them so)."""
    e, _, kh, kw = expand_weight_shape
    nb, _, h, w = expand_attrs["x"]
    s = dw_attrs["stride"]
    return ((kh, kw) == (1, 1) and expand_attrs["stride"] == [1, 1]
            and expand_attrs["pad"] == [0, 0] and expand_attrs["dilation"] == [1, 1]
            and tuple(dw_weight_shape) == (e, 1, 3, 3) and dw_attrs["x"] == expand_attrs["y"]
            and s in ([1, 1], [2, 2]) and (s[0] == 1 or w > 16) and dw_attrs["pad"] == [1, 1]
            and dw_attrs["dilation"] == [1, 1] and (w % 16 == 0 or any_width) and w <= 1024
            and e * h * w * 4 >= (MIN_BYTES if min_bytes is None else min_bytes))
