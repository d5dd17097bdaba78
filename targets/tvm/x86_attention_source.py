"""C++ source of the x86 transformer float kernels (``x86_attention``): fused attention,
layer norm (with the residual add before it) and GELU (erf and tanh forms), each with an
optional int8 quantize written by the same pass (the w8a8 build's activation quantize).

One fixed text (no per-model code): shapes, strides and modes come in a small int64 ``meta``
tensor, float parameters (scale, epsilon, quantization) in a float32 one. Exported with TVM
FFI's C ABI (``__tvm_ffi_<name>``, destination passing: outputs are the last arguments) and
run on TVM's thread pool through the shared prelude (``x86_kernel_ffi``).

Attention, one task per (batch, head, block of query rows); the block's scores never leave
the thread's L1/L2 scratch::

    Kᵀ, V of (b, h) packed once per task run: kt[D][Sk'], vp[Sk][Dv']   (' = padded to W)
    S = Q_blk · kt                      register-blocked FMA tile (6 rows x up to 4 vectors)
    s = S * scale + mask[b, h, i, :]    (the graph's two roundings: multiply, then add)
    p = exp(s - max) / Σ exp(s - max)   (a row of -inf only: NaN, as softmax gives)
    O_blk = p · vp  -> out[b, h, i, :]  (any strides: the [B, S, H, D] layout of the linear
                                         that follows, without a transpose); rows whose
                                         ``keep`` is false are written as zeros

Vector math (both ISAs; error against float64, asserted by tests/targets/tvm/
test_x86_attention.py): exp = Cephes' range reduction + degree-6 polynomial (<= 2e-7
relative), erf and tanh = Eigen's rational approximations (the ones TVM's fast_erf /
fast_tanh use: <= 1e-6 absolute). The quantize epilogue is the graph's
``clip(round_half_even(y / scale) + zp, lo, hi)`` with a true division, so it is the integer
the TVM kernel writes for the same ``y``.

AVX-512 (16 lanes) or AVX2 + FMA (8 lanes), picked by cpuid / xgetbv;
``EDGECC_X86_ATTN_NO_AVX512=1`` in the environment at the call forces the AVX2 path (the
tests run both; ``edgecc_x86_attention_lanes()`` says which one a call takes).
"""

from edgecc.targets.tvm.x86_kernel_ffi import ffi_prelude

SYMBOLS = ("edgecc_x86_attention", "edgecc_x86_layernorm", "edgecc_x86_gelu")

