"""x86 int8 inverted residual blocks in one kernel call: the expand 1x1 ``edgecc_x86_qconv``,
the depthwise ``edgecc_x86_qdwconv`` and the project 1x1 ``edgecc_x86_qconv`` (+ its fused
residual write-back) of a w8a8 MobileNetV2 block as ONE ``edgecc_x86_qblock`` call, so the VM
dispatches one packed call instead of three (MobileNetV2-32: ~1 us of VM dispatch and argument
marshalling per call beside 2-7 us of kernel on its small planes)::

    Before: ye = qconv(x, We...);  yd = qdwconv(ye, Wd...);  y.. = qconv(yd, Wp..., post, res)
    After:  y.. = qblock(x, We... (8), Wd... (8), Wp..., post, res)

The call's arguments are the three calls' own (their constants unchanged, the two int8
intermediates left out): ``x`` and the expand's 8 constants, the depthwise's 8, the project's
inputs after its ``x`` and its outputs. The C entry (``BLOCK_FFI``, spliced into
``x86_int8_source.SOURCE``) runs the three packed entries in turn on per-thread int8
intermediates, so the outputs are the unfused build's bit for bit by construction (tested
against it and the integer simulator, ``tests/targets/tvm/test_x86_int8_block.py``).

The split form (``SPLIT``, on since s33; C ``qblock_split``): a block whose expand map has at
most ``SPLIT_MAX_PIXELS`` (16x16) pixels and 16+ expanded channels carries, after the whole
block's 16 constants, the expand's and the depthwise's constants for two halves of the
expanded channels (``_halves``: 32 more)::

    y.. = qblock(x, We.. (8), Wd.. (8), We0.. Wd0.. We1.. Wd1.. (32), Wp.., post, res)
    pool of 2+ threads: one 2-item job, item i = expand + depthwise of half i (channels
        [c0_i, c1_i) of the intermediates), then the project on all channels
    1-thread pool: the whole block (qblock_whole: the chained form)

No halo, no band set-up: on MobileNetV2-32 it replaces the band form on the 16x16 / 8x8
blocks and the chained form on the 4x4 ones (one panel: never banded). Measured (s33, Zen 5
2-vCPU KVM, bench/x86_int8_block.py, MobileNetV2-32 w8a8, builds interleaved, paired
medians): 2 threads split / band 0.958x (150 rounds, p10-p90 0.71-1.35), 0.967x (150 rounds,
after the plan runner took the 58-61 argument calls), 0.961x (120; the 4x4 blocks alone split
1.000x, the 32x32 ones too 1.013x: hence 16x16), 0.951x (40); 1 thread CPU time 1.008x (60
rounds: the whole block; bench/results/x86_int8_block_s33.json, _t1_s33.json). With the
halves only (the 1-thread pool running them in turn): 1.040x at 1 thread; with both but the
plan runner's old 48-argument limit (the model refused the plan, run by the VM): 1.080x
(``plan_runner_source``: 64 since).

Where (``fuse``, called by ``integer_lowering`` after a 1x1 stride-1 project's call was
emitted): the project's input is a requantized (plain int8) ``qdwconv`` call whose input is a
requantized ``qconv`` 1x1 stride-1 unpadded call, each int8 intermediate used by the next layer
only, the expand's output at most ``MAX_EXPAND_PIXELS`` pixels a channel. The calls it replaces
stay emitted, unused (the lowering's dead-code elimination drops them). ``FUSE_BLOCK`` False:
none (the build-time A/B switch). ``edgecc_x86_int8_block_calls`` counts the fused calls run
(``edgecc_x86_int8_block`` query: the tests' proof the fused call ran).

Measured (bench/x86_int8_block.py, MobileNetV2-32 w8a8, 16 blocks fused, three builds
interleaved in one process, 80 rounds, shared machine): one call vs three 0.970x paired median
at 2 threads (load 3.7; p10-p90 0.38-2.64: the other vCPU busy), 0.990x / 0.981x 1 thread CPU
time (load 4.0 / 7.4; p10-p90 0.87-1.16 / 0.91-1.03): the VM's dispatch of a packed call is
~0.15-0.3 us, not the ~1 us a call the in-place sum suggested. The split form (``SPLIT``) vs
three calls: 1.040x 2 threads, 1.019x 1 thread (off by default).

The band form (``BAND``; C ``qblock_band``, s18): at 2+ pool threads a block's output rows
are cut into one band a thread (whole 16-pixel panels of the project's map), and each band
runs all three stages on its own thread, on that thread's intermediates laid out as the whole
maps (only its rows written or read)::

    band i, output rows [oy0, oy1):
      expand 1x1 on input rows [oy0·s - 1, (oy1 - 1)·s + 2) (clipped; the depthwise's halo,
          whole panels: 8x8 maps compute 6 of 4 panels, 16x16 18 of 16)
      depthwise on its output rows (dw_direct's vectors of those rows, else dw_rows' rows)
      project 1x1 (+ residual, float / int8 outputs) on its output rows' panels

One pool job a block instead of three calls (of which the 16x16 / 8x8 ones ran serially on
the caller) and each thread reads mostly rows its own core wrote (the block before ran the
same bands). The entries run their own code on the band (``band_span``, a thread-local the
1x1 qconv's panel loop, dw_pool_rows and the dw_direct plan read), so the outputs are the
chained form's bit for bit (tests/targets/tvm/test_x86_int8_block_band.py: the three calls,
the chained form, the integer arithmetic, 2-thread pool forced, hypothesis shapes).

Measured (MobileNetV2-32 w8a8, Zen 4 2-vCPU KVM, s18, the other helper's jobs off or on):
in place at 2 threads (bench/x86_int8_inplace.py ``chain=block_band:0``, 40 rounds, load 2.0,
the other vCPU idle while it ran) the banded blocks took 0.70-0.97x of their chained time
(16x16 0.76-0.81x, 8x8 0.81-0.93x, the 32x32 stride-2 one 0.70x), the calls' sum 229.5 vs
258.1 us (chained / banded paired median 1.074, p10 / p90 0.80 / 1.22). Whole model
(bench/x86_int8_knob_ab.py, 400 rounds, 2 threads): chained / banded 1.160 (p10 / p90 0.85 /
1.63, load 1.4; int8 / fp32 0.558 vs 0.665) and 1.113 (0.75 / 1.36, load 0.6; 0.518 vs
0.574). Its cost on one thread (knob 2: both bands on the caller, thread CPU time): 1.128x
(perf, per run: about half the expand's halo panels, a quarter the entries' set-up run
twice, the rest the depthwise's per-channel work run twice); in place the 12 banded
blocks 1.01-1.05x at 32x32, 1.07-1.13x at 16x16, 1.14-1.20x at 8x8. ``BAND_MIN_PIXELS`` 256
(8x8 blocks chained): 0.984 of the default; ``BAND_MAX_PIXELS`` 256 (32x32 blocks chained):
1.039, both within the noise (paired p10-p90 0.71-1.29). A thread that runs both bands (the
other late or busy) computes the expand panels they share once (``BAND_REUSE_KNOB``): both
bands on one thread then cost 1.08x of the chained form's CPU time instead of 1.14x (whole
runs incl. the runner's Python, 60 interleaved rounds); bench/x86_int8_knob_ab.py --one-thread
(300 rounds; bench/results/x86_int8_block_band_ab.json): 1.105x vs 1.148x at 1 thread (CPU
time, load 0.6), and at 2 threads chained / banded 1.174 (p10 / p90 0.87 / 1.67, load 1.0;
int8 / fp32 0.526 banded, 0.637 chained).
It needs the other vCPU: with the other helper's jobs running (00:33-00:40, load 2-3.4; the
pool's log: the worker joined the banded jobs in 21-181 of 3115-8245 rounds) the banded model
took 1.07-1.08x of the chained one at 2 threads (wall, paired), in the rounds where the worker
joined them 0.80-0.85x. Default on: the goal's measurement is on a quiet host; an --tune knob.
"""

