"""What the pool benches (``bench/pool_calls.py``, ``bench/pool_serial_work.py``,
``bench/pool_scaling.py``, ``bench/tvm_runtime.py``) share: a model spec (``name`` or
``name:int8``) built into a loaded edgecc host artifact (``build``), the loaded library's pool
knobs and counters (``Pool``), and SCHED_FIFO on / off for the timed part (``fifo``).

Importing it sets TVM_NUM_THREADS=2 (``bench.host``) before TVM starts."""

from __future__ import annotations

import ctypes
import dataclasses
import os
import sys
from typing import Any, Callable

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from bench.host import THREADS  # noqa: E402,F401  (TVM_NUM_THREADS=2 before TVM starts)
from bench.tvm_cpu import calibration, edgecc_fn, models  # noqa: E402

import torch  # noqa: E402

FP32 = "fold-batchnorm,fuse,dce"
INT8 = "fold-batchnorm,quantize{scheme=w8a8},fuse,dce"
# edgecc_pool_stat's slots (EDGECC_STAT_* in targets/tvm/x86_kernel_ffi.py), in order
STATS = ("jobs", "tvm_pool", "tvm_inline", "wall_ns", "caller_ns", "wait_ns", "worker_ns",
         "joined", "wake_ns", "worker_items", "items", "short", "inline_ns", "sleeps",
         "site_serial", "site_pool")


@dataclasses.dataclass(frozen=True)
class Built:
    """A model spec compiled and loaded: ``call()`` runs it on ``inputs`` (``res.run``)."""

    name: str
    precision: str  # "fp32" or "int8" (w8a8 with the integer kernels)
    module: Any
    inputs: tuple
    shape: Any
    call: Callable[[], tuple]
    res: Any  # the CompileResult

    @property
    def runner(self) -> Any:
        return self.res._runner


def build(spec: str) -> Built:
    """``name[:int8]`` (a ``bench.tvm_cpu.models()`` key) compiled for the host (fp32, or
    w8a8 on the integer kernels, calibrated on the example input) and loaded."""
    name, _, precision = spec.partition(":")
    precision = precision or "fp32"
    make, inputs, shape = models()[name]
    module = make().eval()
    with torch.no_grad():
        if precision == "int8":
            call, _ = edgecc_fn(module, inputs, INT8, calibration(inputs), integer_kernels=True)
        else:
            call, _ = edgecc_fn(module, inputs, FP32, None)
    # edgecc_fn's callable is ``lambda: res.run(*inputs)``: take its CompileResult
    res = next(c.cell_contents for c in call.__closure__ if hasattr(c.cell_contents, "_runner"))
    return Built(name, precision, module, inputs, shape, call, res)


class Pool:
    """The loaded library's pool knobs and counters (ctypes, the library TVM loaded)."""

    def __init__(self, runner):
        from edgecc.targets.tvm.runner import _POOLS

        self.lib = lib = ctypes.CDLL(runner.library, mode=os.RTLD_NOLOAD | os.RTLD_LOCAL)
        self.configure = _POOLS[runner.library]
        self.inline_ns = ctypes.c_int64.in_dll(lib, "edgecc_pool_inline_ns")
        self.default_inline = self.inline_ns.value
        self.two_ended = ctypes.c_int32.in_dll(lib, "edgecc_pool_two_ended")
        self.timing = ctypes.c_int32.in_dll(lib, "edgecc_pool_timing")
        self.stat = (ctypes.c_int64 * 16).in_dll(lib, "edgecc_pool_stat")
        self.launches = ctypes.c_int64.in_dll(lib, "edgecc_pool_tvm_launches")
        self.serial_work_log2 = ctypes.c_int64.in_dll(lib, "edgecc_x86_serial_work_log2")
        self.adaptive = ctypes.c_int32.in_dll(lib, "edgecc_pool_adaptive")

    def knob(self, symbol: str, ctype: Any = ctypes.c_int32) -> Any:
        """Another global of the library (a kernel knob) as a ctypes value."""
        return ctype.in_dll(self.lib, symbol)

    def mode(self, threads: int, new: bool) -> None:
        """``threads`` threads; ``new``: the pool's defaults (short TVM loops inline,
        two-ended jobs), else as before both (every launch on the pool, one counter)."""
        assert self.configure(-1, threads) == 1  # TVM's loops stay on edgecc's pool
        self.inline_ns.value = self.default_inline if new else 0
        self.two_ended.value = int(new)

    def counters(self) -> dict:
        return dict(zip(STATS, list(self.stat)))

    def reset(self) -> None:
        for i in range(16):
            self.stat[i] = 0


def fifo(on: bool) -> None:
    """Every thread of this process (and those it starts later) SCHED_FIFO 1, or back to
    SCHED_OTHER: the timed part gets both vCPUs of a shared machine (the kernel's RT
    throttling leaves the others 5%), the compiles before it do not hold them."""
    policy = os.SCHED_FIFO if on else os.SCHED_OTHER
    for tid in os.listdir("/proc/self/task"):
        try:
            os.sched_setscheduler(int(tid), policy, os.sched_param(1 if on else 0))
        except OSError:
            pass
