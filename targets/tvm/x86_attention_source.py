"""C++ source of the x86 transformer float kernels (``x86_attention``): fused attention,
layer norm (with the residual add before it) and GELU (erf and tanh forms), each with an
optional int8 quantize written by the same pass (the w8a8 build's activation quantize).

One fixed text (no per-model code): shapes, strides and modes come in a small int64 ``meta``
tensor, float parameters (scale, epsilon, quantization) in a float32 one. Exported with TVM
FFI's C ABI (``__tvm_ffi_<name>``, destination passing: outputs are the last arguments) and
run on TVM's thread pool through the shared prelude (``x86_kernel_ffi``).

Attention, one task per (batch, head, block of query rows); each group of 6 query rows goes
from scores to output before the next, so its scores never leave L1::

    Kᵀ of (b, h) packed once per task run: kt[D][Sk'] (8x8 shuffle transposes; ' = padded
    to W); V read in place when Dv is a multiple of W (else a padded copy)
    per 6 rows: ext = the key columns any of them needs (past the last vector whose mask
                 is not -inf for some row, every p is exactly 0: a causal mask's upper
                 triangle, padding; they are skipped)
      S = Q_6 · kt[:, :ext]   register tile 6 rows x up to 4 vectors (AVX2: 2), write-back
                              s = S * scale + mask (the graph's two roundings), row max
      e = exp(s - max), Σ e   one pass over the 6 x ext tile; when ext fits one score tile
                              (AVX-512: <= 64 keys, MiniLM) straight from its registers
                              (edgecc_x86_attention_fuse_exp, bit-identical)
      O = (e · V) / Σ e       register tile 6 x Dv; the division in the write-back (not
                              per probability), straight into out[b, h, i, :] (any row
                              stride: the [B, S, H, D] layout of the linear that follows);
                              rows whose ``keep`` is false written as zeros; int8 too

Vector math (both ISAs; error against float64, asserted by tests/targets/tvm/
test_x86_attention.py): exp = Cephes' range reduction + degree-6 polynomial (<= 2e-7
relative; the softmax's with edgecc_x86_attention_fast_math = 1, off by default and not a
--tune candidate (an int8 build's next-layer input must stay the simulator's): vexp_nonpos, the same polynomial for x <= 0 in 13 operations, with the scale +
mask in one fma and 1 / Σ e multiplied: MiniLM's attention 0.958x, ~0.3% of the model;
outputs within 2e-6 of the largest of the default's, asserted), erf and tanh = Eigen's rational approximations (the ones TVM's fast_erf /
fast_tanh use: <= 1e-6 absolute). The quantize epilogue is the graph's
``clip(round_half_even(y / scale) + zp, lo, hi)`` with a true division, so it is the integer
the TVM kernel writes for the same ``y``.

AVX-512 (16 lanes) or AVX2 + FMA (8 lanes), picked by cpuid / xgetbv;
``EDGECC_X86_ATTN_NO_AVX512=1`` in the environment at the call forces the AVX2 path (the
tests run both; ``edgecc_x86_attention_lanes()`` says which one a call takes).
``edgecc_x86_attention_paths(i)`` counts attention calls reading V in place (0) / through the
padded copy (1), the key vectors skipped (2) and the row groups whose exp ran in the score
tile (9): the tests' proof that nothing fell back.
"""

from edgecc.targets.tvm import x86_linear_source
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

// e^x for the softmax's x = s - max <= 0 (or -inf), edgecc_x86_attention_fast_math = 1: clamped
// below at ln(FLT_MIN) (so 2^n stays normal: -inf and anything under -87.34 give ~1.2e-38,
// not 0 — nothing next to the row's maximum, whose p is 1), n = rint(x·log2 e), r = x - n·ln 2
// in two fused steps, Cephes' degree-7 polynomial in Horner form, times 2^n (AVX-512: one
// scalef, the same bits as the multiply). 13 vector operations to vexp's 20; <= 2e-7 relative
// (tests/targets/tvm/test_x86_attention.py asserts 1e-6, against float64)
static inline V vexp_nonpos(V x) {
  x = vmax(x, vset1(-87.33654475f));
  const V n = vrint(vmul(x, vset1(1.44269504088896341f)));
  V r = vfma(n, vset1(-0.693359375f), x);
  r = vfma(n, vset1(2.12194440e-4f), r);
  V p = vset1(1.9875691500E-4f);
  p = vfma(p, r, vset1(1.3981999507E-3f));
  p = vfma(p, r, vset1(8.3334519073E-3f));
  p = vfma(p, r, vset1(4.1665795894E-2f));
  p = vfma(p, r, vset1(1.6666665459E-1f));
  p = vfma(p, r, vset1(5.0000001201E-1f));
  p = vfma(p, r, vset1(1.0f));
  p = vfma(p, r, vset1(1.0f));
  return vscale2(p, n);
}