from __future__ import annotations

from typing import Any

SYMBOL = "edgecc_x86_qblock"
CALLS = "edgecc_x86_int8_block"  # () -> fused block calls run in this process
SPLIT_CALLS = "edgecc_x86_int8_block_halves"  # () -> ... of them in the split form
SYMBOLS = (SYMBOL, CALLS, SPLIT_CALLS)

# build-time switch: False, every block as its three calls
FUSE_BLOCK = True
# blocks whose expand output map (OH x OW of the expand) is larger run as three calls
MAX_EXPAND_PIXELS = 32 * 32

# the split form (batch 1): the expand + depthwise of two halves of the expanded channels as
# one 2-item pool job, then the project, for expand maps of at most this many pixels (larger
# ones: the band form). The call carries the whole block's constants too and runs whole on a
# 1-thread pool (module docstring: measured). Knob edgecc_x86_int8_block_split 0: the halves
# in turn on the caller (A/B)
SPLIT = True
SPLIT_MAX_PIXELS = 16 * 16
SPLIT_MIN_CHANNELS = 16

# the band form (C: qblock_band): each block's output rows in bands (one a pool thread), each
# band's expand (its input rows + the depthwise's halo), depthwise and project on that thread's
# own intermediates. Library int64 globals, read per call: BAND_KNOB 1 / 0 (the chained form)
# / 2 (two bands on a 1-thread pool too: the form's own cost at 1 thread),
# BAND_MIN_KNOB the least project output pixels, BAND_MAX_KNOB the most expand pixels; these
# constants are their defaults in the built library. BAND_CALLS counts the blocks run banded,
# BAND_MISSED those in which an entry did not take its band (computed its whole call)
BAND = True
BAND_MIN_PIXELS = 8 * 8
BAND_MAX_PIXELS = 32 * 32
BAND_KNOB = "edgecc_x86_int8_block_band"
BAND_MIN_KNOB = "edgecc_x86_int8_block_band_min"
BAND_MAX_KNOB = "edgecc_x86_int8_block_band_max"
BAND_CALLS = "edgecc_x86_int8_block_band_calls"
BAND_MISSED = "edgecc_x86_int8_block_band_missed"
# 1: a thread running two adjacent bands of a block (the other thread late or busy) computes
# the expand panels they share once (0: each band its own; A/B, the same outputs)
BAND_REUSE_KNOB = "edgecc_x86_int8_block_band_reuse"
# the band switches (the tests set them; end_to_end.KNOBS tunes band and band_min)
BAND_KNOBS = (BAND_KNOB, BAND_MIN_KNOB, BAND_MAX_KNOB, BAND_REUSE_KNOB)

