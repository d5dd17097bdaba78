"""The in-process TVM VM runner: each runner runs with its own thread count, set on TVM's
thread pool explicitly (a second runner's count is not silently ignored)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
import torch

import edgecc
from edgecc.errors import InputSpecError

SCRIPT = """
import sys, torch
from edgecc.targets.tvm.runner import VmRunner, _pool_threads
two, one = VmRunner(sys.argv[1], 2), VmRunner(sys.argv[1], 1)
x = torch.randn(2, 8)
counts = []
for runner in (two, one, two):
    runner.run(x)
    counts.append(_pool_threads())
print(counts)
"""


def test_two_runners_keep_their_own_thread_counts(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU()).eval()
    res = edgecc.compile(model, "host", example_inputs=(torch.randn(2, 8),), pipeline="",
                         output_dir=str(tmp_path / "o"), verify=False)
    # a fresh process: the pool is sized at its first use, which must be the first runner
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "o" / "model.so")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[2, 1, 2]"
    assert res.report["target"]["options"]["num_threads"] == 0


def test_inputs_are_read_in_place_or_copied_and_never_written(tmp_path):
    """Contiguous, 64-byte-aligned inputs go to the VM without a copy (``tvm_tensor``);
    a transposed view or one at an unaligned offset is copied; either way the outputs are
    the same and the caller's tensors are untouched."""
    from edgecc.targets.tvm.runner import tvm_tensor

    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU()).eval()
    res = edgecc.compile(model, "host", example_inputs=(torch.randn(2, 8),), pipeline="",
                         output_dir=str(tmp_path / "o"), verify=False)
    x = torch.randn(2, 8)
    assert x.data_ptr() % 64 == 0
    shared = tvm_tensor(x, None)
    shared.numpy()  # a view of x's memory, not a copy:
    x[0, 0] += 1.0
    assert float(shared.numpy()[0, 0]) == float(x[0, 0])
    base = torch.randn(17)
    unaligned = base[1:17].view(2, 8)  # 4 bytes past an aligned start
    transposed = torch.randn(8, 2).t()
    for value in (x, unaligned, transposed):
        before = value.clone()
        expected = model(value).detach()
        torch.testing.assert_close(res.run(value), expected, rtol=1e-5, atol=1e-6)
        assert torch.equal(value, before)


