"""Winograd F(2x2, 3x3) for same-size 3x3 float32 convolutions (stride 1, pad 1, no dilation,
even maps; AVX-512): a C++ fragment of the ``x86_fp32`` kernel set (``x86_fp32_source``
splices it in; ``edgecc_x86_sconv`` calls ``winograd_conv``).

The default for eligible convolutions on AVX-512 (``edgecc_x86_fp32_winograd``, int32, 1 in
the library; path ``PATH_CONV_WINOGRAD``, counted like the other paths, so a test sees a
silent fallback); 0 sends them to the direct same-size 3x3 path, as AVX2 always does (the
artifact keeps the plain weights W, which the direct paths read). The tuner
(``end_to_end.KNOBS``) measures 0 against it, setting the knob between calls of one loaded
library, so nothing here depends on it being set at build time. What changes by default: the
outputs of those convolutions within 1e-5 relative of the direct path (Numerics, below).

Per 2x2 output tile (input patch d 4x4 at rows 2ty-1.., columns 2tx-1..)::

    V = Bᵀ d B        U = G g Gᵀ        M = U ⊙ V (summed over input channels)
    Y = Aᵀ M A        out = clamp((Y + bias) (+ residual), lo, hi)

which is 16 independent GEMMs ``M[e][co][t] = sum_ci U[e][co][ci] V[e][ci][t]`` (e the 16
positions of the 4x4 transform). Tiles are the vector lanes (16 consecutive tiles of the
row-major tile grid: a panel; on maps narrower than 32 a panel spans several tile rows, a
run each, read by masked loads of the unpadded input — no padded copy — and even / odd
lanes by permutex2var, as the stride-2 im2col does). A pool task transforms the input of
its group of panels into ``V[panel][ci][e][16]`` once, then for each 6-output-channel slice
runs the 16 GEMMs (6 x panels, up to 24 accumulators) into a block ``M`` (up to 24 KiB) that
stays in L1 and transforms it straight to the output (bias, residual, clamp fused, masked
stores). Tasks split groups x output-channel chunks as the direct path does. A group is one
panel (16 tiles) by default (``edgecc_x86_fp32_wg_group_panels`` = 1; up to 4 panels when set
higher, as before): 4 panels' V of 16 channels is 64 KiB, past L1, and was read from L2 once
per slice; one panel's is 16 KiB. Same sums for every group size (each output's arithmetic
does not depend on it: bit-identical, tested). In the model, 1 thread, thread CPU time, min
over 60 interleaved rounds, under load ~3: 16->16 @32 (6 calls) 198.3 -> 187.3 us (0.94x),
32->32 @16 and 64->64 @8 unchanged (2 and 1 panel groups either way); 2 panels 0.97x; whole
ResNet-20 0.527 -> 0.519 ms. On 2 threads a 32x32 map splits into 16 items, not 4 (16x16: 4,
not 2). Slices of 8 or 12 channels on one panel (more accumulators) measured 1.00-1.08x.

Maps 8 or 16 wide (ResNet-20's 32->32 @16 and 64->64 @8) transform their input through
``wg_input_narrow`` (``edgecc_x86_fp32_wg_narrow`` = 1, path ``PATH_CONV_WINOGRAD_NARROW``,
20): a panel spans 2 / 4 tile rows there, which ``wg_input`` reads as 2 / 4 runs of masked
loads, permutes and merges per patch row; the narrow form loads the panel's input rows once
(6 vectors, or 10 of two rows each) and picks each patch element with one or two
permutex2var, zero-masked outside the map. The same values, so bit-identical (tested against
knob 0). In the model, 1 thread, thread CPU time, min over 60 interleaved rounds, under load
~4.5, twice: 32->32 @16 (5 calls) 144.2 -> 128.0 us (0.89x), 64->64 @8 (5 calls) 131.9 ->
120.1 us (0.91x), whole ResNet-20 min 0.511 -> 0.482 ms (0.94x).

8x8 maps (one panel) of 16k output channels run ``x86_fp32_winograd_oc`` instead (default
``edgecc_x86_fp32_wg_oc`` 1): this input transform and the same sums, with the output channels
in the GEMM's lanes (0.58x of this kernel's time on ResNet-20's 64->64 @8, 1 thread).

Weights: ``U = G g Gᵀ`` is packed ONCE per library and per constant weight tensor, at its
first call, in the calling thread before the pool tasks start (as onnxruntime prepacks at
session load), when the call site says W is a constant of the build (``meta[15] = 2``, written
by ``x86_fp32._emit`` for every eligible convolution); later calls read the packed U (path
``PATH_CONV_WINOGRAD_PACKED``, 17). The artifact carries W alone: a build packing U after W
(``meta[15] = 1``, ``x86_fp32.with_winograd_weights``, still accepted) added 16/9 of those
layers' weights, ResNet-20 +1.74 MB on 1.1 MB. The transform per call measured 1.1 / 5 / 16 us
on 16->16 @32 / 32->32 @16 / 64->64 @8 against Winograd calls of 40 / 33 / 40 us (1 thread,
bench/x86_fp32_winograd.py: 2 t(batch 1) - t(batch 2)); callers without the flag (the kernel
tests' fresh random weights) still get it (``wg_weights``, one gather per tap of 16 input
channels), bit-identical to both packings (``weights`` does the same float32 operations).

The cache (``wg_cached``: a list behind a mutex, thread-safe when two VMs call at once) is
keyed by the weights' FFI object, not the data pointer: a pointer key goes stale when a module
is freed and another tensor lands at the same address — the same library loaded twice shares
its statics (one dlopen handle), and a buffer reused under a new tensor has the same address
(the tests do both). The entry holds a weak reference to the object (tvm-ffi's weak count), so
its header's memory — the key — is never reused while the entry exists; entries of dead
tensors (strong count 0) are dropped at the next packing. Kernel sets are linked into each
build's own library, so each library has its own list (internal linkage); its U buffers are
freed when it is unloaded. Memory: U once per loaded module (ResNet-20 1.74 MB), beside W.

Numerics: not the direct path's sums (the transforms round differently); F(2x2, 3x3)'s
constants are 0, ±1, ±1/2 (exact). Measured error, max|a - b| / max|ref| over the output
(16->16 @32, 32->32 @16, 64->64 @8, with / without residual and ReLU, 3 random normal seeds,
weights scaled 1/sqrt(9 C)): Winograd vs the direct path <= 7.2e-7, Winograd vs PyTorch
float64 <= 2.7e-7 (the direct path vs float64: 6.5e-7). The tests assert 1e-5
(tests/targets/tvm/test_x86_fp32_winograd.py). F(4x4, 3x3) (``x86_fp32_winograd4``) runs
instead on maps 16 or 32 wide by default (``edgecc_x86_fp32_winograd_tile`` = 4; 2 keeps
F(2x2, 3x3) everywhere, which this module's kernel tests set): 0.64-0.68x of F(2x2)'s time on
ResNet-20's 16->16 @32 and 32->32 @16, its error <= 6.1e-6 relative (F(2x2): 7.2e-7), up to
64 input channels.

Speed (bench/x86_fp32_winograd.py, 1 thread, thread CPU time, interleaved, Zen 4 under load
~3-4): Winograd / direct 0.68x (16->16 @32), 0.63x (32->32 @16), 0.57x (64->64 @8); / onnxruntime
0.52-0.56x. The 16 GEMMs are ~65-70% of the time and run at about the FMA peak (65536 zmm FMAs
a layer, ~18 us); the input / output transforms the rest (perf, 16->16 @32: 18% / 15%).
ResNet-20 end to end, 1 thread: knob 1 0.72-0.75x of knob 0 and 0.77-0.80x of onnxruntime
(U packed in the build). With the cache (bench/x86_fp32_winograd.py --model, interleaved, under
load 3-4): 1 thread (CPU time) 0.67x of knob 0, 0.71x of onnxruntime; 2 threads (wall)
0.80-0.87x of knob 0, 0.68-0.79x of onnxruntime; a fresh module's first call packs 16 weights
(~0.3-0.4 ms more than a later call); model.so 1.57 MB (3.31 MB with U built in).
Not eligible, measured: the 3-channel stem (3->16 @32: 16.5 vs 15.4 us direct, 1 thread, with
the packed weights: the transforms do not pay for 3 input channels).
"""

