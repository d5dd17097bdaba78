"""Intel AMX (``tdpbusd`` / ``tdpbsud`` tile products) for the x86 int8 kernels: C++ spliced
into ``x86_int8_source.SOURCE`` at two points, so the int8 kernel set stays one library.

- ``AMX_KERNELS`` goes inside the kernels' namespace after ``gemm_panels_dot``; it defines
  ``bool amx_gemm(const GemmDot& g, bool urows)``: the whole product of ``g`` (every panel,
  ``write_tile`` write-back) on AMX tiles, returning false — nothing written — where AMX
  cannot run (no AMX-INT8, the OS refuses the tile state, ``EDGECC_X86_INT8_ISA`` narrowed
  the choice), and the caller then runs its VNNI / AVX2 path. ``urows``: the rows are the
  unsigned operand (linear: activations + 128), else the panels are (conv: im2col + 128).
- ``AMX_FFI`` goes inside the ``extern "C"`` block; ``AMX_SYMBOLS`` names what it exports:
  ``edgecc_x86_int8_amx`` () -> 1 where ``amx_gemm`` runs the products on this call (the
  CPU has AMX-INT8, the OS granted the tile state, ``EDGECC_X86_INT8_ISA`` is unset or
  ``amx``), else 0; ``edgecc_x86_int8_amx_products`` () -> how many products ``amx_gemm``
  ran in this process (tests: a build's linears really ran on the tiles);
  ``edgecc_x86_int8_amx_gemm`` (rows, panels, meta = [urows, n_rows, kq, n_cols], out) the
  product alone, either operand order, written as float32 ``out[n_rows][n_cols]`` through
  ``write_tile``'s float epilogue with scale 1 (exact while |acc| < 2^24) — how the tests
  check the conv order (``tdpbsud``) alone; ``edgecc_x86_int8_amx_conv_products`` () -> how
  many convolutions ``amx_conv`` ran on the tiles in this process.
- ``amx_conv(g, build, build_work, pointwise)``: a convolution on the tiles, s8 weight rows x
  u8 im2col panels (``tdpbsud``); each pool task builds the panels of its share of panel
  pairs (``build(p)``), then runs those pairs' tiles (every 16-row weight block against
  panels still in its cache), one pool launch per convolution; false (nothing built) where
  AMX cannot run or the library's ``edgecc_x86_int8_amx_conv`` does not take it: 2, the
  default, takes deep pointwise convolutions (1x1 stride 1 unpadded, 32+ input channels, 4+
  panel pairs a pool thread), 1 every one, 0 none — on an Intel Xeon with AMX-INT8 the tiles
  win on those and lose on the rest to the VNNI paths (the knob's comment).

The VNNI panels ``[ceil(N/16)][kq][16][4]`` are AMX's B-tile layout as they are (a tile of
16 rows x 64 bytes = 16 k quads x 16 columns), so the weights need no new packing::

    tile config (each thread, once per task): 8 tiles of 16 rows x 64 bytes
        tmm0..3 = C (int32 [16][16]: 2 row blocks x 2 panels), tmm4,5 = A, tmm6,7 = B
    for each pair of panels (p, p+1)                    # parallel_for over the pairs
      for each 32 rows r:
        C = 0
        for each 64 bytes of k (16 quads):
            A0, A1 = rows[r:r+16, k:k+64], rows[r+16:r+32, k:k+64]
            B0, B1 = panel p [k/4 : k/4+16], panel p+1 [...]
            C[i][j] += tdpbusd(Ai, Bj)      # tdpbsud for a conv (u8 panels, s8 rows)
        write_tile(C[i][j])                 # the VNNI path's requant / float write-back

Edges: the rows come padded to 8 with ``kq * 4`` bytes each; where that is not a whole
number of 16-row x 64-byte tiles they are copied once (zero-padded to 16 rows and 64-byte k
steps), so a tile never reads past them; the padded k bytes are 0 in A, so whatever B holds
there (the next panel) adds nothing, and the last panel's partial k step comes from a
zero-padded copy; a last single panel or single 16-row block runs with its tiles left out.
int32 arithmetic is exact, so the results are the VNNI path's bit for bit.
"""