// the softmax's exp of x <= 0: edgecc_x86_attention_fast_math 1 (vexp_nonpos) or 0 (vexp)
static inline V vexp_softmax(V x, bool fast) { return fast ? vexp_nonpos(x) : vexp(x); }

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
  int64_t prefetch;  // edgecc_x86_attention_prefetch at the call
  int64_t fuse_exp;  // edgecc_x86_attention_fuse_exp at the call
  bool fast_math;    // edgecc_x86_attention_fast_math == 1 at the call (vexp_nonpos, ...)
};

// dst[c * ld + r] = src[r * ls + c] for an 8 x 8 block (AVX2 shuffles, both ISAs)
static inline void transpose8(const float* src, int64_t ls, float* dst, int64_t ld) {
  __m256 r[8], t[8];
  for (int i = 0; i < 8; ++i) r[i] = _mm256_loadu_ps(src + i * ls);
  for (int i = 0; i < 8; i += 2) {
    t[i] = _mm256_unpacklo_ps(r[i], r[i + 1]);
    t[i + 1] = _mm256_unpackhi_ps(r[i], r[i + 1]);
  }
  for (int i = 0; i < 8; i += 4) {
    r[i] = _mm256_shuffle_ps(t[i], t[i + 2], 0x44);
    r[i + 1] = _mm256_shuffle_ps(t[i], t[i + 2], 0xEE);
    r[i + 2] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0x44);
    r[i + 3] = _mm256_shuffle_ps(t[i + 1], t[i + 3], 0xEE);
  }
  for (int i = 0; i < 4; ++i) {
    _mm256_storeu_ps(dst + i * ld, _mm256_permute2f128_ps(r[i], r[i + 4], 0x20));
    _mm256_storeu_ps(dst + (i + 4) * ld, _mm256_permute2f128_ps(r[i], r[i + 4], 0x31));
  }
}

// Kᵀ of one (batch, head), packed: kt[d * ldk + j] = k[j * ks + d], zeros for j in [sk, ldk)
static void pack_kt(const float* k, int64_t ks, int64_t sk, int64_t dd, float* kt,
                    int64_t ldk) {
  const int64_t j8 = sk / 8 * 8, d8 = dd / 8 * 8;
  for (int64_t j = 0; j < j8; j += 8)
    for (int64_t d = 0; d < d8; d += 8) transpose8(k + j * ks + d, ks, kt + d * ldk + j, ldk);
  for (int64_t j = 0; j < j8; ++j)
    for (int64_t d = d8; d < dd; ++d) kt[d * ldk + j] = k[j * ks + d];
  for (int64_t d = 0; d < dd; ++d) {
    for (int64_t j = j8; j < sk; ++j) kt[d * ldk + j] = k[j * ks + d];
    for (int64_t j = sk; j < ldk; ++j) kt[d * ldk + j] = 0.0f;
  }
}

// what one (batch, head) reads and writes, at its first query row
struct Head {
  const float *q, *kt, *v, *mask;  // v: [Sk][ldv] (the input itself, or a padded copy)
  const uint8_t* keep;
  float* out;
  int8_t* qout;
  int64_t ldq, ldk, ldv, ldm, ldc, ldo;
};

// (every loop over the tiles' rows / vectors unrolled: GCC otherwise kept qk_tile's 6 x 4
// accumulators in memory, zeroed, spilled and reloaded per call — 0.89x of MiniLM's
// attention time unrolled, 1 thread, same operations: bit-identical)
#define UNROLL _Pragma("GCC unroll 24")
// scores of MR rows x the NV vectors of columns from c0: s = (q · Kᵀ) * scale + mask (the
// graph's two roundings), lanes past the last key -inf; each row's maximum into mx[r].
// EXP (the tile holds every key column a row needs, c0 = 0: its maximum is final): the
// softmax's p = exp(s - max) and Σ p computed from the registers and p written to s instead
// (the same operations in the same order as rows' separate pass: bit-identical; no store and
// reload of s, no second loop); sum[r] as that pass sets it
template <int MR, int NV, bool EXP>
static void qk_tile(const Attn& a, const Head& h, int64_t c0, float* s, int64_t lds,
                    float* mx, float* sum) {
  V acc[MR][NV];
  UNROLL for (int r = 0; r < MR; ++r)
    UNROLL for (int c = 0; c < NV; ++c) acc[r][c] = vzero();
  const float* b = h.kt + c0;
  for (int64_t kk = 0; kk < a.D; ++kk) {
    V bv[NV];
    UNROLL for (int c = 0; c < NV; ++c) bv[c] = vload(b + kk * h.ldk + c * W);
    UNROLL for (int r = 0; r < MR; ++r) {
      const V av = vset1(h.q[r * h.ldq + kk]);
      UNROLL for (int c = 0; c < NV; ++c) acc[r][c] = vfma(av, bv[c], acc[r][c]);
    }
  }
  const V vs = vset1(a.scale), ninf = vset1(-__builtin_inff());
  UNROLL for (int r = 0; r < MR; ++r) {
    V m = ninf;
    UNROLL for (int c = 0; c < NV; ++c) {
      const int64_t j = c0 + c * W;
      const int n = a.Sk - j < W ? (int)(a.Sk - j) : W;
      V x;
      if (h.mask) {  // fast_math: one rounding (fma), else the graph's two
        const float* mrow = h.mask + r * h.ldm + j;
        const V mv = n == W ? vload(mrow) : vloadn(mrow, n);
        x = a.fast_math ? vfma(acc[r][c], vs, mv) : vadd(vmul(acc[r][c], vs), mv);
      } else {
        x = vmul(acc[r][c], vs);
      }
      if (n < W) x = vfill(x, n, ninf);
      if (EXP) acc[r][c] = x; else vstore(s + r * lds + j, x);
      m = vmax(m, x);
    }
    const float t = vhmax(m);
    if (t > mx[r]) mx[r] = t;
    if (EXP) {  // rows' pass, from the registers
      float* row = s + r * lds + c0;
      if (mx[r] == -__builtin_inff()) {  // every key masked: softmax's 0/0, NaN
        UNROLL for (int c = 0; c < NV; ++c) vstore(row + c * W, vzero());
        sum[r] = __builtin_nanf("");
        continue;
      }
      const V vm = vset1(mx[r]);
      V e_sum = vzero();
      UNROLL for (int c = 0; c < NV; ++c) {
        const V e = vexp_softmax(vsub(acc[r][c], vm), a.fast_math);
        vstore(row + c * W, e);
        e_sum = vadd(e_sum, e);
      }
      sum[r] = vhsum(e_sum);
    }
  }
}