import numpy as np

GRID = 16  # the 4x4 transform's positions e


def eligible(c: int, h: int, w: int, kernel: tuple, stride: tuple, pad: tuple, dilation: tuple,
             out_hw: tuple) -> bool:
    """Whether a convolution can run ``winograd_conv`` (the kernel's ``wg_eligible`` less the
    knob and the CPU): 3x3, stride 1, pad 1, no dilation, same size, even maps, 8+ input
    channels. The build packs ``weights`` for these only."""
    return (tuple(kernel) == (3, 3) and tuple(stride) == (1, 1) and tuple(pad) == (1, 1)
            and tuple(dilation) == (1, 1) and tuple(out_hw) == (h, w) and h % 2 == 0
            and w % 2 == 0 and c >= 8)


def weights(w: np.ndarray) -> np.ndarray:
    """``W[OC, C, 3, 3]`` float32 -> ``U[OC, 16, C]`` = G g Gᵀ, in float32 with the kernel's
    operations in its order (``wg_weights``: the per-call transform), so the two agree bit for
    bit."""
    g = np.ascontiguousarray(w, np.float32)
    half = np.float32(0.5)

    def rows(a, axis):  # G applied along ``axis`` (length 3 -> 4)
        a0, a1, a2 = (np.take(a, i, axis=axis) for i in range(3))
        return np.stack([a0, half * ((a0 + a1) + a2), half * ((a0 - a1) + a2), a2], axis=axis)

    u = rows(rows(g, 2), 3)  # [OC, C, 4, 4]
    return np.ascontiguousarray(u.reshape(*u.shape[:2], GRID).transpose(0, 2, 1), np.float32)


