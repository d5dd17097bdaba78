"""Which small conv_direct4 calls stay on the calling thread (``direct4_job``), spliced into
``x86_int8_source.SOURCE`` before ``qconv``: the 3-channel stem (its copy pads the last
channel quad) and, under a knob, the stride-2 convolutions.

Why a knob, default 0 (every stem pooled by the pool's threshold): on Zen 4 (2 vCPUs KVM)
ResNet-20's w8a8 stem (3->16@32x32), pooled by two bands of 16 rows, took 6.5 us at 2
threads in place vs 5.67 us serial at 1 thread (s17 lead, bench/x86_int8_dw_threads.py
--mode calls, 21:25, a slow host state), and pooled was 1.01-1.08x of serial under load
3.5-4.6, so s17 kept small stems serial (2^20). On a quiet host the pooled stem wins: 0.77x
of the serial one in place (6.30 vs 8.24 us, s17 lead 23:35) and 0.61x (5.00-5.08 vs
8.16-8.20 us; MobileNetV2-32's 3->32: 3.13 vs 4.42, 0.71x) with the worker free (s18 H-F,
``--compare edgecc_x86_int8_stem_serial:0``); when the other vCPU is busy pooled is
1.04-1.05x of serial. Whole model at 2 threads (bench/x86_int8_knob_ab.py, 400 rounds, load
0.4, s18 00:05): ResNet-20 0.990x, MobileNetV2-32 1.000x of the serial default (p10-p90
0.71-1.18: the host's noise). Serial at 2 threads pays the other core's lines: the caller
writes all of the stem's output that the worker read last run. Its
whole work is small (9·4 k-bytes, 16 channels: ~0.6M multiply-adds, a third of a 16@32x32
3x3's per-channel work). ``edgecc_x86_int8_stem_serial`` v > 0 (2^20 s17's default) runs a
stem conv_direct4 call of job work (qconv's units, halved by conv_pool_work) under v
serially — ResNet-20's (~0.25M) and MobileNetV2-32's (3->32@32x32, ~0.45M) at 2^20 — while
larger stems pool as before (MobileNetV2-224's, ~40x the work: pooled 0.55x of serial); 0
(default): every stem pooled by the pool's threshold. ``edgecc_x86_int8_s2_serial``
(default 0) does the same for stride-2 conv_direct4 calls (ResNet-20's 3x3 conv1s of each
stage's first block; the 1x1 shortcuts are serial already by conv_pool_work), a --tune knob.
Scheduling only: the same bands code on the same bytes, bit-identical outputs. Counted per
call kept serial by either knob (it would have pooled) by ``edgecc_x86_int8_d4_serial_calls``.

``edgecc_x86_int8_s2_pool`` 1 (default 0, a --tune knob for quiet hosts): the stride-2 1x1
shortcuts pooled by bands (their job work not halved by conv_pool_work, and at least the
pool's threshold). Why: in place at 2 threads the two ResNet-20 shortcuts, serial, took 3.65 /
2.45 us vs 2.6 / 1.8 us at 1 thread (s17 lead, 21:25, the slow host state above): each reads the residual (the block's
second convolution's float output) that the pool's two threads wrote by bands, half of it
from the other core; pooled by the same bands of rows each thread reads mostly its own
core's half. Counted per call pooled because of it by ``edgecc_x86_int8_d4_pool_calls``.
C++ text only; exported by ``x86_int8_source``."""

D4_SERIAL = "edgecc_x86_int8_d4_serial_calls"  # () -> conv_direct4 calls kept serial by a knob
D4_POOL = "edgecc_x86_int8_d4_pool_calls"  # () -> 1x1 stride-2 calls pooled by s2_pool
STEM_SYMBOLS = (D4_SERIAL, D4_POOL)

STEM_KERNELS = r"""
// ---- direct4_job (x86_int8_stem_source) ----
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_stem_serial = 0;
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_s2_serial = 0;
int64_t d4_serial_calls = 0;  // conv_direct4 calls kept serial by those knobs (a test's)

extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_s2_pool = 0;
int64_t d4_pool_calls = 0;  // 1x1 stride-2 conv_direct4 calls pooled by s2_pool (a test's)

// the job work conv_direct4 pools by: 0 (serial) for a stem (stem: its copy pads the last
// channel quad) of job work under edgecc_x86_int8_stem_serial, a stride-2 call under
// edgecc_x86_int8_s2_serial; a stride-2 1x1 (shortcut) under edgecc_x86_int8_s2_pool the
// full job (full_job: not halved), at least the pool's threshold; else job_work
static inline int64_t direct4_job(int64_t job_work, bool stem, bool s2, int64_t threads,
                                  bool shortcut = false, int64_t full_job = 0) {
  if (s2 && shortcut && edgecc_x86_int8_s2_pool && !edgecc_x86_int8_s2_serial && threads > 1) {
    if (job_work < serial_work()) EDGECC_COUNT(d4_pool_calls, 1);
    return std::max(full_job, serial_work());
  }
  if (!((stem && job_work < edgecc_x86_int8_stem_serial) || (s2 && edgecc_x86_int8_s2_serial)))
    return job_work;
  if (threads > 1 && job_work >= serial_work())
    EDGECC_COUNT(d4_serial_calls, 1);
  return 0;
}
"""

STEM_FFI = r"""
// how many 1x1 stride-2 conv_direct4 calls ran pooled because of edgecc_x86_int8_s2_pool
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_int8_d4_pool_calls(void*, const TVMFFIAny*, int32_t,
                                            TVMFFIAny* result) {
  result->type_index = kTVMFFIInt; result->zero_padding = 0;
  result->v_int64 = __atomic_load_n(&d4_pool_calls, __ATOMIC_RELAXED);
  return 0;
}
// how many conv_direct4 calls ran serially because of edgecc_x86_int8_stem_serial / s2_serial
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_int8_d4_serial_calls(void*, const TVMFFIAny*, int32_t,
                                              TVMFFIAny* result) {
  result->type_index = kTVMFFIInt; result->zero_padding = 0;
  result->v_int64 = __atomic_load_n(&d4_serial_calls, __ATOMIC_RELAXED);
  return 0;
}
"""
