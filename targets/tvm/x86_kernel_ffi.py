"""The C++ glue every hand-written x86 kernel set (``x86_int8_source``, ``x86_fp32_source``,
``x86_wonly_source``) shares, as one string each source includes after its ``#include``s
(``<tvm/ffi/c_api.h>``, ``<stdint.h>``, ``<stdlib.h>``):

- the thread pool: ``parallel_for(items, fn, work)`` runs ``fn(begin, end)`` over
  ``[0, items)`` on edgecc's pool (``edgecc_pool_run``: one per library, weak hidden symbols
  every kernel set shares), or serially when ``work < SERIAL_WORK`` (waking the pool costs
  more) or the pool has one thread. The caller and the workers claim chunks of the items from
  one atomic counter (guided: remaining / (2 x threads), at least 1), so the caller never
  waits for a worker that has not woken — only for chunks a worker took. TVM's pool
  (``TVMBackendParallelLaunch``), used before, gives every worker a fixed share and waits for
  each: a descheduled worker stalled every kernel (under load, MobileNetV2-224 lost a third
  of its time so), and a launch cost ~2 us hot. Workers spin ~``edgecc_pool_spin_ns`` (pause,
  then ``sched_yield``) after a job, then sleep on a futex. The thread count is the runner's
  (``edgecc_pool_configure``, kept equal to TVM's pool size by ``runner.use_threads``; a
  library loaded without the runner asks ``runtime.NumThreads`` per job); a job in flight
  makes a second (nested, or another thread's) ``parallel_for`` run serially. A/B (same
  process, interleaved, load ~6, with the schedule's serial mean/classifier): ResNet-20 1.22
  -> 0.81 ms, MobileNetV2-32 1.16 -> 0.93 ms, outputs bit-identical;
- TVM's generated parallel loops on the same pool (``edgecc_pool_launch``, installed in the
  library's ``__TVMBackendParallelLaunch`` by the runner after TVM's loader filled it, or by
  a kernel's first pool job): one pool per process instead of TVM's beside edgecc's (three
  spinning threads on two cores made BERT fp32 run 4.2 or 7.1 ms from process to process).
  Same tasks and split as TVM's launch (bit-identical outputs), errors raised in the caller's
  thread; a library whose code uses TVM's barrier keeps TVM's pool. Block by block in one
  process under load ~4 (bench/tvm_runtime.py --pools): BERT 0.87x, GPT-2 0.88x of two pools.
  A loop measured shorter than ``edgecc_pool_inline_ns`` (1 us) serially runs on the caller
  alone, same tasks and split (``edgecc_pool_launch_cost``: TVM's launches carry no work
  estimate, so each loop is timed);
- two-ended jobs (``edgecc_pool_two_ended``, default on): the caller claims chunks from the
  front, the worker from the back, so each thread's items are one contiguous run and a
  kernel whose items walk the image (or a GEMM's rows) gives each thread the same part of
  consecutive layers, which then read what their own core wrote (a line from the other
  vCPU's cache costs ~3.5x one from its own L2 here). Outputs bit-identical (the pool only
  schedules). A/B interleaved in one process, SCHED_FIFO (bench/pool_scaling.py), 2 threads,
  old/new both knobs: ResNet-20 fp32 0.98x, MobileNetV2-32 fp32 0.94x, int8 0.93x, BERT 0.94x;
- ``edgecc_pool_adaptive`` (default 0; a ``--tune`` candidate): each ``parallel_for`` site
  (its code, items and work) timed serially and on the pool for its first 8 jobs, then the
  way with the faster median (resampled every 256 jobs): the host moves this guest's vCPUs,
  and a small layer's second thread gains in one state and loses in another
  (bench/pool_serial_work.py, ``2t_auto``);
- the job's atomics (each moves a cache line between the vCPUs): ``edgecc_pool_chunk_parts``
  (default 2: a claim takes remaining / (2 x threads) items; 1 about halves the claims) and
  ``edgecc_pool_done_once`` (default 0; 1: a worker adds its items to the job's done counter
  once as it leaves, the caller never, instead of every thread per chunk). Both only schedule
  (bit-identical); --tune candidates: on a loaded 2-vCPU machine their whole-model A/B was
  within the noise (bench/pool_overhead.py);
- where the time goes: ``edgecc_pool_timing`` 1 adds every pool job's caller / worker /
  waiting time, wake-up delay and the inline launches to ``edgecc_pool_stat`` (``EDGECC_STAT_*``),
  2 also logs every ``parallel_for`` (``edgecc_pool_log``); off by default (bench/pool_scaling.py);
- the FFI arguments: ``tensor_arg`` (a ``DLTensor*`` from a packed argument),
  ``data<T>(args, i)`` (its data pointer, byte offset applied) and ``typed_tensor_arg`` (a
  packed argument over a buffer, for a kernel that calls another);
- ``scratch(slot, bytes)``: per-thread buffers (slots 0-4), grown as needed and reused;
- the native plan runner (``plan_runner_source``, appended): a run's recorded kernel calls
  replayed in one packed call (``plan_runner``, used by the runner instead of the VM);
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

# edgecc_pool_inline_ns's default: TVM's generated parallel loops measured shorter than this
# serially run on the caller alone (see the prelude). bench/pool_latency.py: with the worker
# spinning, the pool beats a serial job from ~1 us of serial work on.
INLINE_NS = 1000
# edgecc_pool_done_once's default (see the prelude: the done counter added once per worker)
DONE_ONCE = 0

FFI_PRELUDE = r"""
#include <atomic>
#include <dlfcn.h>
#include <immintrin.h>
#include <linux/futex.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

