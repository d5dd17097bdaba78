"""Winograd with output channels in the vector lanes (AVX-512): F(2x2, 3x3) on 8x8 maps and
F(4x4, 3x3) on 16x16 maps, a C++ fragment of the ``x86_fp32`` kernel set spliced after
``x86_fp32_winograd4`` (it reuses their input transforms ``wg_input_narrow<8>`` /
``wg4_input<16>``, weights ``wg_weights`` / ``wg4_weights`` and the library's weights cache,
forms 5 / 6).

Why: both maps are 16 tiles, one panel. ``winograd_conv`` / ``winograd4_conv`` put the tiles in
the lanes, so each of their GEMMs ``M[e][co][t] = sum_ci U[e][co][ci] V[e][ci][t]`` has one
vector of tiles and broadcasts a U scalar for every FMA: 7 loads for 6 FMAs (6 x 1 tiles), and
a core loads at most 2 vectors a cycle. ResNet-20's 64->64 @8 spent ~80% of its time there
(perf, 1 thread). Here the lanes are 16 output channels: a tile of R tiles x Q channel vectors
(up to 6 x 4) loads Q vectors of U and broadcasts R scalars of V per input channel for R x Q
FMAs (6 x 4: 10 loads for 24 FMAs)::

    Uᵀ[e][ci][co] (packed once per library)     V[ci][e][t] (the input transform, per call)
    for e, for tiles t0.. (6 + 5 + 5):  acc[r][q] += bcast(V[ci][e][t0 + r]) * Uᵀ[e][ci][q]
    M[t][e][q] -> Y = Aᵀ M A + bias[q] (lanes: channels) -> Y[pixel][co]
    16x16 transposes -> out[co][pixel] = clamp(Y (+ residual), lo, hi)

The same sums as the tiles-in-lanes kernels per output, bit for bit: each M element sums its
input channels in order with one FMA each from zero, the output transform is the same
operations in the same order, then + bias, + residual, clamp (the tests compare with the knob
off).

Measured (bench/x86_fp32_call_threads.py --knob edgecc_x86_fp32_wg_oc=1,0, ResNet-20's calls
alone, SCHED_FIFO, medians of 8 x 50): 64->64 @8 1 thread 24.9-25.1 us against 42.4-43.9
(0.58x), 2 threads 20.3-21.1 against 26.9-35.7; 32->32 @16 1 thread 21.9-22.6 against
29.4-30.0 (0.75x), 2 threads 16.7-17.3 against 20.2-20.7; the model's 21 calls summed 526
against 652 us at 1 thread, 390 against 445 at 2. Two threads gain less than one would hope
(1.2-1.3x): each chunk transforms the whole input again.

In a model's run the Uᵀ come from L3 (ResNet-20's are 2.3 MB, past a 2 MB L2 at 1 thread): a
position's first tiles read its Uᵀ rows, so the second tiles prefetch the next position's
(``edgecc_x86_fp32_wg_oc_prefetch`` 1, the default; only loads move). Whole ResNet-20, knob 1
against 0 interleaved in one process, SCHED_FIFO, 20 rounds of 50 calls: 0.962x at 1 thread,
0.978x at 2 (a loaded host: 2 threads ran 0.65 ms against 0.69 at 1).

Eligible (``wg_oc_eligible`` / ``wg4_oc_eligible``): what F(2x2) takes (``wg_eligible``) on an
8x8 map with ``edgecc_x86_fp32_wg_narrow`` 1 (its input transform), or what F(4x4) takes
(``wg4_eligible``) on a 16x16 map; output channels a multiple of 16; ``edgecc_x86_fp32_wg_oc``
1 (int64, the default; 0: the tiles-in-lanes kernels). Counted on path
``PATH_CONV_WINOGRAD_OC`` (28) as well as ``PATH_CONV_WINOGRAD`` (16) and, for F(2x2),
``PATH_CONV_WINOGRAD_NARROW`` (20) / for F(4x4) ``PATH_CONV_WINOGRAD4`` (21). Pool items are
chunks of the output channels (2 threads, 64 channels: 2 x 32), each transforming the whole
input, as the tiles-in-lanes kernels' chunks do.
"""