# the ISA-independent kernels, compiled once per ISA namespace (V = one vector of W floats)
_BODY = r"""
static inline int64_t round_up(int64_t n, int64_t m) { return (n + m - 1) / m * m; }

// e^x: Cephes' expf (clamped to [-88.38, 88.38]; 2^n built in the exponent bits)
static inline V vexp(V x) {
  x = vmax(vmin(x, vset1(88.3762626647950f)), vset1(-88.3762626647949f));
  V n = vfloor(vfma(x, vset1(1.44269504088896341f), vset1(0.5f)));
  V r = vsub(x, vmul(n, vset1(0.693359375f)));
  r = vsub(r, vmul(n, vset1(-2.12194440e-4f)));
  V p = vset1(1.9875691500E-4f);
  p = vfma(p, r, vset1(1.3981999507E-3f));
  p = vfma(p, r, vset1(8.3334519073E-3f));
  p = vfma(p, r, vset1(4.1665795894E-2f));
  p = vfma(p, r, vset1(1.6666665459E-1f));
  p = vfma(p, r, vset1(5.0000001201E-1f));
  p = vfma(p, vmul(r, r), vadd(r, vset1(1.0f)));
  return vmul(p, vpow2(n));
}

// erf(x): Eigen's rational approximation on [-4, 4] (+-1 outside in float32)
static inline V verf(V x) {
  x = vmax(vmin(x, vset1(4.0f)), vset1(-4.0f));
  const V x2 = vmul(x, x);
  V p = vfma(x2, vset1(-2.72614225801306e-10f), vset1(2.77068142495902e-08f));
  p = vfma(x2, p, vset1(-2.10102402082508e-06f));
  p = vfma(x2, p, vset1(-5.69250639462346e-05f));
  p = vfma(x2, p, vset1(-7.34990630326855e-04f));
  p = vfma(x2, p, vset1(-2.95459980854025e-03f));
  p = vfma(x2, p, vset1(-1.60960333262415e-02f));
  p = vmul(x, p);
  V q = vfma(x2, vset1(-1.45660718464996e-05f), vset1(-2.13374055278905e-04f));
  q = vfma(x2, q, vset1(-1.68282697438203e-03f));
  q = vfma(x2, q, vset1(-7.37332916720468e-03f));
  q = vfma(x2, q, vset1(-1.42647390514189e-02f));
  return vdiv(p, q);
}

// tanh(x): Eigen's rational approximation on [-9, 9] (+-1 outside in float32)
static inline V vtanh(V x) {
  x = vmax(vmin(x, vset1(9.0f)), vset1(-9.0f));
  const V x2 = vmul(x, x);
  V p = vfma(x2, vset1(-2.76076847742355e-16f), vset1(2.00018790482477e-13f));
  p = vfma(x2, p, vset1(-8.60467152213735e-11f));
  p = vfma(x2, p, vset1(5.12229709037114e-08f));
  p = vfma(x2, p, vset1(1.48572235717979e-05f));
  p = vfma(x2, p, vset1(6.37261928875436e-04f));
  p = vfma(x2, p, vset1(4.89352455891786e-03f));
  p = vmul(x, p);
  V q = vfma(x2, vset1(1.19825839466702e-06f), vset1(1.18534705686654e-04f));
  q = vfma(x2, q, vset1(2.26843463243900e-03f));
  q = vfma(x2, q, vset1(4.89352518554385e-03f));
  return vdiv(p, q);
}

// the graph's activation quantize: clip(round_half_even(y / s) + zp, lo, hi)
struct Quant { float scale, zp, lo, hi; };
static inline V vquant(V y, const Quant& q) {
  V t = vadd(vrint(vdiv(y, vset1(q.scale))), vset1(q.zp));
  return vmax(vmin(t, vset1(q.hi)), vset1(q.lo));
}

// ---- small GEMM: C[m][ncols] = A[m][k] . B[k][ncols] (ncols a multiple of W) -------------
template <int MR, int NV>
static void tile(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t k,
                 float* c, int64_t ldc) {
  V acc[MR][NV];
  for (int r = 0; r < MR; ++r)
    for (int q = 0; q < NV; ++q) acc[r][q] = vzero();
  for (int64_t kk = 0; kk < k; ++kk) {
    V bv[NV];
    for (int q = 0; q < NV; ++q) bv[q] = vload(b + kk * ldb + q * W);
    for (int r = 0; r < MR; ++r) {
      const V av = vset1(a[r * lda + kk]);
      for (int q = 0; q < NV; ++q) acc[r][q] = vfma(av, bv[q], acc[r][q]);
    }
  }
  for (int r = 0; r < MR; ++r)
    for (int q = 0; q < NV; ++q) vstore(c + r * ldc + q * W, acc[r][q]);
}

typedef void (*TileFn)(const float*, int64_t, const float*, int64_t, int64_t, float*, int64_t);

template <int MR>
static TileFn tile_nv(int nv) {
  switch (nv) {  // (AVX2: NVX = 2, never 3 or 4)
    case 1: return tile<MR, 1>;
    case 2: return tile<MR, 2>;
    case 3: return tile<MR, NVX < 3 ? NVX : 3>;
    default: return tile<MR, NVX>;
  }
}

static TileFn pick_tile(int mr, int nv) {
  switch (mr) {
    case 1: return tile_nv<1>(nv);
    case 2: return tile_nv<2>(nv);
    case 3: return tile_nv<3>(nv);
    case 4: return tile_nv<4>(nv);
    case 5: return tile_nv<5>(nv);
    default: return tile_nv<6>(nv);
  }
}

static void small_gemm(const float* a, int64_t lda, const float* b, int64_t ldb, int64_t k,
                       float* c, int64_t ldc, int64_t m, int64_t ncols) {
  for (int64_t c0 = 0; c0 < ncols; c0 += NVX * W) {
    const int nv = (ncols - c0) / W < NVX ? (int)((ncols - c0) / W) : NVX;
    for (int64_t r = 0; r < m; r += 6) {  // 6 rows x up to 4 zmm / 2 ymm accumulators
      const int mr = m - r < 6 ? (int)(m - r) : 6;
      pick_tile(mr, nv)(a + r * lda, lda, b + c0, ldb, k, c + r * ldc + c0, ldc);
    }
  }
}

// ---- attention ----------------------------------------------------------------------------
struct Attn {
  const float *q, *k, *v, *mask;
  const uint8_t* keep;
  float* out;     // or null
  int8_t* qout;   // or null: the quantized output, same strides
  Quant quant;
  int64_t B, H, Sq, Sk, D, Dv;
  int64_t qs[3], ks[3], vs[3], os[3], ms[3], cs[3];  // (batch, head, row) strides
  float scale;
  int64_t chunk, nchunks;
};

// one row of scores -> probabilities, in place (columns [sk, skp) are padding)
static void softmax_row(float* s, int64_t sk, int64_t skp, const float* mrow, float scale) {
  const V vs = vset1(scale);
  V mx = vset1(-__builtin_inff());
  for (int64_t j = 0; j < skp; j += W) {
    V x = vmul(vload(s + j), vs);
    if (mrow) x = vadd(x, j + W <= sk ? vload(mrow + j) : vloadn(mrow + j, (int)(sk - j)));
    vstore(s + j, x);
  }
  for (int64_t j = sk; j < skp; ++j) s[j] = -__builtin_inff();
  for (int64_t j = 0; j < skp; j += W) mx = vmax(mx, vload(s + j));
  const float m = vhmax(mx);
  if (m == -__builtin_inff()) {  // every key masked: softmax is NaN (0/0), as the graph's
    for (int64_t j = 0; j < skp; ++j) s[j] = __builtin_nanf("");
    return;
  }
  V sum = vzero();
  const V vm = vset1(m);
  for (int64_t j = 0; j < skp; j += W) {
    const V e = vexp(vsub(vload(s + j), vm));
    vstore(s + j, e);
    sum = vadd(sum, e);
  }
  const V total = vset1(vhsum(sum));
  for (int64_t j = 0; j < skp; j += W) vstore(s + j, vdiv(vload(s + j), total));
}

static void attention_tasks(const Attn& a, int64_t t0, int64_t t1) {
  const int64_t skp = round_up(a.Sk, W), dvp = round_up(a.Dv, W);
  float* kt = static_cast<float*>(scratch(0, a.D * skp * 4 + 64));
  float* vp = static_cast<float*>(scratch(1, a.Sk * dvp * 4 + 64));
  float* sp = static_cast<float*>(scratch(2, a.chunk * skp * 4 + 64));
  float* ob = static_cast<float*>(scratch(3, a.chunk * dvp * 4 + 64));
  int64_t packed = -1;
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t bh = t / a.nchunks, ch = t % a.nchunks, b = bh / a.H, h = bh % a.H;
    if (packed != bh) {
      const float* k = a.k + b * a.ks[0] + h * a.ks[1];
      for (int64_t d = 0; d < a.D; ++d)
        for (int64_t j = a.Sk; j < skp; ++j) kt[d * skp + j] = 0.0f;
      for (int64_t j = 0; j < a.Sk; ++j)
        for (int64_t d = 0; d < a.D; ++d) kt[d * skp + j] = k[j * a.ks[2] + d];
      const float* v = a.v + b * a.vs[0] + h * a.vs[1];
      for (int64_t j = 0; j < a.Sk; ++j) {
        memcpy(vp + j * dvp, v + j * a.vs[2], a.Dv * 4);
        for (int64_t d = a.Dv; d < dvp; ++d) vp[j * dvp + d] = 0.0f;
      }
      packed = bh;
    }
    const int64_t i0 = ch * a.chunk;
    const int64_t m = a.Sq - i0 < a.chunk ? a.Sq - i0 : a.chunk;
    small_gemm(a.q + b * a.qs[0] + h * a.qs[1] + i0 * a.qs[2], a.qs[2], kt, skp, a.D, sp, skp,
               m, skp);
    for (int64_t r = 0; r < m; ++r) {
      const float* mrow = a.mask ? a.mask + b * a.ms[0] + h * a.ms[1] + (i0 + r) * a.ms[2] : 0;
      softmax_row(sp + r * skp, a.Sk, skp, mrow, a.scale);
    }
    small_gemm(sp, skp, vp, dvp, a.Sk, ob, dvp, m, dvp);
    for (int64_t r = 0; r < m; ++r) {
      const int64_t at = b * a.os[0] + h * a.os[1] + (i0 + r) * a.os[2];
      const bool keep = !a.keep || a.keep[b * a.cs[0] + h * a.cs[1] + (i0 + r) * a.cs[2]];
      const float* src = ob + r * dvp;
      if (!keep) {  // zeros (and their quantized value)
        memset(ob + r * dvp, 0, dvp * 4);
      }
      if (a.out) memcpy(a.out + at, src, a.Dv * 4);
      if (a.qout)
        for (int64_t j = 0; j < a.Dv; j += W)
          vstore_i8(a.qout + at + j, vquant(vload(src + j), a.quant),
                    a.Dv - j < W ? (int)(a.Dv - j) : W);
    }
  }
}

// ---- element-wise tails: float and / or int8 outputs ---------------------------------------
struct Outs { float* f; int8_t* q; Quant quant; };

static inline void put(const Outs& o, int64_t i, V y, int n) {
  if (o.f) { if (n == W) vstore(o.f + i, y); else vstoren(o.f + i, y, n); }
  if (o.q) vstore_i8(o.q + i, vquant(y, o.quant), n);
}

// ---- layer norm over the last axis (optionally of x + res; the sum may be an output) -----
struct Norm {
  const float *x, *res, *gamma, *beta;
  float* sum_out;
  Outs out;
  int64_t n;
  float eps;
};

static void norm_rows(const Norm& c, int64_t r0, int64_t r1) {
  float* tmp = static_cast<float*>(scratch(4, c.n * 4 + 64));
  for (int64_t r = r0; r < r1; ++r) {
    const float* x = c.x + r * c.n;
    const float* h = x;
    if (c.res) {  // h = x + res (the graph's add), kept for the two passes
      float* dst = c.sum_out ? c.sum_out + r * c.n : tmp;
      const float* y = c.res + r * c.n;
      int64_t j = 0;
      for (; j + W <= c.n; j += W) vstore(dst + j, vadd(vload(x + j), vload(y + j)));
      for (; j < c.n; ++j) dst[j] = x[j] + y[j];
      h = dst;
    }
    V acc = vzero();
    float tail = 0.0f;
    int64_t j = 0;
    for (; j + W <= c.n; j += W) acc = vadd(acc, vload(h + j));
    for (; j < c.n; ++j) tail += h[j];
    const float mean = (vhsum(acc) + tail) / (float)c.n;
    const V vm = vset1(mean);
    acc = vzero();
    tail = 0.0f;
    for (j = 0; j + W <= c.n; j += W) {
      const V d = vsub(vload(h + j), vm);
      acc = vfma(d, d, acc);
    }
    for (; j < c.n; ++j) tail += (h[j] - mean) * (h[j] - mean);
    const float var = (vhsum(acc) + tail) / (float)c.n;
    const V inv = vset1(1.0f / sqrtf(var + c.eps));
    Outs o = c.out;
    if (o.f) o.f += r * c.n;
    if (o.q) o.q += r * c.n;
    for (j = 0; j < c.n; j += W) {
      const int n = c.n - j < W ? (int)(c.n - j) : W;
      const V hv = n == W ? vload(h + j) : vloadn(h + j, n);
      const V g = n == W ? vload(c.gamma + j) : vloadn(c.gamma + j, n);
      const V bt = n == W ? vload(c.beta + j) : vloadn(c.beta + j, n);
      put(o, j, vadd(vmul(vmul(vsub(hv, vm), inv), g), bt), n);
    }
  }
}

// ---- GELU: 0 = erf form x·(0.5 + erf(x·c1)·0.5); 1 = tanh form (x·0.5)·(1 + tanh((x +
// x·x·x·c2)·c1)), each in the graph's order of operations ---------------------------------
struct Gelu { const float* x; Outs out; int mode; float c1, c2; };

static void gelu_range(const Gelu& g, int64_t i0, int64_t i1) {
  const V c1 = vset1(g.c1), c2 = vset1(g.c2), half = vset1(0.5f), one = vset1(1.0f);
  for (int64_t i = i0; i < i1; i += W) {
    const int n = i1 - i < W ? (int)(i1 - i) : W;
    const V x = n == W ? vload(g.x + i) : vloadn(g.x + i, n);
    V y;
    if (g.mode == 0) {
      y = vmul(x, vadd(half, vmul(verf(vmul(x, c1)), half)));
    } else {
      const V inner = vmul(vadd(x, vmul(vmul(vmul(x, x), x), c2)), c1);
      y = vmul(vmul(x, half), vadd(vtanh(inner), one));
    }
    put(g.out, i, y, n);
  }
}
"""