class _FiveOutputs(torch.nn.Module):
    """Outputs the VM allocates per call (a linear, a comparison, a reduction), a view of
    the input and a constant."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)
        self.register_buffer("c", torch.arange(4.0))

    def forward(self, x):
        return self.lin(x).relu(), x.reshape(16), self.c, x > 0, x.sum().to(torch.int64)


def test_outputs_are_the_callers_and_no_later_call_writes_them(tmp_path):
    """Outputs the VM allocates afresh per call come back without a copy (the first call
    runs twice to find them: ``VmRunner._owned``); a view of the input and a constant are
    copied. A second call leaves the first call's outputs as they were, and writing into
    returned outputs changes neither the caller's input nor the next call's results."""
    model = _FiveOutputs().eval()
    x1, x2 = torch.randn(2, 8), torch.randn(2, 8)
    res = edgecc.compile(model, "host", example_inputs=(x1,), pipeline="",
                         output_dir=str(tmp_path / "o"), verify=False, progress=False)
    first = res.run(x1)
    assert res._runner._owned == [True, False, False, True, True]
    kept = [o.clone() for o in first]
    second = res.run(x2)
    for got, was, want in zip(first, kept, model(x1)):
        assert torch.equal(got, was)  # untouched by the second call
        torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-6)
    assert not torch.equal(first[0], second[0])
    assert first[0].data_ptr() != second[0].data_ptr()
    inputs = x2.clone()
    for o in second:  # the caller owns them: writes go nowhere else
        o.add_(1) if o.dtype != torch.bool else o.logical_not_()
    assert torch.equal(x2, inputs)
    for got, want in zip(res.run(x2), model(x2)):
        torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-6)



class _TwoOwned(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)

    def forward(self, x):
        return self.lin(x).relu(), x.sum(dim=1)


def test_fresh_outputs_take_the_flat_path_and_stay_the_callers(tmp_path):
    """Every output allocated afresh per call: after the first call ``run`` takes them by
    index and DLPack (``VmRunner._flat``, the array's length; -1 for a bare tensor) with the
    same values, and a second call leaves the first call's outputs as they were. An
    unaligned or strided input is copied, a requires-grad one read as is."""
    model = _TwoOwned().eval()
    x1, x2 = torch.randn(2, 8), torch.randn(2, 8)
    res = edgecc.compile(model, "host", example_inputs=(x1,), pipeline="",
                         output_dir=str(tmp_path / "o"), verify=False, progress=False)
    runner = res._runner or res.target.load(res.output_dir, res.report)
    general = runner.run(x1)
    assert runner._owned == [True, True] and runner._flat == 2
    first = runner.run(x1)
    kept = [o.clone() for o in first]
    for got, want in zip(first, general):
        assert torch.equal(got, want)
    second = runner.run(x2)
    for got, was in zip(first, kept):
        assert torch.equal(got, was)
    assert all(a.data_ptr() != b.data_ptr() for a, b in zip(first, second))
    with torch.no_grad():
        want = model(x2)
    for got, w in zip(second, want):
        torch.testing.assert_close(got, w, rtol=1e-5, atol=1e-6)
    for _ in range(2):  # the second call skips the checks (CompileResult._checked)
        for got, want in zip(res.run(x1), first):
            assert torch.equal(got, want)
    assert res._checked == [(torch.float32, torch.Size([2, 8]))]
    for bad in (torch.randn(3, 8), torch.randn(2, 8, dtype=torch.float64), x1.numpy()[:1]):
        with pytest.raises(InputSpecError):  # another signature: checked again
            res.run(bad)
    from edgecc.targets.tvm.runner import _flat_form, tvm_tensor

    bare = tvm_tensor(x1, runner.device)
    assert _flat_form(bare, [True]) == -1 and _flat_form(bare, [False]) is None
    odd = torch.randn(2 * 8 + 1)[1:].view(2, 8)  # 4-byte aligned only: copied
    grad = x2.clone().requires_grad_()
    for value in (odd, torch.randn(8, 2).t(), grad):
        with torch.no_grad():
            want = model(value)
        for got, w in zip(runner.run(value), want):
            torch.testing.assert_close(got, w, rtol=1e-5, atol=1e-6)


POOL_JOB = r"""
#include <tvm/ffi/c_api.h>
#include <stdint.h>
#include <stdlib.h>
""" + "@PRELUDE@" + r"""
extern "C" int64_t pool_job(int64_t items, int64_t* count, int64_t* tid, int64_t spin) {
  parallel_for(items, [&](int64_t b, int64_t e) {
    const int64_t me = syscall(SYS_gettid);
    for (int64_t i = b; i < e; ++i) {
      for (volatile int64_t k = 0; k < spin; ++k) {}
      count[i] += 1;
      tid[i] = me;
    }
  }, 1);
  return 0;
}
"""


def _pool_library(tmp_path, source=POOL_JOB):
    """A shared library of ``source`` (default: one job on x86_kernel_ffi's pool, every job
    parallel)."""
    import ctypes
    import subprocess

    import tvm_ffi.libinfo

    from edgecc.targets.tvm.x86_kernel_ffi import ffi_prelude

    src, lib = tmp_path / "pool.cc", tmp_path / "libpool.so"
    src.write_text(source.replace("@PRELUDE@", ffi_prelude(0)))
    paths = tvm_ffi.libinfo.find_include_path()
    includes = [f"-I{p}" for p in ([paths] if isinstance(paths, str) else paths)]
    ffi = tvm_ffi.libinfo.find_libtvm_ffi()
    subprocess.run(["g++", "-shared", "-fPIC", "-O1", "-std=c++17", *includes, str(src), "-o",
                    str(lib), ffi, f"-Wl,-rpath,{os.path.dirname(ffi)}"], check=True)
    handle = ctypes.CDLL(str(lib))
    if source is POOL_JOB:
        handle.pool_job.argtypes = [ctypes.c_int64, ctypes.c_void_p, ctypes.c_void_p,
                                    ctypes.c_int64]
    return handle


def test_pool_runs_every_item_once_on_both_threads_and_concurrent_callers_are_safe(tmp_path):
    """x86_kernel_ffi's pool: each item of a job runs exactly once, for any item count; the
    worker takes part (some job's items run on two threads); edgecc_x86_num_tasks = 1 keeps
    a job on the caller; two threads calling at once each get every item once (the second
    runs serially while the pool is busy)."""
    import ctypes
    import threading

    import numpy as np
    import tvm  # noqa: F401 - TVM's runtime: its thread pool's functions

    from edgecc.targets.tvm.runner import use_threads

    lib = _pool_library(tmp_path)

    def job(items, spin=0):
        count, tid = np.zeros(items, np.int64), np.zeros(items, np.int64)
        lib.pool_job(items, count.ctypes.data, tid.ctypes.data, spin)
        assert (count == 1).all(), (items, count)
        return set(tid.tolist())

    def checks():  # in a fresh thread: TVM's pool is per thread, sized 2 at its first use
        assert use_threads(2) == 2
        for items in (2, 3, 5, 17, 64, 1000, 4097):
            job(items)
        assert any(len(job(64, 5000)) == 2 for _ in range(400))  # the worker joined a job
        tasks = ctypes.c_int32.in_dll(lib, "edgecc_x86_num_tasks")
        tasks.value = 1
        try:
            assert all(job(64, 2000) == {threading.get_native_id()} for _ in range(5))
        finally:
            tasks.value = 0

    failures = []
    main = threading.Thread(target=lambda: _record(checks, failures))
    main.start()
    main.join()
    assert not failures, failures
    errors = []

    def caller():
        use_threads(2)
        for items in range(2, 200, 3):
            job(items, 200)

    threads = [threading.Thread(target=lambda: _record(caller, errors)) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors


def _record(fn, failures):
    try:
        fn()
    except AssertionError as exc:
        failures.append(exc)


def test_tvms_thread_pool_does_not_pin_the_caller_to_one_cpu():
    """Making TVM's pool with one worker used to bind the calling thread to CPU 0 for good
    (TVM_BIND_THREADS), so the kernels' pool workers started from it shared that core."""
    code = ("import os; before = os.sched_getaffinity(0); import edgecc.targets.tvm; "
            "import tvm, tvm_ffi; tvm_ffi.get_global_func('runtime.NumThreads')(); "
            "print(before == os.sched_getaffinity(0), len(before))")
    env = {k: v for k, v in os.environ.items() if k != "TVM_BIND_THREADS"}
    env["TVM_NUM_THREADS"] = "1"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout.split()
    assert out[0] == "True", f"the caller's CPUs changed (of {out[1]})"


LAUNCH_JOB = r"""
#include <tvm/ffi/c_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
""" + "@PRELUDE@" + r"""
struct Tasks {
  int64_t count[64], tid[64], seen[64], fail_mask, fail_on_worker, spin, caller;
};

// a TVM parallel lambda: counts its runs, fails (raising an error in its thread) if asked
extern "C" int task(int id, EdgeccParallelEnv* env, void* cdata) {
  Tasks* t = static_cast<Tasks*>(cdata);
  for (volatile int64_t k = 0; k < t->spin; ++k) {}
  const int64_t me = syscall(SYS_gettid);
  __atomic_fetch_add(&t->count[id], 1, __ATOMIC_RELAXED);
  t->tid[id] = me;
  t->seen[id] = env->num_task;
  if (!((t->fail_mask >> id) & 1) || (t->fail_on_worker && me == t->caller)) return 0;
  char message[64];
  snprintf(message, sizeof(message), "task %d failed", id);
  TVMFFIErrorSetRaisedFromCStr("ValueError", message);
  return -1;
}

// TVM's code calling the library's __TVMBackendParallelLaunch; the error raised in this
// thread afterwards (if any) as "kind: message"
extern "C" int launch(int num_task, Tasks* t, char* out, int size) {
  t->caller = syscall(SYS_gettid);
  out[0] = 0;
  const int rc = reinterpret_cast<EdgeccLaunch>(__TVMBackendParallelLaunch)(task, t, num_task);
  TVMFFIObjectHandle error = 0;
  TVMFFIErrorMoveFromRaised(&error);
  if (error) {
    const TVMFFIErrorCell* cell = reinterpret_cast<const TVMFFIErrorCell*>(
        static_cast<char*>(error) + sizeof(TVMFFIObject));
    snprintf(out, size, "%.*s: %.*s", (int)cell->kind.size, cell->kind.data,
             (int)cell->message.size, cell->message.data);
    TVMFFIObjectDecRef(error);
  }
  return rc;
}
"""


def test_tvm_parallel_launch_on_the_pool_runs_each_task_once_and_returns_errors(tmp_path):
    """edgecc_pool_configure points the library's __TVMBackendParallelLaunch at edgecc's
    pool: num_task 0 means the pool's size (TVM's split: each task sees that num_task), every
    task id runs exactly once (on both threads), one thread or a busy pool runs them all on
    the caller, and a failing task (on the caller or on a worker) makes the launch return -1
    with its error raised in the caller's thread."""
    import ctypes

    import tvm  # noqa: F401 - libtvm_ffi

    lib = _pool_library(tmp_path, LAUNCH_JOB)

    class Tasks(ctypes.Structure):
        _fields_ = [("count", ctypes.c_int64 * 64), ("tid", ctypes.c_int64 * 64),
                    ("seen", ctypes.c_int64 * 64)] + [
            (k, ctypes.c_int64) for k in ("fail_mask", "fail_on_worker", "spin", "caller")]

    lib.launch.argtypes = [ctypes.c_int, ctypes.POINTER(Tasks), ctypes.c_char_p, ctypes.c_int]
    lib.edgecc_pool_configure.argtypes = [ctypes.c_int32, ctypes.c_int32]
    assert lib.edgecc_pool_configure(1, 2) == 1
    launches = ctypes.c_int64.in_dll(lib, "edgecc_pool_tvm_launches")

    def launch(num_task, tasks_run, spin=0, fail_mask=0, fail_on_worker=0):
        t = Tasks(spin=spin, fail_mask=fail_mask, fail_on_worker=fail_on_worker)
        out = ctypes.create_string_buffer(128)
        rc = lib.launch(num_task, ctypes.byref(t), out, 128)
        assert list(t.count) == [1] * tasks_run + [0] * (64 - tasks_run), (num_task, list(t.count))
        assert set(t.seen[:tasks_run]) == {tasks_run}
        return rc, out.value.decode(), set(t.tid[:tasks_run]), t.caller

    before = launches.value
    for num_task, tasks_run in ((0, 2), (1, 1), (2, 2), (3, 3), (7, 7), (64, 64)):
        assert launch(num_task, tasks_run)[:2] == (0, "")
    assert launches.value == before + 6
    assert any(len(launch(8, 8, spin=200000)[2]) == 2 for _ in range(100))  # a worker joined
    rc, error, _, _ = launch(7, 7, fail_mask=1 << 3)
    assert (rc, error) == (-1, "ValueError: task 3 failed")
    for _ in range(100):  # a task failing on the worker: its error reaches the caller
        rc, error, tids, caller = launch(8, 8, spin=200000, fail_mask=0xFF, fail_on_worker=1)
        if tids != {caller}:
            break
    assert rc == -1 and error.startswith("ValueError: task "), (rc, error)
    lib.edgecc_pool_configure(-1, 1)  # one thread: every task on the caller, same split
    for num_task, tasks_run in ((0, 1), (5, 5)):
        rc, error, tids, caller = launch(num_task, tasks_run)
        assert (rc, error, tids) == (0, "", {caller})
    assert launch(5, 5, fail_mask=1 << 4)[:2] == (-1, "ValueError: task 4 failed")


class _ConvSoftmax(torch.nn.Module):
    """A hand-written x86 convolution and TVM-generated parallel loops (the softmax)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 16, 3, padding=1)

    def forward(self, x):
        return torch.softmax(self.conv(x), dim=1)


def test_tvm_generated_loops_run_on_edgecc_pool_with_identical_outputs(tmp_path):
    """The runner puts the library's TVM-generated parallel loops on edgecc's kernel pool
    (one pool per process): a counter sees every launch; moved back to TVM's pool, the same
    calls give bit-identical outputs; the pool's size follows use_threads; after the library
    is loaded again (TVM's loader resets the pointer), a kernel's next job puts them back."""
    import ctypes
    import threading

    from edgecc.targets.tvm.runner import _POOLS, use_threads

    model = _ConvSoftmax().eval()
    x = torch.randn(1, 3, 16, 16)
    res = edgecc.compile(model, "host", example_inputs=(x,), pipeline="", verify=False,
                         output_dir=str(tmp_path / "o"), progress=False,
                         target_options={"num_threads": 2})
    failures = []

    def checks():  # in a fresh thread: TVM's pool is per thread, sized 2 at its first use
        first = res.run(x)
        runner = res._runner
        assert runner.tvm_loops_on_edgecc_pool
        path = runner.library
        lib = ctypes.CDLL(path, mode=os.RTLD_NOLOAD)
        launches = ctypes.c_int64.in_dll(lib, "edgecc_pool_tvm_launches")
        size = ctypes.c_int32.in_dll(lib, "edgecc_pool_threads")
        assert size.value == 2
        before = launches.value
        ours = res.run(x)
        assert launches.value > before  # TVM's loops went through edgecc's pool
        assert _POOLS[path](0, -1) == 0  # back on TVM's pool
        before = launches.value
        theirs = res.run(x)
        assert launches.value == before
        assert torch.equal(ours, theirs) and torch.equal(first, ours)
        torch.testing.assert_close(ours, model(x).detach(), rtol=1e-5, atol=1e-6)
        assert _POOLS[path](1, -1) == 1
        use_threads(1)
        assert size.value == 1
        assert torch.equal(res.run(x), ours) and launches.value > before
        use_threads(2)
        assert size.value == 2
        import tvm

        pointer = ctypes.c_void_p.in_dll(lib, "__TVMBackendParallelLaunch")
        installed = pointer.value
        tvm.runtime.load_module(path)  # a second load: TVM's loader fills the pointer again
        assert pointer.value != installed
        before = launches.value
        assert torch.equal(res.run(x), ours)  # the convolution's pool job re-installs it
        assert launches.value > before and pointer.value == installed

    def record():
        try:
            checks()
        except Exception as exc:  # noqa: BLE001 - any failure in the thread fails the test
            failures.append(exc)

    thread = threading.Thread(target=record)
    thread.start()
    thread.join()
    assert not failures, failures
