"""Winograd F(2x2, 3x3) on 8x8 maps with output channels in the vector lanes (AVX-512): a C++
fragment of the ``x86_fp32`` kernel set, spliced after ``x86_fp32_winograd4`` (it reuses
F(2x2)'s input transform ``wg_input_narrow<8>``, weights ``wg_weights`` and the library's
weights cache, form 5).

Why: an 8x8 map has 16 tiles of 2x2, one panel. ``winograd_conv`` puts the tiles in the lanes,
so each of its GEMMs ``M[e][co][t] = sum_ci U[e][co][ci] V[e][ci][t]`` has one vector of tiles
and broadcasts a U scalar for every FMA: 7 loads for 6 FMAs (its 6 x 1 tiles), and a core loads
at most 2 vectors a cycle. ResNet-20's 64->64 @8 spent ~80% of its time there (perf, 1 thread).
Here the lanes are 16 output channels: a tile of R tiles x Q channel vectors (up to 6 x 4)
loads Q vectors of U and broadcasts R scalars of V per input channel for R x Q FMAs (6 x 4: 10
loads for 24 FMAs)::

    Uᵀ[e][ci][co] (packed once per library)     V[ci][e][t] (wg_input_narrow<8>, per call)
    for e, for tiles t0.. (6 + 5 + 5):  acc[r][q] += bcast(V[ci][e][t0 + r]) * Uᵀ[e][ci][q]
    M[t][e][q] -> Y = Aᵀ M A + bias[q] (lanes: channels) -> Y[pixel][co]
    16x16 transposes -> out[co][pixel] = clamp(Y (+ residual), lo, hi)

The same sums as ``winograd_conv`` per output, bit for bit: each M element sums its input
channels in order with one FMA each from zero, the output transform is the same adds in the
same order, then + bias, + residual, clamp (the tests compare with the knob off).

Measured (bench/x86_fp32_call_threads.py --knob edgecc_x86_fp32_wg_oc=1,0, ResNet-20's calls
alone, SCHED_FIFO, medians of 8 x 50): 64->64 @8 1 thread 23.8-24.8 us against 41.6-45.0 (0.56x),
2 threads 19.1-19.9 against 26.7-31.8 (the threads' work 33-35 against 48-57 us); the model's
21 calls summed 564 against 637 us at 1 thread, 393 against 434 at 2.

Eligible (``wg_oc_eligible``): what F(2x2) takes (``wg_eligible``) on an 8x8 map, output
channels a multiple of 16, ``edgecc_x86_fp32_wg_oc`` 1 (int64, the default; 0: ``winograd_conv``)
and ``edgecc_x86_fp32_wg_narrow`` 1 (its input transform). Counted on path
``PATH_CONV_WINOGRAD_OC`` (28) as well as ``PATH_CONV_WINOGRAD`` (16) and
``PATH_CONV_WINOGRAD_NARROW`` (20). Pool
items are chunks of the output channels (2 threads, 64 channels: 2 x 32), each transforming the
whole input as ``winograd_conv``'s chunks do.
"""

