"""The C++ glue every hand-written x86 kernel set (``x86_int8_source``, ``x86_fp32_source``,
``x86_wonly_source``) shares, as one string each source includes after its ``#include``s
(``<tvm/ffi/c_api.h>``, ``<stdint.h>``, ``<stdlib.h>``):

- TVM's thread pool: the weak ``__TVMBackendParallelLaunch`` pointer TVM's library loader
  fills (one symbol for all kernel sets linked into a library) and
  ``parallel_for(items, fn, work)``, which runs ``fn(begin, end)`` over ``[0, items)`` on the
  pool, or serially without one or when ``work < SERIAL_WORK`` (waking the pool costs more);
- the FFI arguments: ``tensor_arg`` (a ``DLTensor*`` from a packed argument) and
  ``data<T>(args, i)`` (its data pointer, byte offset applied);
- ``scratch(slot, bytes)``: per-thread buffers (slots 0-4), grown as needed and reused;
- the kernel settings ``--tune`` chooses per model by measuring it end to end
  (``tuning.kernel_settings``): ``edgecc_x86_serial_work_log2`` scales every set's
  ``SERIAL_WORK`` by a power of two (63: every job serial) and ``edgecc_x86_num_tasks`` caps
  the pool tasks of a parallel job (0: every worker). Both are weak globals, 0 by default (the
  thresholds as written); a tuned library links its own definitions.

``ffi_prelude(serial_work)`` fills in the kernel set's threshold (multiply-adds, or weights
for the weight-only kernel) as ``SERIAL_WORK``. The kernels' object files are cached by a hash
of the whole source (``x86_int8.compiled_object``), so a change here recompiles them once.
"""

from __future__ import annotations

FFI_PRELUDE = r"""
extern "C" {
typedef struct { void* sync_handle; int32_t num_task; } EdgeccParallelEnv;
typedef int (*EdgeccLambda)(int task_id, EdgeccParallelEnv* env, void* cdata);
typedef int (*EdgeccLaunch)(EdgeccLambda, void*, int);
// filled by TVM's library loader (the same pointer TVM's LLVM kernels call through; one weak
// symbol shared by every kernel set linked into the library)
__attribute__((weak)) void* __TVMBackendParallelLaunch = 0;
// edgecc's kernel settings, chosen per model by measuring it (targets/tvm/tuning.py, --tune):
// SERIAL_WORK scaled by 2^edgecc_x86_serial_work_log2 (0: each set's own threshold; 63: every
// job serial) and the pool tasks a parallel job asks for (0: every worker). Weak and shared by
// every kernel set of a library: a tuned build links its own definitions (kernel_settings), the
// tuner sets them at run time to measure candidates.
__attribute__((weak)) int64_t edgecc_x86_serial_work_log2 = 0;
__attribute__((weak)) int32_t edgecc_x86_num_tasks = 0;
}

namespace {

// ---- thread pool (targets/tvm/x86_kernel_ffi.py) ------------------------------------------
template <typename F>
struct Job { const F* fn; int64_t items; };

template <typename F>
static int run_share(int task, EdgeccParallelEnv* env, void* data) {
  const Job<F>* job = static_cast<const Job<F>*>(data);
  const int64_t n = env->num_task;
  const int64_t begin = job->items * task / n, end = job->items * (task + 1) / n;
  if (begin < end) (*job->fn)(begin, end);
  return 0;
}

// this kernel set's threshold: jobs under it run serially (waking the pool costs more)
const int64_t SERIAL_WORK = @SERIAL_WORK@;

// SERIAL_WORK scaled by the model's tuned setting (edgecc_x86_serial_work_log2)
static inline int64_t serial_work() {
  const int64_t s = edgecc_x86_serial_work_log2;
  if (s == 0) return SERIAL_WORK;
  if (s < 0) return s <= -62 ? 0 : SERIAL_WORK >> -s;
  return s >= 62 || SERIAL_WORK > (INT64_MAX >> s) ? INT64_MAX : SERIAL_WORK << s;
}

// fn(begin, end) over [0, items) on TVM's thread pool (serially without one, or when the
// whole job's work is under the threshold: serial_work())
template <typename F>
static void parallel_for(int64_t items, const F& fn, int64_t work) {
  EdgeccLaunch launch = reinterpret_cast<EdgeccLaunch>(__TVMBackendParallelLaunch);
  if (items > 1 && launch != 0 && work >= serial_work()) {
    Job<F> job{&fn, items};
    const int32_t tasks = edgecc_x86_num_tasks;
    if (launch(run_share<F>, &job, tasks > 0 ? tasks : 0) == 0) return;
  }
  fn(0, items);
}

// ---- FFI arguments ------------------------------------------------------------------------
DLTensor* tensor_arg(const TVMFFIAny* a) {
  if (a->type_index == kTVMFFIDLTensorPtr) return static_cast<DLTensor*>(a->v_ptr);
  if (a->type_index >= kTVMFFIStaticObjectBegin)
    return reinterpret_cast<DLTensor*>(reinterpret_cast<char*>(a->v_obj) + sizeof(TVMFFIObject));
  return 0;
}

template <typename T>
T* data(const TVMFFIAny* args, int i) {
  DLTensor* t = tensor_arg(args + i);
  return reinterpret_cast<T*>(static_cast<char*>(t->data) + t->byte_offset);
}

// per-thread scratch buffers (slots 0-4), grown as needed and reused across calls: a fresh
// malloc of a few hundred KB per call is an mmap, and its page faults cost as much as a small
// GEMM
__attribute__((unused)) void* scratch(int slot, size_t bytes) {
  static thread_local void* buf[5] = {0, 0, 0, 0, 0};
  static thread_local size_t size[5] = {0, 0, 0, 0, 0};
  if (size[slot] < bytes) {
    free(buf[slot]);
    size[slot] = (bytes + 4095) / 4096 * 4096;
    buf[slot] = aligned_alloc(64, size[slot]);
  }
  return buf[slot];
}

// im2col: the padded-input offsets of panel p's 16 output pixels (the last pixel repeated
// past the end); true when they are 16 consecutive elements (one contiguous run)
__attribute__((unused))  // not every kernel set builds im2col panels
static bool panel_bases(int64_t p, int64_t pix, int64_t ow, int64_t sh, int64_t sw,
                        int64_t wp, int64_t base[16]) {
  for (int lane = 0; lane < 16; ++lane) {
    const int64_t q = p * 16 + lane < pix ? p * 16 + lane : pix - 1;
    base[lane] = (q / ow) * sh * wp + (q % ow) * sw;
  }
  bool contiguous = true;
  for (int lane = 1; lane < 16; ++lane)
    contiguous = contiguous && base[lane] == base[0] + lane;
  return contiguous;
}

}  // namespace
"""


def ffi_prelude(serial_work: int) -> str:
    """``FFI_PRELUDE`` with ``SERIAL_WORK = serial_work`` (the work below which a
    ``parallel_for`` runs serially)."""
    return FFI_PRELUDE.replace("@SERIAL_WORK@", str(int(serial_work)))