// o = (p · V)[MR rows, the NV vectors of columns from c0] / sum, written (float and / or
// int8) to the output rows; rows whose keep is false as zeros
template <int MR, int NV>
static void pv_tile(const Attn& a, const Head& h, const float* p, int64_t ldp, int64_t kend,
                    int64_t c0, const float* sum, const bool* keep) {
  V acc[MR][NV];
  UNROLL for (int r = 0; r < MR; ++r)
    UNROLL for (int c = 0; c < NV; ++c) acc[r][c] = vzero();
  const float* b = h.v + c0;
  for (int64_t kk = 0; kk < kend; ++kk) {
    V bv[NV];
    UNROLL for (int c = 0; c < NV; ++c) bv[c] = vload(b + kk * h.ldv + c * W);
    UNROLL for (int r = 0; r < MR; ++r) {
      const V av = vset1(p[r * ldp + kk]);
      UNROLL for (int c = 0; c < NV; ++c) acc[r][c] = vfma(av, bv[c], acc[r][c]);
    }
  }
  UNROLL for (int r = 0; r < MR; ++r) {
    const V total = vset1(sum[r]), inv = vset1(1.0f / sum[r]);
    UNROLL for (int c = 0; c < NV; ++c) {
      const int64_t j = c0 + c * W;
      if (j >= a.Dv) continue;  // (no break: the loop unrolls, acc stays in registers)
      const int n = a.Dv - j < W ? (int)(a.Dv - j) : W;
      // fast_math: times 1 / Σ (one division per row; <= 1.5 ulp more), else divided by it
      const V y = !keep[r] ? vzero() : a.fast_math ? vmul(acc[r][c], inv) : vdiv(acc[r][c], total);
      if (h.out) {
        if (n == W) vstore(h.out + r * h.ldo + j, y); else vstoren(h.out + r * h.ldo + j, y, n);
      }
      if (h.qout) vstore_i8(h.qout + r * h.ldo + j, vquant(y, a.quant), n);
    }
  }
}

#undef UNROLL

typedef void (*QkFn)(const Attn&, const Head&, int64_t, float*, int64_t, float*, float*);
typedef void (*PvFn)(const Attn&, const Head&, const float*, int64_t, int64_t, int64_t,
                     const float*, const bool*);

template <int MR, bool EXP>
static QkFn qk_nv(int nv) {
  switch (nv) {  // (AVX2: NVX = 2, never 3 or 4)
    case 1: return qk_tile<MR, 1, EXP>;
    case 2: return qk_tile<MR, 2, EXP>;
    case 3: return qk_tile<MR, NVX < 3 ? NVX : 3, EXP>;
    default: return qk_tile<MR, NVX, EXP>;
  }
}

template <int MR>
static PvFn pv_nv(int nv) {
  switch (nv) {
    case 1: return pv_tile<MR, 1>;
    case 2: return pv_tile<MR, 2>;
    case 3: return pv_tile<MR, NVX < 3 ? NVX : 3>;
    default: return pv_tile<MR, NVX>;
  }
}