SOURCE = r"""
// ---- Winograd F(2x2, 3x3) (targets/tvm/x86_fp32_winograd.py) -------------------------------
const int WG_NP = 4, WG_MR = 6;  // a group: up to 4 panels of 16 tiles; 6 output channels a slice

// lanes [l0, l1) of a panel are tiles of one tile row ty; element e of a 32-float load at
// input column col (A) / col + 2 (B) is lane e / 2's column 2 (e % 2) (+ 2); masks: the
// elements of those lanes inside the map's columns; om: output elements [2 l0, 2 l1)
struct WgRun { int64_t ty, col; __mmask16 lane, am[2], bm[2], om[2]; };

// the runs of panel p (tiles p*16 .., lanes past the last tile in none)
static int wg_runs(int64_t p, int64_t tiles, int64_t tw, int64_t w, WgRun* run) {
  int n = 0;
  for (int64_t l0 = 0; l0 < 16 && p * 16 + l0 < tiles;) {
    const int64_t t = p * 16 + l0, ty = t / tw, tx0 = t % tw;
    int64_t l1 = l0 + (tw - tx0 < 16 - l0 ? tw - tx0 : 16 - l0);
    if (p * 16 + l1 > tiles) l1 = tiles - p * 16;
    WgRun& r = run[n++];
    r.ty = ty;
    r.col = 2 * (tx0 - l0) - 1;
    r.lane = lanes(l0, l1);
    for (int s = 0; s < 2; ++s) {
      const int64_t c0 = r.col + 2 * s;
      const int64_t e0 = 2 * l0 > -c0 ? 2 * l0 : -c0, e1 = 2 * l1 < w - c0 ? 2 * l1 : w - c0;
      __mmask16* m = s ? r.bm : r.am;
      m[0] = lanes(e0, e1);
      m[1] = lanes(e0 - 16, e1 - 16);
    }
    r.om[0] = lanes(2 * l0, 2 * l1);
    r.om[1] = lanes(2 * l0 - 16, 2 * l1 - 16);
    l0 = l1;
  }
  return n;
}

// Bᵀ d B in two steps, shared by wg_input and wg_input_narrow: row i of the 4x4 patch d
// (4 vectors of 16 tiles) to its column transform s[i] (d0 - d2, d1 + d2, d2 - d1, d1 - d3),
// then the row transform of s stored as V's 16 elements (v + e * 16)
__attribute__((target("avx512f")))
static inline void wg_bt_row(const __m512* d, __m512* s) {
  s[0] = _mm512_sub_ps(d[0], d[2]);
  s[1] = _mm512_add_ps(d[1], d[2]);
  s[2] = _mm512_sub_ps(d[2], d[1]);
  s[3] = _mm512_sub_ps(d[1], d[3]);
}

__attribute__((target("avx512f")))
static inline void wg_bt_store(__m512 (*s)[4], float* v) {
  for (int j = 0; j < 4; ++j) {
    _mm512_store_ps(v + (0 * 4 + j) * 16, _mm512_sub_ps(s[0][j], s[2][j]));
    _mm512_store_ps(v + (1 * 4 + j) * 16, _mm512_add_ps(s[1][j], s[2][j]));
    _mm512_store_ps(v + (2 * 4 + j) * 16, _mm512_sub_ps(s[2][j], s[1][j]));
    _mm512_store_ps(v + (3 * 4 + j) * 16, _mm512_sub_ps(s[1][j], s[3][j]));
  }
}

// V[ci][e][16] (v + (ci * 16 + e) * 16) = Bᵀ d B of the panel's tiles, for every input
// channel; ONE: the panel is one run (maps 32+ wide), its loads' masks fixed for the loop
template <bool ONE>
__attribute__((target("avx512f")))
static void wg_input(float* v, const float* x, int64_t c, int64_t h, int64_t w,
                     const WgRun* run, int nrun) {
  const __m512i even = _mm512_setr_epi32(0, 2, 4, 6, 8, 10, 12, 14, 16, 18, 20, 22, 24, 26, 28, 30);
  const __m512i odd = _mm512_setr_epi32(1, 3, 5, 7, 9, 11, 13, 15, 17, 19, 21, 23, 25, 27, 29, 31);
  const __mmask16 am0 = run[0].am[0], am1 = run[0].am[1], bm0 = run[0].bm[0], bm1 = run[0].bm[1];
  for (int64_t ci = 0; ci < c; ++ci, v += 256) {
    const float* plane = x + ci * h * w;
    __m512 s[4][4];  // row i of d, then its column transform (d0 - d2, d1 + d2, d2 - d1, d1 - d3)
    for (int i = 0; i < 4; ++i) {
      __m512 d[4];
      if (ONE) {
        const int64_t iy = 2 * run[0].ty + i - 1;
        const bool in = iy >= 0 && iy < h;
        const float* a = plane + iy * w + run[0].col;
        const __mmask16 k = in ? 0xFFFF : 0;
        const __m512 a0 = _mm512_maskz_loadu_ps(am0 & k, a), a1 = _mm512_maskz_loadu_ps(am1 & k, a + 16);
        const __m512 b0 = _mm512_maskz_loadu_ps(bm0 & k, a + 2), b1 = _mm512_maskz_loadu_ps(bm1 & k, a + 18);
        d[0] = _mm512_permutex2var_ps(a0, even, a1);
        d[1] = _mm512_permutex2var_ps(a0, odd, a1);
        d[2] = _mm512_permutex2var_ps(b0, even, b1);
        d[3] = _mm512_permutex2var_ps(b0, odd, b1);
      } else {
        d[0] = d[1] = d[2] = d[3] = _mm512_setzero_ps();
        for (int r = 0; r < nrun; ++r) {
          const int64_t iy = 2 * run[r].ty + i - 1;
          if (iy < 0 || iy >= h) continue;
          const float* a = plane + iy * w + run[r].col;
          const __m512 a0 = _mm512_maskz_loadu_ps(run[r].am[0], a);
          const __m512 a1 = _mm512_maskz_loadu_ps(run[r].am[1], a + 16);
          const __m512 b0 = _mm512_maskz_loadu_ps(run[r].bm[0], a + 2);
          const __m512 b1 = _mm512_maskz_loadu_ps(run[r].bm[1], a + 18);
          const __mmask16 l = run[r].lane;
          d[0] = _mm512_mask_mov_ps(d[0], l, _mm512_permutex2var_ps(a0, even, a1));
          d[1] = _mm512_mask_mov_ps(d[1], l, _mm512_permutex2var_ps(a0, odd, a1));
          d[2] = _mm512_mask_mov_ps(d[2], l, _mm512_permutex2var_ps(b0, even, b1));
          d[3] = _mm512_mask_mov_ps(d[3], l, _mm512_permutex2var_ps(b0, odd, b1));
        }
      }
      wg_bt_row(d, s[i]);
    }
    wg_bt_store(s, v);
  }
}

// wg_input for maps 8 or 16 wide (W), any even height: the panel's input rows in registers
// (W 16: rows 2 ty0 - 1 .. 2 ty0 + 4, one vector each; W 8: rows 2 ty0 - 1 .. 2 ty0 + 8, two a
// vector), each d[i][j] (16 tiles' element (i, j) of their 4x4 patches) one or two
// permutex2var of them, lanes outside the map zeroed by the mask: no per-run masked loads and
// merges (16-wide panels are 2 runs, 8-wide 4). The same values d as wg_input, the same
// transform after: bit-identical (PATH_CONV_WINOGRAD_NARROW, edgecc_x86_fp32_wg_narrow)
template <int W>
__attribute__((target("avx512f")))
static void wg_input_narrow(float* v, const float* x, int64_t c, int64_t h, int64_t p) {
  const int64_t ty0 = p * 16 / (W / 2);  // first tile row of the panel
  const int64_t y0 = 2 * ty0 - 1;        // first input row read
  // lane l: tile row t = l / (W / 2), tile column tx = l % (W / 2); element (i, j) reads column
  // 2 tx + j - 1 (zero outside 0 .. W - 1) of row y0 + 2 t + i
  __m512i idx[4];
  __mmask16 col[4];
  for (int j = 0; j < 4; ++j) {
    alignas(64) int32_t id[16];
    unsigned m = 0;
    for (int l = 0; l < 16; ++l) {
      const int t = l / (W / 2), cx = 2 * (l % (W / 2)) + j - 1;
      const bool in = cx >= 0 && cx < W;
      // W 16: rows y0 + i (lanes 0-7) and y0 + i + 2 (lanes 8-15) as the two sources;
      // W 8: rows y0 + 2t + i in vector pairs (below), element (row parity) * 8 + column
      id[l] = W == 16 ? (t ? 16 : 0) + (in ? cx : 0) : ((t & 1) * 16 + (in ? cx : 0));
      m |= (unsigned)in << l;
    }
    idx[j] = _mm512_load_si512(id);
    col[j] = (__mmask16)m;
  }
  for (int64_t ci = 0; ci < c; ++ci, v += 256) {
    const float* plane = x + ci * h * W;
    __m512 s[4][4];
    if (W == 16) {
      __m512 r[6];  // rows y0 .. y0 + 5
      for (int k = 0; k < 6; ++k) {
        const int64_t y = y0 + k;
        r[k] = y >= 0 && y < h ? _mm512_loadu_ps(plane + y * 16) : _mm512_setzero_ps();
      }
      for (int i = 0; i < 4; ++i) {
        __m512 d[4];
        for (int j = 0; j < 4; ++j) d[j] = _mm512_maskz_permutex2var_ps(col[j], r[i], idx[j], r[i + 2]);
        wg_bt_row(d, s[i]);
      }
    } else {
      // q[k]: rows y0 + k, y0 + k + 1 (16 floats from row y0 + k, rows outside the map zero)
      __m512 q[10];
      for (int k = 0; k < 10; ++k) {
        const int64_t y = y0 + k;
        const __mmask16 m = (__mmask16)((y >= 0 && y < h ? 0x00FFu : 0u) | (y + 1 >= 0 && y + 1 < h ? 0xFF00u : 0u));
        q[k] = _mm512_maskz_loadu_ps(m, plane + y * 8);
      }
      for (int i = 0; i < 4; ++i) {
        // tile rows t = 0, 1 read rows y0 + i, y0 + i + 2 (the low halves of q[i], q[i + 2]:
        // indices 0-7 and 16-23); t = 2, 3 rows y0 + i + 4, y0 + i + 6 (q[i + 4], q[i + 6])
        __m512 d[4];
        for (int j = 0; j < 4; ++j) {
          const __m512 a = _mm512_maskz_permutex2var_ps(col[j] & 0x00FF, q[i], idx[j], q[i + 2]);
          const __m512 b = _mm512_permutex2var_ps(q[i + 4], idx[j], q[i + 6]);
          d[j] = _mm512_mask_mov_ps(a, col[j] & 0xFF00, b);
        }
        wg_bt_row(d, s[i]);
      }
    }
    wg_bt_store(s, v);
  }
}

// U[co][e][ci] = G g Gᵀ of W[co][ci][3][3] (16 input channels a vector: one gather per tap)
__attribute__((target("avx512f")))
static void wg_weights(float* u, const float* wt, int64_t oc, int64_t c) {
  const __m512i idx = _mm512_setr_epi32(0, 9, 18, 27, 36, 45, 54, 63, 72, 81, 90, 99, 108, 117,
                                        126, 135);
  const __m512 half = _mm512_set1_ps(0.5f);
  for (int64_t co = 0; co < oc; ++co)
    for (int64_t c0 = 0; c0 < c; c0 += 16) {
      const __mmask16 m = lanes(0, c - c0);
      const float* src = wt + (co * c + c0) * 9;
      __m512 g[3][3], t[4][3];
      for (int k = 0; k < 9; ++k)
        g[k / 3][k % 3] = _mm512_mask_i32gather_ps(_mm512_setzero_ps(), m, idx, src + k, 4);
      for (int j = 0; j < 3; ++j) {  // t = G g
        t[0][j] = g[0][j];
        t[1][j] = _mm512_mul_ps(half, _mm512_add_ps(_mm512_add_ps(g[0][j], g[1][j]), g[2][j]));
        t[2][j] = _mm512_mul_ps(half, _mm512_add_ps(_mm512_sub_ps(g[0][j], g[1][j]), g[2][j]));
        t[3][j] = g[2][j];
      }
      for (int i = 0; i < 4; ++i) {  // U = t Gᵀ
        const __m512 r[4] = {
            t[i][0],
            _mm512_mul_ps(half, _mm512_add_ps(_mm512_add_ps(t[i][0], t[i][1]), t[i][2])),
            _mm512_mul_ps(half, _mm512_add_ps(_mm512_sub_ps(t[i][0], t[i][1]), t[i][2])),
            t[i][2]};
        for (int j = 0; j < 4; ++j)
          _mm512_mask_storeu_ps(u + (co * 16 + i * 4 + j) * c + c0, m, r[j]);
      }
    }
}

// the 16 GEMMs of MR output channels (U[co][e][ci] from row u: input channel k of row r at
// u[(r * 16 + e) * c + k]) x NP panels of V (v + ((q * c + k) * 16 + e) * 16) -> m[r][q][e][16];
// the next MR rows' U (contiguous after these) prefetched, 1/16 a GEMM: in a model's run U
// comes from L3 (ResNet-20's are 1.7 MB), and its 16 blocks of one slice, 4 KiB apart for
// 64 channels, are too many streams for the hardware prefetcher
template <int MR, int NP, int E = 16>
__attribute__((target("avx512f")))
static void wg_gemm(const float* u, const float* v, int64_t c, float* m) {
  const int64_t rs = E * c;  // U's row stride
  const char* next = reinterpret_cast<const char*>(u + MR * rs);
  const int64_t chunk = MR * c * 4;  // bytes of the next rows' U per GEMM
  for (int e = 0; e < E; ++e) {
    __m512 acc[MR][NP];
    for (int r = 0; r < MR; ++r)
      for (int q = 0; q < NP; ++q) acc[r][q] = _mm512_setzero_ps();
    for (int64_t o = 0; o < chunk; o += 64) _mm_prefetch(next + e * chunk + o, _MM_HINT_T0);
    const float* a = u + e * c;
    const float* b = v + e * 16;
    for (int64_t k = 0; k < c; ++k) {
      __m512 bv[NP];
      for (int q = 0; q < NP; ++q) bv[q] = _mm512_load_ps(b + (q * c + k) * E * 16);
      for (int r = 0; r < MR; ++r) {
        const __m512 va = _mm512_set1_ps(a[r * rs + k]);
        for (int q = 0; q < NP; ++q) acc[r][q] = _mm512_fmadd_ps(va, bv[q], acc[r][q]);
      }
    }
    for (int r = 0; r < MR; ++r)
      for (int q = 0; q < NP; ++q) _mm512_store_ps(m + ((r * NP + q) * E + e) * 16, acc[r][q]);
  }
}

template <int NP, int E = 16>
static void wg_gemm_rows(int mr, const float* u, const float* v, int64_t c, float* m) {
  switch (mr) {
    case 1: wg_gemm<1, NP, E>(u, v, c, m); break;
    case 2: wg_gemm<2, NP, E>(u, v, c, m); break;
    case 3: wg_gemm<3, NP, E>(u, v, c, m); break;
    case 4: wg_gemm<4, NP, E>(u, v, c, m); break;
    case 5: wg_gemm<5, NP, E>(u, v, c, m); break;
    default: wg_gemm<WG_MR, NP, E>(u, v, c, m); break;
  }
}

// one output channel of a panel: Y = Aᵀ M A (m: M[e][16]), then clamp((Y + bias) (+ res)),
// rows 2 ty .. 2 ty + 1 of each run, even / odd columns interleaved
__attribute__((target("avx512f")))
static void wg_output(const float* m, float* out, const float* res, float bias, float lo,
                      float hi, int64_t w, const WgRun* run, int nrun) {
  const __m512i ilo = _mm512_setr_epi32(0, 16, 1, 17, 2, 18, 3, 19, 4, 20, 5, 21, 6, 22, 7, 23);
  const __m512i ihi = _mm512_setr_epi32(8, 24, 9, 25, 10, 26, 11, 27, 12, 28, 13, 29, 14, 30, 15, 31);
  __m512 a[2][4];  // Aᵀ M: rows m0 + m1 + m2, m1 - m2 - m3
  for (int j = 0; j < 4; ++j) {
    const __m512 m0 = _mm512_load_ps(m + (0 + j) * 16), m1 = _mm512_load_ps(m + (4 + j) * 16);
    const __m512 m2 = _mm512_load_ps(m + (8 + j) * 16), m3 = _mm512_load_ps(m + (12 + j) * 16);
    a[0][j] = _mm512_add_ps(_mm512_add_ps(m0, m1), m2);
    a[1][j] = _mm512_sub_ps(_mm512_sub_ps(m1, m2), m3);
  }
  const __m512 b = _mm512_set1_ps(bias), vlo = _mm512_set1_ps(lo), vhi = _mm512_set1_ps(hi);
  for (int i = 0; i < 2; ++i) {
    const __m512 y0 = _mm512_add_ps(_mm512_add_ps(a[i][0], a[i][1]), a[i][2]);
    const __m512 y1 = _mm512_sub_ps(_mm512_sub_ps(a[i][1], a[i][2]), a[i][3]);
    const __m512 z[2] = {_mm512_add_ps(_mm512_permutex2var_ps(y0, ilo, y1), b),
                         _mm512_add_ps(_mm512_permutex2var_ps(y0, ihi, y1), b)};
    for (int r = 0; r < nrun; ++r) {
      const int64_t at = (2 * run[r].ty + i) * w + run[r].col + 1;
      for (int h = 0; h < 2; ++h) {
        __m512 v = z[h];
        if (res) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(run[r].om[h], res + at + 16 * h));
        v = _mm512_min_ps(vhi, _mm512_max_ps(vlo, v));
        _mm512_mask_storeu_ps(out + at + 16 * h, run[r].om[h], v);
      }
    }
  }
}

// ---- U of the build's constant weights, packed once per library (meta[15] == 2) ----------
// Entries are keyed by the weights' FFI object (its header address), which holds a weak
// reference: the header's memory is not reused while the entry exists, so another tensor (of
// this library loaded again, or anything else) cannot take the key. An entry whose tensor died
// (strong count 0: the module was unloaded) is dropped, weak reference released, at the next
// packing. The list is this library's own (internal linkage; each build links its kernel set);
// its U buffers are freed when the library is unloaded (the weak references of live entries
// are then left: a header each).
struct WgPacked { TVMFFIObject* obj; const float* wt; int64_t oc, c; int form; float* u; };
static void wg4_weights(float* u, const float* wt, int64_t oc, int64_t c);  // winograd4
static void wg_oc_weights(float* ut, const float* wt, int64_t oc, int64_t c, int form);  // _oc
static pthread_mutex_t wg_lock = PTHREAD_MUTEX_INITIALIZER;
static WgPacked* wg_list = 0;
static int64_t wg_count = 0, wg_cap = 0;
const uint64_t WG_WEAK_ONE = (uint64_t)1 << 32;  // tvm-ffi's weak count: the upper 32 bits

__attribute__((destructor)) static void wg_release() {
  for (int64_t i = 0; i < wg_count; ++i) free(wg_list[i].u);
  free(wg_list);
  wg_list = 0;
  wg_count = wg_cap = 0;
}

static void wg_drop(WgPacked& e) {  // a dead tensor's entry (tvm-ffi's DecWeakRef)
  free(e.u);
  if (__atomic_fetch_sub(&e.obj->combined_ref_count, WG_WEAK_ONE, __ATOMIC_RELEASE) == WG_WEAK_ONE) {
    __atomic_thread_fence(__ATOMIC_ACQUIRE);
    if (e.obj->deleter) e.obj->deleter(e.obj, kTVMFFIObjectDeleterFlagBitMaskWeak);
  }
}

// U[oc][16][c] (``form`` 2: F(2x2)), U[oc][36][c] (4: F(4x4), x86_fp32_winograd4.py) or
// Uᵀ[16][c][oc] / Uᵀ[36][c][oc] (5 / 6: F(2x2) / F(4x4) with channels in the lanes,
// x86_fp32_winograd_oc.py) of the
// weights argument ``arg`` (W at ``wt``): packed in the calling thread on the first call (counted in edgecc_x86_fp32_winograd_packs), the same buffer after; 0 when the
// argument is not an FFI object (a bare DLTensor*: nothing to key on)
static const float* wg_cached(const TVMFFIAny* arg, const float* wt, int64_t oc, int64_t c,
                              int form = 2) {
  if (arg->type_index < kTVMFFIStaticObjectBegin) return 0;
  TVMFFIObject* obj = static_cast<TVMFFIObject*>(arg->v_obj);
  pthread_mutex_lock(&wg_lock);
  const float* u = 0;
  for (int64_t i = 0; i < wg_count && !u; ++i)
    if (wg_list[i].obj == obj && wg_list[i].wt == wt && wg_list[i].oc == oc && wg_list[i].c == c
        && wg_list[i].form == form)
      u = wg_list[i].u;
  if (!u) {
    int64_t kept = 0;  // drop the entries of dead tensors
    for (int64_t i = 0; i < wg_count; ++i) {
      const uint64_t rc = __atomic_load_n(&wg_list[i].obj->combined_ref_count, __ATOMIC_ACQUIRE);
      if ((rc & 0xFFFFFFFFu) == 0) wg_drop(wg_list[i]);
      else wg_list[kept++] = wg_list[i];
    }
    wg_count = kept;
    if (wg_count == wg_cap) {
      const int64_t cap = wg_cap ? 2 * wg_cap : 32;
      WgPacked* grown = static_cast<WgPacked*>(realloc(wg_list, cap * sizeof(WgPacked)));
      if (grown) { wg_list = grown; wg_cap = cap; }
    }
    const size_t bytes = ((size_t)((form == 4 || form == 6 ? 36 : 16) * oc * c * 4) + 63) / 64 * 64;
    float* own = wg_count < wg_cap ? static_cast<float*>(aligned_alloc(64, bytes)) : 0;
    if (own) {
      if (form == 4) wg4_weights(own, wt, oc, c);
      else if (form == 5 || form == 6) wg_oc_weights(own, wt, oc, c, form);
      else wg_weights(own, wt, oc, c);
      __atomic_fetch_add(&obj->combined_ref_count, WG_WEAK_ONE, __ATOMIC_RELAXED);
      wg_list[wg_count++] = WgPacked{obj, wt, oc, c, form, own};
      __atomic_fetch_add(&edgecc_x86_fp32_winograd_packs, 1, __ATOMIC_RELAXED);
      u = own;
    }
  }
  pthread_mutex_unlock(&wg_lock);
  return u;
}

// whether winograd_conv runs this convolution (the caller checked 3x3, stride 1, pad 1, no
// dilation, same size) under knob value ``knob``: 1, AVX-512, even maps, at least 8 input
// channels (the 3-channel stem: K = 27 is too short for the transforms to pay). Every map
// size of ResNet-20 measured faster (bench/x86_fp32_winograd.py: 8x8 too, 0.56x of direct)
static bool wg_eligible(int64_t knob, int64_t c, int64_t h, int64_t w) {
  return AVX512 && knob == 1 && h % 2 == 0 && w % 2 == 0 && c >= 8;
}

// out[b] = clamp(conv3x3(x[b], W) + bias (+ res[b]), lo, hi) through F(2x2, 3x3); ``packed``:
// U[oc][16][c] from the build (x86_fp32_winograd.weights), else 0: transformed here
static void winograd_conv(const float* x, const float* wt, const float* packed,
                          const float* bias, const float* res, float* out, int64_t nb, int64_t c,
                          int64_t h, int64_t w, int64_t oc, float lo, float hi) {
  const int64_t tw = w / 2, tiles = (h / 2) * tw, pix = h * w;
  // groups of edgecc_x86_fp32_wg_group_panels panels (1 by default: a group's V stays in L1),
  // at most 4, and on maps of fewer than 8 panels at most half of them (32->32 @16: 2 + 2), so
  // two tasks need not transform the same input (a task transforms its group's input itself)
  const int64_t n_panels = (tiles + 15) / 16;
  int64_t gp = n_panels >= 2 * WG_NP ? WG_NP : n_panels < 2 ? 1 : (n_panels + 1) / 2;
  const int64_t cap = edgecc_x86_fp32_wg_group_panels;
  if (cap >= 1 && gp > cap) gp = cap;
  const int64_t groups = (n_panels + gp - 1) / gp;
  const float* u = packed;
  if (!u) {
    float* own = static_cast<float*>(scratch(4, 16 * oc * c * 4 + 64));
    wg_weights(own, wt, oc, c);
    u = own;
  }
  // output-channel chunks (of 2+ slices) only until every pool thread has an item: the pool
  // hands out 1-item chunks here, and each item transforms its group's input again (64->64
  // @8, one panel, perf at 1 thread: the input transform is 16% of the call)
  int64_t threads = edgecc_pool_size(), rchunks = 1;
  if (edgecc_x86_num_tasks > 0 && edgecc_x86_num_tasks < threads) threads = edgecc_x86_num_tasks;
  while (groups * rchunks < threads && (rchunks * 2) * 2 * WG_MR <= oc) rchunks *= 2;
  const int64_t rlen = (oc + rchunks - 1) / rchunks;
  const bool narrow = edgecc_x86_fp32_wg_narrow == 1 && (w == 8 || w == 16);
  if (narrow) ++path_calls[PATH_CONV_WINOGRAD_NARROW];
  for (int64_t b = 0; b < nb; ++b) {
    const float* src = x + b * c * pix;
    float* dst = out + b * oc * pix;
    const float* rb = res ? res + b * oc * pix : 0;
    parallel_for(groups * rchunks, [&](int64_t i0, int64_t i1) {
      float* v = static_cast<float*>(scratch(0, 16 * WG_NP * c * 16 * 4 + 64));
      float* m = static_cast<float*>(scratch(3, WG_MR * WG_NP * 16 * 16 * 4 + 64));
      WgRun runs[WG_NP][16];
      int nrun[WG_NP];
      int64_t built = -1;
      for (int64_t i = i0; i < i1; ++i) {
        const int64_t grp = i / rchunks, rc = i % rchunks;
        const int64_t p0 = grp * gp, p1 = p0 + gp < n_panels ? p0 + gp : n_panels;
        const int np = (int)(p1 - p0);
        if (built != grp) {
          for (int q = 0; q < np; ++q) {
            nrun[q] = wg_runs(p0 + q, tiles, tw, w, runs[q]);
            if (narrow && w == 16) wg_input_narrow<16>(v + q * c * 256, src, c, h, p0 + q);
            else if (narrow) wg_input_narrow<8>(v + q * c * 256, src, c, h, p0 + q);
            else if (nrun[q] == 1) wg_input<true>(v + q * c * 256, src, c, h, w, runs[q], 1);
            else wg_input<false>(v + q * c * 256, src, c, h, w, runs[q], nrun[q]);
          }
          built = grp;
        }
        const int64_t r0 = rc * rlen, r1 = r0 + rlen < oc ? r0 + rlen : oc;
        for (int64_t r = r0; r < r1;) {  // slices of balanced height (16: 6 + 5 + 5)
          const int64_t left = r1 - r, n = (left + WG_MR - 1) / WG_MR;
          const int mr = (int)((left + n - 1) / n);
          const float* ur = u + r * 16 * c;
          switch (np) {
            case 1: wg_gemm_rows<1>(mr, ur, v, c, m); break;
            case 2: wg_gemm_rows<2>(mr, ur, v, c, m); break;
            case 3: wg_gemm_rows<3>(mr, ur, v, c, m); break;
            default: wg_gemm_rows<WG_NP>(mr, ur, v, c, m); break;
          }
          for (int k = 0; k < mr; ++k)
            for (int q = 0; q < np; ++q)
              wg_output(m + (k * np + q) * 256, dst + (r + k) * pix,
                        rb ? rb + (r + k) * pix : 0, bias[r + k], lo, hi, w, runs[q], nrun[q]);
          r += mr;
        }
      }
    }, oc * c * 9 * pix);
  }
}
"""