_EXPAND_ARGS = 9  # x + packed, meta, off, mult, add, shift, scale, bias
_CONSTS = 8

BLOCK_FFI = r"""
// ---- a whole inverted residual block in one call (targets/tvm/x86_int8_block.py) --------
// args: x, the expand's 8 constants, the depthwise's 8, the project's inputs after its x
// (8 constants (, post (, residual))) and outputs; the three packed entries run in turn on
// per-thread int8 intermediates (the same kernels, the same outputs)
int64_t block_calls = 0;

static int8_t* qblock_mid(size_t bytes) {
  static thread_local int8_t* buf = 0;
  static thread_local size_t size = 0;
  if (size < bytes) {
    free(buf);
    size = (bytes + 4095) / 4096 * 4096;
    buf = static_cast<int8_t*>(aligned_alloc(64, size));
  }
  return buf;
}

// the split form (42-45 arguments, taken from the call's 58-61): x, then two halves of the
// expanded channels, each the expand's 8 constants and the depthwise's 8 for its channels,
// then the project's as above;
// the halves are one pool job of 2 items (expand + depthwise of a half each: their calls
// nested, so serial, on each thread), writing adjacent channel ranges of the intermediates
// (batch 1), then the project. edgecc_x86_int8_block_split 0: the halves in turn on the caller
__attribute__((visibility("default"))) int64_t edgecc_x86_int8_block_split = 1;
int64_t block_split_calls = 0;

static int qblock_split(const TVMFFIAny* args, int32_t num_args, TVMFFIAny* result) {
  const int64_t* e0 = data<int64_t>(args, 2);
  const int64_t* e1 = data<int64_t>(args, 18);
  const int64_t* d0 = data<int64_t>(args, 10);
  const int64_t* d1 = data<int64_t>(args, 26);
  const int64_t pix1 = e0[18] * e0[19], pix2 = d0[17] * d0[18];
  const int64_t ch = e0[9] + e1[9];
  const size_t b1 = (size_t)(ch * pix1 + 63) / 64 * 64;
  int8_t* buf = qblock_mid(b1 + ch * pix2 + 64);
  int64_t h1[2][4] = {{1, e0[9], e0[18], e0[19]}, {1, e1[9], e1[18], e1[19]}};
  int64_t h2[2][4] = {{1, d0[6], d0[17], d0[18]}, {1, d1[6], d1[17], d1[18]}};
  int failed = 0;
  auto half = [&](int64_t i0, int64_t i1) {
    for (int64_t i = i0; i < i1; ++i) {
      const int at = 1 + 16 * (int)i;
      const int64_t c0 = i ? e0[9] : 0;
      DLTensor t1, t2;
      const TVMFFIAny m1 = typed_tensor_arg(t1, buf + c0 * pix1, h1[i], 4, kDLInt, 8);
      const TVMFFIAny m2 = typed_tensor_arg(t2, buf + b1 + c0 * pix2, h2[i], 4, kDLInt, 8);
      TVMFFIAny a[10], r{};
      a[0] = args[0];
      for (int j = 0; j < 8; ++j) a[1 + j] = args[at + j];
      a[9] = m1;
      int rc = __tvm_ffi_edgecc_x86_qconv(0, a, 10, &r);
      a[0] = m1;
      for (int j = 0; j < 8; ++j) a[1 + j] = args[at + 8 + j];
      a[9] = m2;
      rc |= __tvm_ffi_edgecc_x86_qdwconv(0, a, 10, &r);
      if (rc) __atomic_store_n(&failed, 1, __ATOMIC_RELAXED);
    }
  };
  if (edgecc_x86_int8_block_split) parallel_for(2, half, INT64_MAX / 4);
  else half(0, 2);
  if (__atomic_load_n(&failed, __ATOMIC_RELAXED)) return -1;
  int64_t s2[4] = {1, ch, d0[17], d0[18]};
  DLTensor t2;
  TVMFFIAny a[16];
  a[0] = typed_tensor_arg(t2, buf + b1, s2, 4, kDLInt, 8);
  for (int i = 33; i < num_args; ++i) a[i - 32] = args[i];
  if (__tvm_ffi_edgecc_x86_qconv(0, a, num_args - 32, result)) return -1;
  EDGECC_COUNT(block_split_calls, 1);
  EDGECC_COUNT(block_calls, 1);
  return 0;
}

// the band form (x86_int8_block.BAND): the block's output rows in bands, one pool item each,
// every band's three stages on its thread (the entries on a band_span: the expand's panels of
// the input rows the band's depthwise reads, halo included, the depthwise's rows, the
// project's panels) into that thread's own intermediates, laid out as the whole maps (only
// the band's rows written or read). Where the block's batch is 1, the pool has threads, the
// CPU has AVX-512 VNNI and VBMI (the 1x1 entries' panel path, the depthwise on dw_rows /
// dw_band) and the depthwise a hi32 epilogue (every MobileNetV2 one), the project's map has
// >= band_min pixels and 2+ bands of whole panels, the expand's <= band_max. 0: the chained
// form (A/B); 2: two bands even on a 1-thread pool (both on the caller: the form's cost)
__attribute__((visibility("default"))) int64_t edgecc_x86_int8_block_band = @BAND@;
__attribute__((visibility("default"))) int64_t edgecc_x86_int8_block_band_min = @BAND_MIN@;
__attribute__((visibility("default"))) int64_t edgecc_x86_int8_block_band_max = @BAND_MAX@;
// blocks run banded, and the band entry calls that did not take their span (computed the
// whole call: correct, slower; the tests' proof that none did)
__attribute__((visibility("default"))) int64_t edgecc_x86_int8_block_band_calls = 0;
__attribute__((visibility("default"))) int64_t edgecc_x86_int8_block_band_missed = 0;

// the expand's panels [lo, hi) of band call `call` held in this thread's intermediate: a thread
// that runs two adjacent bands of one call (the pool's other thread late or busy) computes the
// panels they share once. edgecc_x86_int8_block_band_reuse 0: every band computes its own
// (A/B; the same outputs)
__attribute__((visibility("default"))) int64_t edgecc_x86_int8_block_band_reuse = 1;
static std::atomic<int64_t> band_seq{0};
struct BandHeld { int64_t call, lo, hi; };
static thread_local BandHeld band_held = {-1, 0, 0};

static int qblock_band(const TVMFFIAny* args, int32_t num_args, int64_t* s1, int64_t* s2,
                       size_t b1, size_t b2, int64_t bands) {
  const int64_t* m2 = data<int64_t>(args, 10);
  const int64_t h = s1[2], w = s1[3], oh = s2[2], ow = s2[3];
  const int64_t kh = m2[9], sh = m2[11], ph = m2[13], dh = m2[15];
  const int64_t unit = 16 / std::gcd(ow, (int64_t)16), units = oh / unit;
  const int64_t call = band_seq.fetch_add(1, std::memory_order_relaxed);
  const bool reuse = edgecc_x86_int8_block_band_reuse != 0;
  int failed = 0, missed = 0;
  parallel_for(bands, [&](int64_t i0, int64_t i1) {
    int8_t* buf = qblock_mid(b1 + b2 + 64);
    DLTensor t1, t2;
    const TVMFFIAny mid1 = typed_tensor_arg(t1, buf, s1, 4, kDLInt, 8);
    const TVMFFIAny mid2 = typed_tensor_arg(t2, buf + b1, s2, 4, kDLInt, 8);
    for (int64_t i = i0; i < i1; ++i) {
      // output rows [oy0, oy1): whole panels (unit rows), the last band to the map's end
      const int64_t oy0 = i * units / bands * unit;
      const int64_t oy1 = i + 1 == bands ? oh : (i + 1) * units / bands * unit;
      // the input rows the band's depthwise reads (its halo included)
      const int64_t y0 = std::max((int64_t)0, oy0 * sh - ph);
      const int64_t y1 = std::min(h, (oy1 - 1) * sh - ph + (kh - 1) * dh + 1);
      TVMFFIAny a[16], r{};
      int rc = 0, took = 0;
      for (int j = 0; j < 9; ++j) a[j] = args[j];
      a[9] = mid1;
      // the expand's panels [p0, p1), less those this thread holds from this call's band
      // before (at most two runs: below and above them)
      const int64_t p0 = y0 * w / 16, p1 = (y1 * w + 15) / 16;
      BandHeld& held = band_held;
      const bool have = reuse && held.call == call && held.lo <= p1 && p0 <= held.hi;
      const int64_t runs[2][2] = {{p0, have ? std::min(p1, held.lo) : p1},
                                  {have ? std::max(p0, held.hi) : p1, p1}};
      int expand_took = 1;
      for (int k = 0; k < 2; ++k) {
        if (runs[k][0] >= runs[k][1]) continue;
        band_span = {1, 0, runs[k][0], runs[k][1]};
        rc |= __tvm_ffi_edgecc_x86_qconv(0, a, 10, &r);
        expand_took &= band_span.ran;
      }
      held = have ? BandHeld{call, std::min(p0, held.lo), std::max(p1, held.hi)}
                  : BandHeld{call, p0, p1};
      took += expand_took;
      a[0] = mid1;
      for (int j = 1; j < 9; ++j) a[j] = args[8 + j];
      a[9] = mid2;
      band_span = {1, 0, oy0, oy1};
      rc |= __tvm_ffi_edgecc_x86_qdwconv(0, a, 10, &r);
      took += band_span.ran;
      a[0] = mid2;
      for (int j = 17; j < num_args; ++j) a[j - 16] = args[j];
      band_span = {1, 0, oy0 * ow / 16, (oy1 * ow + 15) / 16};
      rc |= __tvm_ffi_edgecc_x86_qconv(0, a, num_args - 16, &r);
      took += band_span.ran;
      band_span.on = 0;
      if (rc) __atomic_store_n(&failed, 1, __ATOMIC_RELAXED);
      if (took != 3) __atomic_store_n(&missed, 1, __ATOMIC_RELAXED);
    }
  }, INT64_MAX / 4);
  if (__atomic_load_n(&failed, __ATOMIC_RELAXED)) return -1;
  if (missed) EDGECC_COUNT(edgecc_x86_int8_block_band_missed, 1);
  EDGECC_COUNT(edgecc_x86_int8_block_band_calls, 1);
  EDGECC_COUNT(block_calls, 1);
  return 0;
}

// the whole block (26-29 arguments): the band form where it applies, else the chained form
static int qblock_whole(const TVMFFIAny* args, int32_t num_args, TVMFFIAny* result) {
  const int64_t* m1 = data<int64_t>(args, 2);   // the expand's meta (qconv's)
  const int64_t* m2 = data<int64_t>(args, 10);  // the depthwise's (qdwconv's)
  int64_t s1[4] = {m1[5], m1[9], m1[18], m1[19]};
  int64_t s2[4] = {m2[5], m2[6], m2[17], m2[18]};
  const size_t b1 = (size_t)(s1[0] * s1[1] * s1[2] * s1[3] + 63) / 64 * 64;
  const size_t b2 = (size_t)(s2[0] * s2[1] * s2[2] * s2[3]);
  if (edgecc_x86_int8_block_band && s1[0] == 1 && s2[2] * s2[3] >= edgecc_x86_int8_block_band_min &&
      s1[2] * s1[3] <= edgecc_x86_int8_block_band_max && m2[1] == 2 &&
      isa_level() == ISA_AVX512VNNI && has_vbmi()) {  // (the depthwise on dw_rows / dw_band)
    const int64_t units = s2[2] / (16 / std::gcd(s2[3], (int64_t)16));  // bands of whole panels
    // (2: at least two bands, on one thread too: the band form's own cost, for a 1-thread A/B)
    const int64_t threads = edgecc_pool_size();
    const int64_t bands = std::min(units, edgecc_x86_int8_block_band == 2 && threads < 2
                                          ? (int64_t)2 : (int64_t)threads);
    result->type_index = kTVMFFINone; result->zero_padding = 0; result->v_int64 = 0;
    if (bands > 1) return qblock_band(args, num_args, s1, s2, b1, b2, bands);
  }
  int8_t* buf = qblock_mid(b1 + b2 + 64);
  DLTensor t1, t2;
  const TVMFFIAny mid1 = typed_tensor_arg(t1, buf, s1, 4, kDLInt, 8);
  const TVMFFIAny mid2 = typed_tensor_arg(t2, buf + b1, s2, 4, kDLInt, 8);
  TVMFFIAny a[16];
  for (int i = 0; i < 9; ++i) a[i] = args[i];
  a[9] = mid1;
  if (__tvm_ffi_edgecc_x86_qconv(0, a, 10, result)) return -1;
  a[0] = mid1;
  for (int i = 1; i < 9; ++i) a[i] = args[8 + i];
  a[9] = mid2;
  if (__tvm_ffi_edgecc_x86_qdwconv(0, a, 10, result)) return -1;
  a[0] = mid2;
  for (int i = 17; i < num_args; ++i) a[i - 16] = args[i];
  if (__tvm_ffi_edgecc_x86_qconv(0, a, num_args - 16, result)) return -1;
  EDGECC_COUNT(block_calls, 1);
  return 0;
}

// 26-29 arguments: the whole block. 58-61: the whole block's x and 16 constants, then its two
// halves' 32 (x86_int8_block.SPLIT), then the project's: on a pool of 2+ threads the split
// form, on one thread the whole block (the halves in turn cost ~4% more there: two entries'
// set-up a stage, smaller tiles)
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_qblock(void*, const TVMFFIAny* args, int32_t num_args,
                                 TVMFFIAny* result) {
  if (num_args >= 26 && num_args <= 29) return qblock_whole(args, num_args, result);
  if (num_args < 58 || num_args > 61) {
    TVMFFIErrorSetRaisedFromCStr("ValueError", "edgecc_x86_qblock: expected 26-29 arguments"
                                 " (58-61 with the split form's halves)");
    return -1;
  }
  TVMFFIAny a[64];
  a[0] = args[0];
  if (edgecc_pool_size() > 1) {  // x, the halves' 32 constants, the project's
    for (int i = 17; i < num_args; ++i) a[i - 16] = args[i];
    return qblock_split(a, num_args - 16, result);
  }
  for (int i = 1; i < 17; ++i) a[i] = args[i];  // x, the whole block's 16, the project's
  for (int i = 49; i < num_args; ++i) a[i - 32] = args[i];
  return qblock_whole(a, num_args - 32, result);
}

// how many fused block calls ran in this process (the tests' proof), and of them split
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_int8_block_halves(void*, const TVMFFIAny*, int32_t, TVMFFIAny* result) {
  result->type_index = kTVMFFIInt; result->zero_padding = 0;
  result->v_int64 = __atomic_load_n(&block_split_calls, __ATOMIC_RELAXED);
  return 0;
}

__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_int8_block(void*, const TVMFFIAny*, int32_t, TVMFFIAny* result) {
  result->type_index = kTVMFFIInt; result->zero_padding = 0;
  result->v_int64 = __atomic_load_n(&block_calls, __ATOMIC_RELAXED);
  return 0;
}
"""