extern "C" {
typedef struct { void* sync_handle; int32_t num_task; } EdgeccParallelEnv;
typedef int (*EdgeccLambda)(int task_id, EdgeccParallelEnv* env, void* cdata);
typedef int (*EdgeccLaunch)(EdgeccLambda, void*, int);
// filled by TVM's library loader (the pointer TVM's LLVM kernels call through; one weak symbol
// shared by every kernel set linked into the library); the kernels use edgecc's pool below
__attribute__((weak)) void* __TVMBackendParallelLaunch = 0;
// edgecc's kernel settings, chosen per model by measuring it (targets/tvm/tuning.py, --tune):
// SERIAL_WORK scaled by 2^edgecc_x86_serial_work_log2 (0: each set's own threshold; 63: every
// job serial) and the pool tasks a parallel job asks for (0: every worker). Weak and shared by
// every kernel set of a library: a tuned build links its own definitions (kernel_settings), the
// tuner sets them at run time to measure candidates.
__attribute__((weak)) int64_t edgecc_x86_serial_work_log2 = 0;
__attribute__((weak)) int32_t edgecc_x86_num_tasks = 0;

// ---- edgecc's pool: one per library (weak, hidden: every kernel set links the same one) ----
// Workers claim the job's items in chunks from one atomic counter, as the calling thread
// does; the caller waits only for chunks a worker has claimed, never for a worker that has
// not woken yet (TVM's pool gives each worker a fixed share and waits for it: on a loaded
// machine a descheduled worker stalled every kernel for a time slice). Chunks shrink as the
// job drains (remaining / (2 x threads), at least 1), so large first chunks keep locality
// and the tail balances. Workers spin (pause, then sched_yield) for EDGECC_POOL_SPIN_NS after
// a job, then sleep on a futex. The thread count follows TVM's pool (runtime.NumThreads,
// what the runner configures); a job runs on at most edgecc_x86_num_tasks threads (0: all).
// Workers block every signal, and a library whose workers started is never unloaded
// (RTLD_NODELETE): they run its code until the process ends.
typedef void (*EdgeccRange)(void* fn, int64_t begin, int64_t end);
struct EdgeccPool {
  alignas(64) std::atomic<uint64_t> state;     // epoch << 40 | next unclaimed item
  alignas(64) std::atomic<int64_t> done;       // items finished in this job
  alignas(64) std::atomic<uint32_t> epoch;     // futex word: bumped per job
  std::atomic<int32_t> sleepers;
  EdgeccRange range; void* fn; int64_t items; int32_t threads;  // the job (set before epoch)
  int32_t parts; int32_t done_once;            // its chunking and done counting (the knobs)
  std::atomic<int32_t> started;                // workers running
  std::atomic<int32_t> busy;                   // a job is in flight (another caller: serial)
  pthread_mutex_t grow;
};
__attribute__((weak, visibility("hidden"))) EdgeccPool edgecc_pool_state = {};
__attribute__((weak, visibility("hidden"))) int64_t edgecc_pool_spin_ns = 200000;
// where the pool's time goes (bench/pool_scaling.py): with edgecc_pool_timing set, the jobs
// add to edgecc_pool_stat (EDGECC_STAT_*; the clock reads cost ~0.1 us a job, so off by default)
__attribute__((weak)) int32_t edgecc_pool_timing = 0;
__attribute__((weak)) int64_t edgecc_pool_stat[16] = {};
__attribute__((weak, visibility("hidden"))) int64_t edgecc_pool_published_ns = 0;
// edgecc_pool_timing 2: each parallel_for's job also logged (6 numbers: items, wall ns, 1 when
// on the pool, the caller's items, its working ns, the worker's ns) at edgecc_pool_log_next
// (a debug view: the worker adds its ns after its last item, so a log entry can miss it)
__attribute__((weak)) int64_t edgecc_pool_log[512 * 6] = {};
__attribute__((weak)) int64_t edgecc_pool_log_next = 0;
__attribute__((weak, visibility("hidden"))) int64_t edgecc_pool_job_caller[3] = {};
// edgecc_pool_timing 3: as 2, and each logged job's TSC stamps (bench/x86_int8_call_overhead.py)
// in edgecc_pool_trace at the same index, EDGECC_TRACE_* each: where a pooled call's time goes
// outside its bands (the caller's setup before posting, the worker's start, the join)
enum {
  EDGECC_TRACE_ENTER = 0,     // parallel_for entered
  EDGECC_TRACE_POSTED,        // the job published (its epoch stored; 0: ran serially)
  EDGECC_TRACE_CALLER_END,    // the caller's last chunk done
  EDGECC_TRACE_JOINED,        // the caller saw every item done
  EDGECC_TRACE_WORKER_START,  // the worker that ran items of it entered the job
  EDGECC_TRACE_WORKER_END,    // ... and left it (0: no worker ran items, or not yet seen)
  EDGECC_TRACE_EXIT,          // parallel_for returns
  EDGECC_TRACE_EPOCH,         // the job's epoch
  EDGECC_TRACE_FIELDS
};
__attribute__((weak)) int64_t edgecc_pool_trace[512 * EDGECC_TRACE_FIELDS] = {};
// the current job's stamps (EDGECC_TRACE_*; EDGECC_TRACE_EPOCH: the worker's job, [FIELDS]: the
// caller's), copied into edgecc_pool_trace by parallel_for
__attribute__((weak, visibility("hidden"))) int64_t edgecc_pool_job_tsc[EDGECC_TRACE_FIELDS + 1] =
    {};
enum {
  EDGECC_STAT_JOBS = 0,       // jobs run on the pool (kernels' and TVM's)
  EDGECC_STAT_TVM_POOL,       // TVM launches run on the pool
  EDGECC_STAT_TVM_INLINE,     // TVM launches run on the caller alone
  EDGECC_STAT_WALL_NS,        // pool jobs: the caller's time from publishing to the end
  EDGECC_STAT_CALLER_NS,      // ... its time claiming and running chunks
  EDGECC_STAT_WAIT_NS,        // ... its time waiting for a worker's chunks
  EDGECC_STAT_WORKER_NS,      // workers' time claiming and running chunks
  EDGECC_STAT_JOINED,         // jobs a worker ran items of
  EDGECC_STAT_WAKE_NS,        // ... time from publishing to that worker's first claim
  EDGECC_STAT_WORKER_ITEMS,   // items the workers ran
  EDGECC_STAT_ITEMS,          // items of pool jobs
  EDGECC_STAT_SHORT,          // pool jobs whose wall time was under 3 us
  EDGECC_STAT_INLINE_NS,      // TVM launches on the caller alone: their time
  EDGECC_STAT_SLEEPS,         // futex waits of workers
  EDGECC_STAT_SITE_SERIAL,    // edgecc_pool_adaptive: jobs its choice ran serially
  EDGECC_STAT_SITE_POOL,      // ... and on the pool
};
static inline void edgecc_stat_add(int i, int64_t v) {
  __atomic_fetch_add(&edgecc_pool_stat[i], v, __ATOMIC_RELAXED);
}

__attribute__((weak, visibility("hidden"))) int64_t edgecc_pool_now_ns() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000000000LL + t.tv_nsec;
}