// the key columns [0, end) a row needs: past the last vector holding an unmasked key, every
// key is -inf for it (a causal mask's upper triangle, padding), so exp gives exactly 0 there
static int64_t row_keys(const Attn& a, const float* mrow) {  // (a multiple of W)
  const V ninf = vset1(-__builtin_inff());
  for (int64_t j = round_up(a.Sk, W) - W; j >= 0; j -= W) {
    const int n = a.Sk - j < W ? (int)(a.Sk - j) : W;
    if (vany_ne(n == W ? vload(mrow + j) : vloadn(mrow + j, n), ninf, n)) return j + W;
  }
  return 0;
}

// MR (<= 6) query rows of one head, start to finish: scores, softmax, p · V, write-back;
// the rows' scores stay in s (MR x ldk floats, L1)
template <int MR>
static int64_t rows(const Attn& a, const Head& h, float* s, int64_t* fused) {
  // -> key vectors skipped; *fused counts the groups whose exp ran in qk_tile
  const int64_t skp = h.ldk;
  int64_t ext = h.mask ? 0 : skp;
  for (int r = 0; r < MR && h.mask; ++r) {
    const int64_t e = row_keys(a, h.mask + r * h.ldm);
    if (e > ext) ext = e;
  }
  float mx[MR], sum[MR];
  bool keep[MR];
  for (int r = 0; r < MR; ++r) {
    mx[r] = -__builtin_inff();
    keep[r] = !h.keep || h.keep[r * h.ldc];
  }
  if (a.fuse_exp && ext > 0 && ext <= NVX * W) {  // one tile: p and Σ p from its registers
    qk_nv<MR, true>((int)(ext / W))(a, h, 0, s, skp, mx, sum);
    ++*fused;
  } else {
  for (int64_t c0 = 0; c0 < ext; c0 += NVX * W) {
    const int nv = (ext - c0) / W < NVX ? (int)((ext - c0) / W) : NVX;
    qk_nv<MR, false>(nv)(a, h, c0, s, skp, mx, sum);
  }
  for (int r = 0; r < MR; ++r) {  // p = exp(s - max), unnormalized; the sum divides o
    float* row = s + r * skp;
    if (mx[r] == -__builtin_inff()) {  // every key masked: softmax's 0/0, NaN
      for (int64_t j = 0; j < ext; j += W) vstore(row + j, vzero());
      sum[r] = __builtin_nanf("");
      continue;
    }
    const V vm = vset1(mx[r]);
    V acc = vzero();
    for (int64_t j = 0; j < ext; j += W) {
      const V e = vexp_softmax(vsub(vload(row + j), vm), a.fast_math);
      vstore(row + j, e);
      acc = vadd(acc, e);
    }
    sum[r] = vhsum(acc);
  }
  }
  const int64_t kend = ext < a.Sk ? ext : a.Sk;
  for (int64_t c0 = 0; c0 < a.Dv; c0 += NVX * W) {
    const int64_t left = (round_up(a.Dv, W) - c0) / W;
    pv_nv<MR>(left < NVX ? (int)left : NVX)(a, h, s, skp, kend, c0, sum, keep);
  }
  return (skp - ext) / W;
}

typedef int64_t (*RowsFn)(const Attn&, const Head&, float*, int64_t*);
static RowsFn pick_rows(int64_t m) {
  switch (m) {
    case 1: return rows<1>;
    case 2: return rows<2>;
    case 3: return rows<3>;
    case 4: return rows<4>;
    case 5: return rows<5>;
    default: return rows<6>;
  }
}

// rows [r0, r1) of n floats, ``stride`` apart, into L1 (a prefetch per 64-byte line)
static inline void prefetch_rows(const float* p, int64_t stride, int64_t r0, int64_t r1,
                                 int64_t n) {
  for (int64_t r = r0; r < r1; ++r)
    for (int64_t d = 0; d < n; d += 16)
      _mm_prefetch(reinterpret_cast<const char*>(p + r * stride + d), _MM_HINT_T0);
}