BLOCK_FFI = BLOCK_FFI.replace("@BAND@", str(int(BAND))).replace(
    "@BAND_MIN@", str(BAND_MIN_PIXELS)).replace("@BAND_MAX@", str(BAND_MAX_PIXELS))


def _packed(bb: Any, var: Any, symbol: str) -> Any | None:
    """The ``call_dps_packed`` of ``symbol`` bound to ``var`` in ``bb``, else None."""
    from tvm import relax

    value = bb.lookup_binding(var) if isinstance(var, relax.Var) else None
    if not isinstance(value, relax.Call) or value.op != _DPS() \
            or not isinstance(value.args[0], relax.ExternFunc) \
            or str(value.args[0].global_symbol) != symbol:
        return None
    return value


def _DPS() -> Any:
    import tvm

    return tvm.ir.Op.get("relax.call_dps_packed")


def _meta(arg: Any) -> list[int] | None:
    data = getattr(arg, "value", None)  # a Relax constant (its tensor)
    if data is None or not hasattr(data, "numpy"):
        return None
    return [int(v) for v in data.numpy().reshape(-1)]


def _plain_int8(call: Any) -> bool:
    """A requantized call with one int8 output and no fused write-back (10 arguments)."""
    from tvm import relax

    ty = call.ty_args[0] if call.ty_args else None
    return len(call.args[1].fields) == _EXPAND_ARGS and isinstance(
        ty, relax.TensorType) and str(ty.dtype) == "int8"