// Two-ended jobs (edgecc_pool_two_ended, jobs of under 2^19 items): the caller (and workers
// of even index) claim from the front, workers of odd index from the back, so with 2 threads
// each one's items are one contiguous run, [0, k) and [k, items), k set by who is faster. A
// kernel whose items run over the image in order then gives each thread the same part of
// every layer, and the next layer reads mostly what its own core wrote: a line written by the
// other core costs ~3.5x one from its own L2 here (64 KB written by the other vCPU read in
// 3.1 us, by the same in 0.9). With one counter, the chunks alternate between the threads,
// and each layer reads about half its input from the other core. The state then holds the
// front (bits 0-18), the back (19-37) and bit 39 set; else the next item (bits 0-39).
__attribute__((weak)) int32_t edgecc_pool_two_ended = 1;
constexpr uint64_t EDGECC_TWO_ENDED = 1ULL << 39, EDGECC_END_MASK = (1ULL << 19) - 1;

// Per-job atomics (each one moves a cache line between the vCPUs, ~0.1-0.3 us here):
// edgecc_pool_chunk_parts: a claim takes remaining / (parts x threads) items (at least 1):
// 2 (default) ~15 claims for 64 items, 1 about half as many, larger chunks for the tail.
// edgecc_pool_done_once: 1: a worker adds its items to the job's done counter once, when it
// finds nothing left to claim, and the caller none (it waits for items - its own), instead
// of every thread after every chunk. Both only schedule: the same items run, bit-identical.
// With edgecc_pool_timing set, edgecc_pool_claims / edgecc_pool_done_adds count the claims
// and the done counter's additions (tests, bench/pool_overhead.py).
__attribute__((weak)) int32_t edgecc_pool_chunk_parts = 2;
__attribute__((weak)) int32_t edgecc_pool_done_once = @DONE_ONCE@;
__attribute__((weak)) int64_t edgecc_pool_claims = 0;
__attribute__((weak)) int64_t edgecc_pool_done_adds = 0;

// claim and run chunks of job `epoch` until none is left (or the job is no longer current);
// returns the items this thread (index: the caller 0, workers 1, 2, ...) ran
__attribute__((weak, visibility("hidden"))) int64_t edgecc_pool_work(uint64_t epoch,
                                                                    int32_t threads,
                                                                    int32_t index) {
  EdgeccPool& p = edgecc_pool_state;
  const uint64_t tag = (epoch & 0xFFFFFF) << 40, mask = (1ULL << 40) - 1;
  uint64_t s = p.state.load(std::memory_order_acquire);
  // the job's settings: read after its epoch (set before it), so the same for every thread
  const int64_t split = (int64_t)threads * (p.parts > 0 ? p.parts : 2);
  const bool once = p.done_once != 0;
  const int32_t level = edgecc_pool_timing;
  const bool timing = level != 0, stamp = level >= 3 && index == 1;
  int64_t ran = 0;
  // done_once: a worker's items count once, as it leaves (the job cannot end before: the
  // caller waits for them); the caller's never (it subtracts its own)
  auto leave = [&]() {
    if (once && index != 0 && ran > 0) {
      p.done.fetch_add(ran, std::memory_order_acq_rel);
      if (timing) __atomic_fetch_add(&edgecc_pool_done_adds, 1, __ATOMIC_RELAXED);
    }
    return ran;
  };
  for (;;) {
    if ((s & ~mask) != tag) return leave();
    int64_t first, n;
    uint64_t claimed;
    if (s & EDGECC_TWO_ENDED) {
      const int64_t front = (int64_t)(s & EDGECC_END_MASK);
      const int64_t back = (int64_t)((s >> 19) & EDGECC_END_MASK);
      if (front >= back) return leave();
      n = (back - front) / split;
      n = n < 1 ? 1 : n;
      if (index & 1) {
        first = back - n;
        claimed = s - ((uint64_t)n << 19);
      } else {
        first = front;
        claimed = s + (uint64_t)n;
      }
    } else {
      const int64_t items = p.items, next = (int64_t)(s & mask);
      if (next >= items) return leave();
      n = (items - next) / split;
      n = n < 1 ? 1 : n;
      first = next;
      claimed = s + (uint64_t)n;
    }
    if (!p.state.compare_exchange_weak(s, claimed, std::memory_order_acq_rel,
                                       std::memory_order_acquire))
      continue;  // s reloaded
    // the claim succeeded while the job was current: it cannot end before this chunk does
    p.range(p.fn, first, first + n);
    if (stamp)  // before its items count done: the caller's join sees it
      __atomic_store_n(&edgecc_pool_job_tsc[EDGECC_TRACE_WORKER_END], (int64_t)__rdtsc(),
                       __ATOMIC_RELAXED);
    ran += n;
    if (timing) __atomic_fetch_add(&edgecc_pool_claims, 1, __ATOMIC_RELAXED);
    if (!once) {
      p.done.fetch_add(n, std::memory_order_acq_rel);
      if (timing) __atomic_fetch_add(&edgecc_pool_done_adds, 1, __ATOMIC_RELAXED);
    }
    s = p.state.load(std::memory_order_acquire);
  }
}