_AVX512 = r"""
#pragma GCC push_options
#pragma GCC target("avx512f,avx512bw,avx512dq,avx512vl,avx2,fma")
namespace isa512 {
typedef __m512 V;
const int W = 16, NVX = 4;
static inline __mmask16 lanes(int n) { return (__mmask16)((1u << n) - 1); }
static inline V vload(const float* p) { return _mm512_loadu_ps(p); }
static inline V vloadn(const float* p, int n) { return _mm512_maskz_loadu_ps(lanes(n), p); }
static inline void vstore(float* p, V v) { _mm512_storeu_ps(p, v); }
static inline void vstoren(float* p, V v, int n) { _mm512_mask_storeu_ps(p, lanes(n), v); }
static inline V vset1(float f) { return _mm512_set1_ps(f); }
static inline V vzero() { return _mm512_setzero_ps(); }
static inline V vfma(V a, V b, V c) { return _mm512_fmadd_ps(a, b, c); }
static inline V vadd(V a, V b) { return _mm512_add_ps(a, b); }
static inline V vsub(V a, V b) { return _mm512_sub_ps(a, b); }
static inline V vmul(V a, V b) { return _mm512_mul_ps(a, b); }
static inline V vdiv(V a, V b) { return _mm512_div_ps(a, b); }
static inline V vmax(V a, V b) { return _mm512_max_ps(a, b); }
static inline V vmin(V a, V b) { return _mm512_min_ps(a, b); }
static inline float vhmax(V a) { return _mm512_reduce_max_ps(a); }
static inline float vhsum(V a) { return _mm512_reduce_add_ps(a); }
static inline V vfloor(V a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC); }
static inline V vrint(V a) { return _mm512_roundscale_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
static inline V vpow2(V n) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(
      _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
}
static inline void vstore_i8(int8_t* p, V v, int n) {  // v integral, within int8
  _mm_mask_storeu_epi8(p, lanes(n), _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(v)));
}
""" + _BODY + r"""
}  // namespace isa512
#pragma GCC pop_options
"""