static void attention_tasks(const Attn& a, int64_t t0, int64_t t1) {
  const int64_t skp = round_up(a.Sk, W), dvp = round_up(a.Dv, W);
  const bool copy_v = a.Dv % W != 0;  // else V is read in place (its rows are contiguous)
  float* kt = static_cast<float*>(scratch(0, a.D * skp * 4 + 64));
  float* vp = copy_v ? static_cast<float*>(scratch(1, a.Sk * dvp * 4 + 64)) : 0;
  float* sp = static_cast<float*>(scratch(2, 6 * skp * 4 + 64));
  int64_t packed = -1, skipped = 0, prefetched = 0, fused = 0;
  Head h;
  for (int64_t t = t0; t < t1; ++t) {
    const int64_t bh = t / a.nchunks, ch = t % a.nchunks, b = bh / a.H, hd = bh % a.H;
    const float* v = a.v + b * a.vs[0] + hd * a.vs[1];
    if (packed != bh) {
      pack_kt(a.k + b * a.ks[0] + hd * a.ks[1], a.ks[2], a.Sk, a.D, kt, skp);
      if (copy_v)
        for (int64_t j = 0; j < a.Sk; ++j) {
          for (int64_t d = 0; d < a.Dv; ++d) vp[j * dvp + d] = v[j * a.vs[2] + d];
          for (int64_t d = a.Dv; d < dvp; ++d) vp[j * dvp + d] = 0.0f;
        }
      packed = bh;
    }
    const int64_t i0 = ch * a.chunk;
    const int64_t i1 = a.Sq - i0 < a.chunk ? a.Sq : i0 + a.chunk;
    h.kt = kt; h.ldk = skp;
    h.v = copy_v ? vp : v; h.ldv = copy_v ? dvp : a.vs[2];
    h.ldq = a.qs[2]; h.ldm = a.ms[2]; h.ldc = a.cs[2]; h.ldo = a.os[2];
    // the next task's head: its q / k / v rows prefetched 6 by 6
    // while this head's groups of 6 run (edgecc_x86_attention_prefetch), so its K pack
    // and its q / V reads do not wait on L2 / L3 (the rows are D / Dv floats at a stride)
    const float *nq = 0, *nk = 0, *nv = 0;
    // (only with whole heads per task, MiniLM's 192 heads: the few heads split in chunks of
    // BERT / GPT-2 at 128 tokens measured 1.00-1.02x with it, in the noise)
    if (a.prefetch && a.nchunks == 1 && t + 1 < t1) {
      const int64_t nb = (t + 1) / a.H, nh = (t + 1) % a.H;
      nq = a.q + nb * a.qs[0] + nh * a.qs[1];
      nk = a.k + nb * a.ks[0] + nh * a.ks[1];
      nv = a.v + nb * a.vs[0] + nh * a.vs[1];
      ++prefetched;
    }
    const int64_t groups = (i1 - i0 + 5) / 6, qrows = a.Sq;
    int64_t kr = 0, qr = 0;  // next head's rows of k / v and of q prefetched so far
    for (int64_t i = i0; i < i1; i += 6) {
      if (nk) {
        const int64_t g = (i - i0) / 6 + 1;  // groups done after this one
        const int64_t kend = (a.Sk * g + groups - 1) / groups;
        const int64_t qend = (qrows * g + groups - 1) / groups;
        prefetch_rows(nk, a.ks[2], kr, kend, a.D);
        prefetch_rows(nv, a.vs[2], kr, kend, a.Dv);
        prefetch_rows(nq, a.qs[2], qr, qend, a.D);
        kr = kend;
        qr = qend;
      }
      h.q = a.q + b * a.qs[0] + hd * a.qs[1] + i * a.qs[2];
      h.mask = a.mask ? a.mask + b * a.ms[0] + hd * a.ms[1] + i * a.ms[2] : 0;
      h.keep = a.keep ? a.keep + b * a.cs[0] + hd * a.cs[1] + i * a.cs[2] : 0;
      const int64_t at = b * a.os[0] + hd * a.os[1] + i * a.os[2];
      h.out = a.out ? a.out + at : 0;
      h.qout = a.qout ? a.qout + at : 0;
      skipped += pick_rows(i1 - i)(a, h, sp, &fused);
    }
  }
  if (skipped) __atomic_fetch_add(&path_calls[PATH_KEYS_SKIPPED], skipped, __ATOMIC_RELAXED);
  if (prefetched)
    __atomic_fetch_add(&path_calls[PATH_ATTN_PREFETCHED], prefetched, __ATOMIC_RELAXED);
  if (fused) __atomic_fetch_add(&path_calls[PATH_ATTN_FUSED_EXP], fused, __ATOMIC_RELAXED);
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
static inline V vscale2(V p, V n) { return _mm512_scalef_ps(p, n); }  // p·2^n, n integral
static inline V vpow2(V n) {
  return _mm512_castsi512_ps(_mm512_slli_epi32(
      _mm512_add_epi32(_mm512_cvtps_epi32(n), _mm512_set1_epi32(127)), 23));
}
static inline V vfill(V x, int n, V f) { return _mm512_mask_mov_ps(f, lanes(n), x); }
static inline bool vany_ne(V x, V y, int n) {
  return (_mm512_cmp_ps_mask(x, y, _CMP_NEQ_UQ) & lanes(n)) != 0;
}
static inline void vstore_i8(int8_t* p, V v, int n) {  // v integral, within int8
  _mm_mask_storeu_epi8(p, lanes(n), _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(v)));
}
""" + _BODY + x86_linear_source.PACK512 + x86_linear_source.BODY + x86_linear_source.ITEMS + r"""
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
static inline V vscale2(V p, V n) { return vmul(p, vpow2(n)); }  // p·2^n, n in [-126, 127]
static inline V vfill(V x, int n, V f) {
  return _mm256_blendv_ps(f, x, _mm256_castsi256_ps(lanes(n)));
}
static inline bool vany_ne(V x, V y, int n) {
  return (_mm256_movemask_ps(_mm256_cmp_ps(x, y, _CMP_NEQ_UQ)) & ((1 << n) - 1)) != 0;
}
static inline void vstore_i8(int8_t* p, V v, int n) {  // v integral, within int8
  const __m256i i = _mm256_cvtps_epi32(v);
  const __m128i w = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
  alignas(16) int8_t b[16];
  _mm_store_si128(reinterpret_cast<__m128i*>(b), _mm_packs_epi16(w, w));
  if (n == 8) memcpy(p, b, 8);
  else for (int j = 0; j < n; ++j) p[j] = b[j];
}
""" + _BODY + x86_linear_source.PACK256 + x86_linear_source.BODY + x86_linear_source.ITEMS + r"""
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

}  // namespace