__attribute__((weak, visibility("hidden"))) void* edgecc_pool_worker(void* arg) {
  EdgeccPool& p = edgecc_pool_state;
  const int32_t index = (int32_t)(intptr_t)arg;  // 1, 2, ...: the caller is 0
  sigset_t all;  // signals go to the process's other threads, never interrupt a worker
  sigfillset(&all);
  pthread_sigmask(SIG_BLOCK, &all, 0);
  uint32_t seen = p.epoch.load(std::memory_order_acquire);
  for (;;) {
    uint32_t e = p.epoch.load(std::memory_order_acquire);
    if (e == seen) {
      const int64_t start = edgecc_pool_now_ns();
      for (int64_t i = 0; (e = p.epoch.load(std::memory_order_acquire)) == seen; ++i) {
        if (i < 2000) { _mm_pause(); continue; }
        if ((i & 63) == 0 && edgecc_pool_now_ns() - start > edgecc_pool_spin_ns) {
          p.sleepers.fetch_add(1, std::memory_order_seq_cst);
          if (p.epoch.load(std::memory_order_seq_cst) == seen) {
            if (edgecc_pool_timing) edgecc_stat_add(EDGECC_STAT_SLEEPS, 1);
            syscall(SYS_futex, &p.epoch, FUTEX_WAIT_PRIVATE, seen, 0, 0, 0);
          }
          p.sleepers.fetch_sub(1, std::memory_order_seq_cst);
          continue;
        }
        sched_yield();
      }
    }
    seen = e;
    const int32_t threads = p.threads;
    if (index >= threads) continue;
    if (!edgecc_pool_timing) {
      edgecc_pool_work(e, threads, index);
      continue;
    }
    const int64_t t0 = edgecc_pool_now_ns();
    if (edgecc_pool_timing >= 3 && index == 1) {  // its end: stamped by edgecc_pool_work
      __atomic_store_n(&edgecc_pool_job_tsc[EDGECC_TRACE_WORKER_START], (int64_t)__rdtsc(),
                       __ATOMIC_RELAXED);
      __atomic_store_n(&edgecc_pool_job_tsc[EDGECC_TRACE_EPOCH], (int64_t)e, __ATOMIC_RELEASE);
    }
    const int64_t ran = edgecc_pool_work(e, threads, index);
    if (ran > 0) {
      edgecc_stat_add(EDGECC_STAT_WORKER_NS, edgecc_pool_now_ns() - t0);
      __atomic_fetch_add(&edgecc_pool_job_caller[2], edgecc_pool_now_ns() - t0, __ATOMIC_RELAXED);
      edgecc_stat_add(EDGECC_STAT_JOINED, 1);
      edgecc_stat_add(EDGECC_STAT_WAKE_NS, t0 - __atomic_load_n(&edgecc_pool_published_ns,
                                                                __ATOMIC_RELAXED));
      edgecc_stat_add(EDGECC_STAT_WORKER_ITEMS, ran);
    }
  }
  return 0;
}

// TVM's pool size for the calling thread (runtime.NumThreads)
__attribute__((weak, visibility("hidden"))) int32_t edgecc_pool_tvm_threads() {
  static TVMFFIObjectHandle fn = 0;
  if (!fn) {
    const char name[] = "runtime.NumThreads";
    TVMFFIByteArray key{name, sizeof(name) - 1};
    if (TVMFFIFunctionGetGlobal(&key, &fn) != 0 || !fn) return 1;
  }
  TVMFFIAny result;
  result.type_index = kTVMFFINone; result.zero_padding = 0; result.v_int64 = 0;
  if (TVMFFIFunctionCall(fn, 0, 0, &result) != 0 || result.type_index != kTVMFFIInt) return 1;
  return (int32_t)result.v_int64;
}

// the pool's size: what the runner set (edgecc_pool_configure, from runner.use_threads), else
// TVM's pool size asked per job (a library loaded without edgecc's runner)
__attribute__((weak)) int32_t edgecc_pool_threads = 0;
__attribute__((weak, visibility("hidden"))) int32_t edgecc_pool_size() {
  const int32_t t = edgecc_pool_threads;
  return t > 0 ? t : edgecc_pool_tvm_threads();
}

// ---- TVM's generated parallel loops on this pool ----
// TVM's LLVM code runs a parallel loop through the library's __TVMBackendParallelLaunch
// pointer, which TVM's loader fills with its own pool's entry. edgecc_pool_configure points it
// at edgecc_pool_launch, so the process has one pool, not TVM's and edgecc's spinning
// against each other. Same tasks as TVM's launch: num_task 0 means the pool's size, and TVM's
// code splits its loop by env->num_task, so the outputs are bit-identical. Every task id in
// [0, num_task) runs once, on the caller or a worker; a task's failure (nonzero return, its
// error raised in its thread) makes the launch return -1 with the first error raised in the
// caller's thread. TVM's BSP barrier (__TVMBackendParallelBarrier) needs all tasks running at
// once: a library whose code uses it keeps TVM's pool (the prelude never defines that symbol,
// so it is there only when TVM's code references it).
__attribute__((weak)) int64_t edgecc_pool_tvm_launches = 0;  // launches run here (tests read it)
__attribute__((weak, visibility("hidden"))) void* edgecc_pool_tvm_launch = 0;  // TVM's entry
// 0: not set yet (a kernel's first job installs it); 1: installed; -1: TVM's pool (asked so,
// or the library uses TVM's barrier)
__attribute__((weak, visibility("hidden"))) int32_t edgecc_pool_mode = 0;

struct EdgeccTvmJob {
  EdgeccLambda lambda; void* cdata; EdgeccParallelEnv env;
  std::atomic<int32_t> failed; std::atomic<void*> error;  // the first failed task's error
};