_AVX2 = r"""
namespace isa256 {
typedef __m256 V;
const int W = 8, NVX = 2;
static inline __m256i lanes(int n) {
  return _mm256_cmpgt_epi32(_mm256_set1_epi32(n), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline V vload(const float* p) { return _mm256_loadu_ps(p); }
static inline V vloadn(const float* p, int n) { return _mm256_maskload_ps(p, lanes(n)); }
static inline void vstore(float* p, V v) { _mm256_storeu_ps(p, v); }
static inline void vstoren(float* p, V v, int n) { _mm256_maskstore_ps(p, lanes(n), v); }
static inline V vset1(float f) { return _mm256_set1_ps(f); }
static inline V vzero() { return _mm256_setzero_ps(); }
static inline V vfma(V a, V b, V c) { return _mm256_fmadd_ps(a, b, c); }
static inline V vadd(V a, V b) { return _mm256_add_ps(a, b); }
static inline V vsub(V a, V b) { return _mm256_sub_ps(a, b); }
static inline V vmul(V a, V b) { return _mm256_mul_ps(a, b); }
static inline V vdiv(V a, V b) { return _mm256_div_ps(a, b); }
static inline V vmax(V a, V b) { return _mm256_max_ps(a, b); }
static inline V vmin(V a, V b) { return _mm256_min_ps(a, b); }
static inline float vhmax(V a) {
  __m128 m = _mm_max_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  m = _mm_max_ps(m, _mm_movehl_ps(m, m));
  m = _mm_max_ss(m, _mm_shuffle_ps(m, m, 1));
  return _mm_cvtss_f32(m);
}
static inline float vhsum(V a) {
  __m128 s = _mm_add_ps(_mm256_castps256_ps128(a), _mm256_extractf128_ps(a, 1));
  s = _mm_add_ps(s, _mm_movehl_ps(s, s));
  s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
  return _mm_cvtss_f32(s);
}
static inline V vfloor(V a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEG_INF | _MM_FROUND_NO_EXC); }
static inline V vrint(V a) { return _mm256_round_ps(a, _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC); }
static inline V vpow2(V n) {
  return _mm256_castsi256_ps(_mm256_slli_epi32(
      _mm256_add_epi32(_mm256_cvtps_epi32(n), _mm256_set1_epi32(127)), 23));
}
static inline void vstore_i8(int8_t* p, V v, int n) {  // v integral, within int8
  const __m256i i = _mm256_cvtps_epi32(v);
  const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
  alignas(16) int8_t b[16];
  _mm_store_si128(reinterpret_cast<__m128i*>(b), _mm_packs_epi16(w, w));
  if (n == 8) memcpy(p, b, 8);
  else for (int j = 0; j < n; ++j) p[j] = b[j];
}
""" + _BODY + r"""
}  // namespace isa256
"""