SOURCE = r"""
// ---- Winograd F(2x2) on 8x8 maps / F(4x4) on 16x16, output channels in the lanes -------------
// (x86_fp32_winograd_oc.py). Both maps are one panel: 16 tiles, t = 4 ty + tx.
// whether winograd_oc_conv<2> runs a convolution winograd_conv would (wg_eligible held, not F(4x4))
static bool wg_oc_eligible(int64_t knob, int64_t c, int64_t h, int64_t w, int64_t oc) {
  return knob == 1 && h == 8 && w == 8 && oc % 16 == 0 && oc > 0 && c >= 8;
}

// whether winograd_oc_conv<4> runs a convolution winograd4_conv would (wg4_eligible held)
static bool wg4_oc_eligible(int64_t knob, int64_t h, int64_t w, int64_t oc) {
  return knob == 1 && h == 16 && w == 16 && oc % 16 == 0 && oc > 0;
}

// Uᵀ[e][ci][co] (E positions) of U[co][e][ci]
static void wg_oc_transpose(float* ut, const float* u, int64_t oc, int64_t c, int64_t e_n) {
  for (int64_t co = 0; co < oc; ++co)
    for (int64_t e = 0; e < e_n; ++e)
      for (int64_t k = 0; k < c; ++k) ut[(e * c + k) * oc + co] = u[(co * e_n + e) * c + k];
}

// Uᵀ of W for F(2x2) (form 5: wg_weights' values) or F(4x4) (form 6: wg4_weights')
static void wg_oc_weights(float* ut, const float* wt, int64_t oc, int64_t c, int form) {
  const int64_t e_n = form == 6 ? 36 : 16;
  float* u = static_cast<float*>(aligned_alloc(64, (e_n * oc * c * 4 + 63) / 64 * 64));
  if (form == 6) wg4_weights(u, wt, oc, c);
  else wg_weights(u, wt, oc, c);
  wg_oc_transpose(ut, u, oc, c, e_n);
  free(u);
}

// position e's GEMM for tiles t0 .. t0 + R - 1 and Q channel vectors: ue = Uᵀ[e] at the chunk's
// first channel (row stride oc), v = V (v + (k * E + e) * 16 + t); M[t][e][q] at
// m + ((t * E + e) * Q + q) * 16. ``pf`` (or 0): rows of the next position's Uᵀ to prefetch,
// one a step (its Q lines): the first tiles of a position read its Uᵀ from L3 in a model's run
// (ResNet-20's are 2.3 MB, past L2), the other tiles from L1; the prefetches spread that
// read over the others' FMAs
template <int R, int Q, int E>
__attribute__((target("avx512f")))
static inline void wg_oc_block(const float* ue, int64_t oc, const float* v, int64_t c, int e,
                               int t0, float* m, const float* pf) {
  __m512 acc[R][Q];
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < Q; ++q) acc[r][q] = _mm512_setzero_ps();
  const float* ve = v + e * 16 + t0;
  for (int64_t k = 0; k < c; ++k) {
    if (pf)
      for (int q = 0; q < Q; ++q)
        _mm_prefetch(reinterpret_cast<const char*>(pf + k * oc + 16 * q), _MM_HINT_T0);
    __m512 u[Q];
    for (int q = 0; q < Q; ++q) u[q] = _mm512_loadu_ps(ue + k * oc + 16 * q);
    for (int r = 0; r < R; ++r) {
      const __m512 b = _mm512_set1_ps(ve[k * E * 16 + r]);
      for (int q = 0; q < Q; ++q) acc[r][q] = _mm512_fmadd_ps(b, u[q], acc[r][q]);
    }
  }
  for (int r = 0; r < R; ++r)
    for (int q = 0; q < Q; ++q) _mm512_store_ps(m + (((t0 + r) * E + e) * Q + q) * 16, acc[r][q]);
}

// the E positions' GEMMs for Q channel vectors, all 16 tiles (6 + 5 + 5); per position the
// tiles run in turn, so its Uᵀ rows stay in L1; the second tiles prefetch the next position's
template <int Q, int E>
__attribute__((target("avx512f")))
static void wg_oc_gemm(const float* ut, int64_t oc, const float* v, int64_t c, float* m) {
  const bool pf = edgecc_x86_fp32_wg_oc_prefetch != 0;
  for (int e = 0; e < E; ++e) {
    const float* ue = ut + e * c * oc;
    wg_oc_block<6, Q, E>(ue, oc, v, c, e, 0, m, 0);
    wg_oc_block<5, Q, E>(ue, oc, v, c, e, 6, m, pf && e + 1 < E ? ue + c * oc : 0);
    wg_oc_block<5, Q, E>(ue, oc, v, c, e, 11, m, 0);
  }
}

// F(2x2): Y = Aᵀ M A + bias of the 16 tiles (wg_output's operations, lanes: channels) into
// y[pixel][Q * 16] (pixel (2 ty + i) * 8 + 2 tx + j)
template <int Q>
__attribute__((target("avx512f")))
static void wg_oc_output2(const float* m, const float* bias, float* y) {
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

// F(4x4): the same with wg4_output's operations (pixel (4 ty + i) * 16 + 4 tx + j)
template <int Q>
__attribute__((target("avx512f")))
static void wg_oc_output4(const float* m, const float* bias, float* y) {
  for (int t = 0; t < 16; ++t)
    for (int q = 0; q < Q; ++q) {
      const float* mt = m + (t * 36 * Q + q) * 16;  // M[t][e][q]: mt + e * Q * 16
      __m512 a[4][6];  // Aᵀ M
      for (int j = 0; j < 6; ++j) {
        __m512 col[6], yc[4];
        for (int i = 0; i < 6; ++i) col[i] = _mm512_load_ps(mt + (i * 6 + j) * Q * 16);
        wg4_at(col, yc);
        for (int i = 0; i < 4; ++i) a[i][j] = yc[i];
      }
      const __m512 b = _mm512_loadu_ps(bias + 16 * q);
      const int64_t ty = t / 4, tx = t % 4;
      for (int i = 0; i < 4; ++i) {
        __m512 yr[4];
        wg4_at(a[i], yr);
        const int64_t p = (4 * ty + i) * 16 + 4 * tx;
        for (int j = 0; j < 4; ++j) _mm512_store_ps(y + ((p + j) * Q + q) * 16, _mm512_add_ps(yr[j], b));
      }
    }
}

// out[co][pixel] = clamp(y[pixel][co] (+ res[co][pixel]), lo, hi) for Q channel vectors
template <int Q, int PIX>
__attribute__((target("avx512f")))
static void wg_oc_store(const float* y, const float* res, float* out, float lo, float hi) {
  const __m512 vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
  for (int q = 0; q < Q; ++q)
    for (int p0 = 0; p0 < PIX; p0 += 16) {
      __m512 r[16];
      for (int j = 0; j < 16; ++j) r[j] = _mm512_load_ps(y + ((p0 + j) * Q + q) * 16);
      transpose16(r);
      for (int i = 0; i < 16; ++i) {
        const int64_t at = (16 * q + i) * PIX + p0;
        __m512 z = r[i];
        if (res) z = _mm512_add_ps(z, _mm512_loadu_ps(res + at));
        _mm512_storeu_ps(out + at, _mm512_min_ps(vhi, _mm512_max_ps(vlo, z)));
      }
    }
}

template <int F, int Q>
static void wg_oc_chunk(const float* ut, int64_t oc, const float* v, int64_t c,
                        const float* bias, const float* res, float* out, float lo, float hi,
                        float* m, float* y) {
  if (F == 4) {
    wg_oc_gemm<Q, 36>(ut, oc, v, c, m);
    wg_oc_output4<Q>(m, bias, y);
    wg_oc_store<Q, 256>(y, res, out, lo, hi);
  } else {
    wg_oc_gemm<Q, 16>(ut, oc, v, c, m);
    wg_oc_output2<Q>(m, bias, y);
    wg_oc_store<Q, 64>(y, res, out, lo, hi);
  }
}

// out[b] = clamp(conv3x3(x[b], W) + bias (+ res[b]), lo, hi): F(2x2) on 8x8 maps (F = 2) or
// F(4x4) on 16x16 (F = 4); ``ut``: Uᵀ from the library's cache (form 5 / 6), else 0: from
// ``packed`` (F(2x2)'s U[oc][16][c] from the build) or W, per call
template <int F>
static void winograd_oc_conv(const float* x, const float* wt, const float* packed,
                             const float* ut, const float* bias, const float* res, float* out,
                             int64_t nb, int64_t c, int64_t oc, float lo, float hi) {
  const int64_t side = F == 4 ? 16 : 8, pix = side * side, E = F == 4 ? 36 : 16, nq = oc / 16;
  if (!ut) {
    float* own = static_cast<float*>(scratch(4, 2 * E * oc * c * 4 + 64));
    const float* u = packed;
    if (!u) {
      if (F == 4) wg4_weights(own + E * oc * c, wt, oc, c);
      else wg_weights(own + E * oc * c, wt, oc, c);
      u = own + E * oc * c;
    }
    wg_oc_transpose(own, u, oc, c, E);
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
      float* v = static_cast<float*>(scratch(0, E * c * 16 * 4 + 64));
      float* m = static_cast<float*>(scratch(3, 16 * E * 4 * 16 * 4 + 64));
      float* y = static_cast<float*>(scratch(1, pix * 4 * 16 * 4 + 64));
      if (F == 4) {
        Wg4Tables t;
        wg4_tables<16>(t);
        wg4_input<16>(v, src, c, 16, 0, t);
      } else {
        wg_input_narrow<8>(v, src, c, 8, 0);
      }
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t qe = (i + 1) * qlen < nq ? (i + 1) * qlen : nq;
        for (int64_t q0 = i * qlen; q0 < qe; q0 += 4) {  // GEMMs of up to 4 vectors
          const int64_t qn = qe - q0 < 4 ? qe - q0 : 4, co = 16 * q0;
          const float* ur = ut + co;
          const float* rr = rb ? rb + co * pix : 0;
          switch (qn) {
            case 1: wg_oc_chunk<F, 1>(ur, oc, v, c, bias + co, rr, dst + co * pix, lo, hi, m, y); break;
            case 2: wg_oc_chunk<F, 2>(ur, oc, v, c, bias + co, rr, dst + co * pix, lo, hi, m, y); break;
            case 3: wg_oc_chunk<F, 3>(ur, oc, v, c, bias + co, rr, dst + co * pix, lo, hi, m, y); break;
            default: wg_oc_chunk<F, 4>(ur, oc, v, c, bias + co, rr, dst + co * pix, lo, hi, m, y); break;
          }
        }
      }
    }, oc * c * 9 * pix);
  }
}
"""