__attribute__((weak, visibility("hidden"))) void edgecc_pool_tvm_tasks(void* arg, int64_t begin,
                                                                      int64_t end) {
  EdgeccTvmJob& job = *static_cast<EdgeccTvmJob*>(arg);
  for (int64_t task = begin; task < end; ++task) {
    if (job.lambda((int)task, &job.env, job.cdata) == 0) continue;
    job.failed.store(1, std::memory_order_relaxed);
    TVMFFIObjectHandle error = 0;  // raised in this thread: hand it to the caller
    TVMFFIErrorMoveFromRaised(&error);
    void* none = 0;
    if (error && !job.error.compare_exchange_strong(none, error)) TVMFFIObjectDecRef(error);
  }
}

__attribute__((weak, visibility("hidden"))) int edgecc_pool_run(EdgeccRange, void*, int64_t,
                                                               int32_t);

// TVM's loops that take less than edgecc_pool_inline_ns serially run on the caller alone: a
// pool job costs the caller ~0.5 us even with the worker spinning (bench/pool_latency.py), and
// TVM's launches carry no work estimate, so each loop (its lambda: one per generated parallel
// loop) is timed when it runs serially. A loop first runs serially (timed); under the
// threshold it stays so (timed every time: a dynamic shape's work can grow), else it goes to
// the pool, where a launch that took under the threshold (wall) is timed serially again. Same
// tasks and split either way (env->num_task unchanged): bit-identical outputs. 0: every
// launch on the pool (the behaviour before; bench/pool_scaling.py's A/B).
__attribute__((weak)) int64_t edgecc_pool_inline_ns = @INLINE_NS@;
struct EdgeccLaunchCost {
  std::atomic<void*> lambda;
  std::atomic<int64_t> ns;  // its last serial time; -1: measure it serially next time
};
__attribute__((weak, visibility("hidden"))) EdgeccLaunchCost edgecc_pool_costs[256] = {};
// lambda's entry (claimed on first sight; 8 probes), or 0: the threshold is off or the table
// is full (the launch then goes to the pool as before)
__attribute__((weak, visibility("hidden"))) EdgeccLaunchCost* edgecc_pool_launch_cost(
    EdgeccLambda lambda) {
  if (edgecc_pool_inline_ns <= 0) return 0;
  const uintptr_t key = (uintptr_t)(void*)lambda;
  const size_t h = (size_t)((key >> 4) * 0x9E3779B97F4A7C15ULL >> 56);
  for (size_t i = 0; i < 8; ++i) {
    EdgeccLaunchCost& c = edgecc_pool_costs[(h + i) & 255];
    void* seen = c.lambda.load(std::memory_order_acquire);
    if (seen == (void*)lambda) return &c;
    if (seen == 0) {
      c.ns.store(-1, std::memory_order_relaxed);
      if (c.lambda.compare_exchange_strong(seen, (void*)lambda, std::memory_order_acq_rel))
        return &c;
      if (seen == (void*)lambda) return &c;
    }
  }
  return 0;
}

// TVMBackendParallelLaunch on this pool (hidden: the address installed is this library's own)
__attribute__((weak, visibility("hidden"))) int edgecc_pool_launch(EdgeccLambda lambda,
                                                                  void* cdata, int num_task) {
  __atomic_fetch_add(&edgecc_pool_tvm_launches, 1, __ATOMIC_RELAXED);
  int32_t n = num_task;
  if (n <= 0) {
    n = edgecc_pool_size();
    n = n < 1 ? 1 : n;
  }
  EdgeccTvmJob job;
  job.lambda = lambda; job.cdata = cdata;
  job.env.sync_handle = 0;  // only TVM's barrier reads it, and such a library keeps TVM's pool
  job.env.num_task = n;
  job.failed.store(0, std::memory_order_relaxed);
  job.error.store(0, std::memory_order_relaxed);
  // busy (a nested or concurrent job) or one thread: every task on the caller, same split;
  // a loop measured shorter than edgecc_pool_inline_ns too (edgecc_pool_launch_inline)
  if (n == 1) {
    edgecc_pool_tvm_tasks(&job, 0, n);
  } else if (EdgeccLaunchCost* cost = edgecc_pool_launch_cost(lambda)) {
    const int64_t known = cost->ns.load(std::memory_order_relaxed);
    const int64_t t0 = edgecc_pool_now_ns();
    if (known < 0 || known < edgecc_pool_inline_ns ||
        edgecc_pool_run(edgecc_pool_tvm_tasks, &job, n, 0) != 0) {
      edgecc_pool_tvm_tasks(&job, 0, n);  // measured: its serial time
      const int64_t ns = edgecc_pool_now_ns() - t0;
      cost->ns.store(ns, std::memory_order_relaxed);
      if (edgecc_pool_timing) {
        edgecc_stat_add(EDGECC_STAT_TVM_INLINE, 1);
        edgecc_stat_add(EDGECC_STAT_INLINE_NS, ns);
      }
    } else {
      // on the pool: under the threshold in wall time, measure it serially again next time
      // (its first serial run was slow, cold or preempted, or its work shrank: the same code
      // on a smaller dynamic shape)
      if (edgecc_pool_now_ns() - t0 < edgecc_pool_inline_ns)
        cost->ns.store(-1, std::memory_order_relaxed);
      if (edgecc_pool_timing) edgecc_stat_add(EDGECC_STAT_TVM_POOL, 1);
    }
  } else if (edgecc_pool_run(edgecc_pool_tvm_tasks, &job, n, 0) != 0) {
    edgecc_pool_tvm_tasks(&job, 0, n);
    if (edgecc_pool_timing) edgecc_stat_add(EDGECC_STAT_TVM_INLINE, 1);
  } else if (edgecc_pool_timing) {
    edgecc_stat_add(EDGECC_STAT_TVM_POOL, 1);
  }
  if (!job.failed.load(std::memory_order_acquire)) return 0;
  if (void* error = job.error.load(std::memory_order_acquire)) {
    TVMFFIErrorSetRaised(error);  // takes its own reference
    TVMFFIObjectDecRef(error);
  } else {
    TVMFFIErrorSetRaisedFromCStr("RuntimeError", "a parallel task failed without an error");
  }
  return -1;
}