SOURCE = r"""
// edgecc x86 transformer float kernels (targets/tvm/x86_attention_source.py)
#pragma GCC optimize("O3", "fp-contract=off")
#pragma GCC target("avx2,fma")  // the floor (x86_attention.supported); AVX-512 per namespace
#include <tvm/ffi/c_api.h>
#include <cpuid.h>
#include <immintrin.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

""" + ffi_prelude(1 << 15) + r"""

namespace {

static bool detect_avx512() {
  unsigned a, b, c, d;
  if (!__get_cpuid(1, &a, &b, &c, &d) || !(c & bit_OSXSAVE)) return false;
  unsigned lo, hi;
  __asm__("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
  if ((lo & 0xE6) != 0xE6) return false;  // XMM, YMM, opmask, ZMM state enabled by the OS
  if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
  const unsigned need = bit_AVX512F | bit_AVX512BW | bit_AVX512DQ | bit_AVX512VL;
  return (b & need) == need;
}
static const bool HAS_AVX512 = detect_avx512();
// read per call (a getenv is ~0.1 us), so one loaded library can run both paths (tests)
static bool use_avx512() { return HAS_AVX512 && getenv("EDGECC_X86_ATTN_NO_AVX512") == 0; }

""" + _AVX512 + _AVX2 + r"""

int bad_args(int got, int want, const char* what) {
  if (got == want) return 0;
  TVMFFIErrorSetRaisedFromCStr("ValueError", what);
  return 1;
}

static void set_none(TVMFFIAny* result) {
  result->type_index = kTVMFFINone; result->zero_padding = 0; result->v_int64 = 0;
}

template <class Q>
static Q quant_of(const float* f) { return Q{f[0], f[1], f[2], f[3]}; }

}  // namespace

extern "C" {

// out[b, h, i, :] = softmax(q[b, h, i, :] . k[b, h]ᵀ * scale + mask[b, h, i, :]) . v[b, h]
// args: q, k, v, mask (or any 1-element tensor), keep (uint8/bool, or any), meta = [B, H, Sq,
// Sk, D, Dv, has_mask, has_keep, then (batch, head, row) strides of q, k, v, out, mask, keep,
// then float_out, int8_out], fparams = [scale, qscale, qzp, qlo, qhi], then the outputs:
// y (float32), q(y) (int8), element strides (the last axis is contiguous in all)
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_attention(void*, const TVMFFIAny* args, int32_t num_args,
                                    TVMFFIAny* result) {
  const int64_t* meta = num_args >= 7 ? data<int64_t>(args, 5) : 0;
  const int outs = meta ? (int)(meta[26] + meta[27]) : 0;
  if (bad_args(num_args, 7 + outs, "edgecc x86 attention: wrong argument count")) return -1;
  set_none(result);
  const float* fp = data<float>(args, 6);
  const int64_t B = meta[0], H = meta[1], Sq = meta[2], Sk = meta[3], D = meta[4],
                Dv = meta[5];
  // rows per task: whole heads when there are enough of them for the pool, else split
  int64_t nchunks = 1;
  while (B * H * nchunks < 8 && (Sq + nchunks * 2 - 1) / (nchunks * 2) >= 16) nchunks *= 2;
  const int64_t chunk = (Sq + nchunks - 1) / nchunks;
  nchunks = (Sq + chunk - 1) / chunk;
  isa512::Attn a512;
  isa256::Attn a256;
  auto fill = [&](auto& a) {
    a.q = data<float>(args, 0); a.k = data<float>(args, 1); a.v = data<float>(args, 2);
    a.mask = meta[6] ? data<float>(args, 3) : 0;
    a.keep = meta[7] ? data<uint8_t>(args, 4) : 0;
    int slot = 7;
    a.out = meta[26] ? data<float>(args, slot++) : 0;
    a.qout = meta[27] ? data<int8_t>(args, slot++) : 0;
    a.quant = {fp[1], fp[2], fp[3], fp[4]};
    a.B = B; a.H = H; a.Sq = Sq; a.Sk = Sk; a.D = D; a.Dv = Dv;
    for (int i = 0; i < 3; ++i) {
      a.qs[i] = meta[8 + i]; a.ks[i] = meta[11 + i]; a.vs[i] = meta[14 + i];
      a.os[i] = meta[17 + i]; a.ms[i] = meta[20 + i]; a.cs[i] = meta[23 + i];
    }
    a.scale = fp[0]; a.chunk = chunk; a.nchunks = nchunks;
  };
  const int64_t work = B * H * Sq * Sk * (D + Dv);
  if (use_avx512()) {
    fill(a512);
    parallel_for(B * H * nchunks, [&](int64_t t0, int64_t t1) {
      isa512::attention_tasks(a512, t0, t1);
    }, work);
  } else {
    fill(a256);
    parallel_for(B * H * nchunks, [&](int64_t t0, int64_t t1) {
      isa256::attention_tasks(a256, t0, t1);
    }, work);
  }
  return 0;
}

// layer norm over the last axis of x (+ res), float and / or int8 outputs
// args: x, res (or any), gamma [N], beta [N], meta = [rows, N, has_res, sum_out, float_out,
// int8_out], fparams = [eps, qscale, qzp, qlo, qhi], then the outputs in that order:
// sum (x + res), y (float32), q(y) (int8)
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_layernorm(void*, const TVMFFIAny* args, int32_t num_args,
                                    TVMFFIAny* result) {
  const int64_t* meta = num_args >= 6 ? data<int64_t>(args, 4) : 0;
  const int outs = meta ? (int)(meta[3] + meta[4] + meta[5]) : 0;
  if (bad_args(num_args, 6 + outs, "edgecc x86 layer norm: wrong argument count")) return -1;
  set_none(result);
  const float* fp = data<float>(args, 5);
  const int64_t rows = meta[0], n = meta[1];
  int slot = 6;
  float* sum_out = meta[3] ? data<float>(args, slot++) : 0;
  float* fout = meta[4] ? data<float>(args, slot++) : 0;
  int8_t* qout = meta[5] ? data<int8_t>(args, slot++) : 0;
  const float* res = meta[2] ? data<float>(args, 1) : 0;
  const int64_t work = rows * n * 8;
  if (use_avx512()) {
    isa512::Norm c{data<float>(args, 0), res, data<float>(args, 2), data<float>(args, 3),
                   sum_out, {fout, qout, quant_of<isa512::Quant>(fp + 1)}, n, fp[0]};
    parallel_for(rows, [&](int64_t r0, int64_t r1) { isa512::norm_rows(c, r0, r1); }, work);
  } else {
    isa256::Norm c{data<float>(args, 0), res, data<float>(args, 2), data<float>(args, 3),
                   sum_out, {fout, qout, quant_of<isa256::Quant>(fp + 1)}, n, fp[0]};
    parallel_for(rows, [&](int64_t r0, int64_t r1) { isa256::norm_rows(c, r0, r1); }, work);
  }
  return 0;
}

// GELU (meta[1]: 0 erf form, 1 tanh form), float and / or int8 outputs
// args: x, meta = [n, mode, float_out, int8_out], fparams = [c1, c2, qscale, qzp, qlo, qhi],
// then the outputs: y (float32), q(y) (int8)
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_gelu(void*, const TVMFFIAny* args, int32_t num_args,
                               TVMFFIAny* result) {
  const int64_t* meta = num_args >= 3 ? data<int64_t>(args, 1) : 0;
  const int outs = meta ? (int)(meta[2] + meta[3]) : 0;
  if (bad_args(num_args, 3 + outs, "edgecc x86 gelu: wrong argument count")) return -1;
  set_none(result);
  const float* fp = data<float>(args, 2);
  const int64_t n = meta[0];
  int slot = 3;
  float* fout = meta[2] ? data<float>(args, slot++) : 0;
  int8_t* qout = meta[3] ? data<int8_t>(args, slot++) : 0;
  // blocks of 256 elements (a multiple of both vector widths)
  const int64_t blocks = (n + 255) / 256;
  const int mode = (int)meta[1];
  if (use_avx512()) {
    isa512::Gelu g{data<float>(args, 0), {fout, qout, quant_of<isa512::Quant>(fp + 2)}, mode,
                   fp[0], fp[1]};
    parallel_for(blocks, [&](int64_t b0, int64_t b1) {
      isa512::gelu_range(g, b0 * 256, b1 * 256 < n ? b1 * 256 : n);
    }, n * 16);
  } else {
    isa256::Gelu g{data<float>(args, 0), {fout, qout, quant_of<isa256::Quant>(fp + 2)}, mode,
                   fp[0], fp[1]};
    parallel_for(blocks, [&](int64_t b0, int64_t b1) {
      isa256::gelu_range(g, b0 * 256, b1 * 256 < n ? b1 * 256 : n);
    }, n * 16);
  }
  return 0;
}

// which vector path this process runs: 16 (AVX-512) or 8 (AVX2) lanes
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_attention_lanes(void*, const TVMFFIAny*, int32_t, TVMFFIAny* result) {
  result->type_index = kTVMFFIInt; result->zero_padding = 0; result->v_int64 = use_avx512() ? 16 : 8;
  return 0;
}

}  // extern "C"
"""

LANES_QUERY = "edgecc_x86_attention_lanes"
EXPORTED = (*SYMBOLS, LANES_QUERY)
