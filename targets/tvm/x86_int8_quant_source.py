"""The activation quantize as an x86 int8 kernel (``edgecc_x86_quantize``), spliced into
``x86_int8_source.SOURCE``: the float32 -> int8 ``quantize`` the integer lowering leaves to
TVM — the model input's (before the first convolution) and a global mean's (MobileNetV2's
``mean((2, 3))`` before the classifier) — in one call that also takes the mean::

    Before: m = mean(x, (2, 3));  q = clip(round(m / s) + z, qmin, qmax)   # TVM, 1-2 kernels
    After:  q = edgecc_x86_quantize(x, meta = [rows, cols], [s, z, qmin, qmax])

``cols`` 1: every element quantized (the input); else each row's ``cols`` values summed in
order from 0.0f and divided by ``(float)cols`` — TVM's ``mean`` (``topi.sum`` over the axes
in order, then ``divide`` by the count) — then quantized as the Relax ``quantize`` (divide,
round half to even, add, clip; the fused write-back's ``post1`` / ``post16``), so the int8
values are identical. Why: TVM's generated mean ran one dependent add chain a channel (~5.4 us
for MobileNetV2-32's 640 x 4x4 at 1 thread on Zen 4, plus a pool launch at 2 threads), its
quantize of the 3x32x32 input ~3.5 us; here the rows' sums interleave 8 chains and the
quantize is 16 lanes a step. ``edgecc_x86_int8_quant_vector`` 0: the scalar loop a row (A/B,
the same values); counted by ``edgecc_x86_int8_quantize_calls``. C++ text only; the symbols
are exported by ``x86_int8_source``."""

QUANTIZE = "edgecc_x86_quantize"
QUANTIZE_CALLS = "edgecc_x86_int8_quantize_calls"  # () -> calls of edgecc_x86_quantize so far
QUANT_SYMBOLS = (QUANTIZE, QUANTIZE_CALLS)

QUANT_KERNELS = r"""
// ---- edgecc_x86_quantize (x86_int8_quant_source) ----
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_quant_vector = 1;
int64_t quantize_calls = 0;  // calls of edgecc_x86_quantize (a test's)

static inline int8_t quant1(float v, const float* qp) {  // the Relax quantize, one value
  float q = __builtin_nearbyintf(v / qp[0]) + qp[1];
  q = q < qp[2] ? qp[2] : (q > qp[3] ? qp[3] : q);
  return (int8_t)(int32_t)q;
}

// y[i] = quant(x[i]) for i < n, 16 lanes a step (the tail masked)
__attribute__((target("avx2,fma,avx512f,avx512bw")))
static void quant_512(const float* x, int8_t* y, int64_t n, const float* qp) {
  const __m512 qs = _mm512_set1_ps(qp[0]), qz = _mm512_set1_ps(qp[1]);
  const __m512 lo = _mm512_set1_ps(qp[2]), hi = _mm512_set1_ps(qp[3]);
  for (int64_t i = 0; i < n; i += 16) {
    const __mmask16 m = n - i >= 16 ? (__mmask16)0xffff : (__mmask16)((1u << (n - i)) - 1);
    __m512 q = _mm512_roundscale_ps(_mm512_div_ps(_mm512_maskz_loadu_ps(m, x + i), qs),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    q = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(q, qz), lo), hi);
    _mm512_mask_cvtsepi32_storeu_epi8(y + i, m, _mm512_cvtps_epi32(q));
  }
}

// rows [r0, r1): each row's mean (sum from 0.0f in order, / cols) into m[r - r0], 8 rows'
// chains interleaved (the same order a row: only the rows overlap)
static void row_means(const float* x, int64_t r0, int64_t r1, int64_t cols, float* m) {
  const float n = (float)cols;
  int64_t r = r0;
  for (; r + 8 <= r1; r += 8) {
    float s[8] = {0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f, 0.0f};
    const float* p = x + r * cols;
    for (int64_t j = 0; j < cols; ++j)
      for (int k = 0; k < 8; ++k) s[k] = s[k] + p[k * cols + j];
    for (int k = 0; k < 8; ++k) m[r - r0 + k] = s[k] / n;
  }
  for (; r < r1; ++r) {
    float s = 0.0f;
    for (int64_t j = 0; j < cols; ++j) s = s + x[r * cols + j];
    m[r - r0] = s / n;
  }
}

// x float32 (rows x cols), meta int64 [rows, cols], qp float32 [s, z, qmin, qmax], y int8 [rows]
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_quantize(void*, const TVMFFIAny* args, int32_t num_args,
                                  TVMFFIAny* result) {
  result->type_index = kTVMFFINone; result->zero_padding = 0; result->v_int64 = 0;
  if (num_args != 4) {
    TVMFFIErrorSetRaisedFromCStr("ValueError", "edgecc_x86_quantize: 4 arguments");
    return -1;
  }
  const float* x = data<float>(args, 0);
  const int64_t* meta = data<int64_t>(args, 1);
  const float* qp = data<float>(args, 2);
  int8_t* y = data<int8_t>(args, 3);
  const int64_t rows = meta[0], cols = meta[1];
  const bool vec = edgecc_x86_int8_quant_vector && isa_level() == ISA_AVX512VNNI;
  EDGECC_COUNT(quantize_calls, 1);
  const int64_t chunk = 4096;  // rows a pool item (a 224x224 input: 37 items)
  parallel_for((rows + chunk - 1) / chunk, [&](int64_t i0, int64_t i1) {
    float means[256];
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t a = i * chunk, b = std::min(rows, a + chunk);
      if (cols == 1 && vec) { quant_512(x + a, y + a, b - a, qp); continue; }
      if (cols == 1) { for (int64_t r = a; r < b; ++r) y[r] = quant1(x[r], qp); continue; }
      for (int64_t r = a; r < b; r += 256) {
        const int64_t e = std::min(b, r + 256);
        if (vec) {
          row_means(x, r, e, cols, means);
          quant_512(means, y + r, e - r, qp);
        } else {
          for (int64_t q = r; q < e; ++q) {
            float s = 0.0f;
            for (int64_t j = 0; j < cols; ++j) s = s + x[q * cols + j];
            y[q] = quant1(s / (float)cols, qp);
          }
        }
      }
    }
  }, rows * cols);
  return 0;
}

// how many calls of edgecc_x86_quantize in this process
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_int8_quantize_calls(void*, const TVMFFIAny*, int32_t,
                                             TVMFFIAny* result) {
  result->type_index = kTVMFFIInt; result->zero_padding = 0;
  result->v_int64 = __atomic_load_n(&quantize_calls, __ATOMIC_RELAXED);
  return 0;
}
"""