// run TVM's parallel loops on edgecc's pool (use 1), on TVM's again (0), or leave them (-1);
// threads > 0: the pool's size, 0: TVM's pool size asked per job, < 0: unchanged. Returns 1
// when TVM's loops run on edgecc's pool now, else 0. The runner calls it after TVM's loader
// filled the pointer (a call before, or a second load, would be overwritten: a kernel's next
// pool job then installs it again unless use was 0 or the library uses TVM's barrier).
__attribute__((weak, visibility("hidden"))) pthread_mutex_t edgecc_pool_configuring =
    PTHREAD_MUTEX_INITIALIZER;
__attribute__((weak, visibility("hidden"))) int edgecc_pool_set(int32_t use, int32_t threads) {
  pthread_mutex_t* const lock = &edgecc_pool_configuring;
  if (threads >= 0) edgecc_pool_threads = threads;
  void* const ours = (void*)&edgecc_pool_launch;
  pthread_mutex_lock(lock);
  void* current = __atomic_load_n(&__TVMBackendParallelLaunch, __ATOMIC_ACQUIRE);
  if (current != ours && current != 0) edgecc_pool_tvm_launch = current;
  if (use > 0) {
    Dl_info self, found;  // does this library's code use TVM's barrier?
    bool barrier = false;
    if (dladdr((void*)&edgecc_pool_set, &self) && self.dli_fname) {
      if (void* h = dlopen(self.dli_fname, RTLD_LAZY | RTLD_NOLOAD)) {
        void* sym = dlsym(h, "__TVMBackendParallelBarrier");
        barrier = sym && dladdr(sym, &found) && found.dli_fbase == self.dli_fbase;
        dlclose(h);
      }
    }
    if (barrier) {
      edgecc_pool_mode = -1;
    } else {
      __atomic_store_n(&__TVMBackendParallelLaunch, ours, __ATOMIC_RELEASE);
      edgecc_pool_mode = 1;
    }
  } else if (use == 0) {
    edgecc_pool_mode = -1;
    if (current == ours) __atomic_store_n(&__TVMBackendParallelLaunch, edgecc_pool_tvm_launch,
                                          __ATOMIC_RELEASE);
  }
  const int on = __atomic_load_n(&__TVMBackendParallelLaunch, __ATOMIC_ACQUIRE) == ours;
  pthread_mutex_unlock(lock);
  return on;
}

// the exported entries (ctypes: the runner, the tests)
__attribute__((weak)) int edgecc_pool_configure(int32_t use, int32_t threads) {
  return edgecc_pool_set(use, threads);
}
__attribute__((weak)) int edgecc_pool_parallel_launch(EdgeccLambda lambda, void* cdata,
                                                      int num_task) {
  return edgecc_pool_launch(lambda, cdata, num_task);
}

// run range(fn, begin, end) over [0, items) on the calling thread and up to threads - 1
// workers; nonzero when it did not (one thread): the caller then runs it serially
__attribute__((weak, visibility("hidden"))) int edgecc_pool_run(EdgeccRange range, void* fn,
                                                               int64_t items, int32_t tasks) {
  EdgeccPool& p = edgecc_pool_state;
  // a library loaded by TVM's loader alone (not through edgecc's runner), or loaded again
  // (the loader fills the pointer afresh): TVM's parallel loops move to this pool now
  if (__builtin_expect(edgecc_pool_mode >= 0 &&
                       __TVMBackendParallelLaunch != (void*)&edgecc_pool_launch, 0))
    edgecc_pool_set(1, -1);
  int32_t threads = edgecc_pool_size();
  if (tasks > 0 && tasks < threads) threads = tasks;
  if (threads <= 1 || items >= (1LL << 40)) return -1;
  // one job at a time: a nested parallel_for, or another thread's call, runs serially
  if (p.busy.exchange(1, std::memory_order_acquire)) return -1;
  if (p.started.load(std::memory_order_acquire) < threads - 1) {  // start workers once
    pthread_mutex_lock(&p.grow);
    if (p.started.load() == 0) {  // workers run this library's code: never unload it
      Dl_info self;
      if (dladdr((void*)&edgecc_pool_worker, &self) && self.dli_fname)
        dlopen(self.dli_fname, RTLD_NOW | RTLD_NOLOAD | RTLD_NODELETE);
    }
    for (int32_t i = p.started.load(); i < threads - 1; ++i) {
      pthread_t t;
      if (pthread_create(&t, 0, edgecc_pool_worker, (void*)(intptr_t)(i + 1)) != 0) break;
      pthread_detach(t);
      p.started.fetch_add(1, std::memory_order_acq_rel);
    }
    pthread_mutex_unlock(&p.grow);
    if (p.started.load() < 1) {
      p.busy.store(0, std::memory_order_release);
      return -1;
    }
  }
  const int32_t timing = edgecc_pool_timing;
  const int64_t t0 = timing ? edgecc_pool_now_ns() : 0;
  if (timing) __atomic_store_n(&edgecc_pool_published_ns, t0, __ATOMIC_RELAXED);
  const uint32_t e = p.epoch.load(std::memory_order_relaxed) + 1;
  p.range = range; p.fn = fn; p.items = items; p.threads = threads;
  p.parts = edgecc_pool_chunk_parts; p.done_once = edgecc_pool_done_once;
  const bool once = p.done_once != 0;
  p.done.store(0, std::memory_order_relaxed);
  uint64_t start = ((uint64_t)(e & 0xFFFFFF)) << 40;
  if (edgecc_pool_two_ended && items <= (int64_t)EDGECC_END_MASK)
    start |= EDGECC_TWO_ENDED | ((uint64_t)items << 19);
  p.state.store(start, std::memory_order_release);
  if (timing >= 3) edgecc_pool_job_tsc[EDGECC_TRACE_POSTED] = (int64_t)__rdtsc();
  p.epoch.store(e, std::memory_order_seq_cst);
  if (p.sleepers.load(std::memory_order_seq_cst) > 0)
    syscall(SYS_futex, &p.epoch, FUTEX_WAKE_PRIVATE, 0x7fffffff, 0, 0, 0);
  const int64_t mine = edgecc_pool_work(e, threads, 0);
  const int64_t t1 = timing ? edgecc_pool_now_ns() : 0;
  if (timing) { edgecc_pool_job_caller[0] = mine; edgecc_pool_job_caller[1] = t1 - t0; }
  if (timing >= 3) edgecc_pool_job_tsc[EDGECC_TRACE_CALLER_END] = (int64_t)__rdtsc();
  // only chunks a worker claimed are left: wait for them
  const int64_t others = once ? items - mine : items;  // done_once: the caller's not in done
  for (int64_t i = 0; p.done.load(std::memory_order_acquire) < others; ++i) {
    if (i < 4000) _mm_pause(); else sched_yield();
  }
  if (timing >= 3) {
    edgecc_pool_job_tsc[EDGECC_TRACE_JOINED] = (int64_t)__rdtsc();
    edgecc_pool_job_tsc[EDGECC_TRACE_FIELDS] = (int64_t)e;
  }
  p.busy.store(0, std::memory_order_release);
  if (timing) {
    const int64_t t2 = edgecc_pool_now_ns();
    edgecc_stat_add(EDGECC_STAT_JOBS, 1);
    edgecc_stat_add(EDGECC_STAT_WALL_NS, t2 - t0);
    edgecc_stat_add(EDGECC_STAT_CALLER_NS, t1 - t0);
    edgecc_stat_add(EDGECC_STAT_WAIT_NS, t2 - t1);
    edgecc_stat_add(EDGECC_STAT_ITEMS, items);
    if (t2 - t0 < 3000) edgecc_stat_add(EDGECC_STAT_SHORT, 1);
  }
  return 0;
}
}

