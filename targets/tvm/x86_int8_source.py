"""C++ source of the x86 int8 kernels (``x86_int8``): AVX2 GEMM micro-kernel with the
requantization fused into its write-back, for quantized linears and convolutions.

One fixed text (no per-model code): shapes and modes come in a small int64 ``meta`` tensor,
weights and requantization tables as tensors (Relax constants), so the source compiles once
per build in about a second (only ``tvm/ffi/c_api.h`` is included). Exported with TVM FFI's C
ABI (``__tvm_ffi_<name>``, destination passing: the output is the last argument); the
kernels run on TVM's thread pool (``TVMBackendParallelLaunch``, the pointer the library
loader fills for TVM's own kernels).

Micro-kernel (int16 ``vpmaddwd``: exact for int8 operands — ``vpmaddubsw``'s int16
saturation is not, for full-range weights)::

    for each k pair:   v0, v1 = panel[k/2]            # 16 columns x (k, k+1), int16
                       for r in 0..3:                 # 4 rows, pair broadcast as int32
                           acc[r][0:8]  += madd(bcast(row_r[k:k+2]), v0)
                           acc[r][8:16] += madd(bcast(row_r[k:k+2]), v1)
    write-back:        v = acc + off[ch]                          # int32 (-zx·Σw, bias)
                       y = clamp(((int64)v·m[ch] + a[ch]) >> s[ch], lo, hi) + zy   # int8
                       or y = (float)v · scale[ch] + bias[ch]                       # float

The panel operand is packed ``[C/16][K/2][16][2]`` int16 (weights at compile time for a
linear; the im2col of the input at run time for a convolution, written straight into that
layout), the broadcast operand ``[R][K]`` int16 rows (activations widened at run time for a
linear; weights at compile time for a convolution, whose output rows are then its NCHW
channels — no transposes around the GEMM).

Int8 dot products (VNNI, chosen at run time by cpuid; the AVX2 kernel above is the floor)::

    for each k quad:   v = panel[k/4]                 # 16 columns x (k..k+3), int8
                       for r in rows:                 # 8 (AVX-512, zmm) or 4 (AVX-VNNI, 2 ymm)
                           acc[r] = vpdpbusd(acc[r], u8, s8)   # 4 products a lane
    write-back:        as above, with off - 128·Σw       # the +128 shift's compensation

The unsigned operand is the activations shifted by +128 (``x ^ 0x80``): the broadcast rows
of a linear, the im2col panel of a convolution (whose weights are then the broadcast rows);
``128·Σw`` per output channel is packed with the weights at compile time, so the result is
the AVX2 kernel's, bit for bit (int32 arithmetic, wrapping alike). Weights are packed in
both layouts in one constant (the kernel picks its part); ``EDGECC_X86_INT8_ISA=avx2|avxvnni``
narrows the choice (tests and bench/x86_int8_isa.py compare the paths on one build).

Fused write-back (``x86_int8.Post``, 11-13 arguments: ``post`` replaces the output at 9,
then the residual and the outputs): after the float epilogue, act, + residual, relu, then
a float32 and/or an int8 (quantized) output. With the AVX-512 VNNI kernels the requantized
write-back of convolutions uses AVX-512 (``write_rows_512``, ``write_channel_512``): for
every real epilogue (clamp within int8 after the zero point) ``requant16_sat`` — per-lane
``vpsravq``, saturating ``vpmovsqb`` narrowing and a byte clamp, with the zero point folded
into the 64-bit add at compile time (``x86_int8.kernel_form``); the same int8 values.
Where every shift is >= 32 (kernel_form marks the epilogue ``hi32``: meta[1] = 2; every
MobileNetV2 / ResNet-20 layer) ``requant16_hi``: the 16 high dwords of the 64-bit sums by one
masked ``vpshufd``, ``vpsravd`` by s - 32, one ``vpmovsdb`` (its saturation the clamp when
the clamp is all of int8), and with >= 512 outputs a channel the offset folded into the
add per call (``fold_off``). Counted by ``edgecc_x86_int8_hi32`` / ``_off_folded``; the
library symbol ``edgecc_x86_int8_hi32_off`` turns it off (A/B: bench/x86_int8_layers.py).

Depthwise: the padded plane split into its stride phases, so each tap is one unit-stride
vectorized run over the whole output plane (on a grid as wide as the phase; the extra
columns are dropped), two taps a ``vpmaddwd`` (``dw_taps``: 16 int32 sums in registers
across every tap), then written with the vector requantization.
With AVX-512 the runs take 32 outputs a step (``dw_taps_512``), and small (<= 64 output
pixels) or strided depthwise convolutions run channel-blocked (``dw_block16``: 16 channels
a zmm, the block's padded input as int32 [hp][wp][16] built by dword gathers, one
``vpmaddwd`` a tap, each channel's column gathered back into the same write-back; counted
by ``edgecc_x86_int8_dw_blocked``; the library knob ``edgecc_x86_int8_dw_block16`` = 0 turns it off for A/B).
With AVX-512 VBMI (before those): ``dw_perm`` — the channel's plane as u8 (x ^ 0x80) in a
padded copy, 16 outputs a vector, each kernel row's 4 taps a dword lane shuffled out of the
row's window by ``vpermb`` / ``vpermt2b`` and added by one ``vpdpbusd`` (sums start at
-128·Σw: exactly the int32 sums above); stride-1 maps >= 16 wide slide down 4 output rows a
column block (a row's shuffle feeds every output row it is a tap row of), narrower maps put
several output rows in a vector; output maps < 32 pixels of larger planes stay channel-
blocked. Input planes of <= 64 bytes (8x8, 4x4) take ``dw_direct``: no copy, the taps shuffled
straight from the loaded plane by a masked ``vpermb`` (padding lanes zx ^ 0x80), 4 channels
at a time; the channels' kernel-row weight dwords and -128·Σw packed at compile time, and
with a hi32 epilogue the int8 outputs written from the registers (``dw_write_hi``: no int32
round trip, no per-channel call; ``_dw_direct_hi``, knob ``edgecc_x86_int8_dw_write_hi`` = 0 for A/B;
Zen 4, 1 thread, under load: packing the weights per call in registers (not a scalar loop)
~10 -> 7.5 us (192@8x8), ~14 -> 10.6 us (480@4x4), separate runs; the register write-back
then 7.5 -> 6.2 / 10.6 -> 7.4 us, A/B; the weights packed at compile time: see the commit).
Planes of 65..256 bytes (16x16 at stride 2): ``dw_direct``'s wide form (x86_int8_dw_source).
Larger planes of rows <= 64 bytes: ``dw_rows`` (x86_int8_dwrows_source: no padded copy).
Counted by ``edgecc_x86_int8_dw_perm`` / ``_dw_direct``;
the knob ``edgecc_x86_int8_dw_vbmi`` = 0 turns both off for A/B (the entry:
x86_int8_dw_entry_source). The pool's work measure of these is per
output (``edgecc_x86_int8_dw_output_work``, 64; a library symbol for A/B), so 8x8 / 4x4 maps of
many channels run on both threads.

Deep pointwise convolutions on AMX (``x86_amx_source.amx_conv``; every one with the library's
``edgecc_x86_int8_amx_conv`` = 1) where the CPU and OS allow; im2col panels
that are not one 16-byte run (maps narrower than 16, strides) are built with 16-lane dword
gathers from the padded copy (``gather_panel``) instead of a byte loop.
(The dw_perm / dw_direct C++ text lives in ``x86_int8_dw_source.DW_KERNELS``, spliced in; so do
``x86_int8_direct_source``, ``_tile_source``, ``_pool_source``, ``_quant_source``'s and the
path-counter queries of ``_counters_source``.)
With AVX-512 VBMI, panels whose 16 pixels lie within 64 bytes (8x8 / 4x4 maps, strided rows
of <= 32 columns) are built by byte shuffles instead (``perm_panel``: a masked load and a
merge-masked ``vpermb`` per k; Zen 4's gathers are slow): counted by
``edgecc_x86_int8_perm_panels``, ``EDGECC_X86_PERM_PANEL=0`` for A/B. Zen 4, 1 thread, under
load: ResNet-20's 64@8x8 convolutions 27 -> 15 us, its stride-2 ones 21 -> 10 / 14 -> 8 us.
Panels of 16-byte runs take one ``vpermb`` a k quad (``interleave_panel_vbmi``: a load, three
inserts, the shuffle, one 64-byte store; ``edgecc_x86_int8_vbmi_interleave``, the same switch):
ResNet-20's 16@32x32 / 32@16x16 3x3 convolutions ~8-10% faster; MobileNetV2's 1x1 ones even.
The fused float write-back (``Post``: ResNet's residual convolutions) of 16-column tiles runs
``post16`` with AVX-512 (``edgecc_x86_int8_post16``, ``EDGECC_X86_POST16=0`` for A/B): the same
float operations in the same order; ~5% off the 16@32x32 residual convolutions on Zen 4.
Pooled padded convolutions split by bands of output rows (whole panels; two a thread, fewer
where the halo rows would be over half a band): each band pads the input rows it reads into
its own thread's buffer, so the padded copy is split too — before, the pool's other thread
waited through it (``edgecc_x86_int8_conv_bands``, ``EDGECC_X86_CONV_BANDS=0`` for A/B).
Zen 4, 2 threads, per call vs serial: 16@32x32 1.25x -> 1.6x, 32@16x16 1.3x -> 1.5x.
The padded copy runs ``pad_rows`` (``x86_int8_pad_source``; ``edgecc_x86_int8_flip_copy``). The
fused float write-back takes a tile's rows in one ``post16_rows`` call
(``edgecc_x86_int8_post_rows``). A pool job's size counts the write-back, panels and copy
besides the multiply-adds (``edgecc_x86_int8_full_work``: small convolutions pool too), and a
convolution of few panels (1x1 on 8x8 / 4x4 maps) pools (panel, 8 channels) items
(``edgecc_x86_int8_oc_split``). Each knob 0 restores the path before (A/B), each has a counter.
"""

from edgecc.targets.tvm.x86_amx_source import AMX_FFI, AMX_KERNELS, AMX_SYMBOLS
from edgecc.targets.tvm.x86_int8_block import BLOCK_FFI
from edgecc.targets.tvm.x86_int8_block import SYMBOLS as BLOCK_SYMBOLS
from edgecc.targets.tvm.x86_int8_counters_source import COUNTERS_FFI
from edgecc.targets.tvm.x86_int8_direct_source import DIRECT_FFI, DIRECT_KERNELS, DIRECT_SYMBOLS
from edgecc.targets.tvm.x86_int8_dw_entry_source import DW_ENTRY_FFI
from edgecc.targets.tvm.x86_int8_dw_source import DW_KERNELS
from edgecc.targets.tvm.x86_int8_dwrows_source import DWROWS_FFI, DWROWS_KERNELS, DWROWS_SYMBOLS
from edgecc.targets.tvm.x86_int8_layer_tables_source import LAYER_TABLES_KERNELS
from edgecc.targets.tvm.x86_int8_pad_source import PAD_KERNELS
from edgecc.targets.tvm.x86_int8_pair import PAIR_FFI, PAIR_KERNELS
from edgecc.targets.tvm.x86_int8_pair import SYMBOLS as PAIR_SYMBOLS
from edgecc.targets.tvm.x86_int8_pool_source import POOL_FFI, POOL_KERNELS, POOL_SYMBOLS
from edgecc.targets.tvm.x86_int8_quant_source import QUANT_KERNELS, QUANT_SYMBOLS
from edgecc.targets.tvm.x86_int8_stem_source import STEM_FFI, STEM_KERNELS, STEM_SYMBOLS
from edgecc.targets.tvm.x86_int8_tile_source import TILE_FFI, TILE_KERNELS, TILE_SYMBOLS
from edgecc.targets.tvm.x86_kernel_ffi import ffi_prelude

SYMBOLS = ("edgecc_x86_qlinear", "edgecc_x86_qconv", "edgecc_x86_qdwconv")
ISA_QUERY = "edgecc_x86_int8_isa"  # () -> 0 AVX2, 1 AVX-VNNI, 2 AVX-512 VNNI (this call's pick)
DW_BLOCKED = "edgecc_x86_int8_dw_blocked"  # () -> depthwise calls run channel-blocked so far
DW_PERM = "edgecc_x86_int8_dw_perm"  # () -> depthwise calls run on dw_perm so far
DW_DIRECT = "edgecc_x86_int8_dw_direct"  # () -> ... of them on small planes without a copy
DW_DIRECT_HI = "edgecc_x86_int8_dw_direct_hi"  # () -> ... of them written back from registers
PERM_PANELS = "edgecc_x86_int8_perm_panels"  # () -> conv calls with panels by perm_panel
POST16 = "edgecc_x86_int8_post16"  # () -> conv calls whose fused write-back ran post16
VBMI_INTERLEAVE = "edgecc_x86_int8_vbmi_interleave"  # () -> ... panels by one vpermb a quad
CONV_BANDS = "edgecc_x86_int8_conv_bands"  # () -> conv calls pooled by bands of output rows
FLIP_COPIES = "edgecc_x86_int8_flip_copies"  # () -> conv calls whose padded copy ran pad_rows
POST_ROWS = "edgecc_x86_int8_post_rows"  # () -> conv calls written back by post16_rows
OC_SPLIT = "edgecc_x86_int8_oc_split"  # () -> conv calls pooled by (panel, 8 channels)
OC_MAJOR = "edgecc_x86_int8_oc_major"  # () -> ... of them with channel-major items
CONV_ROWS = "edgecc_x86_int8_conv_rows"  # () -> 1x1 conv calls pooled by conv_pool_rows
HI32 = "edgecc_x86_int8_hi32"  # () -> convolution calls written back by requant16_hi so far
HI32_YMM = "edgecc_x86_int8_hi32_ymm"  # () -> ... by requant8_hi (256-bit: AVX2, AVX-VNNI)
DW_SPLIT2 = "edgecc_x86_int8_dw_split2"  # () -> per-channel depthwise calls by split_columns2
REQUANT_PROBE = "edgecc_x86_int8_requant_probe"  # the write-back alone (tests)
OFF_FOLDED = "edgecc_x86_int8_off_folded"  # () -> ... of them with off folded into the add
EXPORTED = (*SYMBOLS, ISA_QUERY, DW_BLOCKED, DW_PERM, DW_DIRECT, DW_DIRECT_HI, HI32, HI32_YMM,
            DW_SPLIT2, REQUANT_PROBE, OFF_FOLDED, PERM_PANELS, POST16, VBMI_INTERLEAVE, CONV_BANDS,
            FLIP_COPIES, POST_ROWS, OC_SPLIT, OC_MAJOR, CONV_ROWS,
            *DWROWS_SYMBOLS, *QUANT_SYMBOLS, *DIRECT_SYMBOLS, *TILE_SYMBOLS, *POOL_SYMBOLS,
            *STEM_SYMBOLS, *AMX_SYMBOLS, *BLOCK_SYMBOLS,
            *PAIR_SYMBOLS)  # every symbol the library exports