// edgecc_x86_linear: each pool task multiplies about this many bytes of panels by all its
// packed rows before the next (an L2-sized chunk: x86_linear_source.py); 0: every panel per
// 12-row block. A knob (the same sums either way: the tests' bit-for-bit A/B), int64
extern "C" __attribute__((weak, visibility("default")))
int64_t edgecc_x86_linear_panel_bytes = 256 * 1024;
// edgecc_x86_linear on 2+ threads: with fewer 12-row blocks than this, the columns are split
// too (pool items = blocks x splits >= this); 0: rows only. A knob (the same sums either
// way), int64
extern "C" __attribute__((weak, visibility("default")))
int64_t edgecc_x86_linear_min_items = 32;
// edgecc_x86_linear: a pool task packs and multiplies its 12-row blocks in groups of about
// this many bytes of packed rows (L2-sized: x86_linear_source.py); 0: all its blocks at once.
// A knob (the same sums either way), int64
extern "C" __attribute__((weak, visibility("default")))
int64_t edgecc_x86_linear_group_bytes = 256 * 1024;
// edgecc_x86_linear: 2 each register tile prefetches its output (and residual) lines as it
// starts (x86_linear_source.py lin_tile: MiniLM's linears 0.96-0.99x, 1 thread, CPU time);
// 3 one line every 4 k steps instead (spread); 1 (default) spread in a call with a residual,
// as it starts otherwise (MiniLM's residual linears 0.90-0.985x of 2); 0 not. A knob (the
// same sums either way), int64
extern "C" __attribute__((weak, visibility("default")))
int64_t edgecc_x86_linear_prefetch = 1;
// edgecc_x86_linear: d > 0 (default 8) each register tile's k step prefetches its panels'
// line (and the packed rows') d steps ahead (x86_linear_source.py lin_tile: MiniLM's linears
// 0.994-0.997x, 1 thread, CPU time); 0 not. A knob (the same sums either way), int64
extern "C" __attribute__((weak, visibility("default")))
int64_t edgecc_x86_linear_panel_prefetch = 8;

// edgecc_x86_attention: 1 (default) a pool task prefetches the next head's q / k / v rows
// while a head runs (attention_tasks); 0 not. A knob (the same sums either way: the tests'
// bit-for-bit A/B), int64
extern "C" __attribute__((weak, visibility("default")))
int64_t edgecc_x86_attention_prefetch = 1;
// edgecc_x86_attention_fuse_exp: 1 (default) a group of rows whose needed key columns fit one
// score tile (AVX-512: <= 64 keys, MiniLM) takes exp(s - max) and its sum straight from the
// tile's registers (qk_tile<.., true>); 0 the separate pass over the stored scores. A knob
// (bit-identical either way: the tests' A/B), int64
extern "C" __attribute__((weak, visibility("default")))
int64_t edgecc_x86_attention_fuse_exp = 1;
// edgecc_x86_attention_fast_math: 1 (default) the softmax's exp is vexp_nonpos (13 vector
// operations to Cephes' 20, <= 2e-7 relative), the scores' scale and mask one fma (one rounding
// to the graph's two) and the output p · V times 1 / Σ p (not divided per element); 0 the graph's
// order: vexp, a multiply and an add, a division (bit-identical to before the knob). Outputs
// within ~1e-6 of the largest (MiniLM / BERT / GPT-2: <= 8e-7 measured). A knob, int64
extern "C" __attribute__((weak, visibility("default")))
int64_t edgecc_x86_attention_fast_math = 0;