// ---- edgecc_pool_adaptive: each job site timed both ways, the faster kept ----
// A site is a parallel_for's code (its range function) with its item count and work: the same
// layer on every call. Its first EDGECC_SITE_SAMPLES x 2 jobs alternate between serial and the
// pool (each timed: the caller's wall ns), then it runs the way whose median sample was
// faster (the median, not the fastest: on a loaded machine the pool's best sample is the one
// where the worker had a CPU, its typical one is not), and every EDGECC_SITE_RESAMPLE jobs it
// samples again (the host moves this guest's vCPUs: 64 KB written by the other vCPU read in
// 1.1 or 3.0 us from minute to minute, and a small layer's second thread gains in one state
// and loses in the other). The pool only schedules: the same items run either way,
// bit-identical outputs. 0 (default): off; a knob for --tune (bench/pool_serial_work.py).
__attribute__((weak)) int32_t edgecc_pool_adaptive = 0;
constexpr int32_t EDGECC_SITE_SAMPLES = 4, EDGECC_SITE_RESAMPLE = 256;
struct EdgeccSite {
  std::atomic<uint64_t> key;  // hash of (range, items, work); 0: free
  std::atomic<int32_t> calls;
  std::atomic<int64_t> ns[2][EDGECC_SITE_SAMPLES];  // the samples, serial / pool
};
__attribute__((weak, visibility("hidden"))) EdgeccSite edgecc_pool_sites[512] = {};

// the site of (range, items, work), claimed on first sight (8 probes); 0 when the table is full
__attribute__((weak, visibility("hidden"))) EdgeccSite* edgecc_pool_site(void* range,
                                                                       int64_t items,
                                                                       int64_t work) {
  uint64_t key = ((uint64_t)(uintptr_t)range * 0x9E3779B97F4A7C15ULL) ^
                 ((uint64_t)items * 0xC2B2AE3D27D4EB4FULL) ^
                 ((uint64_t)work * 0x165667B19E3779F9ULL);
  key |= 1;
  for (size_t i = 0; i < 8; ++i) {
    EdgeccSite& site = edgecc_pool_sites[((key >> 23) + i) & 511];
    uint64_t seen = site.key.load(std::memory_order_acquire);
    if (seen == key) return &site;
    if (seen == 0 && site.key.compare_exchange_strong(seen, key, std::memory_order_acq_rel))
      return &site;
    if (seen == key) return &site;
  }
  return 0;
}

// the median of a way's samples (the mean of the middle two)
__attribute__((weak, visibility("hidden"))) int64_t edgecc_pool_site_median(EdgeccSite* site,
                                                                          int way) {
  int64_t v[EDGECC_SITE_SAMPLES];
  for (int i = 0; i < EDGECC_SITE_SAMPLES; ++i) {
    v[i] = site->ns[way][i].load(std::memory_order_relaxed);
    for (int j = i; j > 0 && v[j] < v[j - 1]; --j) {
      const int64_t t = v[j]; v[j] = v[j - 1]; v[j - 1] = t;
    }
  }
  return v[EDGECC_SITE_SAMPLES / 2 - 1] / 2 + v[EDGECC_SITE_SAMPLES / 2] / 2;
}

// which way this job of the site runs (1: the pool); *sample >= 0: time it as that sample
__attribute__((weak, visibility("hidden"))) int edgecc_pool_site_way(EdgeccSite* site,
                                                                   int* sample) {
  const int32_t n = site->calls.fetch_add(1, std::memory_order_relaxed) % EDGECC_SITE_RESAMPLE;
  if (n < 2 * EDGECC_SITE_SAMPLES) {
    *sample = n >> 1;
    return n & 1;
  }
  *sample = -1;
  return edgecc_pool_site_median(site, 1) < edgecc_pool_site_median(site, 0);
}