def _pointwise(meta: list[int] | None) -> bool:
    """qconv meta of a 1x1 stride-1 unpadded undilated convolution."""
    return meta is not None and meta[0] == 2 and meta[10:18] == [1, 1, 1, 1, 0, 0, 1, 1]


def fuse(bb: Any, outs: list[Any]) -> list[Any] | None:
    """``outs`` (a project 1x1 ``qconv`` call's outputs, just emitted) as the outputs of one
    ``edgecc_x86_qblock`` call with the expand and depthwise calls before it, or None where
    it is not such a block (module docstring). The caller checked the intermediates' uses."""
    from tvm import relax

    if not FUSE_BLOCK or not outs:
        return None
    head = bb.lookup_binding(outs[0]) if isinstance(outs[0], relax.Var) else None
    tuple_out = isinstance(head, relax.TupleGetItem)
    if tuple_out:
        project = _packed(bb, head.tuple_value, "edgecc_x86_qconv")
    else:
        if len(outs) != 1:
            return None
        project = _packed(bb, outs[0], "edgecc_x86_qconv")
    if project is None or not _pointwise(_meta(project.args[1].fields[2])):
        return None
    dw = _packed(bb, project.args[1].fields[0], "edgecc_x86_qdwconv")
    if dw is None or not _plain_int8(dw):
        return None
    expand = _packed(bb, dw.args[1].fields[0], "edgecc_x86_qconv")
    if expand is None or not _plain_int8(expand):
        return None
    m1 = _meta(expand.args[1].fields[2])
    if not _pointwise(m1) or m1[18] * m1[19] > MAX_EXPAND_PIXELS:
        return None
    halves = _halves(expand, dw) if SPLIT and m1[5] == 1 \
        and m1[18] * m1[19] <= SPLIT_MAX_PIXELS else None
    args = [*expand.args[1].fields, *dw.args[1].fields[1:]]
    if halves is not None:  # the whole block's constants too: a 1-thread pool runs it whole
        args += halves
    args += project.args[1].fields[1:]
    out_ty = project.ty_args[0]  # the project's output type(s), as it was emitted
    out_ty = list(out_ty.fields) if tuple_out else out_ty
    new = bb.emit(relax.call_dps_packed(relax.ExternFunc(SYMBOL), args, out_ty))
    if not tuple_out:
        return [new]
    return [bb.emit(relax.TupleGetItem(new, bb.lookup_binding(o).index)) for o in outs]