namespace {

// which attention path ran (the tests' proof that nothing fell back; PATH_QUERY): calls that
// read V in place / through a padded copy, and key vectors skipped (masked for every row of
// a group of 6)
// (2); linear calls (3), those with a GELU in their write-back (4), those that split the
// columns across the pool too (5), a task's column split packed in 2+ groups of row blocks
// (6: edgecc_x86_linear_group_bytes); heads whose q / k / v rows were prefetched while the
// head before ran (7: edgecc_x86_attention_prefetch); linear calls whose tiles prefetched
// their output lines (8: edgecc_x86_linear_prefetch); groups of query rows whose softmax exp
// ran in the score tile's registers (9: edgecc_x86_attention_fuse_exp); linear calls whose
// tiles prefetched their panels' lines ahead (10: edgecc_x86_linear_panel_prefetch), and
// those whose write-back prefetches were spread over the k loop (11)
static int64_t path_calls[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0};
enum { PATH_V_IN_PLACE = 0, PATH_V_COPIED = 1, PATH_KEYS_SKIPPED = 2, PATH_LINEAR = 3,
       PATH_LINEAR_GELU = 4, PATH_LINEAR_SPLIT = 5, PATH_LINEAR_GROUPS = 6,
       PATH_ATTN_PREFETCHED = 7, PATH_LINEAR_PREFETCH = 8, PATH_ATTN_FUSED_EXP = 9,
       PATH_LINEAR_PANEL_PREFETCH = 10, PATH_LINEAR_SPREAD = 11 };

""" + _AVX512 + _AVX2 + r"""

int bad_args(int got, int want, const char* what) {
  if (got == want) return 0;
  TVMFFIErrorSetRaisedFromCStr("ValueError", what);
  return 1;
}

static void set_none(TVMFFIAny* result) {
  result->type_index = kTVMFFINone; result->zero_padding = 0; result->v_int64 = 0;
}

// the calling thread's packing buffer for edgecc_x86_linear (grown, never shrunk: a pool
// thread's lives as long as the thread; a fresh allocation per call would fault its pages in)
static float* linear_buffer(int64_t floats) {
  static thread_local float* buf = 0;
  static thread_local int64_t cap = 0;
  if (floats > cap) {
    free(buf);
    cap = (floats + 15) / 16 * 16;
    buf = (float*)aligned_alloc(64, (size_t)cap * sizeof(float));
  }
  return buf;
}

template <class Q>
static Q quant_of(const float* f) { return Q{f[0], f[1], f[2], f[3]}; }

}  // namespace

