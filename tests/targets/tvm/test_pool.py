"""x86_kernel_ffi's pool: two-ended jobs (each thread's items one contiguous run) and TVM's
short parallel loops run on the caller (``edgecc_pool_inline_ns``), each checked by what ran
where and by the pool's counters (``edgecc_pool_stat``), so a silent fallback to the old path
fails."""

import ctypes
import threading

import numpy as np

from tests.targets.tvm.test_runner import LAUNCH_JOB, _pool_library, _record

TVM_POOL, TVM_INLINE = 1, 2  # EDGECC_STAT_TVM_POOL, EDGECC_STAT_TVM_INLINE
JOINED, WORKER_ITEMS = 7, 9  # EDGECC_STAT_JOINED, EDGECC_STAT_WORKER_ITEMS


def _in_fresh_thread(fn):
    """Run ``fn`` in a new thread (TVM's pool is per thread, sized 2 at its first use) and
    re-raise its assertion."""
    failures = []
    t = threading.Thread(target=lambda: _record(fn, failures))
    t.start()
    t.join()
    assert not failures, failures


def test_two_ended_jobs_give_each_thread_one_contiguous_run(tmp_path):
    """With edgecc_pool_two_ended (the default) the caller claims from the front and the
    worker from the back: every item runs once, and in a job the worker joined its items are
    one run at the end ([0, k) on the caller, [k, items) on the worker; with one counter, a
    worker that joins early takes chunks between the caller's). Off, or a job of 2^19 items
    or more, the one counter as before: every item once still."""
    import tvm  # noqa: F401 - TVM's runtime: its thread pool's functions

    from edgecc.targets.tvm.runner import use_threads

    lib = _pool_library(tmp_path)
    two_ended = ctypes.c_int32.in_dll(lib, "edgecc_pool_two_ended")
    timing = ctypes.c_int32.in_dll(lib, "edgecc_pool_timing")
    stat = (ctypes.c_int64 * 16).in_dll(lib, "edgecc_pool_stat")
    assert two_ended.value == 1

    def job(items, spin=0):
        count, tid = np.zeros(items, np.int64), np.zeros(items, np.int64)
        lib.pool_job(items, count.ctypes.data, tid.ctypes.data, spin)
        assert (count == 1).all(), (items, count)
        return tid

    def runs(tid):  # the number of runs of equal thread ids
        return 1 + int((tid[1:] != tid[:-1]).sum())

    def checks():
        assert use_threads(2) == 2
        for items in (2, 3, 5, 17, 64, 1000, 4097, (1 << 19) - 1, 1 << 19, 600000):
            job(items)
        caller = threading.get_native_id()
        joined = early = 0
        timing.value = 1
        try:  # jobs alternate: two-ended / one counter (every item once), until the worker
            for i in range(2000):  # joined some two-ended ones, one of them early
                two_ended.value = i % 2 == 0
                tid = job(64, 20000)
                if i % 2 or len(set(tid.tolist())) < 2:
                    continue  # one counter, or the worker had no CPU (a loaded machine)
                joined += 1
                assert runs(tid) == 2 and tid[0] == caller, tid  # the caller: the front
                # early: one counter would have interleaved the worker's 16+ items with the
                # caller's (its first chunk: a quarter of the items)
                early += int((tid != caller).sum()) >= 16
                if joined >= 5 and early >= 1:
                    break
            assert joined >= 5 and early >= 1, (joined, early)
            assert stat[JOINED] > 0 and stat[WORKER_ITEMS] > 0
        finally:
            two_ended.value = 1
            timing.value = 0

    _in_fresh_thread(checks)


