"""When a VNNI convolution pools (``conv_pool_work``), spliced into ``x86_int8_source.SOURCE``
before ``qconv``: its job's work (multiply-adds, write-back, panels, copy: ``full_work``) is
halved before the pool's ``SERIAL_WORK`` test, so convolutions of less than twice the
threshold run on the calling thread. Why: on Zen 4 (2 vCPUs), quiet, each MobileNetV2-32 w8a8
call re-run alone, the pooled calls of that size were slower on 2 threads than on 1 — the 1x1
convolutions on 16x16 / 8x8 / 4x4 maps (72->16@16 4.4 vs 3.6 us, 192->32@8 5.6 vs 3.7,
480->80@4 6.7 vs 4.8: the second thread's share of the data crosses cores) — while the larger
ones (32x32 maps, 12->72 5.2x the threshold) gained; under load every pooled call lost.
Scheduling only: the same items in the same code, bit-identical outputs.
``edgecc_x86_int8_conv_pool_log2`` (default 1: half) scales it (0: the threshold as before,
A/B); counted per convolution that runs serially because of it by
``edgecc_x86_int8_conv_serial_calls``. C++ text only; exported by ``x86_int8_source``."""

CONV_SERIAL = "edgecc_x86_int8_conv_serial_calls"  # () -> conv calls kept serial by the scale
POOL_SYMBOLS = (CONV_SERIAL,)

POOL_KERNELS = r"""
// ---- conv_pool_work (x86_int8_pool_source) ----
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_conv_pool_log2 = 1;
int64_t conv_serial_calls = 0;  // convolutions run serially by the scale alone (a test's)

// a convolution's job work as the pool compares it: job_work / 2^edgecc_x86_int8_conv_pool_log2
static inline int64_t conv_pool_work(int64_t job_work) {
  const int64_t s = edgecc_x86_int8_conv_pool_log2;
  const int64_t w = s <= 0 ? job_work : s >= 62 ? 0 : job_work >> s;
  if (w < serial_work() && job_work >= serial_work() && edgecc_pool_size() > 1)
    EDGECC_COUNT(conv_serial_calls, 1);
  return w;
}
"""

POOL_FFI = r"""
// how many convolutions ran serially because of edgecc_x86_int8_conv_pool_log2 alone
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_int8_conv_serial_calls(void*, const TVMFFIAny*, int32_t,
                                                TVMFFIAny* result) {
  result->type_index = kTVMFFIInt; result->zero_padding = 0;
  result->v_int64 = __atomic_load_n(&conv_serial_calls, __ATOMIC_RELAXED);
  return 0;
}
"""