AMX_QUERY = "edgecc_x86_int8_amx"  # () -> 1 where the int8 GEMMs run on AMX tiles now
AMX_COUNT = "edgecc_x86_int8_amx_products"  # () -> GEMMs run on AMX tiles in this process
AMX_GEMM = "edgecc_x86_int8_amx_gemm"  # (rows, panels, meta, out): amx_gemm alone, float out
AMX_CONV_COUNT = "edgecc_x86_int8_amx_conv_products"  # () -> convolutions run on tiles
AMX_SYMBOLS: tuple[str, ...] = (AMX_QUERY, AMX_COUNT, AMX_GEMM, AMX_CONV_COUNT)

AMX_KERNELS = r"""
// ---- AMX (targets/tvm/x86_amx_source.py) -------------------------------------------------
#if defined(__x86_64__) && !defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 11
#define EDGECC_AMX 1
#else
#define EDGECC_AMX 0
#endif

// products run on AMX tiles in this process (the count query's answer)
int64_t amx_products = 0;

#if EDGECC_AMX
// CPUID.(7,0):EDX bit 24 AMX-TILE, bit 25 AMX-INT8
bool amx_cpu() {
  unsigned a, b, c, d;
  asm volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(0u), "c"(0u));
  if (a < 7) return false;
  asm volatile("cpuid" : "=a"(a), "=b"(b), "=c"(c), "=d"(d) : "a"(7u), "c"(0u));
  return ((d >> 24) & 1) && ((d >> 25) & 1);
}

// arch_prctl(ARCH_REQ_XCOMP_PERM, XFEATURE_XTILEDATA): Linux >= 5.16 hands a process the
// 8 KB tile state only on request (once per process, for all its threads); a raw syscall,
// so nothing needs <unistd.h> inside this namespace
bool amx_os() {
  long ret;
  asm volatile("syscall" : "=a"(ret) : "a"(158L), "D"(0x1023L), "S"(18L)
               : "rcx", "r11", "memory");
  return ret == 0;
}

// whether the products run on AMX on this call: the CPU and the OS once, the environment
// every call (EDGECC_X86_INT8_ISA names another kernel set: no)
bool amx_ready() {
  static const bool ok = amx_cpu() && amx_os();
  if (!ok) return false;
  const char* want = getenv("EDGECC_X86_INT8_ISA");
  return !want || !*want || strcmp(want, "amx") == 0;
}

// the calling thread's buffer for the rows' padded copy: its own, not a scratch() slot, as
// the callers hold theirs (a linear: 3, 4; a conv: 0, 1, 2, 4) while amx_gemm runs
uint8_t* amx_buffer(size_t bytes) {
  static thread_local uint8_t* buf = 0;
  static thread_local size_t size = 0;
  if (size < bytes) {
    free(buf);
    size = (bytes + 4095) / 4096 * 4096;
    buf = static_cast<uint8_t*>(aligned_alloc(64, size));
  }
  return buf;
}

struct alignas(64) AmxConfig {
  uint8_t palette, start_row, reserved[14];
  uint16_t colsb[16];
  uint8_t rows[16];
};

// C[RT][CT] (tmm0..3, [16][16] int32 each) = A rows (RT blocks of 16, lda) x B panels (CT of
// them, 64-byte rows), nkb steps of 64 k bytes; bt[j]: panel j's last step from a padded copy
// (or null); out: [4][256] int32, tile (i, j) at (2i + j) * 256
template <bool UROWS, int RT, int CT>
__attribute__((target("avx2,fma,amx-tile,amx-int8")))
void amx_block(const uint8_t* a, int64_t lda, const int8_t* const* b, const int8_t* const* bt,
               int64_t nkb, int32_t* out) {
  _tile_zero(0);
  if (CT == 2) _tile_zero(1);
  if (RT == 2) _tile_zero(2);
  if (RT == 2 && CT == 2) _tile_zero(3);
  for (int64_t s = 0; s < nkb; ++s) {
    const bool last = s == nkb - 1;
    _tile_loadd(4, a + s * 64, lda);
    if (RT == 2) _tile_loadd(5, a + 16 * lda + s * 64, lda);
    _tile_loadd(6, last && bt[0] ? bt[0] : b[0] + s * 1024, 64);
    if (CT == 2) _tile_loadd(7, last && bt[1] ? bt[1] : b[1] + s * 1024, 64);
    if (UROWS) {
      _tile_dpbusd(0, 4, 6);
      if (CT == 2) _tile_dpbusd(1, 4, 7);
      if (RT == 2) _tile_dpbusd(2, 5, 6);
      if (RT == 2 && CT == 2) _tile_dpbusd(3, 5, 7);
    } else {
      _tile_dpbsud(0, 4, 6);
      if (CT == 2) _tile_dpbsud(1, 4, 7);
      if (RT == 2) _tile_dpbsud(2, 5, 6);
      if (RT == 2 && CT == 2) _tile_dpbsud(3, 5, 7);
    }
  }
  _tile_stored(0, out, 64);
  if (CT == 2) _tile_stored(1, out + 256, 64);
  if (RT == 2) _tile_stored(2, out + 512, 64);
  if (RT == 2 && CT == 2) _tile_stored(3, out + 768, 64);
}

template <bool UROWS, int RT>
__attribute__((target("avx2,fma,amx-tile,amx-int8")))
void amx_rows(const uint8_t* a, int64_t lda, const int8_t* const* b, const int8_t* const* bt,
              int64_t nkb, int ct, int32_t* out) {
  if (ct == 2) amx_block<UROWS, RT, 2>(a, lda, b, bt, nkb, out);
  else amx_block<UROWS, RT, 1>(a, lda, b, bt, nkb, out);
}

// panel pairs [j0, j1) of the product: A = a ([n_rows padded to 16][lda]), B = g.panels
template <bool UROWS>
__attribute__((target("avx2,fma,amx-tile,amx-int8")))
void amx_pairs(const GemmDot& g, const uint8_t* a, int64_t lda, int64_t j0, int64_t j1) {
  AmxConfig cfg;
  memset(&cfg, 0, sizeof cfg);
  cfg.palette = 1;
  for (int t = 0; t < 8; ++t) { cfg.colsb[t] = 64; cfg.rows[t] = 16; }
  _tile_loadconfig(&cfg);
  alignas(64) int32_t acc[4 * 256];
  alignas(64) int8_t tail[1024];  // the last panel's last k step, zero-padded to 16 quads
  const int64_t kq = g.kq, nkb = (kq + 15) / 16, np = (g.n_cols + 15) / 16;
  const int64_t kt = kq - (nkb - 1) * 16;  // quads in the last k step
  const int8_t* tail_at = 0;
  if (kt < 16 && 2 * j1 >= np) {  // only the very last panel would read past the panels
    memset(tail, 0, sizeof tail);
    memcpy(tail, g.panels + (np - 1) * kq * 64 + (nkb - 1) * 1024, kt * 64);
    tail_at = tail;
  }
  for (int64_t j = j0; j < j1; ++j) {
    const int64_t p = 2 * j;
    const int ct = p + 1 < np ? 2 : 1;
    const int8_t* b[2] = {g.panels + p * kq * 64, g.panels + (p + ct - 1) * kq * 64};
    const int8_t* bt[2] = {p == np - 1 ? tail_at : 0, p + 1 == np - 1 ? tail_at : 0};
    for (int64_t r = 0; r < g.n_rows; r += 32) {
      const int rt = r + 16 < g.n_rows ? 2 : 1;
      if (rt == 2) amx_rows<UROWS, 2>(a + r * lda, lda, b, bt, nkb, ct, acc);
      else amx_rows<UROWS, 1>(a + r * lda, lda, b, bt, nkb, ct, acc);
      for (int i = 0; i < rt; ++i) {
        const int64_t r0 = r + 16 * i;
        const int nr = (int)(g.n_rows - r0 < 16 ? g.n_rows - r0 : 16);
        for (int c = 0; c < ct; ++c) {
          const int64_t c0 = (p + c) * 16;
          const int nc = (int)(g.n_cols - c0 < 16 ? g.n_cols - c0 : 16);
          write_tile(g.e, acc + (2 * i + c) * 256, (int)r0, nr, (int)c0, nc);
        }
      }
    }
  }
  _tile_release();
}
#endif

#if EDGECC_AMX
// g's rows as tiles read them (in place where whole 16-row x 64-byte tiles, else a
// zero-padded copy in the calling thread's buffer); lda: its row stride
const uint8_t* amx_a(const GemmDot& g, int64_t& lda) {
  const int64_t ld = g.kq * 4, nkb = (g.kq + 15) / 16, m8 = (g.n_rows + 7) / 8 * 8;
  const int64_t m16 = (g.n_rows + 15) / 16 * 16;
  const uint8_t* a = reinterpret_cast<const uint8_t*>(g.rows);
  lda = ld;
  if (g.kq % 16 != 0 || m8 != m16) {  // tiles would read past the rows: a padded copy
    lda = nkb * 64;
    uint8_t* copy = amx_buffer(m16 * lda + 64);
    for (int64_t i = 0; i < m16; ++i) {
      uint8_t* dst = copy + i * lda;
      if (i < g.n_rows) {
        memcpy(dst, a + i * ld, ld);
        memset(dst + ld, 0, lda - ld);
      } else {
        memset(dst, 0, lda);
      }
    }
    a = copy;
  }
  return a;
}
#endif

// convolutions run on AMX tiles in this process (amx_conv; the conv count query's answer)
int64_t amx_conv_products = 0;

// a convolution's product on AMX tiles (s8 weight rows x u8 im2col panels, tdpbsud) with
// its panels built by the tasks that multiply them: each task builds the panels of its
// share of panel pairs (build(p) writes panel p of g.panels), then runs those pairs'
// tiles, every 16-row block of weights against panels already in its cache; one pool
// launch per convolution (none under the serial threshold). False (nothing written,
// nothing built) where AMX cannot run.
// edgecc_x86_int8_amx_conv 2 (the default, "pointwise"): deep pointwise convolutions on the
// tiles — 1x1, stride 1, unpadded (their panels are x itself, interleaved), 32+ input
// channels (kq >= 8: half a 16-quad tile step or more) and 4+ panel pairs a pool thread (the
// tiles pool by pairs; fewer keep the VNNI path's (panel, channels) split) — every other
// convolution on the VNNI paths. On an Intel Xeon with AMX-INT8, 1 thread CPU time per call
// (bench/x86_int8_layers.py, s25, MobileNetV2-224): the projections 72 -> 12 on 224x224
// 3.65 -> 1.38 ms, 48 -> 12 1.94 -> 0.79, 96 -> 16 on 112x112 0.73 -> 0.45, 288 -> 48 on 56x56
// 0.44 -> 0.24; the shallow expansions slower (8 -> 48 on 224x224 0.60 -> 0.73, 16 -> 96 on
// 112x112 0.47 -> 0.54: a tile step mostly padding), the stem 0.29 -> 0.45. Every
// convolution on the tiles (1, A/B) lost overall (s24, bench/x86_int8_isa.py, 2 threads:
// w8a8 / fp32 ResNet-20 0.84 vs 0.53 on AVX-512 VNNI, MobileNetV2-32 0.59 vs 0.51): amx_conv
// bypasses the VNNI paths' banded copies, direct panels, split pools and tile write-backs.
// 0: every convolution on the VNNI paths.
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_amx_conv = 2;

// whether every convolution goes to amx_conv (knob 1 and the CPU, OS and environment allow
// AMX): the banded / direct VNNI paths step aside
static inline bool amx_conv_ready() {
#if EDGECC_AMX
  return edgecc_x86_int8_amx_conv == 1 && amx_ready();
#else
  return false;
#endif
}

// whether amx_conv takes this convolution: knob 1, or knob 2 and a deep pointwise one
// (pointwise: 1x1, stride 1, unpadded) with 4+ panel pairs a pool thread
static inline bool amx_conv_takes(const GemmDot& g, bool pointwise) {
#if EDGECC_AMX
  const int64_t knob = edgecc_x86_int8_amx_conv;
  if (knob != 1 && !(knob == 2 && pointwise && g.kq >= 8 &&
                     (g.n_cols + 31) / 32 >= 4 * edgecc_pool_size()))
    return false;
  return amx_ready();
#else
  (void)g; (void)pointwise;
  return false;
#endif
}

template <typename B>
bool amx_conv(const GemmDot& g, const B& build, int64_t build_work, bool pointwise) {
#if EDGECC_AMX
  if (g.n_rows <= 0 || g.n_cols <= 0 || g.kq <= 0 || !amx_conv_takes(g, pointwise))
    return false;
  int64_t lda;
  const uint8_t* a = amx_a(g, lda);
  const int64_t np = (g.n_cols + 15) / 16, pairs = (np + 1) / 2;
  const int64_t work = g.n_rows * g.n_cols * g.kq * 4 / 8 + build_work;
  parallel_for(pairs, [&](int64_t b, int64_t e) {
    for (int64_t p = 2 * b; p < 2 * e && p < np; ++p) build(p);
    amx_pairs<false>(g, a, lda, b, e);
  }, work);
  EDGECC_COUNT(amx_conv_products, 1);
  return true;
#else
  (void)g; (void)build; (void)build_work; (void)pointwise;
  return false;
#endif
}

// the whole product of g on AMX tiles; false (nothing written) where AMX cannot run
__attribute__((unused)) bool amx_gemm(const GemmDot& g, bool urows) {
#if EDGECC_AMX
  if (g.n_rows <= 0 || g.n_cols <= 0 || g.kq <= 0 || !amx_ready()) return false;
  const int64_t ld = g.kq * 4;
  int64_t lda;
  const uint8_t* a = amx_a(g, lda);
  const int64_t pairs = ((g.n_cols + 15) / 16 + 1) / 2;
  const int64_t work = g.n_rows * g.n_cols * ld / 8;  // a tile product does ~8 zmm vpdpbusd's work
  if (urows)
    parallel_for(pairs, [&](int64_t b, int64_t e) { amx_pairs<true>(g, a, lda, b, e); }, work);
  else
    parallel_for(pairs, [&](int64_t b, int64_t e) { amx_pairs<false>(g, a, lda, b, e); }, work);
  EDGECC_COUNT(amx_products, 1);
  return true;
#else
  (void)g; (void)urows;
  return false;
#endif
}
"""