SOURCE = r"""
// edgecc x86 int8 kernels (targets/tvm/x86_int8_source.py)
#pragma GCC optimize("O3", "fp-contract=off")
#pragma GCC target("avx2,fma")
#include <tvm/ffi/c_api.h>
#include <immintrin.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <algorithm>
#include <numeric>
#include <type_traits>

""" + ffi_prelude(1 << 17) + r"""

// The kernels' path counters (the tests' proof that a path ran; bench/ diagnostics) count
// only while edgecc_x86_int8_counters is set: at load from EDGECC_KERNEL_COUNTERS=1 in the
// environment (tests/conftest.py sets it), or through the symbol. Off (the default) the
// kernels take no atomic and write no shared flag per call: with the band form both threads
// ran the entries' ~10 locked adds and flag exchanges on the same lines at once. MobileNetV2-32
// w8a8, 2 threads, Zen 5 2-vCPU KVM (bench/x86_int8_knob_ab.py, 600 repeats): off 0.949x of on
// (paired median; p10 / p90 0.81 / 1.04). Only counting: the outputs are the same (tested).
// (Its own line: read by every call, never written beside counters.)
extern "C" __attribute__((visibility("default"))) alignas(64) int64_t edgecc_x86_int8_counters =
    0;
__attribute__((constructor)) static void edgecc_x86_int8_counters_from_env() {
  const char* v = getenv("EDGECC_KERNEL_COUNTERS");
  edgecc_x86_int8_counters = v && v[0] == '1';
}
#define EDGECC_COUNT(var, n)                                                    \
  do {                                                                          \
    if (edgecc_x86_int8_counters) __atomic_fetch_add(&(var), (n), __ATOMIC_RELAXED); \
  } while (0)
// a per-call path flag taken (cleared) and, where it was set, its counter bumped
#define EDGECC_COUNT_SEEN(flag, var)                                                      \
  do {                                                                                    \
    if (edgecc_x86_int8_counters && (flag).exchange(0, std::memory_order_relaxed))        \
      __atomic_fetch_add(&(var), 1, __ATOMIC_RELAXED);                                    \
  } while (0)

// nonzero: no requant16_hi (the 64-bit write-back as before it) — an A/B switch a benchmark
// sets through the library's symbol (bench/x86_int8_layers.py), read once per kernel call
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_hi32_off = 0;

namespace {

// x86_int8_c4: an int8 output stored in the next convolution's padded channel-quad copy
// layout [C/4][hp][wp][4] (x + 128; borders ph / pw): base null = the plain NCHW output
struct C4Out {
  int8_t* base = nullptr;
  int64_t hp = 0, wp = 0, ph = 0, pw = 0, ow = 0;
};

struct Epilogue {
  const int32_t* off; const int64_t* mult; const int64_t* add; const int64_t* shift;
  const float* scale; const float* bias;
  int requant; int channel_is_row; int64_t lo, hi, zy;
  void* out; int64_t ld;  // out[row * ld + col]
  // fused float write-back (channel_is_row, requant 0; see post_args): after scale and bias,
  // act (1 relu, 2 relu6), + res[at], relu (post_relu), then fout[at] = v and/or
  // qout[at] = clamp(rint(v / qs) + qz, qmin, qmax): what TVM's add / relu / quantize did
  // as separate kernels, the same float operations in the same order
  int fused; int act; int post_relu;
  const float* res; float* fout; int8_t* qout;
  float qs, qz, qmin, qmax;
  int wide;  // AVX-512 may be used by the write-back (the AVX-512 VNNI kernels' calls)
  int post16;  // the fused write-back of 16-column tiles runs post16 (wide and fused)
  int hi32;  // requant16_hi applies (meta[1] == 2: x86_int8.kernel_form's hi32; see there)
  // add + off·mult per channel (fold_off), or null: requant16_hi then takes the accumulator
  // as it is (no vpaddd of off) — set only where acc + off provably stays in int32
  const int64_t* fadd;
  C4Out c4;  // set by qconv's x86_int8_c4 output (tile_write / tile_post store there)
};

// the requantized write-back with AVX-512 (64-bit multiply, arithmetic shift, min / max
// and narrowing in one instruction each; AVX2 emulates the shift and the clamps): 16 int32
// accumulators of channel ch (+ off) -> 16 int8 at dst, the scalar store_one's arithmetic
__attribute__((target("avx2,fma,avx512f,avx512bw")))
static inline __m128i requant16_512(__m512i v, __m512i m, __m512i a, __m128i s, __m512i lo,
                                    __m512i hi, __m512i zy) {
  __m512i even = _mm512_add_epi64(_mm512_mul_epi32(v, m), a);
  __m512i odd = _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(v, 32), m), a);
  even = _mm512_add_epi64(_mm512_min_epi64(_mm512_max_epi64(_mm512_sra_epi64(even, s), lo), hi),
                          zy);
  odd = _mm512_add_epi64(_mm512_min_epi64(_mm512_max_epi64(_mm512_sra_epi64(odd, s), lo), hi),
                         zy);
  return _mm512_cvtepi32_epi8(_mm512_mask_blend_epi32(0xAAAA, even, _mm512_slli_epi64(odd, 32)));
}

// requant16_512's result in fewer instructions (the same int8 values), for an epilogue whose
// clamp lies in int8 after the zero point ([lo + zy, hi + zy] within [-128, 127], as every
// real one does: Sat8): zy is added after the shift only when it is not already in a
// (ADD_ZY; x86_int8.kernel_form folds it at compile time: a + zy·2^s, lo + zy, hi + zy,
// zy 0 — floor((p + a + zy·2^s) / 2^s) = floor((p + a) / 2^s) + zy), the shift takes its
// count per lane (vpsravq: one uop), the int64 results narrow to int8 with signed
// saturation (vpmovsqb) and interleave back in order, and the clamp runs on bytes —
// saturating into a range that holds [lo + zy, hi + zy], then clamping, equals clamping.
struct Sat8 {
  bool ok;       // the clamp lies in int8: these paths apply
  __m128i lo8, hi8;
};
__attribute__((target("avx2,fma,avx512f,avx512bw")))
static inline Sat8 sat8(const Epilogue& e) {
  Sat8 q;
  q.ok = e.lo + e.zy >= -128 && e.hi + e.zy <= 127 && e.lo <= e.hi;
  q.lo8 = _mm_set1_epi8((char)(q.ok ? e.lo + e.zy : 0));
  q.hi8 = _mm_set1_epi8((char)(q.ok ? e.hi + e.zy : 0));
  return q;
}
template <bool ADD_ZY>
__attribute__((target("avx2,fma,avx512f,avx512bw")))
static inline __m128i requant16_sat(__m512i v, __m512i m, __m512i a, __m512i s, __m512i zy,
                                    const Sat8& q) {
  __m512i even = _mm512_srav_epi64(_mm512_add_epi64(_mm512_mul_epi32(v, m), a), s);
  __m512i odd = _mm512_srav_epi64(
      _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(v, 32), m), a), s);
  if (ADD_ZY) {
    even = _mm512_add_epi64(even, zy);
    odd = _mm512_add_epi64(odd, zy);
  }
  const __m128i b = _mm_unpacklo_epi8(_mm512_cvtsepi64_epi8(even), _mm512_cvtsepi64_epi8(odd));
  return _mm_min_epi8(_mm_max_epi8(b, q.lo8), q.hi8);
}

// requant16_sat<false>'s result in fewer instructions (the same int8 values), for an epilogue
// whose every shift is >= 32 (x86_int8.kernel_form marks it hi32 at compile time; zy 0,
// clamp in int8): the high dword of the int64 sum p + a is floor((p + a) / 2^32) (two's
// complement), and floor(floor(x / 2^32) / 2^(s-32)) = floor(x / 2^s) — so one masked
// vpshufd merges the 16 high dwords in order, one vpsravd (count s - 32) shifts them, one
// vpmovsdb narrows (saturating into a range that holds [lo, hi]), then the byte clamp:
// 2 vpsravq + 2 vpmovsqb (2 uops each) + vpunpcklbw become vpshufd + vpsravd + vpmovsdb.
// CLAMP false: the clamp is all of int8 ([-128, 127], as a relu6 / uint8-style quantize's
// is once zy is folded: saturation is the clamp), no byte min / max
template <bool CLAMP>
__attribute__((target("avx2,fma,avx512f,avx512bw")))
static inline __m128i requant16_hi(__m512i v, __m512i m, __m512i a, __m512i s32,
                                   const Sat8& q) {
  const __m512i even = _mm512_add_epi64(_mm512_mul_epi32(v, m), a);
  const __m512i odd = _mm512_add_epi64(_mm512_mul_epi32(_mm512_srli_epi64(v, 32), m), a);
  const __m512i h = _mm512_mask_shuffle_epi32(odd, 0x5555, even, _MM_PERM_CDAB);
  const __m128i b = _mm512_cvtsepi32_epi8(_mm512_srav_epi32(h, s32));
  return CLAMP ? _mm_min_epi8(_mm_max_epi8(b, q.lo8), q.hi8) : b;
}
static inline bool full_int8(const Epilogue& e) { return e.lo == -128 && e.hi == 127; }

// write_rows_512 of a hi32 epilogue: the form picked once a tile, the rows unrolled
template <bool CLAMP, bool FOLD>
__attribute__((target("avx2,fma,avx512f,avx512bw")))
static inline void write_rows_hi(const Epilogue& e, const Sat8& q, const int32_t* acc, int r0,
                                 int nr, int c0) {
#pragma GCC unroll 8
  for (int r = 0; r < nr; ++r) {
    const int64_t row = r0 + r;
    const __m512i v = FOLD ? _mm512_loadu_si512(acc + r * 16)
                           : _mm512_add_epi32(_mm512_loadu_si512(acc + r * 16),
                                              _mm512_set1_epi32(e.off[row]));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(static_cast<int8_t*>(e.out) + row * e.ld + c0),
                     requant16_hi<CLAMP>(v, _mm512_set1_epi64(e.mult[row]),
                                         _mm512_set1_epi64(FOLD ? e.fadd[row] : e.add[row]),
                                         _mm512_set1_epi32((int32_t)(e.shift[row] - 32)), q));
  }
}

__attribute__((target("avx2,fma,avx512f,avx512bw")))
static void write_rows_512(const Epilogue& e, const int32_t* acc, int r0, int nr, int c0) {
  const Sat8 q = sat8(e);
  if (e.hi32) {
    const bool full = full_int8(e);
    if (e.fadd && full) write_rows_hi<false, true>(e, q, acc, r0, nr, c0);
    else if (e.fadd) write_rows_hi<true, true>(e, q, acc, r0, nr, c0);
    else if (full) write_rows_hi<false, false>(e, q, acc, r0, nr, c0);
    else write_rows_hi<true, false>(e, q, acc, r0, nr, c0);
    return;
  }
  const __m512i lo = _mm512_set1_epi64(e.lo), hi = _mm512_set1_epi64(e.hi),
                zy = _mm512_set1_epi64(e.zy);
  for (int r = 0; r < nr; ++r) {
    const int64_t row = r0 + r;
    const __m512i v = _mm512_add_epi32(_mm512_loadu_si512(acc + r * 16),
                                       _mm512_set1_epi32(e.off[row]));
    __m128i* o = reinterpret_cast<__m128i*>(static_cast<int8_t*>(e.out) + row * e.ld + c0);
    if (q.ok && e.zy == 0) {
      _mm_storeu_si128(o, requant16_sat<false>(v, _mm512_set1_epi64(e.mult[row]),
                                               _mm512_set1_epi64(e.add[row]),
                                               _mm512_set1_epi64(e.shift[row]), zy, q));
    } else if (q.ok) {
      _mm_storeu_si128(o, requant16_sat<true>(v, _mm512_set1_epi64(e.mult[row]),
                                              _mm512_set1_epi64(e.add[row]),
                                              _mm512_set1_epi64(e.shift[row]), zy, q));
    } else {
      _mm_storeu_si128(o, requant16_512(v, _mm512_set1_epi64(e.mult[row]),
                                        _mm512_set1_epi64(e.add[row]),
                                        _mm_cvtsi64_si128(e.shift[row]), lo, hi, zy));
    }
  }
}

// n outputs of channel ch, 16 at a time (the rest: the caller's); returns how many it wrote
__attribute__((target("avx2,fma,avx512f,avx512bw")))
static int64_t write_channel_512(const Epilogue& e, int64_t ch, const int32_t* acc, int64_t n,
                                 int8_t* o) {
  const __m512i lo = _mm512_set1_epi64(e.lo), hi = _mm512_set1_epi64(e.hi),
                zy = _mm512_set1_epi64(e.zy), m = _mm512_set1_epi64(e.mult[ch]),
                off = _mm512_set1_epi32(e.off[ch]);
  const Sat8 q = sat8(e);
  int64_t i = 0;
  const __m512i a = _mm512_set1_epi64(e.add[ch]), sv = _mm512_set1_epi64(e.shift[ch]);
  if (e.hi32) {
    const __m512i s32 = _mm512_set1_epi32((int32_t)(e.shift[ch] - 32));
    if (e.fadd) {
      const __m512i fa = _mm512_set1_epi64(e.fadd[ch]);
      if (full_int8(e)) {
        for (; i + 16 <= n; i += 16)
          _mm_storeu_si128(reinterpret_cast<__m128i*>(o + i),
                           requant16_hi<false>(_mm512_loadu_si512(acc + i), m, fa, s32, q));
        return i;
      }
      for (; i + 16 <= n; i += 16)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(o + i),
                         requant16_hi<true>(_mm512_loadu_si512(acc + i), m, fa, s32, q));
      return i;
    }
    if (full_int8(e)) {
      for (; i + 16 <= n; i += 16)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(o + i),
                         requant16_hi<false>(_mm512_add_epi32(_mm512_loadu_si512(acc + i), off),
                                             m, a, s32, q));
      return i;
    }
    for (; i + 16 <= n; i += 16)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o + i),
                       requant16_hi<true>(_mm512_add_epi32(_mm512_loadu_si512(acc + i), off),
                                          m, a, s32, q));
    return i;
  }
  if (q.ok && e.zy == 0) {
    for (; i + 16 <= n; i += 16)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o + i),
                       requant16_sat<false>(_mm512_add_epi32(_mm512_loadu_si512(acc + i), off),
                                            m, a, sv, zy, q));
    return i;
  }
  if (q.ok) {
    for (; i + 16 <= n; i += 16)
      _mm_storeu_si128(reinterpret_cast<__m128i*>(o + i),
                       requant16_sat<true>(_mm512_add_epi32(_mm512_loadu_si512(acc + i), off),
                                           m, a, sv, zy, q));
    return i;
  }
  const __m128i s = _mm_cvtsi64_si128(e.shift[ch]);
  for (; i + 16 <= n; i += 16)
    _mm_storeu_si128(reinterpret_cast<__m128i*>(o + i),
                     requant16_512(_mm512_add_epi32(_mm512_loadu_si512(acc + i), off), m, a, s,
                                   lo, hi, zy));
  return i;
}

// the fused write-back of 8 outputs of one channel (v: float(acc + off) * scale + bias) at
// element at (fused: res, fout, qout all indexed alike)
static inline void post8(const Epilogue& e, __m256 v, int64_t at) {
  const __m256 zero = _mm256_setzero_ps();
  if (e.act) v = _mm256_max_ps(v, zero);
  if (e.act == 2) v = _mm256_min_ps(v, _mm256_set1_ps(6.0f));
  if (e.res) v = _mm256_add_ps(v, _mm256_loadu_ps(e.res + at));
  if (e.post_relu) v = _mm256_max_ps(v, zero);
  if (e.fout) _mm256_storeu_ps(e.fout + at, v);
  if (e.qout) {
    __m256 q = _mm256_round_ps(_mm256_div_ps(v, _mm256_set1_ps(e.qs)),
                               _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    q = _mm256_add_ps(q, _mm256_set1_ps(e.qz));
    q = _mm256_min_ps(_mm256_max_ps(q, _mm256_set1_ps(e.qmin)), _mm256_set1_ps(e.qmax));
    const __m256i i = _mm256_cvtps_epi32(q);  // exact: integers in int8 range
    const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(i), _mm256_extracti128_si256(i, 1));
    _mm_storel_epi64(reinterpret_cast<__m128i*>(e.qout + at), _mm_packs_epi16(w16, w16));
  }
}

// post8 on 16 outputs of one channel with AVX-512 (e.wide): the same float operations in the
// same order (no contraction: fp-contract=off), the int8 narrowing saturating as packs does
int64_t post16_calls = 0;  // convolution calls whose fused write-back ran post16 (a test's)
// set by post16, taken by the call (post16_calls). Stored only when clear: post16 runs per
// 16 outputs of a channel on both of the pool's threads, and a store each time moved the
// line between the cores (~1.5-2x slower ResNet-20 convolutions at 2 threads than at 1 on
// Zen 4); a load of a line no one writes stays in both caches
std::atomic<int> post16_seen{0};
__attribute__((target("avx2,fma,avx512f,avx512bw")))
static void post16(const Epilogue& e, const int32_t* acc, int32_t off, float scale,
                   float bias, int64_t at) {
  if (!post16_seen.load(std::memory_order_relaxed))
    post16_seen.store(1, std::memory_order_relaxed);
  const __m512 zero = _mm512_setzero_ps();
  const __m512i a = _mm512_add_epi32(_mm512_loadu_si512(acc), _mm512_set1_epi32(off));
  __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(a), _mm512_set1_ps(scale)),
                           _mm512_set1_ps(bias));
  if (e.act) v = _mm512_max_ps(v, zero);
  if (e.act == 2) v = _mm512_min_ps(v, _mm512_set1_ps(6.0f));
  if (e.res) v = _mm512_add_ps(v, _mm512_loadu_ps(e.res + at));
  if (e.post_relu) v = _mm512_max_ps(v, zero);
  if (e.fout) _mm512_storeu_ps(e.fout + at, v);
  if (e.qout) {
    __m512 q = _mm512_roundscale_ps(_mm512_div_ps(v, _mm512_set1_ps(e.qs)),
                                    _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    q = _mm512_add_ps(q, _mm512_set1_ps(e.qz));
    q = _mm512_min_ps(_mm512_max_ps(q, _mm512_set1_ps(e.qmin)), _mm512_set1_ps(e.qmax));
    _mm_storeu_si128(reinterpret_cast<__m128i*>(e.qout + at),
                     _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(q)));
  }
}

// post16 over a tile's nr rows (a channel each) in one call: the constants broadcast once, and
// the rows' chains (the vdivps, the rounding, the narrowing) overlap, where a call a row ran
// them back to back behind a call, a vzeroupper and a return — post16 was ~37% of ResNet-20's
// w8a8 stem and ~32% of its 1x1 stride-2 shortcuts (float write-backs) on Zen 4. The same
// float operations in the same order per output (bit-identical). edgecc_x86_int8_post_rows 0:
// post16 a row (A/B); counted per call in post_rows_calls.
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_post_rows = 1;
int64_t post_rows_calls = 0;  // convolution calls written back by post16_rows (a test's)
std::atomic<int> post_rows_seen{0};  // set like post16_seen (stored only when clear)
__attribute__((target("avx2,fma,avx512f,avx512bw")))
static void post16_rows(const Epilogue& e, const int32_t* acc, int64_t r0, int nr, int64_t c0) {
  if (!post16_seen.load(std::memory_order_relaxed))
    post16_seen.store(1, std::memory_order_relaxed);
  if (!post_rows_seen.load(std::memory_order_relaxed))
    post_rows_seen.store(1, std::memory_order_relaxed);
  const __m512 zero = _mm512_setzero_ps(), six = _mm512_set1_ps(6.0f);
  const __m512 qs = _mm512_set1_ps(e.qs), qz = _mm512_set1_ps(e.qz);
  const __m512 qmin = _mm512_set1_ps(e.qmin), qmax = _mm512_set1_ps(e.qmax);
  for (int r = 0; r < nr; ++r) {
    const int64_t row = r0 + r, at = row * e.ld + c0;
    const __m512i a = _mm512_add_epi32(_mm512_loadu_si512(acc + r * 16),
                                       _mm512_set1_epi32(e.off[row]));
    __m512 v = _mm512_add_ps(_mm512_mul_ps(_mm512_cvtepi32_ps(a), _mm512_set1_ps(e.scale[row])),
                             _mm512_set1_ps(e.bias[row]));
    if (e.act) v = _mm512_max_ps(v, zero);
    if (e.act == 2) v = _mm512_min_ps(v, six);
    if (e.res) v = _mm512_add_ps(v, _mm512_loadu_ps(e.res + at));
    if (e.post_relu) v = _mm512_max_ps(v, zero);
    if (e.fout) _mm512_storeu_ps(e.fout + at, v);
    if (e.qout) {
      __m512 q = _mm512_roundscale_ps(_mm512_div_ps(v, qs),
                                      _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
      q = _mm512_min_ps(_mm512_max_ps(_mm512_add_ps(q, qz), qmin), qmax);
      _mm_storeu_si128(reinterpret_cast<__m128i*>(e.qout + at),
                       _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(q)));
    }
  }
}

static inline void post1(const Epilogue& e, float v, int64_t at) {
  if (e.act) v = v > 0.0f ? v : 0.0f;
  if (e.act == 2) v = v < 6.0f ? v : 6.0f;
  if (e.res) v = v + e.res[at];
  if (e.post_relu) v = v > 0.0f ? v : 0.0f;
  if (e.fout) e.fout[at] = v;
  if (e.qout) {
    float q = __builtin_nearbyintf(v / e.qs) + e.qz;
    q = q < e.qmin ? e.qmin : (q > e.qmax ? e.qmax : q);
    e.qout[at] = (int8_t)(int32_t)q;
  }
}

// e with its output pointers advanced by n elements (the next batch item of a convolution)
static inline Epilogue advanced(const Epilogue& e, int64_t n) {
  Epilogue o = e;
  o.out = static_cast<char*>(e.out) + n * (e.requant ? 1 : 4);
  if (e.res) o.res += n;
  if (e.fout) o.fout += n;
  if (e.qout) o.qout += n;
  return o;
}

// 16 int8 of row k (a) and of row k+1 (b) -> [16][2] int16 pairs (a_i, b_i)
__attribute__((target("avx2,fma")))
static inline void im2col_pair(const int8_t* a, const int8_t* b, int16_t* dst) {
  const __m256i a16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a)));
  const __m256i b16 = _mm256_cvtepi8_epi16(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b)));
  const __m256i lo = _mm256_unpacklo_epi16(a16, b16), hi = _mm256_unpackhi_epi16(a16, b16);
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst), _mm256_permute2x128_si256(lo, hi, 0x20));
  _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + 16),
                      _mm256_permute2x128_si256(lo, hi, 0x31));
}

// one output of channel ch: requantized int8, or float
static inline void store_one(const Epilogue& e, int64_t ch, int32_t acc, int64_t at) {
  const int32_t v = (int32_t)((uint32_t)acc + (uint32_t)e.off[ch]);
  if (e.requant) {
    int64_t y = ((int64_t)v * e.mult[ch] + e.add[ch]) >> e.shift[ch];
    y = y < e.lo ? e.lo : (y > e.hi ? e.hi : y);
    static_cast<int8_t*>(e.out)[at] = (int8_t)(y + e.zy);
  } else if (e.fused) {
    post1(e, (float)v * e.scale[ch] + e.bias[ch], at);
  } else {
    static_cast<float*>(e.out)[at] = (float)v * e.scale[ch] + e.bias[ch];
  }
}

// arithmetic shift right of int64 lanes by a count (AVX2 has only the logical one)
static inline __m256i sra64(__m256i x, __m128i count) {
  const __m256i sign = _mm256_cmpgt_epi64(_mm256_setzero_si256(), x);
  return _mm256_xor_si256(_mm256_srl_epi64(_mm256_xor_si256(x, sign), count), sign);
}

static inline __m256i clamp64(__m256i y, __m256i lo, __m256i hi) {
  y = _mm256_blendv_epi8(y, lo, _mm256_cmpgt_epi64(lo, y));
  return _mm256_blendv_epi8(y, hi, _mm256_cmpgt_epi64(y, hi));
}

// 8 int32 (one channel: multiplier < 2^31, add, shift) -> 8 int32 in [lo, hi] + zy, exactly
// the scalar ((int64)v * m + a) >> s, clamp, + zy
static inline __m256i requant8(__m256i v, __m256i m, __m256i a, __m128i s, __m256i lo,
                               __m256i hi, __m256i zy) {
  __m256i even = _mm256_add_epi64(_mm256_mul_epi32(v, m), a);
  __m256i odd = _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(v, 32), m), a);
  even = _mm256_add_epi64(clamp64(sra64(even, s), lo, hi), zy);
  odd = _mm256_add_epi64(clamp64(sra64(odd, s), lo, hi), zy);
  return _mm256_blend_epi32(even, _mm256_slli_epi64(odd, 32), 0xAA);
}

// requant8 of a hi32 epilogue (every shift >= 32, zy 0, [lo, hi] within int8: kernel_form):
// the high dwords of the 64-bit sums shifted by s - 32 — ((int64)v·m + a) >> s is exactly
// (int32)(((int64)v·m + a) >> 32) >> (s - 32) — then clamped: the same values as requant8
// in 10 instructions instead of ~24 (AVX2 has no 64-bit arithmetic shift or compare-free
// clamp); lo / hi as int32 lanes, s32 = s - 32
static inline __m256i requant8_hi(__m256i v, __m256i m, __m256i a, __m128i s32, __m256i lo,
                                  __m256i hi) {
  const __m256i even = _mm256_add_epi64(_mm256_mul_epi32(v, m), a);
  const __m256i odd = _mm256_add_epi64(_mm256_mul_epi32(_mm256_srli_epi64(v, 32), m), a);
  const __m256i h = _mm256_blend_epi32(_mm256_srli_epi64(even, 32), odd, 0xAA);
  return _mm256_min_epi32(_mm256_max_epi32(_mm256_sra_epi32(h, s32), lo), hi);
}

// 16 int32 in int8 range (y0: the first 8, y1: the next) -> 16 int8 at o, in order
static inline void store16_i8(int8_t* o, __m256i y0, __m256i y1) {
  const __m256i w16 = _mm256_permute4x64_epi64(_mm256_packs_epi32(y0, y1), 0xD8);
  _mm_storeu_si128(reinterpret_cast<__m128i*>(o),
                   _mm_packs_epi16(_mm256_castsi256_si128(w16), _mm256_extracti128_si256(w16, 1)));
}

static inline void write_tile(const Epilogue& e, const int32_t* acc, int r0, int nr,
                              int c0, int nc) {
  if (nc == 16 && e.channel_is_row && e.requant && e.wide) {
    write_rows_512(e, acc, r0, nr, c0);
    return;
  }
  if (nc == 16 && e.channel_is_row && !e.requant && e.post16 && edgecc_x86_int8_post_rows) {
    post16_rows(e, acc, r0, nr, c0);
    return;
  }
  if (nc == 16 && e.channel_is_row) {  // a channel per row: vector write-back
    const __m256i lo = _mm256_set1_epi64x(e.lo), hi = _mm256_set1_epi64x(e.hi),
                  zy = _mm256_set1_epi64x(e.zy);
    const __m256i lo32 = _mm256_set1_epi32((int32_t)e.lo),
                  hi32 = _mm256_set1_epi32((int32_t)e.hi);
    for (int r = 0; r < nr; ++r) {
      const int64_t row = r0 + r;
      const __m256i off = _mm256_set1_epi32(e.off[row]);
      const __m256i v0 = _mm256_add_epi32(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + r * 16)), off);
      const __m256i v1 = _mm256_add_epi32(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + r * 16 + 8)), off);
      if (e.requant) {
        const __m256i m = _mm256_set1_epi64x(e.mult[row]), a = _mm256_set1_epi64x(e.add[row]);
        const __m128i s = _mm_cvtsi64_si128(e.hi32 ? e.shift[row] - 32 : e.shift[row]);
        const __m256i y0 = e.hi32 ? requant8_hi(v0, m, a, s, lo32, hi32)
                                  : requant8(v0, m, a, s, lo, hi, zy);
        const __m256i y1 = e.hi32 ? requant8_hi(v1, m, a, s, lo32, hi32)
                                  : requant8(v1, m, a, s, lo, hi, zy);
        store16_i8(static_cast<int8_t*>(e.out) + row * e.ld + c0, y0, y1);
      } else if (e.post16) {  // AVX-512: one post16 (the same values)
        post16(e, acc + r * 16, e.off[row], e.scale[row], e.bias[row], row * e.ld + c0);
      } else if (e.fused) {
        const __m256 sc = _mm256_set1_ps(e.scale[row]), bi = _mm256_set1_ps(e.bias[row]);
        post8(e, _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(v0), sc), bi), row * e.ld + c0);
        post8(e, _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(v1), sc), bi),
              row * e.ld + c0 + 8);
      } else {
        const __m256 sc = _mm256_set1_ps(e.scale[row]), bi = _mm256_set1_ps(e.bias[row]);
        float* o = static_cast<float*>(e.out) + row * e.ld + c0;
        _mm256_storeu_ps(o, _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(v0), sc), bi));
        _mm256_storeu_ps(o + 8, _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(v1), sc), bi));
      }
    }
    return;
  }
  if (nc == 16 && !e.requant) {  // a channel per column (linear), float
    const __m256i off0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(e.off + c0));
    const __m256i off1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(e.off + c0 + 8));
    const __m256 sc0 = _mm256_loadu_ps(e.scale + c0), sc1 = _mm256_loadu_ps(e.scale + c0 + 8);
    const __m256 bi0 = _mm256_loadu_ps(e.bias + c0), bi1 = _mm256_loadu_ps(e.bias + c0 + 8);
    for (int r = 0; r < nr; ++r) {
      const __m256i v0 = _mm256_add_epi32(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + r * 16)), off0);
      const __m256i v1 = _mm256_add_epi32(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + r * 16 + 8)), off1);
      float* o = static_cast<float*>(e.out) + (r0 + r) * e.ld + c0;
      _mm256_storeu_ps(o, _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(v0), sc0), bi0));
      _mm256_storeu_ps(o + 8, _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(v1), sc1), bi1));
    }
    return;
  }
  for (int r = 0; r < nr; ++r) {
    const int64_t row = r0 + r;
    for (int c = 0; c < nc; ++c)
      store_one(e, e.channel_is_row ? row : c0 + c, acc[r * 16 + c], row * e.ld + c0 + c);
  }
}

// n outputs of one channel ch (accumulators acc[0..n)) to out[at..at+n): 8 at a time
__attribute__((target("avx2,fma")))
__attribute__((noinline)) static void write_channel(const Epilogue& e, int64_t ch, const int32_t* acc, int64_t n,
                          int64_t at) {
  int64_t i = 0;
  const __m256i off = _mm256_set1_epi32(e.off[ch]);
  if (e.requant) {
    const __m256i lo = _mm256_set1_epi64x(e.lo), hi = _mm256_set1_epi64x(e.hi),
                  zy = _mm256_set1_epi64x(e.zy);
    const __m256i m = _mm256_set1_epi64x(e.mult[ch]), a = _mm256_set1_epi64x(e.add[ch]);
    const __m128i s = _mm_cvtsi64_si128(e.shift[ch]);
    int8_t* o = static_cast<int8_t*>(e.out) + at;
    if (e.wide) i = write_channel_512(e, ch, acc, n, o);
    if (e.hi32) {  // the high-dword form (requant8_hi)
      const __m256i lo32 = _mm256_set1_epi32((int32_t)e.lo),
                    hi32 = _mm256_set1_epi32((int32_t)e.hi);
      const __m128i s32 = _mm_cvtsi64_si128(e.shift[ch] - 32);
      for (; i + 16 <= n; i += 16) {
        const __m256i y0 = requant8_hi(_mm256_add_epi32(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + i)), off), m, a, s32, lo32,
            hi32);
        const __m256i y1 = requant8_hi(_mm256_add_epi32(
            _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + i + 8)), off), m, a, s32,
            lo32, hi32);
        store16_i8(o + i, y0, y1);
      }
    }
    for (; i + 8 <= n; i += 8) {
      const __m256i v = _mm256_add_epi32(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + i)), off);
      const __m256i y = requant8(v, m, a, s, lo, hi, zy);
      const __m128i w16 = _mm_packs_epi32(_mm256_castsi256_si128(y),
                                          _mm256_extracti128_si256(y, 1));
      _mm_storel_epi64(reinterpret_cast<__m128i*>(o + i), _mm_packs_epi16(w16, w16));
    }
  } else if (e.fused) {
    const __m256 sc = _mm256_set1_ps(e.scale[ch]), bi = _mm256_set1_ps(e.bias[ch]);
    for (; i + 8 <= n; i += 8) {
      const __m256i v = _mm256_add_epi32(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + i)), off);
      post8(e, _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(v), sc), bi), at + i);
    }
  } else {
    const __m256 sc = _mm256_set1_ps(e.scale[ch]), bi = _mm256_set1_ps(e.bias[ch]);
    float* o = static_cast<float*>(e.out) + at;
    for (; i + 8 <= n; i += 8) {
      const __m256i v = _mm256_add_epi32(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(acc + i)), off);
      _mm256_storeu_ps(o + i, _mm256_add_ps(_mm256_mul_ps(_mm256_cvtepi32_ps(v), sc), bi));
    }
  }
  for (; i < n; ++i) store_one(e, ch, acc[i], at + i);
}

// depthwise: acc[0 .. span rounded up to 16) = sum over taps t of w[t] * base[at[t] + i]
// (int8 runs, readable 15 bytes past span), two taps a vpmaddwd (int8 x int8 pairs: exact in
// int32), the 16 sums of a step in registers across every tap
enum { DW_TAPS = 49 };
// output maps of at most this many pixels, and strided ones, take the channel-blocked
// depthwise (dw_block16; larger stride-1 maps: the per-channel runs, measured faster)
enum { DW_SMALL_PIX = 64, DW_CHUNK = 64 };
int64_t dw_blocked_calls = 0;  // depthwise calls that ran channel-blocked (a test's counter)
int64_t hi32_calls = 0;  // convolution calls whose AVX-512 write-back is requant16_hi (a test's)
int64_t hi32_ymm_calls = 0;  // ... whose 256-bit write-back is requant8_hi (a test's)
static inline void count_hi32(const Epilogue& e) {
  if (e.hi32) EDGECC_COUNT(*(e.wide ? &hi32_calls : &hi32_ymm_calls), 1);
}
// the taps two at a time for vpmaddwd: each pair's input runs (s0, s1) and its two int16
// weights in one int32 (wp); an odd count's last pair repeats its tap with weight 0.
// Returns the number of pairs. (dw_taps and dw_taps_512 share it.)
static inline int64_t tap_pairs(const int8_t* base, const int64_t* at, const int32_t* w,
                                int64_t taps, const int8_t** s0, const int8_t** s1,
                                int32_t* wp) {
  const int64_t pairs = (taps + 1) / 2;
  for (int64_t t = 0; t < pairs; ++t) {
    const bool odd = 2 * t + 1 < taps;
    s0[t] = base + at[2 * t];
    s1[t] = base + at[odd ? 2 * t + 1 : 2 * t];  // the padding tap: weight 0
    wp[t] = (int32_t)(((uint32_t)(uint16_t)(int16_t)w[2 * t]) |
                      ((uint32_t)(uint16_t)(int16_t)(odd ? w[2 * t + 1] : 0) << 16));
  }
  return pairs;
}
__attribute__((target("avx2,fma")))
__attribute__((noinline)) static void dw_taps(const int8_t* base, const int64_t* at,
                                              const int32_t* w, int64_t taps, int64_t span,
                                              int32_t* acc) {
  int32_t wp[(DW_TAPS + 1) / 2];
  const int8_t* s0[(DW_TAPS + 1) / 2];
  const int8_t* s1[(DW_TAPS + 1) / 2];
  const int64_t pairs = tap_pairs(base, at, w, taps, s0, s1, wp);
  for (int64_t i = 0; i < span; i += 16) {
    __m256i a0 = _mm256_setzero_si256(), a1 = a0;
    for (int64_t t = 0; t < pairs; ++t) {
      const __m256i x0 = _mm256_cvtepi8_epi16(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(s0[t] + i)));
      const __m256i x1 = _mm256_cvtepi8_epi16(
          _mm_loadu_si128(reinterpret_cast<const __m128i*>(s1[t] + i)));
      const __m256i wv = _mm256_set1_epi32(wp[t]);
      a0 = _mm256_add_epi32(a0, _mm256_madd_epi16(_mm256_unpacklo_epi16(x0, x1), wv));
      a1 = _mm256_add_epi32(a1, _mm256_madd_epi16(_mm256_unpackhi_epi16(x0, x1), wv));
    }
    // a0: outputs 0-3 | 8-11, a1: 4-7 | 12-15
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + i), _mm256_permute2x128_si256(a0, a1, 0x20));
    _mm256_storeu_si256(reinterpret_cast<__m256i*>(acc + i + 8),
                        _mm256_permute2x128_si256(a0, a1, 0x31));
  }
}

// dw_taps with AVX-512: 32 outputs a step (acc rounded up to 32; runs readable 31 bytes
// past span); the same int32 sums
__attribute__((target("avx2,fma,avx512f,avx512bw")))
__attribute__((noinline)) static void dw_taps_512(const int8_t* base, const int64_t* at,
                                                  const int32_t* w, int64_t taps, int64_t span,
                                                  int32_t* acc) {
  int32_t wp[(DW_TAPS + 1) / 2];
  const int8_t* s0[(DW_TAPS + 1) / 2];
  const int8_t* s1[(DW_TAPS + 1) / 2];
  const int64_t pairs = tap_pairs(base, at, w, taps, s0, s1, wp);
  // a0 holds outputs 0-3 | 8-11 | 16-19 | 24-27, a1 4-7 | 12-15 | 20-23 | 28-31
  const __m512i lo = _mm512_set_epi64(11, 10, 3, 2, 9, 8, 1, 0);
  const __m512i hi = _mm512_set_epi64(15, 14, 7, 6, 13, 12, 5, 4);
  for (int64_t i = 0; i < span; i += 32) {
    __m512i a0 = _mm512_setzero_si512(), a1 = a0;
    for (int64_t t = 0; t < pairs; ++t) {
      const __m512i x0 = _mm512_cvtepi8_epi16(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s0[t] + i)));
      const __m512i x1 = _mm512_cvtepi8_epi16(
          _mm256_loadu_si256(reinterpret_cast<const __m256i*>(s1[t] + i)));
      const __m512i wv = _mm512_set1_epi32(wp[t]);
      a0 = _mm512_add_epi32(a0, _mm512_madd_epi16(_mm512_unpacklo_epi16(x0, x1), wv));
      a1 = _mm512_add_epi32(a1, _mm512_madd_epi16(_mm512_unpackhi_epi16(x0, x1), wv));
    }
    _mm512_storeu_si512(acc + i, _mm512_permutex2var_epi64(a0, lo, a1));
    _mm512_storeu_si512(acc + i + 16, _mm512_permutex2var_epi64(a0, hi, a1));
  }
}

// acc[4][16] = rows[0..3] (int16 [.][kp], kp even) x panel ([kp/2][16][2] int16)
__attribute__((target("avx2,fma")))
static inline void tile_4x16(const int16_t* rows, int64_t kp, const int16_t* panel,
                             int32_t* acc) {
  __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00,
          c21 = c00, c30 = c00, c31 = c00;
  const int16_t* b0 = rows;
  const int16_t* b1 = rows + kp;
  const int16_t* b2 = rows + 2 * kp;
  const int16_t* b3 = rows + 3 * kp;
  const int64_t pairs = kp / 2;
  for (int64_t k = 0; k < pairs; ++k) {
    const __m256i v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(panel + k * 32));
    const __m256i v1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(panel + k * 32 + 16));
    int32_t w;
    memcpy(&w, b0 + 2 * k, 4);
    __m256i a = _mm256_set1_epi32(w);
    c00 = _mm256_add_epi32(c00, _mm256_madd_epi16(a, v0));
    c01 = _mm256_add_epi32(c01, _mm256_madd_epi16(a, v1));
    memcpy(&w, b1 + 2 * k, 4);
    a = _mm256_set1_epi32(w);
    c10 = _mm256_add_epi32(c10, _mm256_madd_epi16(a, v0));
    c11 = _mm256_add_epi32(c11, _mm256_madd_epi16(a, v1));
    memcpy(&w, b2 + 2 * k, 4);
    a = _mm256_set1_epi32(w);
    c20 = _mm256_add_epi32(c20, _mm256_madd_epi16(a, v0));
    c21 = _mm256_add_epi32(c21, _mm256_madd_epi16(a, v1));
    memcpy(&w, b3 + 2 * k, 4);
    a = _mm256_set1_epi32(w);
    c30 = _mm256_add_epi32(c30, _mm256_madd_epi16(a, v0));
    c31 = _mm256_add_epi32(c31, _mm256_madd_epi16(a, v1));
  }
  __m256i* o = reinterpret_cast<__m256i*>(acc);
  _mm256_storeu_si256(o + 0, c00); _mm256_storeu_si256(o + 1, c01);
  _mm256_storeu_si256(o + 2, c10); _mm256_storeu_si256(o + 3, c11);
  _mm256_storeu_si256(o + 4, c20); _mm256_storeu_si256(o + 5, c21);
  _mm256_storeu_si256(o + 6, c30); _mm256_storeu_si256(o + 7, c31);
}

// One GEMM: rows (int16 [rows_padded to 4][kp]) x panels; items = column panels, each
// task a contiguous share of them (its panel stays in L1 while every row block passes).
struct Gemm {
  const int16_t* rows; int64_t n_rows, kp;
  const int16_t* panels; int64_t n_cols;
  Epilogue e;
};

__attribute__((target("avx2,fma")))
static void gemm_panels(const Gemm& g, int64_t p_begin, int64_t p_end, int64_t r_begin = 0,
                        int64_t r_end = INT64_MAX) {
  alignas(32) int32_t acc[64];
  if (r_end > g.n_rows) r_end = g.n_rows;
  for (int64_t p = p_begin; p < p_end; ++p) {
    const int16_t* panel = g.panels + p * g.kp * 16;
    const int nc = (int)((g.n_cols - p * 16) < 16 ? (g.n_cols - p * 16) : 16);
    for (int64_t r = r_begin; r < r_end; r += 4) {
      tile_4x16(g.rows + r * g.kp, g.kp, panel, acc);
      const int nr = (int)((g.n_rows - r) < 4 ? (g.n_rows - r) : 4);
      write_tile(g.e, acc, (int)r, nr, (int)(p * 16), nc);
    }
  }
}

// the shared arguments: x, w, meta, off, mult, add, shift, scale, bias, out
Epilogue epilogue(const TVMFFIAny* args, const int64_t* meta, int channel_is_row) {
  Epilogue e;
  e.off = data<int32_t>(args, 3); e.mult = data<int64_t>(args, 4);
  e.add = data<int64_t>(args, 5); e.shift = data<int64_t>(args, 6);
  e.scale = data<float>(args, 7); e.bias = data<float>(args, 8);
  e.requant = meta[1] != 0; e.lo = meta[2]; e.hi = meta[3]; e.zy = meta[4];
  // hi32 only where its write-back is exact (kernel_form checked the shifts >= 32)
  e.hi32 = meta[1] == 2 && e.zy == 0 && e.lo >= -128 && e.hi <= 127 && e.lo <= e.hi &&
           !edgecc_x86_int8_hi32_off;
  e.channel_is_row = channel_is_row; e.out = data<void>(args, 9); e.ld = 0;
  e.fused = 0; e.act = 0; e.post_relu = 0; e.res = 0; e.fout = 0; e.qout = 0;
  e.qs = 1.0f; e.qz = 0.0f; e.qmin = 0.0f; e.qmax = 0.0f;
  e.wide = 0; e.post16 = 0; e.fadd = 0;
  return e;
}

// a fused call (more than 10 arguments; convolutions): args[9] is post, float32
// [flags, act, post_relu, qs, qz, qmin, qmax, 0] (flags: 1 residual input, 2 float output,
// 4 int8 output), then the residual, then the outputs in that order. False: bad arguments.
bool post_args(const TVMFFIAny* args, int num_args, Epilogue& e) {
  if (num_args == 10) return true;
  const float* post = data<float>(args, 9);
  const int flags = (int)post[0];
  const int n = 10 + (flags & 1) + ((flags >> 1) & 1) + ((flags >> 2) & 1);
  if (n != num_args || !(flags & 6) || e.requant || !e.channel_is_row) return false;
  int at = 10;
  e.fused = 1; e.act = (int)post[1]; e.post_relu = (int)post[2];
  e.qs = post[3]; e.qz = post[4]; e.qmin = post[5]; e.qmax = post[6];
  if (flags & 1) e.res = data<float>(args, at++);
  if (flags & 2) e.fout = data<float>(args, at++);
  if (flags & 4) e.qout = data<int8_t>(args, at++);
  e.out = e.fout ? static_cast<void*>(e.fout) : static_cast<void*>(e.qout);
  return true;
}


// ---- int8 dot-product instructions (VNNI): vpdpbusd, u8 x s8 -> int32, 4 products a lane ----
// The activations are the unsigned operand, shifted by +128 (x ^ 0x80); the extra
// 128·Σw per output channel is a compile-time constant ("comp"), taken off the offset
// term: acc' + off - comp == acc + off exactly (int32, wrapping like the AVX2 path).
// Chosen at run time by cpuid (the library still runs on AVX2-only CPUs);
// EDGECC_X86_INT8_ISA=avx2|avxvnni|avx512vnni narrows the choice (tests, comparisons).
enum { ISA_AVX2 = 0, ISA_AVXVNNI = 1, ISA_AVX512VNNI = 2 };

// 256-bit AVX-VNNI needs GCC 11 / Clang 12 (older compilers: AVX-512 VNNI and AVX2 only)
#if (defined(__clang__) && __clang_major__ >= 12) || \
    (!defined(__clang__) && defined(__GNUC__) && __GNUC__ >= 11)
#define EDGECC_AVXVNNI 1
#else
#define EDGECC_AVXVNNI 0
#endif

int cpu_init() { __builtin_cpu_init(); return 1; }

int isa_level() {
  static const int ready = cpu_init();
  (void)ready;
  static const int has512 = __builtin_cpu_supports("avx512vnni") &&
                            __builtin_cpu_supports("avx512bw") ? 1 : 0;
#if EDGECC_AVXVNNI
  static const int has256 = __builtin_cpu_supports("avxvnni") ? 1 : 0;
#else
  static const int has256 = 0;
#endif
  const char* want = getenv("EDGECC_X86_INT8_ISA");
  if (want && strcmp(want, "avx2") == 0) return ISA_AVX2;
  if (want && strcmp(want, "avxvnni") == 0) return has256 ? ISA_AVXVNNI : ISA_AVX2;
  if (has512) return ISA_AVX512VNNI;
  return has256 ? ISA_AVXVNNI : ISA_AVX2;
}

#define EDGECC_DOT512(c, row)                                                   \
  do {                                                                          \
    int32_t w_;                                                                 \
    memcpy(&w_, rows + (row) * ld + 4 * k, 4);                                  \
    const __m512i a_ = _mm512_set1_epi32(w_);                                   \
    c = UROWS ? _mm512_dpbusd_epi32(c, a_, v) : _mm512_dpbusd_epi32(c, v, a_);  \
  } while (0)

// acc[8][16] = 8 rows (bytes, [.][ld], 4-byte groups) x panel ([kq][16][4] bytes); UROWS:
// the rows are the unsigned operand (linear: activations), else the panel is (conv: im2col)
template <bool UROWS>
__attribute__((target("avx2,fma,avx512f,avx512bw,avx512vnni")))
void tile_8x16_vnni512(const int8_t* rows, int64_t ld, int64_t kq, const int8_t* panel,
                       int32_t* acc) {
  __m512i c0 = _mm512_setzero_si512(), c1 = c0, c2 = c0, c3 = c0, c4 = c0, c5 = c0,
          c6 = c0, c7 = c0;
  for (int64_t k = 0; k < kq; ++k) {
    const __m512i v = _mm512_loadu_si512(panel + k * 64);
    EDGECC_DOT512(c0, 0); EDGECC_DOT512(c1, 1); EDGECC_DOT512(c2, 2); EDGECC_DOT512(c3, 3);
    EDGECC_DOT512(c4, 4); EDGECC_DOT512(c5, 5); EDGECC_DOT512(c6, 6); EDGECC_DOT512(c7, 7);
  }
  _mm512_storeu_si512(acc + 0, c0); _mm512_storeu_si512(acc + 16, c1);
  _mm512_storeu_si512(acc + 32, c2); _mm512_storeu_si512(acc + 48, c3);
  _mm512_storeu_si512(acc + 64, c4); _mm512_storeu_si512(acc + 80, c5);
  _mm512_storeu_si512(acc + 96, c6); _mm512_storeu_si512(acc + 112, c7);
}

#if EDGECC_AVXVNNI
#define EDGECC_DOT256(c0, c1, row)                                                      \
  do {                                                                                  \
    int32_t w_;                                                                         \
    memcpy(&w_, rows + (row) * ld + 4 * k, 4);                                          \
    const __m256i a_ = _mm256_set1_epi32(w_);                                           \
    c0 = UROWS ? _mm256_dpbusd_avx_epi32(c0, a_, v0) : _mm256_dpbusd_avx_epi32(c0, v0, a_); \
    c1 = UROWS ? _mm256_dpbusd_avx_epi32(c1, a_, v1) : _mm256_dpbusd_avx_epi32(c1, v1, a_); \
  } while (0)

// the same with 256-bit AVX-VNNI: acc[4][16], two ymm a row
template <bool UROWS>
__attribute__((target("avx2,fma,avxvnni")))
void tile_4x16_vnni256(const int8_t* rows, int64_t ld, int64_t kq, const int8_t* panel,
                       int32_t* acc) {
  __m256i c00 = _mm256_setzero_si256(), c01 = c00, c10 = c00, c11 = c00, c20 = c00,
          c21 = c00, c30 = c00, c31 = c00;
  for (int64_t k = 0; k < kq; ++k) {
    const __m256i v0 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(panel + k * 64));
    const __m256i v1 = _mm256_loadu_si256(reinterpret_cast<const __m256i*>(panel + k * 64 + 32));
    EDGECC_DOT256(c00, c01, 0); EDGECC_DOT256(c10, c11, 1);
    EDGECC_DOT256(c20, c21, 2); EDGECC_DOT256(c30, c31, 3);
  }
  __m256i* o = reinterpret_cast<__m256i*>(acc);
  _mm256_storeu_si256(o + 0, c00); _mm256_storeu_si256(o + 1, c01);
  _mm256_storeu_si256(o + 2, c10); _mm256_storeu_si256(o + 3, c11);
  _mm256_storeu_si256(o + 4, c20); _mm256_storeu_si256(o + 5, c21);
  _mm256_storeu_si256(o + 6, c30); _mm256_storeu_si256(o + 7, c31);
}
#endif

""" + TILE_KERNELS + r"""
// One VNNI GEMM: rows (bytes [n_rows padded to 8][ld = kq*4]) x panels ([kq][16][4] bytes)
struct GemmDot {
  const int8_t* rows; int64_t n_rows, kq;
  const int8_t* panels; int64_t n_cols;
  Epilogue e; int isa;
};

template <bool UROWS>
void gemm_panels_dot(const GemmDot& g, int64_t p_begin, int64_t p_end, int64_t r_begin = 0,
                     int64_t r_end = INT64_MAX) {
  alignas(64) int32_t acc[128];
  const int rt = g.isa == ISA_AVX512VNNI ? 8 : 4;
  const int64_t ld = g.kq * 4;
  if (r_end > g.n_rows) r_end = g.n_rows;
  // panel p's tile of rows r.. (rt of them)
  auto one = [&](int64_t p, int64_t r) {
    const int8_t* panel = g.panels + p * g.kq * 64;
    const int nc = (int)((g.n_cols - p * 16) < 16 ? (g.n_cols - p * 16) : 16);
    if (!UROWS && rt == 8 && tile_write_fits(g.e, (int)std::min<int64_t>(8, g.n_rows - r), nc)) {
      tile_write<0>(g.rows + r * ld, ld, g.kq, reinterpret_cast<const uint8_t*>(panel), 0, 0,
                    g.e, (int)r, (int)(p * 16));
      return;
    }
    if (!UROWS && rt == 8 &&
        tile_post_fits(g.e, (int)std::min<int64_t>(8, g.n_rows - r), nc)) {  // float
      tile_post<0>(g.rows + r * ld, ld, g.kq, reinterpret_cast<const uint8_t*>(panel), 0, 0,
                   g.e, (int)r, (int)(p * 16));
      return;
    }
    if (rt == 8) tile_8x16_vnni512<UROWS>(g.rows + r * ld, ld, g.kq, panel, acc);
#if EDGECC_AVXVNNI
    else tile_4x16_vnni256<UROWS>(g.rows + r * ld, ld, g.kq, panel, acc);
#endif
    const int nr = (int)((g.n_rows - r) < rt ? (g.n_rows - r) : rt);
    write_tile(g.e, acc, (int)r, nr, (int)(p * 16), nc);
  };
  // edgecc_x86_int8_tile_two (x86_int8_tile_source): panels p and p + 1 (both whole) as
  // two-panel tiles where the 8 x 16 write-backs apply, else each panel's tile in turn
  const bool pairs = !UROWS && rt == 8 && edgecc_x86_int8_tile_two != 0;
  for (int64_t p = p_begin; p < p_end; ++p) {
    if (!(pairs && p + 1 < p_end && g.n_cols - (p + 1) * 16 >= 16)) {
      for (int64_t r = r_begin; r < r_end; r += rt) one(p, r);
      continue;
    }
    const uint8_t* src = reinterpret_cast<const uint8_t*>(g.panels + p * g.kq * 64);
    for (int64_t r = r_begin; r < r_end; r += 8) {
      const int nr = (int)std::min<int64_t>(8, g.n_rows - r);
      if (tile_write_fits(g.e, nr, 16))
        tile_write2<0>(g.rows + r * ld, ld, g.kq, src, 0, 0, g.e, (int)r, (int)(p * 16),
                       g.kq * 64, (int)(p * 16 + 16));
      else if (tile_post_fits(g.e, nr, 16))
        tile_post2<0>(g.rows + r * ld, ld, g.kq, src, 0, 0, g.e, (int)r, (int)(p * 16),
                      g.kq * 64, (int)(p * 16 + 16));
      else
        one(p, r), one(p + 1, r);
    }
    ++p;
  }
}

""" + AMX_KERNELS + r"""
// the parallel_for work unit is an AVX2 multiply-add: a vpdpbusd does 4x (zmm) or 2x (ymm)
// as many a cycle, so a VNNI job is that much smaller before the pool is worth waking
inline int64_t dot_speed(int isa) { return isa == ISA_AVX512VNNI ? 4 : 2; }

// off - comp per channel (the +128 shift's compensation), in a scratch buffer (slot 4; its
// tail holds fold_off's table)
static inline int64_t off_bytes(int64_t n) { return (n * 4 + 63) / 64 * 64; }
const int32_t* shifted_off(const int32_t* off, const int32_t* comp, int64_t n) {
  int32_t* out = static_cast<int32_t*>(scratch(4, off_bytes(n) + n * 8 + 64));
  for (int64_t i = 0; i < n; ++i) out[i] = (int32_t)((uint32_t)off[i] - (uint32_t)comp[i]);
  return out;
}

int64_t fold_calls = 0;  // calls whose requant16_hi took fold_off's table (a test's counter)
// e.fadd = add + off·mult per channel (slot 4's tail) when every accumulator of the call is
// within ±kmax·32640 (kmax products of a u8 (x + 128) or s8 x and an s8 weight): then
// acc + off never leaves int32 (no wrap to reproduce) and (acc + off)·m + a = acc·m + fadd
// exactly, |acc·m + fadd| < 2^63 — the same sums, one vpaddd fewer a vector. Else no table;
// nor for fewer than edgecc_x86_int8_fold_min outputs a channel (512; its ~15 cycles a
// channel outweigh the vpaddd saved: measured slower on MobileNetV2's 4x4 / 8x8 depthwise;
// a library symbol, so a test can fold small maps too)
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_fold_min = 512;
void fold_off(Epilogue& e, int64_t n, int64_t kmax, int64_t per_channel) {
  e.fadd = 0;
  if (!e.wide || !e.hi32 || !e.requant || kmax <= 0 || kmax > (1 << 16) ||
      per_channel < edgecc_x86_int8_fold_min)
    return;
  const int64_t amax = kmax * 32640;
  int64_t* f = reinterpret_cast<int64_t*>(
      static_cast<char*>(scratch(4, off_bytes(n) + n * 8 + 64)) + off_bytes(n));
  for (int64_t i = 0; i < n; ++i) {
    const int64_t off = e.off[i], m = e.mult[i];
    const __int128 fa = (__int128)e.add[i] + (__int128)off * m;
    const __int128 top = (__int128)amax * (m < 0 ? -m : m) + (fa < 0 ? -fa : fa);
    if ((off < 0 ? -off : off) + amax > INT32_MAX || top >= ((__int128)1 << 63)) return;
    f[i] = (int64_t)fa;
  }
  e.fadd = f;
  EDGECC_COUNT(fold_calls, 1);
}

// 16 pixels x 4 k (four 16-byte runs a, b, c, d) -> [16][4] bytes
static inline void interleave4(const int8_t* a, const int8_t* b, const int8_t* c,
                               const int8_t* d, int8_t* dst, __m128i flip) {
  const __m128i va = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(a)), flip);
  const __m128i vb = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(b)), flip);
  const __m128i vc = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(c)), flip);
  const __m128i vd = _mm_xor_si128(_mm_loadu_si128(reinterpret_cast<const __m128i*>(d)), flip);
  const __m128i ab0 = _mm_unpacklo_epi8(va, vb), ab1 = _mm_unpackhi_epi8(va, vb);
  const __m128i cd0 = _mm_unpacklo_epi8(vc, vd), cd1 = _mm_unpackhi_epi8(vc, vd);
  __m128i* o = reinterpret_cast<__m128i*>(dst);
  _mm_storeu_si128(o + 0, _mm_unpacklo_epi16(ab0, cd0));
  _mm_storeu_si128(o + 1, _mm_unpackhi_epi16(ab0, cd0));
  _mm_storeu_si128(o + 2, _mm_unpacklo_epi16(ab1, cd1));
  _mm_storeu_si128(o + 3, _mm_unpackhi_epi16(ab1, cd1));
}

// a panel whose 16 pixels are not one run (maps narrower than 16, strides): per k, one
// 16-lane dword gather at base[lane] + koff[k] whose low bytes are the 16 values (each read
// is 4 bytes: src needs 3 readable bytes past its last element), xor flip, [16][4] bytes
__attribute__((target("avx2,fma,avx512f,avx512bw")))
__attribute__((noinline)) static void gather_panel(const int8_t* src, const int64_t* koff,
                                                   const int64_t* base, int64_t kq,
                                                   int8_t* panel, __m128i flip) {
  alignas(64) int32_t b32[16];
  for (int lane = 0; lane < 16; ++lane) b32[lane] = (int32_t)base[lane];
  const __m512i idx = _mm512_load_si512(b32);
  for (int64_t q = 0; q < kq; ++q) {
    __m128i v[4];
    for (int j = 0; j < 4; ++j)
      v[j] = _mm_xor_si128(_mm512_cvtepi32_epi8(_mm512_i32gather_epi32(
                               idx, reinterpret_cast<const void*>(src + koff[4 * q + j]), 1)),
                           flip);
    const __m128i ab0 = _mm_unpacklo_epi8(v[0], v[1]), ab1 = _mm_unpackhi_epi8(v[0], v[1]);
    const __m128i cd0 = _mm_unpacklo_epi8(v[2], v[3]), cd1 = _mm_unpackhi_epi8(v[2], v[3]);
    __m128i* o = reinterpret_cast<__m128i*>(panel + q * 64);
    _mm_storeu_si128(o + 0, _mm_unpacklo_epi16(ab0, cd0));
    _mm_storeu_si128(o + 1, _mm_unpackhi_epi16(ab0, cd0));
    _mm_storeu_si128(o + 2, _mm_unpacklo_epi16(ab1, cd1));
    _mm_storeu_si128(o + 3, _mm_unpackhi_epi16(ab1, cd1));
  }
}

// interleave4 with AVX-512 VBMI: the four 16-byte runs in one zmm (a load and three
// inserts) and one vpermb into [16][4] (byte 4·lane + j = run j's byte lane), one store
int64_t vbmi_interleave = 0;  // convolution calls whose 16-byte-run panels took it (a test's)
int64_t conv_bands = 0;  // convolution calls pooled by bands of output rows (a test's)
__attribute__((target("avx2,fma,avx512f,avx512bw,avx512vbmi")))
__attribute__((noinline)) static void interleave_panel_vbmi(const int8_t* s, const int64_t* koff,
                                                            int64_t kq, int8_t* panel,
                                                            __m128i flip) {
  alignas(64) uint8_t ix[64];
  for (int lane = 0; lane < 16; ++lane)
    for (int j = 0; j < 4; ++j) ix[lane * 4 + j] = (uint8_t)(j * 16 + lane);
  const __m512i idx = _mm512_load_si512(ix);
  const __m512i fl = _mm512_broadcast_i32x4(flip);
  for (int64_t q = 0; q < kq; ++q) {
    const int64_t* k = koff + 4 * q;
    __m512i v = _mm512_castsi128_si512(_mm_loadu_si128(reinterpret_cast<const __m128i*>(s + k[0])));
    v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + k[1])), 1);
    v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + k[2])), 2);
    v = _mm512_inserti32x4(v, _mm_loadu_si128(reinterpret_cast<const __m128i*>(s + k[3])), 3);
    _mm512_storeu_si512(panel + q * 64, _mm512_xor_si512(_mm512_permutexvar_epi8(idx, v), fl));
  }
}

// gather_panel's panel by byte shuffles where the 16 pixels lie within 64 bytes of the
// first (8x8 / 4x4 maps: 2 / 4 runs of a padded row; strided rows of <= 32 columns): per k
// one masked 64-byte load of that window and one merge-masked vpermb into the k's byte of
// each pixel's dword (the same byte index base[lane] - base[0] for every k) — Zen 4's
// 16-lane gathers are slow (~1 element a cycle); these are two uops a k. The same bytes.
int64_t perm_panels = 0;  // convolution calls that built panels by perm_panel (a test's)
static inline bool perm_panel_fits(const int64_t* base) { return base[15] - base[0] < 64; }
__attribute__((target("avx2,fma,avx512f,avx512bw,avx512vbmi")))
__attribute__((noinline)) static void perm_panel(const int8_t* src, const int64_t* koff,
                                                 const int64_t* base, int64_t kq,
                                                 int8_t* panel, __m128i flip) {
  alignas(64) uint8_t ix[64];
  for (int lane = 0; lane < 16; ++lane)
    for (int j = 0; j < 4; ++j) ix[lane * 4 + j] = (uint8_t)(base[lane] - base[0]);
  const __m512i idx = _mm512_load_si512(ix);
  const int64_t span = base[15] - base[0] + 1;
  const __mmask64 lm = span >= 64 ? ~0ULL : (1ULL << span) - 1;
  const __m512i fl = _mm512_broadcast_i32x4(flip);
  const int8_t* s0 = src + base[0];
  for (int64_t q = 0; q < kq; ++q) {
    __m512i r = _mm512_setzero_si512();
#pragma GCC unroll 4
    for (int j = 0; j < 4; ++j)
      r = _mm512_mask_permutexvar_epi8(r, 0x1111111111111111ULL << j, idx,
                                       _mm512_maskz_loadu_epi8(lm, s0 + koff[4 * q + j]));
    _mm512_storeu_si512(panel + q * 64, _mm512_xor_si512(r, fl));
  }
}

// depthwise on small maps, 16 channels a vector (the channel-blocked layout): the block's
// padded input as int32 [hp][wp][16] (t: padding zx, set by the caller), each output pixel
// of the block one zmm sum over the taps (vpmaddwd: x sign-extended to int32 times the
// weight as (w, 0) int16 pairs -- x·w exactly), stored [pix][16] (a), then each channel's
// column (col) through write_channel: the per-channel path's write-back, bit for bit.
// Per channel it costs no phase copy, tap setup or 16-lane step at 4x4 / 8x8 maps.
__attribute__((target("avx2,fma,avx512f,avx512bw")))
__attribute__((noinline)) static void dw_block16(
    const Epilogue& e, const int8_t* xb, const int32_t* wt, int64_t c0, int64_t cb, int64_t c,
    int64_t h, int64_t w, int64_t kh, int64_t kw, int64_t sh, int64_t sw, int64_t ph,
    int64_t pw, int64_t dh, int64_t dw, int64_t oh, int64_t ow, int64_t out_at, int32_t* t,
    int32_t* a, int32_t* col, bool first) {
  const int64_t wp = w + 2 * pw, taps = kh * kw, pix = oh * ow;
  // the interior, a position a gather: the dword ending at each channel's byte (its top
  // byte, sign-extended by the shift), lanes past cb repeating the last channel; the
  // first 3 bytes of the tensor (no 3 bytes before them to read) one by one
  alignas(64) int32_t cidx[16];
  for (int64_t j = 0; j < 16; ++j) cidx[j] = (int32_t)((j < cb ? j : cb - 1) * h * w);
  const __m512i ci = _mm512_load_si512(cidx);
  const int8_t* base = xb + c0 * h * w;
  for (int64_t y = 0; y < h; ++y)
    for (int64_t x = 0; x < w; ++x) {
      const int64_t pos = y * w + x;
      int32_t* dst = t + ((y + ph) * wp + pw + x) * 16;
      if (first && pos < 3) {
        for (int64_t j = 0; j < 16; ++j) dst[j] = base[cidx[j] + pos];
        continue;
      }
      _mm512_storeu_si512(dst, _mm512_srai_epi32(_mm512_i32gather_epi32(
                                   ci, reinterpret_cast<const void*>(base + pos - 3), 1), 24));
    }
  __m512i wv[DW_TAPS];
  int64_t toff[DW_TAPS];
  for (int64_t k = 0; k < taps; ++k) {
    alignas(64) int32_t lanes[16];
    for (int64_t j = 0; j < 16; ++j)
      lanes[j] = j < cb ? (int32_t)(uint16_t)(int16_t)wt[(c0 + j) * taps + k] : 0;
    wv[k] = _mm512_load_si512(lanes);
    toff[k] = ((k / kw) * dh * wp + (k % kw) * dw) * 16;
  }
  const __m512i rows16 = _mm512_mullo_epi32(
      _mm512_set_epi32(15, 14, 13, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0),
      _mm512_set1_epi32(16));
  // DW_CHUNK output pixels at a time (their [.][16] sums stay in L1 while each channel's
  // column is gathered out of them)
  for (int64_t i0 = 0; i0 < pix; i0 += DW_CHUNK) {
    const int64_t n = pix - i0 < DW_CHUNK ? pix - i0 : DW_CHUNK;
    for (int64_t i = 0; i < n; ++i) {
      const int64_t oy = (i0 + i) / ow, ox = (i0 + i) % ow;
      const int32_t* at = t + (oy * sh * wp + ox * sw) * 16;
      __m512i acc = _mm512_setzero_si512(), acc1 = acc;
      int64_t k = 0;
      for (; k + 1 < taps; k += 2) {
        acc = _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_loadu_si512(at + toff[k]), wv[k]));
        acc1 = _mm512_add_epi32(acc1, _mm512_madd_epi16(_mm512_loadu_si512(at + toff[k + 1]),
                                                        wv[k + 1]));
      }
      if (k < taps)
        acc = _mm512_add_epi32(acc, _mm512_madd_epi16(_mm512_loadu_si512(at + toff[k]), wv[k]));
      _mm512_storeu_si512(a + i * 16, _mm512_add_epi32(acc, acc1));
    }
    for (int64_t j = 0; j < cb; ++j) {  // channel j's column of a, 16 pixels a gather
      int64_t i = 0;
      for (; i + 16 <= n; i += 16)
        _mm512_storeu_si512(col + i, _mm512_i32gather_epi32(rows16, a + i * 16 + j, 4));
      for (; i < n; ++i) col[i] = a[i * 16 + j];
      write_channel(e, c0 + j, col, n, out_at + (c0 + j) * pix + i0);
    }
  }
  (void)c;
}

""" + DW_KERNELS + DWROWS_KERNELS + r"""
int64_t dw_split2_calls = 0;  // per-channel depthwise calls that ran split_columns2 (a test's)
// 32 bytes -> their 16 even-indexed bytes to even[0..16), the 16 odd ones to odd[0..16): a
// stride-2 row's two column phases (the per-channel depthwise; one shuffle, one permute)
static inline void split_columns2(const int8_t* src, int8_t* even, int8_t* odd) {
  const __m256i idx = _mm256_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15,
                                       0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11, 13, 15);
  const __m256i v = _mm256_shuffle_epi8(
      _mm256_loadu_si256(reinterpret_cast<const __m256i*>(src)), idx);
  const __m256i q = _mm256_permute4x64_epi64(v, 0xD8);  // evens of both lanes, then odds
  _mm_storeu_si128(reinterpret_cast<__m128i*>(even), _mm256_castsi256_si128(q));
  _mm_storeu_si128(reinterpret_cast<__m128i*>(odd), _mm256_extracti128_si256(q, 1));
}

// split_columns2 of 16 bytes: 8 even-indexed to even[0..8), 8 odd ones to odd[0..8)
static inline void split_columns2_8(const int8_t* src, int8_t* even, int8_t* odd) {
  const __m128i v = _mm_shuffle_epi8(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src)),
                                     _mm_setr_epi8(0, 2, 4, 6, 8, 10, 12, 14, 1, 3, 5, 7, 9, 11,
                                                   13, 15));
  _mm_storel_epi64(reinterpret_cast<__m128i*>(even), v);
  _mm_storel_epi64(reinterpret_cast<__m128i*>(odd), _mm_unpackhi_epi64(v, v));
}

// an A/B switch set to "0" in the environment
static inline bool env_off(const char* name) {
  const char* v = getenv(name);
  return v && v[0] == '0';
}

int bad_args(int n, int most = 10) {
  if (n >= 10 && n <= most) return 0;
  TVMFFIErrorSetRaisedFromCStr("ValueError", "edgecc x86 int8 kernel: expected 10 arguments"
                               " (11-13 for a fused convolution write-back)");
  return 1;
}

int bad_post() {
  TVMFFIErrorSetRaisedFromCStr("ValueError", "edgecc x86 int8 kernel: bad fused write-back "
                               "arguments (post flags, argument count or a requantized mode)");
  return -1;
}

}  // namespace

extern "C" {

// the kernel set this CPU runs (0 AVX2, 1 AVX-VNNI, 2 AVX-512 VNNI), after
// EDGECC_X86_INT8_ISA: what the kernels above pick on this call
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_int8_isa(void*, const TVMFFIAny*, int32_t, TVMFFIAny* result) {
  result->type_index = kTVMFFIInt; result->zero_padding = 0; result->v_int64 = isa_level();
  return 0;
}

// linear: out[m, n] = epilogue(x[m, :] . w[n, :]);  meta = [1, requant, lo, hi, zy, M, K, N,
// vnni_at, comp_at];  w: [ceil(N/16)][kp/2][16][2] int16, then (byte offset vnni_at) the
// VNNI panels [ceil(N/16)][kq][16][4] int8, then (comp_at) 128·Σw int32 per column
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_qlinear(void*, const TVMFFIAny* args, int32_t num_args,
                                  TVMFFIAny* result) {
  if (bad_args(num_args)) return -1;
  result->type_index = kTVMFFINone; result->zero_padding = 0; result->v_int64 = 0;
  const int64_t* meta = data<int64_t>(args, 2);
  const int64_t m = meta[5], k = meta[6], n = meta[7];
  const int64_t kp = (k + 1) / 2 * 2, mp = (m + 3) / 4 * 4;
  const int8_t* x = data<int8_t>(args, 0);
  const int isa = isa_level();
  if (isa != ISA_AVX2) {  // VNNI: rows = activations + 128 (u8), panels = packed s8 weights
    const int64_t kq = (k + 3) / 4, ld = kq * 4, m8 = (m + 7) / 8 * 8;
    const int8_t* packed = data<int8_t>(args, 1);
    uint8_t* rows8 = static_cast<uint8_t*>(scratch(3, m8 * ld + 64));
    for (int64_t i = 0; i < m8; ++i) {
      uint8_t* r = rows8 + i * ld;
      if (i < m) {
        const int8_t* xi = x + i * k;
        for (int64_t j = 0; j < k; ++j) r[j] = (uint8_t)xi[j] ^ 0x80;
        for (int64_t j = k; j < ld; ++j) r[j] = 0;
      } else {
        memset(r, 0, ld);
      }
    }
    GemmDot g{reinterpret_cast<const int8_t*>(rows8), m, kq, packed + meta[8], n,
              epilogue(args, meta, 0), isa};
    g.e.ld = n;
    g.e.off = shifted_off(g.e.off, reinterpret_cast<const int32_t*>(packed + meta[9]), n);
    if (amx_gemm(g, true)) return 0;  // AMX tiles where the CPU and OS allow them
    parallel_for((n + 15) / 16, [&](int64_t b, int64_t e) { gemm_panels_dot<true>(g, b, e); },
                 m * n * ld / dot_speed(isa));
    return 0;
  }
  int16_t* rows = static_cast<int16_t*>(scratch(0, mp * kp * 2));
  for (int64_t i = 0; i < mp; ++i) {
    int16_t* r = rows + i * kp;
    if (i < m) {
      for (int64_t j = 0; j < k; ++j) r[j] = x[i * k + j];
      if (kp > k) r[k] = 0;
    } else {
      memset(r, 0, kp * 2);
    }
  }
  Gemm g{rows, m, kp, data<int16_t>(args, 1), n, epilogue(args, meta, 0)};
  g.e.ld = n;
  parallel_for((n + 15) / 16, [&](int64_t b, int64_t e) { gemm_panels(g, b, e); },
               m * n * kp);
  return 0;
}

// edgecc_x86_int8_full_work 1: a VNNI convolution's pool-job size counts its write-back,
// panels and padded copy besides its multiply-adds (0: multiply-adds only, as before; A/B).
// edgecc_x86_int8_oc_split 1: a convolution of few panels pools (panel, 8 channels) items
// (0: by panels only; A/B); counted per call in oc_split_calls.
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_full_work = 1;
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_oc_split = 1;
// edgecc_x86_int8_oc_major 1: those (panel, 8 channels) items ordered channel-major, so each
// thread's contiguous run (the pool's two ends) is a run of channels over every panel: it
// reads only its share of the weights (0: panel-major, as before: on 8x8 maps each thread
// read every weight); counted per call in oc_major_calls
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_oc_major = 1;
int64_t oc_major_calls = 0;  // oc_split calls whose items ran channel-major (a test's)
// edgecc_x86_int8_conv_pool_rows 1: a 1x1 convolution (no padding, stride 1) of at least
// 4 panels a thread — pooled by panels, i.e. by rows of the map, each thread's run from its
// own end — compared with the pool's threshold unscaled (x86_int8_pool_source halves the
// job of every other convolution): on MobileNetV2-32's 16x16 maps the depthwise between
// the 1x1 convolutions runs pooled by bands of rows (dw_rows), so a serial 1x1 made the
// other core's half of the map cross over twice a layer; pooled by rows each thread reads
// mostly rows its own core wrote. 0: scaled as every convolution (A/B); counted per call
// pooled while it is on in conv_rows_calls. Scheduling only: the same outputs.
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_conv_pool_rows = 0;
int64_t conv_rows_calls = 0;
int64_t oc_split_calls = 0;  // convolution calls pooled by (panel, channels) (a test's)
std::atomic<int> oc_split_seen{0};

""" + PAD_KERNELS + DIRECT_KERNELS + POOL_KERNELS + STEM_KERNELS + PAIR_KERNELS + \
    LAYER_TABLES_KERNELS + r"""
// convolution (groups 1, NCHW / OIHW):  meta = [2, requant, lo, hi, zy, N, C, H, W, OC,
// KH, KW, SH, SW, PH, PW, DH, DW, OH, OW, zx, vnni_at, comp_at, tap_major];  w:
// [ceil(OC/4)*4][kp] int16, k = (c, ky, kx), then the VNNI rows [ceil(OC/8)*8][kq*4] int8
// (k = (ky, kx, c) where tap_major: x86_int8_direct_source) and 128·Σw int32 per channel
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_qconv(void*, const TVMFFIAny* args, int32_t num_args,
                                TVMFFIAny* result) {
  if (bad_args(num_args, 13)) return -1;
  result->type_index = kTVMFFINone; result->zero_padding = 0; result->v_int64 = 0;
  const int64_t* meta = data<int64_t>(args, 2);
  const int64_t nb = meta[5], c = meta[6], h = meta[7], w = meta[8], oc = meta[9];
  const int64_t kh = meta[10], kw = meta[11], sh = meta[12], sw = meta[13];
  const int64_t ph = meta[14], pw = meta[15], dh = meta[16], dw = meta[17];
  const int64_t oh = meta[18], ow = meta[19];
  const int16_t zx = (int16_t)meta[20];
  const int64_t k = c * kh * kw, kp = (k + 1) / 2 * 2, pix = oh * ow;
  const int64_t n_panels = (pix + 15) / 16;
  const int8_t* x = data<int8_t>(args, 0);
  const int64_t hp = h + 2 * ph, wp = w + 2 * pw;
  const int isa = isa_level();
  // x86_int8_c4 (x86_int8_direct_source): x / the int8 output in the padded channel-quad form
  const bool c4_in = c4_meta(args, 24) != 0, c4_out = c4_meta(args, 25) != 0;
  if ((c4_in || c4_out) && isa == ISA_AVX2)
    return c4_fallback(args, num_args, result, __tvm_ffi_edgecc_x86_qconv);
  if (isa != ISA_AVX2) {  // VNNI: rows = packed s8 weights, panels = im2col of x + 128 (u8)
    // meta[23] 2: the VNNI rows' channels zero-padded to a multiple of 4 (x86_int8.emit_conv:
    // the stem's 3), tap-major: conv_direct4 takes it (its copy pads the last quad)
    const int64_t cdot = meta[23] == 2 ? (c + 3) / 4 * 4 : c;
    const int64_t kq = (cdot * kh * kw + 3) / 4;
    const int8_t* packed = data<int8_t>(args, 1);
    int8_t* panels8 = static_cast<int8_t*>(scratch(0, n_panels * kq * 64 + 64));
    uint8_t* padded = static_cast<uint8_t*>(scratch(1, c * hp * wp + 64));
    int64_t* koff = static_cast<int64_t*>(scratch(2, (kq * 5 + 1) * sizeof(int64_t)));
    const bool tap_major = meta[23] != 0;  // the VNNI rows' k order (x86_int8.emit_conv)
    Epilogue e = epilogue(args, meta, 1);
    if (!post_args(args, num_args, e)) return bad_post();
    e.wide = isa == ISA_AVX512VNNI;
    e.post16 = e.wide && e.fused && !env_off("EDGECC_X86_POST16");  // "0": post8 (A/B)
    count_hi32(e);
    const uint8_t zu = (uint8_t)((uint8_t)(int8_t)zx ^ 0x80);
    const int flip_mode = !edgecc_x86_int8_flip_copy ? 0 : isa == ISA_AVX512VNNI ? 2 : 1;
    // conv_direct4 (x86_int8_direct_source) reads its panels in place: no panel switches
    // read for it (each getenv scans the environment: ~1% of a ResNet-20 call on Zen 4)
    const bool s2 = tap_major && isa == ISA_AVX512VNNI &&
                    meta[23] != 2 && direct4_s2_fits(sh, sw, dh, dw, w, wp, oh, ow);
    const bool d4 = tap_major && isa == ISA_AVX512VNNI && !(!ph && !pw && sh == 1 && sw == 1) &&
                    (s2 || direct4_fits(sh, sw, dh, dw, oh, ow));
    if ((c4_in || c4_out) && !c4_fits(d4 && !s2 && nb == 1 && (!c4_in || meta[23] == 1),
                                      c4_out, e, oc))
      return c4_fallback(args, num_args, result, __tvm_ffi_edgecc_x86_qconv);
    if (c4_out) e.c4 = c4_output(meta, e);  // the tiles store there (borders written now)
    // off - comp, the fold's table, conv_direct4's qoff: per layer, built once and then only
    // read (x86_int8_layer_tables_source), else per call in scratch as before
    const int64_t wq = s2 ? (wp + 1) / 2 : 0;  // stride 2: the column-phase copy
    const int64_t geo[7] = {cdot, kh, kw, hp, wp, s2 ? 2 : 1, wq};
    const int32_t* comp = reinterpret_cast<const int32_t*>(packed + meta[22]);
    const LayerTables* lt = layer_tables(e, packed, comp, oc, c * kh * kw, nb * oh * ow,
                                         d4 ? kq : 0, geo);
    if (!lt) {
      e.off = shifted_off(e.off, comp, oc);
      fold_off(e, oc, c * kh * kw, nb * oh * ow);
    }
    const bool use_perm = isa == ISA_AVX512VNNI && !d4 && has_vbmi() &&
                          !env_off("EDGECC_X86_PERM_PANEL");  // "0": gather_panel (A/B)
    if (!d4) {  // the im2col's offsets (conv_direct4 reads its panels by qoff alone; skipping
                // them: ResNet-20 w8a8 1 thread CPU time 1.011x faster, Zen 4, A/B loaded)
      int64_t kk = conv_koff(koff, tap_major, cdot, kh, kw, hp, wp, dh, dw, c);
      for (; kk < kq * 4; ++kk) koff[kk] = 0;  // padding k: its weights are 0
    }
    // set once (a store per panel from both threads would move their line between cores)
    std::atomic<bool> used_perm{false}, used_interleave{false};
    auto mark = [](std::atomic<bool>& used) {
      if (!used.load(std::memory_order_relaxed)) used.store(true, std::memory_order_relaxed);
    };
    for (int64_t b = 0; b < nb; ++b) {
      const int8_t* xb = x + b * c * h * w;
      // no padding, stride 1 (1x1 convolutions): the panels read x itself, flipping the
      // sign bit (+128) as they go; else a padded copy of x + 128, padded with zx + 128
      // (strided panels gather from it)
      const bool direct = !ph && !pw && sh == 1 && sw == 1;
      const __m128i flip = _mm_set1_epi8(direct ? (char)0x80 : 0);
      const uint8_t fl = direct ? 0x80 : 0;
      // pooled with whole panels per band of output rows: each band pads the input rows it
      // reads into its thread's own copy (below), so the copy is split too (else the pool's
      // other thread waited through it: ~1/3 of a ResNet-20 3x3 convolution's gain lost)
      const int64_t unit = 16 / std::gcd(ow, (int64_t)16);  // output rows of whole panels
      const int64_t threads = edgecc_pool_size();
      // the job's work: the multiply-adds, plus (full_work) the write-back, the panels and the
      // padded copy, which dominate small convolutions (1x1 on 8x8 / 4x4 maps, ResNet's 1x1
      // stride-2 shortcuts, the stem: 4-15 us a call at 1 thread on Zen 4, serial before)
      // (units fitted to Zen 4 1-thread times: an output 6, 16 written back as float (post16's
      // vdivps), a panel byte 2, a copied byte 4 (the memset, the flip, strided panels))
      const int64_t full_job = oc * kq * 4 * pix / dot_speed(isa) +
          (edgecc_x86_int8_full_work ? (e.requant ? 6 : 16) * oc * pix + 2 * n_panels * kq * 64 +
                                       (direct ? 0 : 4 * c * hp * wp) : 0);
      // conv_pool_rows: a 1x1 convolution pooled by panels (rows of the map: 16x16 maps) is
      // compared unscaled — see edgecc_x86_int8_conv_pool_rows
      const bool by_rows = edgecc_x86_int8_conv_pool_rows && direct && !d4 && threads > 1 &&
                           n_panels >= 4 * threads && nb == 1;
      const int64_t job_work = by_rows ? full_job : conv_pool_work(full_job);  // pool_source
      if (by_rows && b == 0 && job_work >= serial_work())  // pooled by rows under the knob
        EDGECC_COUNT(conv_rows_calls, 1);
      // two bands a thread (one late thread costs less), fewer where a band's halo (the
      // (kh - 1)·dh input rows it shares with the next) would be over half its own rows
      // (8x8 maps: 2 bands of 4 rows, not 4 of 2), never fewer than one a thread
      const int64_t halo = std::max((kh - 1) * dh, (int64_t)1);
      const int64_t banded = std::min(oh / unit, std::max(threads, std::min(
          2 * threads, oh * sh / (2 * halo))));
      const int64_t bands = !direct && !d4 && !amx_conv_ready() && pix % 16 == 0 &&
          oh % unit == 0 && threads > 1 && job_work >= serial_work() &&
          !env_off("EDGECC_X86_CONV_BANDS") ? banded : 1;  // "0": per panel (A/B)
      if (d4) {
        int64_t* own = koff + kq * 4 + 1;  // panels read in place (x86_int8_direct_source)
        if (!lt) direct4_offsets(own, cdot, kh, kw, hp, wp, s2 ? 2 : 1, wq);
        const int64_t* qoff = lt ? lt->qoff : own;
        Direct4 d{packed + meta[21], oc, kq, advanced(e, b * oc * pix), xb, cdot, h, w, hp, wp,
                  ph, pw, kh, kw, oh, ow, zu, qoff};
        d.e.ld = pix;
        d.c_real = c;  // < cdot: the copy's last quad padded (pad_rows_c4*)
        if (s2) d.sh = d.sw = 2, d.wq = wq;
        if (c4_in) d.c4in = reinterpret_cast<const uint8_t*>(xb);  // x86_int8_c4: in place
        if (c4_in) EDGECC_COUNT(c4_in_calls, 1);
        if (c4_out) EDGECC_COUNT(c4_out_calls, 1);
        if (d4_pair && nb == 1 && d4_pair_take(d, job_work, threads, lt))  // x86_int8_pair
          continue;
        conv_direct4(d, threads, direct4_job(job_work, cdot > c, s2, threads,  // stem_source
                                             kh == 1 && kw == 1, full_job));
        if (b == 0) EDGECC_COUNT(direct4_calls, 1);
        if (b == 0 && s2) EDGECC_COUNT(direct4_s2_calls, 1);
        continue;
      }
      if (!direct && bands == 1 && flip_mode) {
        pad_rows(padded, xb, c, h, w, hp, wp, ph, pw, 0, hp, zu, flip_mode);
      } else if (!direct && bands == 1) {
        memset(padded, zu, c * hp * wp);
        for (int64_t ci = 0; ci < c; ++ci)
          for (int64_t y = 0; y < h; ++y) {
            uint8_t* dst = padded + (ci * hp + y + ph) * wp + pw;
            const int8_t* src = xb + (ci * h + y) * w;
            for (int64_t i = 0; i < w; ++i) dst[i] = (uint8_t)src[i] ^ 0x80;
          }
      }
      auto build = [&](int64_t p, const int8_t* pad8) {
        int8_t* panel = panels8 + p * kq * 64;
        int64_t base[16];
        const bool contiguous = panel_bases_step(p, pix, ow, sh, sw, wp, base);
        if (contiguous && use_perm) {
          interleave_panel_vbmi(pad8 + base[0], koff, kq, panel, flip);
          mark(used_interleave);
          return;
        }
        if (contiguous) {
          const int8_t* s = pad8 + base[0];
          for (int64_t q = 0; q < kq; ++q)
            interleave4(s + koff[4 * q], s + koff[4 * q + 1], s + koff[4 * q + 2],
                        s + koff[4 * q + 3], panel + q * 64, flip);
          return;
        }
        if (use_perm && perm_panel_fits(base)) {  // VBMI: byte shuffles, no gathers
          perm_panel(pad8, koff, base, kq, panel, flip);
          mark(used_perm);
          return;
        }
        if (!direct && isa == ISA_AVX512VNNI) {  // the padded copy: 64 bytes to spare
          gather_panel(pad8, koff, base, kq, panel, flip);
          return;
        }
        for (int64_t q = 0; q < kq; ++q) {
          int8_t* dst = panel + q * 64;
          for (int lane = 0; lane < 16; ++lane)
            for (int j = 0; j < 4; ++j)
              dst[lane * 4 + j] = (int8_t)((uint8_t)pad8[koff[4 * q + j] + base[lane]] ^ fl);
        }
      };
      const int8_t* whole = direct ? xb : reinterpret_cast<const int8_t*>(padded);
      GemmDot g{packed + meta[21], oc, kq, panels8, pix, advanced(e, b * oc * pix), isa};
      g.e.ld = pix;
      if (band_span.on && direct && nb == 1) {  // a block's band (x86_int8_block): its panels
        for (int64_t p = band_span.lo; p < band_span.hi; p += 2) {  // two: tile_two's pairs
          const int64_t q = std::min<int64_t>(p + 2, band_span.hi);
          for (int64_t i = p; i < q; ++i) build(i, whole);
          gemm_panels_dot<false>(g, p, q);
        }
        band_span.ran = 1;
        continue;
      }
      if (bands > 1) {
        // band i: output rows [r0, r1) (whole panels), reading padded rows [y0, y1) of every
        // channel, copied into this thread's buffer at the same offsets as the whole copy
        // (same panels, same bytes: bit-identical); rows outside the band are never read
        const int64_t units = oh / unit;
        parallel_for(bands, [&](int64_t i0, int64_t i1) {
          uint8_t* own = static_cast<uint8_t*>(scratch(1, c * hp * wp + 64));
          for (int64_t i = i0; i < i1; ++i) {
            const int64_t r0 = i * units / bands * unit, r1 = (i + 1) * units / bands * unit;
            const int64_t y0 = r0 * sh, y1 = std::min(hp, (r1 - 1) * sh + (kh - 1) * dh + 1);
            if (flip_mode) pad_rows(own, xb, c, h, w, hp, wp, ph, pw, y0, y1, zu, flip_mode);
            else for (int64_t ci = 0; ci < c; ++ci) {
              memset(own + (ci * hp + y0) * wp, zu, (y1 - y0) * wp);
              for (int64_t y = std::max(y0, ph); y < std::min(y1, ph + h); ++y) {
                uint8_t* dst = own + (ci * hp + y) * wp + pw;
                const int8_t* src = xb + (ci * h + y - ph) * w;
                for (int64_t i = 0; i < w; ++i) dst[i] = (uint8_t)src[i] ^ 0x80;
              }
            }
            for (int64_t p = r0 * ow / 16; p < r1 * ow / 16; p += 2) {  // two: tile_two's
              const int64_t q = std::min<int64_t>(p + 2, r1 * ow / 16);
              for (int64_t i = p; i < q; ++i) build(i, reinterpret_cast<const int8_t*>(own));
              gemm_panels_dot<false>(g, p, q);
            }
          }
        }, job_work);
        EDGECC_COUNT(conv_bands, 1);
        continue;
      }
      auto build_whole = [&](int64_t p) { build(p, whole); };
      if (amx_conv(g, build_whole, pix * kq * 4, direct && kh == 1 && kw == 1))
        continue;  // AMX tiles where the CPU, OS and knob allow
      // few panels (1x1 convolutions on 8x8 / 4x4 maps: 4 / 1): the panels built first, then
      // pooled by (panel, 8 output channels) — by panels alone a 4x4 map cannot split at all
      const int64_t row_tiles = (oc + 7) / 8;
      if (edgecc_x86_int8_oc_split && isa == ISA_AVX512VNNI && threads > 1 &&
          n_panels < 4 * threads && row_tiles >= 2 && job_work >= serial_work()) {
        for (int64_t p = 0; p < n_panels; ++p) build_whole(p);
        const bool major = edgecc_x86_int8_oc_major != 0;
        parallel_for(n_panels * row_tiles, [&](int64_t i0, int64_t i1) {
          for (int64_t i = i0; i < i1; ++i) {
            const int64_t p = major ? i % n_panels : i / row_tiles;
            const int64_t t = major ? i / n_panels : i % row_tiles;
            gemm_panels_dot<false>(g, p, p + 1, t * 8, t * 8 + 8);
          }
        }, job_work);
        if (major && b == 0) EDGECC_COUNT(oc_major_calls, 1);
        if (!oc_split_seen.load(std::memory_order_relaxed))
          oc_split_seen.store(1, std::memory_order_relaxed);
        continue;
      }
      parallel_for(n_panels, [&](int64_t p0, int64_t p1) {
        for (int64_t p = p0; p < p1; p += 2) {  // two panels: tile_two's pairs
          const int64_t q = std::min<int64_t>(p + 2, p1);
          for (int64_t i = p; i < q; ++i) build_whole(i);
          gemm_panels_dot<false>(g, p, q);
        }
      }, job_work);
    }
    if (used_perm) EDGECC_COUNT(perm_panels, 1);
    if (flip_mode && !(!ph && !pw && sh == 1 && sw == 1))
      EDGECC_COUNT(flip_copies, 1);
    if (used_interleave) EDGECC_COUNT(vbmi_interleave, 1);
    EDGECC_COUNT_SEEN(post16_seen, post16_calls);
    EDGECC_COUNT_SEEN(oc_split_seen, oc_split_calls);
    EDGECC_COUNT_SEEN(post_rows_seen, post_rows_calls);
    EDGECC_COUNT_SEEN(tile_write_seen, tile_write_calls);
    EDGECC_COUNT_SEEN(tile_named_seen, tile_named_calls);
    EDGECC_COUNT_SEEN(tile_post_seen, tile_post_calls);
    EDGECC_COUNT_SEEN(post_floor_seen, post_floor_calls);  // x86_int8_tile_source
    EDGECC_COUNT_SEEN(tile_tied_seen, tile_tied_calls);
    EDGECC_COUNT_SEEN(tile_two_seen, tile_two_calls);  // x86_int8_tile_source
    EDGECC_COUNT_SEEN(pad_vbmi_seen, pad_vbmi_calls);
    EDGECC_COUNT_SEEN(pad_fast_seen, edgecc_x86_int8_pad_fast_calls);  // x86_int8_direct_source
    return 0;
  }
  int16_t* panels = static_cast<int16_t*>(scratch(0, n_panels * kp * 16 * 2));
  int8_t* padded = static_cast<int8_t*>(scratch(1, c * hp * wp + 64));
  int64_t* koff = static_cast<int64_t*>(scratch(2, (kp + 1) * sizeof(int64_t)));
  int64_t kk = 0;  // k = (ci, ky, kx) -> its offset in the padded input
  for (int64_t ci = 0; ci < c; ++ci)
    for (int64_t ky = 0; ky < kh; ++ky)
      for (int64_t kx = 0; kx < kw; ++kx) koff[kk++] = (ci * hp + ky * dh) * wp + kx * dw;
  Epilogue e = epilogue(args, meta, 1);
  if (!post_args(args, num_args, e)) return bad_post();
  count_hi32(e);
  for (int64_t b = 0; b < nb; ++b) {
    const int8_t* xb = x + b * c * h * w;
    if (ph || pw) {  // pad with the input's zero point once, not per patch element
      memset(padded, (int8_t)zx, c * hp * wp);
      for (int64_t ci = 0; ci < c; ++ci)
        for (int64_t y = 0; y < h; ++y)
          memcpy(padded + (ci * hp + y + ph) * wp + pw, xb + (ci * h + y) * w, w);
    }
    // unpadded: the panels read x itself (the same layout: hp = h, wp = w)
    const int8_t* src = ph || pw ? padded : xb;
    // im2col of one panel, straight into its layout [kp/2][16][2]; each task builds
    // the panels it multiplies (one thread-pool launch per convolution, panel hot in L1)
    auto build = [&](int64_t p) {
      {
        int16_t* panel = panels + p * kp * 16;
        int64_t base[16];  // contiguous: 16 consecutive input bytes per k (stride 1, one run)
        const bool contiguous = panel_bases(p, pix, ow, sh, sw, wp, base);
        if (contiguous) {
          const int64_t pairs = k / 2;
          for (int64_t k2 = 0; k2 < pairs; ++k2) {
            im2col_pair(src + koff[2 * k2] + base[0], src + koff[2 * k2 + 1] + base[0],
                        panel + k2 * 32);
          }
          if (kp > k) {
            int16_t* dst = panel + (kp / 2 - 1) * 32;
            const int8_t* s0 = src + koff[k - 1] + base[0];
            for (int lane = 0; lane < 16; ++lane) { dst[2 * lane] = s0[lane]; dst[2 * lane + 1] = 0; }
          }
          return;
        }
        for (int64_t k2 = 0; k2 < kp / 2; ++k2) {
          int16_t* dst = panel + k2 * 32;
          const int8_t* s0 = src + koff[2 * k2];
          for (int lane = 0; lane < 16; ++lane) dst[2 * lane] = s0[base[lane]];
          if (2 * k2 + 1 < k) {
            const int8_t* s1 = src + koff[2 * k2 + 1];
            for (int lane = 0; lane < 16; ++lane) dst[2 * lane + 1] = s1[base[lane]];
          } else {
            for (int lane = 0; lane < 16; ++lane) dst[2 * lane + 1] = 0;
          }
        }
      }
    };
    Gemm g{data<int16_t>(args, 1), oc, kp, panels, pix, advanced(e, b * oc * pix)};
    g.e.ld = pix;
    // few panels (1x1 on 8x8 / 4x4 maps): the panels built first, then pooled by (panel, 8
    // output channels) items, channel-major (each thread's run reads its share of the
    // weights) — as the VNNI path's oc_split; the same knob and counter
    const int64_t row_tiles = (oc + 7) / 8, threads = edgecc_pool_size();
    if (edgecc_x86_int8_oc_split && threads > 1 && n_panels < 4 * threads && row_tiles >= 2 &&
        oc * kp * pix >= serial_work()) {
      for (int64_t p = 0; p < n_panels; ++p) build(p);
      parallel_for(n_panels * row_tiles, [&](int64_t i0, int64_t i1) {
        for (int64_t i = i0; i < i1; ++i)
          gemm_panels(g, i % n_panels, i % n_panels + 1, i / n_panels * 8, i / n_panels * 8 + 8);
      }, oc * kp * pix);
      if (b == 0) EDGECC_COUNT(oc_split_calls, 1);
      continue;
    }
    parallel_for(n_panels, [&](int64_t p0, int64_t p1) {
      for (int64_t p = p0; p < p1; ++p) {
        build(p);
        gemm_panels(g, p, p + 1);
      }
    }, oc * kp * pix);
  }
  return 0;
}

// the requantized write-back alone (a test's probe of its exactness): acc int32 [C][n] ->
// out int8 [C][n] by write_channel (AVX-512 where this CPU has it, the 16-wide forms then the
// scalar tail); args: acc, mult, add, shift (int64 [C]), meta [form (1 / 2 hi32), lo, hi,
// zy, C, n], out
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_int8_requant_probe(void*, const TVMFFIAny* args, int32_t num_args,
                                            TVMFFIAny* result) {
  result->type_index = kTVMFFINone; result->zero_padding = 0; result->v_int64 = 0;
  if (num_args != 6) {
    TVMFFIErrorSetRaisedFromCStr("ValueError", "edgecc_x86_int8_requant_probe: 6 arguments");
    return -1;
  }
  const int64_t* m6 = data<int64_t>(args, 4);
  const int64_t meta[5] = {0, m6[0], m6[1], m6[2], m6[3]};
  const int64_t c = m6[4], n = m6[5];
  Epilogue e;
  memset(&e, 0, sizeof e);
  int32_t* off = static_cast<int32_t*>(calloc(c > 0 ? c : 1, 4));
  e.off = off; e.mult = data<int64_t>(args, 1); e.add = data<int64_t>(args, 2);
  e.shift = data<int64_t>(args, 3); e.requant = 1; e.channel_is_row = 1;
  e.lo = meta[2]; e.hi = meta[3]; e.zy = meta[4];
  e.hi32 = meta[1] == 2 && e.zy == 0 && e.lo >= -128 && e.hi <= 127 && e.lo <= e.hi;
  e.out = data<void>(args, 5);
  e.wide = isa_level() == ISA_AVX512VNNI;
  count_hi32(e);
  const int32_t* acc = data<int32_t>(args, 0);
  for (int64_t ch = 0; ch < c; ++ch) write_channel(e, ch, acc + ch * n, n, ch * n);
  free(off);
  return 0;
}

""" + DW_ENTRY_FFI + COUNTERS_FFI + QUANT_KERNELS + DIRECT_FFI + DWROWS_FFI + TILE_FFI + POOL_FFI + STEM_FFI + AMX_FFI + BLOCK_FFI + \
    PAIR_FFI + r"""
}  // extern "C"
"""