def _const_np(arg: Any) -> Any:
    return arg.value.numpy()


def _halves(expand: Any, dw: Any) -> list[Any] | None:
    """The expand's and the depthwise's constants for channels [0, h) and [h, E) (h a multiple
    of 8 near E / 2): per half 8 + 8 Relax constants, the kernels' layouts rebuilt from the
    weights their packed constants hold (``x86_int8.emit_conv`` / ``emit_depthwise``'s); None
    where not split (few channels, a padded-stem layout)."""
    import numpy as np
    from tvm import relax

    from edgecc.targets.tvm import x86_int8

    fe, fd = expand.args[1].fields, dw.args[1].fields
    m1 = [int(v) for v in _const_np(fe[2])]
    m2 = [int(v) for v in _const_np(fd[2])]
    e, c = m1[9], m1[6]
    if e < SPLIT_MIN_CHANNELS or m1[23] == 2 or m2[6] != e or m2[9:11] != [3, 3]:
        return None
    half = max(8, int(round(e / 16)) * 8)
    if half >= e:
        return None
    kp = (c + 1) // 2 * 2
    rows = -(-e // 4) * 4
    w1 = _const_np(fe[1]).reshape(-1)[:rows * kp].reshape(rows, kp)[:e, :c].astype(np.int8)
    taps = _const_np(fd[1]).reshape(-1)[:e * 9].astype(np.int8).reshape(e, 1, 3, 3)
    out = []
    for lo, hi in ((0, half), (half, e)):
        flat = w1[lo:hi]
        packed, at = x86_int8.with_dot_layout(x86_int8.pack_rows(flat),
                                              x86_int8.pack_rows_dot(flat), flat)
        meta = list(m1)
        meta[9], meta[21], meta[22] = hi - lo, *at
        consts = [packed, np.array(meta, np.int64)]
        consts += [_channels(f, lo, hi) for f in fe[3:]]
        dmeta = list(m2)
        dmeta[6] = hi - lo
        dconsts = [x86_int8.pack_depthwise(taps[lo:hi]), np.array(dmeta, np.int64)]
        dconsts += [_channels(f, lo, hi) for f in fd[3:]]
        out += [relax.const(v, str(v.dtype)) for v in consts + dconsts]
    return out


def _channels(arg: Any, lo: int, hi: int) -> Any:
    """An epilogue constant's channels [lo, hi) (a 1-element placeholder as it is)."""
    import numpy as np

    v = _const_np(arg)
    return np.ascontiguousarray(v if v.size == 1 else v.reshape(-1)[lo:hi])