AMX_FFI = r"""
// 1 where the int8 GEMMs run on AMX tiles on this call (CPU, OS and EDGECC_X86_INT8_ISA
// allowing), else 0
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_int8_amx(void*, const TVMFFIAny*, int32_t, TVMFFIAny* result) {
  result->type_index = kTVMFFIInt; result->zero_padding = 0;
#if EDGECC_AMX
  result->v_int64 = amx_ready() ? 1 : 0;
#else
  result->v_int64 = 0;
#endif
  return 0;
}

// how many products amx_gemm ran on AMX tiles in this process
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_int8_amx_products(void*, const TVMFFIAny*, int32_t,
                                           TVMFFIAny* result) {
  result->type_index = kTVMFFIInt; result->zero_padding = 0;
  result->v_int64 = __atomic_load_n(&amx_products, __ATOMIC_RELAXED);
  return 0;
}

// how many convolutions amx_conv ran on AMX tiles in this process
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_int8_amx_conv_products(void*, const TVMFFIAny*, int32_t,
                                                TVMFFIAny* result) {
  result->type_index = kTVMFFIInt; result->zero_padding = 0;
  result->v_int64 = __atomic_load_n(&amx_conv_products, __ATOMIC_RELAXED);
  return 0;
}

// the product alone: rows (int8 [n_rows padded to 8][kq*4]; u8 where urows) x panels (int8
// [ceil(n_cols/16)][kq][16][4]; u8 where not urows) -> out float32 [n_rows][n_cols], the exact
// int32 sums while |acc| < 2^24 (scale 1, bias 0, off 0; a channel per row where not urows,
// as a conv's); meta = [urows, n_rows, kq, n_cols]. Raises where AMX does not run.
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_int8_amx_gemm(void*, const TVMFFIAny* args, int32_t num_args,
                                       TVMFFIAny* result) {
  if (num_args != 4) {
    TVMFFIErrorSetRaisedFromCStr("ValueError", "edgecc_x86_int8_amx_gemm: expected 4 arguments");
    return -1;
  }
  result->type_index = kTVMFFINone; result->zero_padding = 0; result->v_int64 = 0;
  const int64_t* meta = data<int64_t>(args, 2);
  const bool urows = meta[0] != 0;
  const int64_t rows = meta[1], kq = meta[2], cols = meta[3];
  const int64_t ch = urows ? cols : rows;
  int32_t* off = static_cast<int32_t*>(calloc(ch, 4));
  float* scale = static_cast<float*>(malloc(ch * 4));
  float* bias = static_cast<float*>(calloc(ch, 4));
  for (int64_t i = 0; i < ch; ++i) scale[i] = 1.0f;
  Epilogue e;
  memset(&e, 0, sizeof e);
  e.off = off; e.scale = scale; e.bias = bias; e.requant = 0; e.channel_is_row = !urows;
  e.out = data<void>(args, 3); e.ld = cols;
  GemmDot g{data<int8_t>(args, 0), rows, kq, data<int8_t>(args, 1), cols, e, ISA_AVX512VNNI};
  const bool ran = amx_gemm(g, urows);
  free(off); free(scale); free(bias);
  if (!ran) {
    TVMFFIErrorSetRaisedFromCStr("RuntimeError", "edgecc_x86_int8_amx_gemm: AMX does not run "
                                 "here (CPU, OS or EDGECC_X86_INT8_ISA)");
    return -1;
  }
  return 0;
}
"""