def test_short_tvm_loops_run_on_the_caller_and_long_ones_on_the_pool(tmp_path):
    """edgecc_pool_launch times each TVM loop (its lambda) serially: a loop under
    edgecc_pool_inline_ns then runs on the caller alone (the inline counter moves, every task
    on the caller, each once, with TVM's split: num_task unchanged); a long one goes to the
    pool (the worker joins). With the threshold 0 every launch goes to the pool, as before."""
    import tvm  # noqa: F401 - libtvm_ffi

    lib = _pool_library(tmp_path, LAUNCH_JOB)

    class Tasks(ctypes.Structure):
        _fields_ = [("count", ctypes.c_int64 * 64), ("tid", ctypes.c_int64 * 64),
                    ("seen", ctypes.c_int64 * 64)] + [
            (k, ctypes.c_int64) for k in ("fail_mask", "fail_on_worker", "spin", "caller")]

    lib.launch.argtypes = [ctypes.c_int, ctypes.POINTER(Tasks), ctypes.c_char_p, ctypes.c_int]
    lib.edgecc_pool_configure.argtypes = [ctypes.c_int32, ctypes.c_int32]
    assert lib.edgecc_pool_configure(1, 2) == 1
    inline_ns = ctypes.c_int64.in_dll(lib, "edgecc_pool_inline_ns")
    timing = ctypes.c_int32.in_dll(lib, "edgecc_pool_timing")
    stat = (ctypes.c_int64 * 16).in_dll(lib, "edgecc_pool_stat")
    assert inline_ns.value > 0

    def launch(num_task, spin=0):
        t = Tasks(spin=spin)
        out = ctypes.create_string_buffer(128)
        assert lib.launch(num_task, ctypes.byref(t), out, 128) == 0
        assert list(t.count) == [1] * num_task + [0] * (64 - num_task)
        assert set(t.seen[:num_task]) == {num_task}  # TVM's split: num_task as asked
        return set(t.tid[:num_task]), t.caller

    timing.value = 1
    default = inline_ns.value
    inline_ns.value = 20000  # 20 us: a loaded machine's slow spell keeps the empty tasks under
    try:
        for _ in range(50):  # short: on the caller (the first launch is timed serially too)
            launch(8)
        # (a launch preempted past 20 us goes to the pool once, then is timed again)
        assert stat[TVM_INLINE] >= 45 and stat[TVM_INLINE] + stat[TVM_POOL] == 50, list(stat)
        joined, pooled = False, stat[TVM_POOL]
        for _ in range(100):  # long (~100 us a task): on the pool after its timed first run
            tids, caller = launch(8, spin=200000)
            joined = joined or len(tids) == 2
        assert joined and stat[TVM_POOL] - pooled >= 99, list(stat)
        inline_ns.value = 0  # off: every launch on the pool
        pooled = stat[TVM_POOL]
        for _ in range(20):
            launch(8)
        assert stat[TVM_POOL] == pooled + 20
    finally:
        timing.value = 0
        inline_ns.value = default


SITE_SERIAL, SITE_POOL = 14, 15  # EDGECC_STAT_SITE_SERIAL, EDGECC_STAT_SITE_POOL


def test_adaptive_sites_sample_both_ways_and_keep_serial_for_empty_jobs(tmp_path):
    """edgecc_pool_adaptive: a job site's first 8 jobs alternate serial / pool (4 each), then
    the way with the faster median runs: an empty job (64 items of no work) is faster serial
    wherever the pool's claims cost anything, so the next 100 run serially; every item runs
    once either way. Off (the default), the counters do not move."""
    import tvm  # noqa: F401 - TVM's runtime: its thread pool's functions

    from edgecc.targets.tvm.runner import use_threads

    lib = _pool_library(tmp_path)
    adaptive = ctypes.c_int32.in_dll(lib, "edgecc_pool_adaptive")
    timing = ctypes.c_int32.in_dll(lib, "edgecc_pool_timing")
    stat = (ctypes.c_int64 * 16).in_dll(lib, "edgecc_pool_stat")
    assert adaptive.value == 0

    def job(items, spin=0):
        count, tid = np.zeros(items, np.int64), np.zeros(items, np.int64)
        lib.pool_job(items, count.ctypes.data, tid.ctypes.data, spin)
        assert (count == 1).all(), (items, count)

    def checks():
        assert use_threads(2) == 2
        timing.value = 1
        try:
            for _ in range(20):
                job(64)
            assert stat[SITE_SERIAL] == stat[SITE_POOL] == 0  # off: not consulted
            adaptive.value = 1
            for _ in range(8):  # sampling: 4 serial, 4 on the pool
                job(64)
            assert (stat[SITE_SERIAL], stat[SITE_POOL]) == (4, 4), list(stat)
            for _ in range(100):
                job(64)
            assert (stat[SITE_SERIAL], stat[SITE_POOL]) == (104, 4), list(stat)
            for _ in range(8):  # another site (another item count): sampled afresh
                job(4096, 50)
            assert (stat[SITE_SERIAL], stat[SITE_POOL]) == (108, 8), list(stat)
        finally:
            adaptive.value = 0
            timing.value = 0

    _in_fresh_thread(checks)