extern "C" {

// out[b, h, i, :] = softmax(q[b, h, i, :] . k[b, h]ᵀ * scale + mask[b, h, i, :]) . v[b, h]
// args: q, k, v, mask (or any 1-element tensor), keep (uint8/bool, or any), meta = [B, H, Sq,
// Sk, D, Dv, has_mask, has_keep, then (batch, head, row) strides of q, k, v, out, mask, keep,
// then float_out, int8_out, then the element offsets of q, k, v], fparams = [scale, qscale, qzp, qlo, qhi], then the outputs:
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
    // meta[28..30]: element offsets of q, k, v in their tensors (slices of one tensor)
    a.q = data<float>(args, 0) + meta[28]; a.k = data<float>(args, 1) + meta[29];
    a.v = data<float>(args, 2) + meta[30];
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
    a.prefetch = __atomic_load_n(&edgecc_x86_attention_prefetch, __ATOMIC_RELAXED);
    a.fuse_exp = __atomic_load_n(&edgecc_x86_attention_fuse_exp, __ATOMIC_RELAXED);
    a.fast_math = __atomic_load_n(&edgecc_x86_attention_fast_math, __ATOMIC_RELAXED) == 1;
  };
  const int64_t work = B * H * Sq * Sk * (D + Dv);
  const bool avx512 = use_avx512();
  __atomic_fetch_add(&path_calls[Dv % (avx512 ? 16 : 8) ? PATH_V_COPIED : PATH_V_IN_PLACE], 1,
                     __ATOMIC_RELAXED);
  if (avx512) {
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

// linear: out[M][N] = gelu(clamp(x[M][K] . W[K][N] + bias[N] (+ residual[M][N]), lo, hi))
// (x86_linear_source.py; edgecc_x86_sgemm's arguments and sums). args: x, panels
// [ceil(N/16)][K][16], bias [N], meta = [M, K, N, gelu (0 none, 1 erf, 2 tanh)], fparams =
// [lo, hi, c1, c2], (residual,) out
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_linear(void*, const TVMFFIAny* args, int32_t num_args,
                                 TVMFFIAny* result) {
  if (num_args != 6 && num_args != 7) {
    TVMFFIErrorSetRaisedFromCStr("ValueError", "edgecc x86 linear: wrong argument count");
    return -1;
  }
  set_none(result);
  const int64_t* meta = data<int64_t>(args, 3);
  const float* fp = data<float>(args, 4);
  const int64_t m = meta[0], k = meta[1], n = meta[2];
  const float* res = num_args == 7 ? data<float>(args, 5) : 0;
  float* out = data<float>(args, num_args - 1);
  __atomic_fetch_add(&path_calls[PATH_LINEAR], 1, __ATOMIC_RELAXED);
  if (meta[3]) __atomic_fetch_add(&path_calls[PATH_LINEAR_GELU], 1, __ATOMIC_RELAXED);
  const int64_t prefetch = __atomic_load_n(&edgecc_x86_linear_prefetch, __ATOMIC_RELAXED);
  if (prefetch) __atomic_fetch_add(&path_calls[PATH_LINEAR_PREFETCH], 1, __ATOMIC_RELAXED);
  const int64_t panel_prefetch =
      __atomic_load_n(&edgecc_x86_linear_panel_prefetch, __ATOMIC_RELAXED);
  if (panel_prefetch > 0)
    __atomic_fetch_add(&path_calls[PATH_LINEAR_PANEL_PREFETCH], 1, __ATOMIC_RELAXED);
  const bool spread = prefetch == 3 || (prefetch == 1 && res);
  if (spread) __atomic_fetch_add(&path_calls[PATH_LINEAR_SPREAD], 1, __ATOMIC_RELAXED);
  auto run = [&](auto& g, int64_t mr, auto blocks) {
    g = {data<float>(args, 0), data<float>(args, 1), data<float>(args, 2), res, out, m, k, n,
         fp[0], fp[1], (int)meta[3], fp[2], fp[3], prefetch, panel_prefetch, spread};
    const int64_t chunk = __atomic_load_n(&edgecc_x86_linear_panel_bytes, __ATOMIC_RELAXED);
    const int64_t group = __atomic_load_n(&edgecc_x86_linear_group_bytes, __ATOMIC_RELAXED);
    // few row blocks (BERT / GPT-2 at 128 tokens: 11) on 2+ threads: the columns split in
    // halves, quarters, ... (multiples of one tile's 2 W columns) until there are ``want``
    // items to balance (one thread: no split; each split packs the rows again, 3.5% of BERT's
    // 1-thread time measured)
    const int64_t want = edgecc_pool_size() > 1
        ? __atomic_load_n(&edgecc_x86_linear_min_items, __ATOMIC_RELAXED) : 0;
    const int64_t nb = (m + mr - 1) / mr, tile = 2 * g.lanes(), tiles = (n + tile - 1) / tile;
    int64_t splits = 1;
    while (nb * splits < want && splits * 2 <= tiles) splits *= 2;
    const int64_t cps = (tiles + splits - 1) / splits * tile;
    splits = (n + cps - 1) / cps;
    if (splits > 1) __atomic_fetch_add(&path_calls[PATH_LINEAR_SPLIT], 1, __ATOMIC_RELAXED);
    parallel_for(nb * splits, [&](int64_t i0, int64_t i1) {
      const int64_t rows = (i1 - i0 < nb ? i1 - i0 : nb) * mr;  // packed at once: one split's
      blocks(g, i0, i1, linear_buffer(rows * k), chunk, nb, cps, group);
    }, m * n * k);
  };
  if (use_avx512()) {
    isa512::Lin g;
    run(g, isa512::LIN_MR, isa512::lin_items);
  } else {
    isa256::Lin g;
    run(g, isa256::LIN_MR, isa256::lin_items);
  }
  return 0;
}

// which vector path this process runs: 16 (AVX-512) or 8 (AVX2) lanes
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_attention_lanes(void*, const TVMFFIAny*, int32_t, TVMFFIAny* result) {
  result->type_index = kTVMFFIInt; result->zero_padding = 0; result->v_int64 = use_avx512() ? 16 : 8;
  return 0;
}

// the path counters (PATH_* above): one index, 0..11
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_attention_paths(void*, const TVMFFIAny* args, int32_t num_args,
                                          TVMFFIAny* result) {
  if (num_args != 1 || args[0].type_index != kTVMFFIInt || args[0].v_int64 < 0 ||
      args[0].v_int64 > 11) {
    TVMFFIErrorSetRaisedFromCStr("ValueError", "edgecc_x86_attention_paths: one index, 0..11");
    return -1;
  }
  result->type_index = kTVMFFIInt; result->zero_padding = 0;
  result->v_int64 = __atomic_load_n(&path_calls[args[0].v_int64], __ATOMIC_RELAXED);
  return 0;
}

}  // extern "C"
"""

LANES_QUERY = "edgecc_x86_attention_lanes"
LINEAR = "edgecc_x86_linear"
# attention calls that read V in place (0) / through a padded copy (1), key vectors skipped (2),
# linear calls (3), linear calls with a GELU in their write-back (4), linear calls that split
# the columns across the pool (5), (task, column split) runs that packed their row blocks in
# 2+ groups (6: edgecc_x86_linear_group_bytes), attention heads prefetched (7), linear calls
# whose tiles prefetched their output lines (8: edgecc_x86_linear_prefetch), groups of query
# rows whose softmax exp ran in the score tile's registers (9: edgecc_x86_attention_fuse_exp),
# linear calls whose tiles prefetched their panels ahead (10: edgecc_x86_linear_panel_prefetch),
# linear calls whose write-back prefetches were spread over the k loop (11: prefetch 1 with a
# residual, 3)
PATH_QUERY = "edgecc_x86_attention_paths"
EXPORTED = (*SYMBOLS, LINEAR, LANES_QUERY, PATH_QUERY)