namespace {

// ---- thread pool (targets/tvm/x86_kernel_ffi.py) ------------------------------------------
// this kernel set's threshold: jobs under it run serially (waking the pool costs more)
const int64_t SERIAL_WORK = @SERIAL_WORK@;

// SERIAL_WORK scaled by the model's tuned setting (edgecc_x86_serial_work_log2)
static inline int64_t serial_work() {
  const int64_t s = edgecc_x86_serial_work_log2;
  if (s == 0) return SERIAL_WORK;
  if (s < 0) return s <= -62 ? 0 : SERIAL_WORK >> -s;
  return s >= 62 || SERIAL_WORK > (INT64_MAX >> s) ? INT64_MAX : SERIAL_WORK << s;
}

template <typename F>
static void run_range(void* fn, int64_t begin, int64_t end) {
  (*static_cast<const F*>(fn))(begin, end);
}

// fn(begin, end) over [0, items): on edgecc's pool (edgecc_pool_run), serially when the
// whole job's work is under the threshold (serial_work()) or the pool has one thread
template <typename F>
static void parallel_for(int64_t items, const F& fn, int64_t work) {
  if (__builtin_expect(edgecc_pool_timing >= 2, 0)) {
    const bool trace = edgecc_pool_timing >= 3;
    const int64_t enter = trace ? (int64_t)__rdtsc() : 0;
    if (trace) edgecc_pool_job_tsc[EDGECC_TRACE_POSTED] = 0;
    const int64_t t0 = edgecc_pool_now_ns();
    __atomic_store_n(&edgecc_pool_job_caller[2], 0, __ATOMIC_RELAXED);
    int64_t pooled = 1;
    if (!(items > 1 && work >= serial_work() &&
          edgecc_pool_run(run_range<F>, const_cast<void*>(static_cast<const void*>(&fn)),
                          items, edgecc_x86_num_tasks) == 0)) {
      fn(0, items);
      pooled = 0;
    }
    const int64_t i = __atomic_fetch_add(&edgecc_pool_log_next, 1, __ATOMIC_RELAXED) & 511;
    int64_t* r = edgecc_pool_log + 6 * i;
    r[0] = items; r[1] = edgecc_pool_now_ns() - t0; r[2] = pooled;
    r[3] = pooled ? edgecc_pool_job_caller[0] : items;
    r[4] = pooled ? edgecc_pool_job_caller[1] : r[1];
    r[5] = pooled ? __atomic_load_n(&edgecc_pool_job_caller[2], __ATOMIC_RELAXED) : 0;
    if (trace) {  // the worker's stamps only when they are this job's (its epoch)
      int64_t* t = edgecc_pool_trace + EDGECC_TRACE_FIELDS * i;
      const int64_t job = edgecc_pool_job_tsc[EDGECC_TRACE_FIELDS];
      const bool posted = pooled && edgecc_pool_job_tsc[EDGECC_TRACE_POSTED] != 0;
      const int64_t w0 = edgecc_pool_job_tsc[EDGECC_TRACE_WORKER_START];
      const bool joined = posted &&
          __atomic_load_n(&edgecc_pool_job_tsc[EDGECC_TRACE_EPOCH], __ATOMIC_ACQUIRE) == job &&
          edgecc_pool_job_tsc[EDGECC_TRACE_WORKER_END] > w0;
      t[EDGECC_TRACE_ENTER] = enter;
      t[EDGECC_TRACE_POSTED] = posted ? edgecc_pool_job_tsc[EDGECC_TRACE_POSTED] : 0;
      t[EDGECC_TRACE_CALLER_END] = posted ? edgecc_pool_job_tsc[EDGECC_TRACE_CALLER_END] : 0;
      t[EDGECC_TRACE_JOINED] = posted ? edgecc_pool_job_tsc[EDGECC_TRACE_JOINED] : 0;
      t[EDGECC_TRACE_WORKER_START] = joined ? w0 : 0;
      t[EDGECC_TRACE_WORKER_END] = joined ? edgecc_pool_job_tsc[EDGECC_TRACE_WORKER_END] : 0;
      t[EDGECC_TRACE_EPOCH] = posted ? job : -1;
      t[EDGECC_TRACE_EXIT] = (int64_t)__rdtsc();
    }
    return;
  }
  if (items > 1 && work >= serial_work() && edgecc_pool_adaptive) {
    if (EdgeccSite* site = edgecc_pool_site((void*)&run_range<F>, items, work)) {
      int sample = -1;
      const int way = edgecc_pool_site_way(site, &sample);
      const int64_t t0 = sample >= 0 ? edgecc_pool_now_ns() : 0;
      const bool pooled = way == 1 &&
          edgecc_pool_run(run_range<F>, const_cast<void*>(static_cast<const void*>(&fn)),
                          items, edgecc_x86_num_tasks) == 0;
      if (!pooled) fn(0, items);
      if (sample >= 0)  // a pool sample that ran serially (one thread, busy) counts so: fair
        site->ns[way][sample].store(edgecc_pool_now_ns() - t0, std::memory_order_relaxed);
      if (edgecc_pool_timing)
        edgecc_stat_add(pooled ? EDGECC_STAT_SITE_POOL : EDGECC_STAT_SITE_SERIAL, 1);
      return;
    }
  }
  if (items > 1 && work >= serial_work() &&
      edgecc_pool_run(run_range<F>, const_cast<void*>(static_cast<const void*>(&fn)), items,
                      edgecc_x86_num_tasks) == 0)
    return;
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

// the other way: a packed argument for a kernel called from a kernel, a dense CPU tensor of
// `ndim` dims `shape` and element type (code, bits) over `ptr`, described in `t` (which must
// outlive the call)
static inline TVMFFIAny typed_tensor_arg(DLTensor& t, void* ptr, int64_t* shape, int32_t ndim,
                                         uint8_t code, uint8_t bits) {
  t = DLTensor{};
  t.data = ptr;
  t.device.device_type = kDLCPU;
  t.ndim = ndim;
  t.dtype.code = code; t.dtype.bits = bits; t.dtype.lanes = 1;
  t.shape = shape;
  TVMFFIAny arg{};
  arg.type_index = kTVMFFIDLTensorPtr;
  arg.v_ptr = &t;
  return arg;
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
    from edgecc.targets.tvm.plan_runner_source import PLAN_RUNNER_SOURCE

    return (FFI_PRELUDE.replace("@SERIAL_WORK@", str(int(serial_work)))
            .replace("@INLINE_NS@", str(INLINE_NS)).replace("@DONE_ONCE@", str(DONE_ONCE))
            + PLAN_RUNNER_SOURCE)
