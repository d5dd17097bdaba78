"""The call-overhead trace (bench/x86_int8_call_overhead.py): with ``edgecc_plan_trace`` 1 the
plan runner stamps every step, with ``edgecc_pool_timing`` 3 the pool stamps every job, in
order; outputs bit-identical to an untraced run, and both off by default."""

from __future__ import annotations

import ctypes
import os

import numpy as np
import torch

from tests.targets.tvm.test_runner_plan import _compile

FIELDS = 8  # EDGECC_TRACE_FIELDS
ENTER, POSTED, CALLER_END, JOINED, W_START, W_END, EXIT, EPOCH = range(FIELDS)
SKEW = 1000  # TSC ticks between two vCPUs' stamps of one event (~0.4 us at 2.6 GHz)


def test_plan_and_pool_trace_stamp_every_step_and_job_in_order(tmp_path):
    res = _compile("resnet20", "int8", str(tmp_path / "o"))
    x = torch.randn(1, 3, 32, 32)
    want = res.run(x)
    runner = res._runner
    assert runner.plan is not None
    lib = ctypes.CDLL(runner.library, mode=os.RTLD_NOLOAD | os.RTLD_LOCAL)
    plan_trace = ctypes.c_int64.in_dll(lib, "edgecc_plan_trace")
    plan_log = (ctypes.c_int64 * 2048).in_dll(lib, "edgecc_plan_trace_log")
    timing = ctypes.c_int32.in_dll(lib, "edgecc_pool_timing")
    threads = ctypes.c_int32.in_dll(lib, "edgecc_pool_threads")
    trace = (ctypes.c_int64 * (512 * FIELDS)).in_dll(lib, "edgecc_pool_trace")
    nxt = ctypes.c_int64.in_dll(lib, "edgecc_pool_log_next")
    assert plan_trace.value == 0 and timing.value == 0  # off by default
    res.run(x)
    assert all(v == 0 for v in plan_log)  # nothing stamped while off
    threads_before = threads.value
    threads.value = 2
    posted = 0
    try:
        for _ in range(20):
            plan_trace.value, timing.value = 1, 3
            n0 = nxt.value
            got = res.run(x)
            n1 = nxt.value
            plan_trace.value, timing.value = 0, 0
            for a, b in zip(want, got) if isinstance(want, (list, tuple)) else [(want, got)]:
                assert np.array_equal(np.asarray(a), np.asarray(b))
            steps = [(plan_log[2 * s], plan_log[2 * s + 1]) for s in range(runner.plan.steps)]
            assert all(0 < a <= b for a, b in steps)
            assert all(steps[i][1] <= steps[i + 1][0] for i in range(len(steps) - 1))
            assert n1 - n0 >= 19  # ResNet-20's convolutions, each a parallel_for
            for i in range(n0, n1):
                t = [trace[FIELDS * (i % 512) + k] for k in range(FIELDS)]
                assert steps[0][0] <= t[ENTER] <= t[EXIT] <= steps[-1][1]
                if t[POSTED]:
                    posted += 1
                    assert t[ENTER] <= t[POSTED] <= t[CALLER_END] <= t[JOINED] <= t[EXIT]
                    if t[W_START]:  # a worker ran items of it: inside the job (another
                        # vCPU's TSC: SKEW ticks of slack)
                        assert t[POSTED] - SKEW <= t[W_START] < t[W_END] <= t[JOINED] + SKEW
                else:
                    assert t[EPOCH] == -1 and t[W_START] == 0
    finally:
        threads.value = threads_before
        plan_trace.value, timing.value = 0, 0
    assert posted > 0  # pooled jobs were stamped