SOURCE = r"""
// ---- Winograd F(2x2, 3x3), 8x8 maps, output channels in the lanes (x86_fp32_winograd_oc.py) --
// whether winograd_oc_conv runs a convolution winograd_conv would (wg_eligible held, not F(4x4))
static bool wg_oc_eligible(int64_t knob, int64_t c, int64_t h, int64_t w, int64_t oc) {
  return knob == 1 && h == 8 && w == 8 && oc % 16 == 0 && oc > 0 && c >= 8;
}

// Uᵀ[e][ci][co] of W: wg_weights' U[co][e][ci] (the same values), transposed
static void wg_oc_weights(float* ut, const float* wt, int64_t oc, int64_t c) {
  float* u = static_cast<float*>(aligned_alloc(64, (16 * oc * c * 4 + 63) / 64 * 64));
  wg_weights(u, wt, oc, c);
  for (int64_t co = 0; co < oc; ++co)
    for (int64_t e = 0; e < 16; ++e)
      for (int64_t k = 0; k < c; ++k) ut[(e * c + k) * oc + co] = u[(co * 16 + e) * c + k];
  free(u);
}

// position e's GEMM for tiles t0 .. t0 + R - 1 and Q channel vectors: ue = Uᵀ[e] at the chunk's
// first channel (row stride oc), v = V (v + (k * 16 + e) * 16 + t); M[t][e][q] at
// m + ((t * 16 + e) * Q + q) * 16
template <int R, int Q>
__attribute__((target("avx512f")))
static inline void wg_oc_block(const float* ue, int64_t oc, const float* v, int64_t c, int e,
                               int t0, float* m) {
  __m512 acc[R][Q];
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < Q; ++q) acc[r][q] = _mm512_setzero_ps();
  const float* ve = v + e * 16 + t0;
  for (int64_t k = 0; k < c; ++k) {
    __m512 u[Q];
    for (int q = 0; q < Q; ++q) u[q] = _mm512_loadu_ps(ue + k * oc + 16 * q);
    for (int r = 0; r < R; ++r) {
      const __m512 b = _mm512_set1_ps(ve[k * 256 + r]);
      for (int q = 0; q < Q; ++q) acc[r][q] = _mm512_fmadd_ps(b, u[q], acc[r][q]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < Q; ++q) _mm512_store_ps(m + (((t0 + r) * 16 + e) * Q + q) * 16, acc[r][q]);
}

// the 16 positions' GEMMs for Q channel vectors, all 16 tiles (6 + 5 + 5); per position the
// tiles run in turn, so its Uᵀ rows stay in L1
template <int Q>
__attribute__((target("avx512f")))
static void wg_oc_gemm(const float* ut, int64_t oc, const float* v, int64_t c, float* m) {
  for (int e = 0; e < 16; ++e) {
    const float* ue = ut + e * c * oc;
    wg_oc_block<6, Q>(ue, oc, v, c, e, 0, m);
    wg_oc_block<5, Q>(ue, oc, v, c, e, 6, m);
    wg_oc_block<5, Q>(ue, oc, v, c, e, 11, m);
  }
}

// Y = Aᵀ M A + bias of the 16 tiles (winograd_conv's wg_output, lanes: channels) into
// y[pixel][Q * 16] (pixel (2 ty + i) * 8 + 2 tx + j of tile t = 4 ty + tx)
template <int Q>
__attribute__((target("avx512f")))
static void wg_oc_output(const float* m, const float* bias, float* y) {
  for (int t = 0; t < 16; ++t)
    for (int q = 0; q < Q; ++q) {
      const float* mt = m + (t * 16 * Q + q) * 16;  // M[t][e][q]: mt + e * Q * 16
      __m512 a[2][4];
      for (int j = 0; j < 4; ++j) {
        const __m512 m0 = _mm512_load_ps(mt + (0 + j) * Q * 16);
        const __m512 m1 = _mm512_load_ps(mt + (4 + j) * Q * 16);
        const __m512 m2 = _mm512_load_ps(mt + (8 + j) * Q * 16);
        const __m512 m3 = _mm512_load_ps(mt + (12 + j) * Q * 16);
        a[0][j] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
        a[1][j] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
      }
      const __m512 b = _mm512_loadu_ps(bias + 16 * q);
      const int64_t ty = t / 4, tx = t % 4;
      for (int i = 0; i < 2; ++i) {
        const __m512 y0 = _mm512_add_ps(_mm512_add_ps(a[i][0], a[i][1]), a[i][2]);
        const __m512 y1 = _mm512_sub_ps(_mm512_sub_ps(a[i][1], a[i][2]), a[i][3]);
        const int64_t p = (2 * ty + i) * 8 + 2 * tx;
        _mm512_store_ps(y + (p * Q + q) * 16, _mm512_add_ps(y0, b));
        _mm512_store_ps(y + ((p + 1) * Q + q) * 16, _mm512_add_ps(y1, b));
      }
    }
}

// out[co][pixel] = clamp(y[pixel][co] (+ res[co][pixel]), lo, hi) for Q channel vectors
template <int Q>
__attribute__((target("avx512f")))
static void wg_oc_store(const float* y, const float* res, float* out, float lo, float hi) {
  const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
  for (int q = 0; q < Q; ++q)
    for (int p0 = 0; p0 < 64; p0 += 16) {
      __m512 r[16];
      for (int j = 0; j < 16; ++j) r[j] = _mm512_load_ps(y + ((p0 + j) * Q + q) * 16);
      transpose16(r);
      for (int i = 0; i < 16; ++i) {
        const int64_t at = (16 * q + i) * 64 + p0;
        __m512 z = r[i];
        if (res) z = _mm512_add_ps(z, _mm512_loadu_ps(res + at));
        _mm512_storeu_ps(out + at, _mm512_min_ps(vhi, _mm512_max_ps(vlo, z)));
      }
    }
}

template <int Q>
static void wg_oc_chunk(const float* ut, int64_t oc, const float* v, int64_t c,
                        const float* bias, const float* res, float* out, float lo, float hi,
                        float* m, float* y) {
  wg_oc_gemm<Q>(ut, oc, v, c, m);
  wg_oc_output<Q>(m, bias, y);
  wg_oc_store<Q>(y, res, out, lo, hi);
}

// out[b] = clamp(conv3x3(x[b], W) + bias (+ res[b]), lo, hi) on 8x8 maps; ``ut``: Uᵀ from the
// library's cache (form 5), else 0: from ``packed`` (U[oc][16][c], the build's) or W, per call
static void winograd_oc_conv(const float* x, const float* wt, const float* packed,
                             const float* ut, const float* bias, const float* res, float* out,
                             int64_t nb, int64_t c, int64_t oc, float lo, float hi) {
  const int64_t pix = 64, nq = oc / 16;
  if (!ut) {
    float* own = static_cast<float*>(scratch(4, 2 * 16 * oc * c * 4 + 64));
    const float* u = packed;
    if (!u) {
      wg_weights(own + 16 * oc * c, wt, oc, c);
      u = own + 16 * oc * c;
    }
    for (int64_t co = 0; co < oc; ++co)
      for (int64_t e = 0; e < 16; ++e)
        for (int64_t k = 0; k < c; ++k) own[(e * c + k) * oc + co] = u[(co * 16 + e) * c + k];
    ut = own;
  }
  // chunks of the channel vectors, one a pool thread (each transforms the whole input)
  int64_t threads = edgecc_pool_size();
  if (edgecc_x86_num_tasks > 0 && edgecc_x86_num_tasks < threads) threads = edgecc_x86_num_tasks;
  const int64_t chunks = threads < nq ? threads : nq, qlen = (nq + chunks - 1) / chunks;
  for (int64_t b = 0; b < nb; ++b) {
    const float* src = x + b * c * pix;
    float* dst = out + b * oc * pix;
    const float* rb = res ? res + b * oc * pix : 0;
    parallel_for(chunks, [&](int64_t i0, int64_t i1) {
      float* v = static_cast<float*>(scratch(0, 16 * c * 16 * 4 + 64));
      float* m = static_cast<float*>(scratch(3, 16 * 16 * 4 * 16 * 4 + 64));
      float* y = static_cast<float*>(scratch(1, 64 * 4 * 16 * 4 + 64));
      wg_input_narrow<8>(v, src, c, 8, 0);
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t qe = (i + 1) * qlen < nq ? (i + 1) * qlen : nq;
        for (int64_t q0 = i * qlen; q0 < qe; q0 += 4) {  // GEMMs of up to 4 vectors
          const int64_t qn = qe - q0 < 4 ? qe - q0 : 4, co = 16 * q0;
          const float* ur = ut + co;
          const float* rr = rb ? rb + co * pix : 0;
          switch (qn) {
            case 1: wg_oc_chunk<1>(ur, oc, v, c, bias + co, rr, dst + co * pix, lo, hi, m, y); break;
            case 2: wg_oc_chunk<2>(ur, oc, v, c, bias + co, rr, dst + co * pix, lo, hi, m, y); break;
            case 3: wg_oc_chunk<3>(ur, oc, v, c, bias + co, rr, dst + co * pix, lo, hi, m, y); break;
            default: wg_oc_chunk<4>(ur, oc, v, c, bias + co, rr, dst + co * pix, lo, hi, m, y); break;
          }
        }
      }
    }, oc * c * 9 * pix);
  }
}
"""