def test_done_once_and_chunk_parts_cut_the_jobs_atomics_and_run_every_item_once(tmp_path):
    """edgecc_pool_done_once 1: the job's done counter gets one addition per worker that ran
    items (none for the caller), not one per chunk — and the caller still waits for the
    worker's items (slow items: a caller returning early would leave some uncounted).
    edgecc_pool_chunk_parts 1: about half the claims of 2 for the same jobs. Counted with
    edgecc_pool_timing (edgecc_pool_claims / edgecc_pool_done_adds), so a knob the pool
    ignored fails."""
    import tvm  # noqa: F401 - TVM's runtime: its thread pool's functions

    from edgecc.targets.tvm.runner import use_threads

    lib = _pool_library(tmp_path)
    knob = {name: ctypes.c_int32.in_dll(lib, f"edgecc_pool_{name}")
            for name in ("done_once", "chunk_parts", "timing")}
    claims = ctypes.c_int64.in_dll(lib, "edgecc_pool_claims")
    adds = ctypes.c_int64.in_dll(lib, "edgecc_pool_done_adds")
    stat = (ctypes.c_int64 * 16).in_dll(lib, "edgecc_pool_stat")
    assert (knob["done_once"].value, knob["chunk_parts"].value) == (0, 2)  # the defaults

    def jobs(once, parts, n, items=64, spin=0):
        """n jobs; (claims, done additions, jobs the worker joined) over them"""
        knob["done_once"].value, knob["chunk_parts"].value = once, parts
        claims.value = adds.value = 0
        joined = stat[JOINED]
        for _ in range(n):
            count, tid = np.zeros(items, np.int64), np.zeros(items, np.int64)
            lib.pool_job(items, count.ctypes.data, tid.ctypes.data, spin)
            assert (count == 1).all(), (once, parts, items, count)
        return claims.value, adds.value, stat[JOINED] - joined

    def checks():
        assert use_threads(2) == 2
        knob["timing"].value = 1
        try:
            for items in (2, 3, 17, 1000):
                for once in (0, 1):
                    jobs(once, 2, 3, items)
            c, a, _ = jobs(0, 2, 20)
            assert a == c > 0  # per chunk
            joined = 0
            for _ in range(200):  # slow items until the worker took part in some jobs
                c, a, j = jobs(1, 2, 10, spin=20000)
                assert a <= j  # once per job the worker ran items of, never per chunk
                joined += j
                if joined >= 3:
                    break
            assert joined >= 3, joined
            two = sum(jobs(0, 2, 20)[0] for _ in range(3))
            one = sum(jobs(0, 1, 20)[0] for _ in range(3))
            assert one < 0.7 * two, (one, two)  # remaining / 2 a claim, not / 4
        finally:
            knob["done_once"].value, knob["chunk_parts"].value = 0, 2
            knob["timing"].value = 0

    _in_fresh_thread(checks)
