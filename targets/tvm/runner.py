"""Run a TVM artifact in this process: the Relax VM over the exported library.

TVM's worker thread pool belongs to the calling thread, not to a VM, so each runner sets
the pool to its own thread count before it runs (``runtime.config_threadpool``) — a second
runner in the same process with another count gets its own, instead of the first one's.

A call's Python cost is kept small, since the small CNNs run in well under a millisecond:
inputs go to the VM without a copy (``tvm_tensor``), and outputs come back as torch tensors
over the VM's own output buffers (DLPack, no copy) wherever the VM allocates that output
afresh on every call — which the first call checks by running twice and comparing
(``VmRunner._owned``); an output that is a constant or a view of an input is copied, so a
returned tensor is never overwritten by a later call nor a view of the caller's input.
(Before: every output through ``Tensor.numpy()``, ~20 us even for 10 floats: with the
per-call lookups, ~80 us of ResNet-20's ~750.) After the first call a result of fresh
tensors is taken by index (``VmRunner._flat``) and ``CompileResult.run`` skips the input
checks for inputs of the last checked call's dtypes and shapes: between a small CNN's layers
the interpreter runs with cold caches, so every Python step counts several times its cost in
a loop. ResNet-20, 1 thread, caller's CPU time, one process under load: ``res.run`` - bare VM
105 -> 44 us (2 threads, wall: 100 -> 41 us).

Where the library has edgecc's hand-written kernels, the steady state skips the VM too: the
first call records ``main``'s kernel calls (of its second run) into a native plan
(``plan_runner.Plan``: the calls replayed in one packed call with the recorded intermediate
buffers, fresh outputs per call), used for inputs of the recorded shapes and dtypes;
anything else runs on the VM (``EDGECC_PLAN_RUNNER=0``: always the VM). The VM ran 84
instructions for ResNet-20 fp32's 23 kernel calls (108 for w8a8's 24; MobileNetV2-32 177 /
210 for 54 / 55): bench/vm_overhead.py.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch


# TVM's ThreadGroup::AffinityMode kSpecifyThreadShareAllCore: every worker may run on any
# of the listed CPUs (as without affinity), and the pool may have as many workers as CPUs
# listed — other modes cap the count at the cores TVM counts as "big" (half the logical
# CPUs on x86).
SHARE_ALL_CORES = -3


class VmRunner:
    """Loads ``model.so`` once; ``run(*inputs)`` returns a tuple of torch tensors, computed
    with ``num_threads`` TVM workers (0: the pool as it is, TVM's default at first)."""

    def __init__(self, library_path: str, num_threads: int = 0):
        import tvm
        from tvm import relax

        self.num_threads = num_threads
        if _ARRAY_GET is None:
            _ffi_functions()
        # the count the pool reached (first: before the VM, so a pool made now is sized so)
        self._threads = use_threads(num_threads) if num_threads else 0
        self.device = tvm.cpu()
        # dlopen() returns the library already loaded under the same path, so a rebuilt
        # artifact at the same path (compile --force twice in one process) would run the
        # stale code: load a private copy named by its content instead.
        self.library = path = _private_copy(library_path)  # the copy this process loaded
        self.module = tvm.runtime.load_module(path)
        # TVM's generated parallel loops on edgecc's kernel pool (x86_kernel_ffi): one pool in
        # the process. After the load: TVM's loader fills the pointer this replaces.
        self.tvm_loops_on_edgecc_pool = _edgecc_pool(path, self._threads or _pool_threads())
        self.vm = relax.VirtualMachine(self.module, self.device)
        self._main: Any = None  # vm["main"], looked up at the first run (an LLM library has none)
        # per output: True when the VM allocates it afresh on every call (returned as is);
        # learned on the first call
        self._owned: list[bool] | None = None
        # the result's form when every output is owned and DLPack-able (``_flat_form``)
        self._flat: int | None = None
        # the native plan runner (plan_runner.Plan) recorded from the VM's run, where it can
        # replay one (learned at the first call); EDGECC_PLAN_RUNNER=0 keeps the VM (A/B)
        self.use_plan = os.environ.get("EDGECC_PLAN_RUNNER", "1") != "0"
        self.plan: Any = None

    def run(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """The outputs of ``main`` on ``inputs`` (read, never written). Each returned tensor
        is the caller's: no later call writes into it."""
        if self._threads and _pool_threads() != self._threads:
            self._threads = use_threads(self.num_threads)  # another runner changed it
        device = self.device
        args = [tvm_tensor(t if t.is_cpu and not t.requires_grad else t.detach().cpu(), device)
                for t in inputs]
        flat = self._flat
        if flat is not None:  # the steady state: one lookup and one DLPack view an output
            plan = self.plan
            if plan is not None:
                out = plan.run(inputs, args)
                if out is not None:
                    return out
            value = self._main(*args)
            if flat == 1:
                return (_FROM_CAPSULE(_ARRAY_GET(value, 0).__dlpack__()),)
            if flat < 0:
                return (_FROM_CAPSULE(value.__dlpack__()),)
            return tuple([_FROM_CAPSULE(_ARRAY_GET(value, i).__dlpack__()) for i in range(flat)])
        if self._main is None:
            self._main = self.vm["main"]
        value = self._main(*args)
        out = torch_outputs(value)
        if self._owned is None:  # which outputs does each call allocate anew?
            self._learn(inputs, args, out, value)
        return tuple(o if owned else o.clone() for o, owned in zip(out, self._owned))

    def _learn(self, inputs: tuple[torch.Tensor, ...], args: list[Any],
               out: list[torch.Tensor], value: Any) -> None:
        """At the first call (``out``: its outputs, ``value``: the VM's result): run ``main``
        again while they are held, to learn which outputs it allocates afresh (``_owned``,
        ``_flat``), recording that run's kernel calls, of which the native plan is made
        where one can be (``plan_runner``; the VM stays the path wherever not)."""
        recording = None
        if self.use_plan:
            from edgecc.targets.tvm import plan_runner

            again, recording = plan_runner.recorded_run(self, inputs, args)
        else:
            again = self._main(*args)
        self._owned = [a.numel() > 0 and a.data_ptr() != b.data_ptr()
                       for a, b in zip(out, torch_outputs(again))]
        self._flat = _flat_form(value, self._owned)
        if self._flat is not None and recording is not None:
            try:
                self.plan = plan_runner.Plan.record(inputs, args, again, recording)
            except Exception:  # noqa: BLE001
                self.plan = None


def _flat_form(value: Any, owned: list[bool]) -> int | None:
    """How ``run`` may take a result shaped like ``value`` without the general walk: -1 for
    a bare tensor, ``n`` for a flat array of ``n`` tensors, when every output is allocated
    afresh per call (``owned``) and torch takes each by DLPack; else None (``torch_outputs``
    and the copies every call).

    Between the layers of a small CNN the interpreter runs with cold caches, so each Python
    step of a call costs several times its cost in a loop: the general walk (the array's
    Python ``__iter__`` / ``__getitem__`` / index checks, two generator expressions) was
    ~25 us of ResNet-20's ~700 us call at 1 thread, the input's view and the output's
    another ~15."""
    if not all(owned):
        return None
    items = [value] if hasattr(value, "__dlpack__") else list(value)
    if not items or not all(hasattr(v, "__dlpack__") for v in items):
        return None  # empty, or nested tuples
    try:
        for v in items:
            _FROM_CAPSULE(v.__dlpack__())
    except (RuntimeError, TypeError, BufferError):  # a dtype torch lacks
        return None
    return -1 if items[0] is value else len(items)


def torch_outputs(value: Any) -> list[torch.Tensor]:
    """The VM's result (a tensor, or nested tuples of them) as torch tensors over the same
    memory (DLPack; a tensor torch cannot take so is copied through numpy)."""
    if hasattr(value, "__dlpack__"):
        try:  # torch.from_dlpack's checks cost ~5 us a tensor; a CPU capsule needs none
            return [_FROM_CAPSULE(value.__dlpack__())]
        except (RuntimeError, TypeError, BufferError):  # e.g. a dtype torch lacks
            return [torch.from_numpy(value.numpy())]
    out: list[torch.Tensor] = []
    for item in value:
        out.extend(torch_outputs(item))
    return out


_FROM_CAPSULE = getattr(torch._C, "_from_dlpack", torch.utils.dlpack.from_dlpack)
_ARRAY_GET: Any = None  # tvm_ffi's ffi.ArrayGetItem (no Python index checks), set at import


def tvm_tensor(t: torch.Tensor, device: Any) -> Any:
    """``t`` (on the CPU) for the VM: a zero-copy view when it is contiguous and 64-byte
    aligned (as TVM's kernels assume; torch allocates so), else a copy. The copy was half of
    a call's Python cost (~35 of ~70 us on a one-layer model); copying SmolLM2-135M's KV
    cache (2 x 3.9 MB) into TVM tensors took ~1 ms of every decode step."""
    if _FROM_DLPACK is None:
        _ffi_functions()
    if t.is_cpu:
        try:  # tvm_ffi checks contiguity and the alignment itself
            return _FROM_DLPACK(t, require_alignment=64, require_contiguous=True)
        except (RuntimeError, BufferError, TypeError):  # not contiguous / aligned
            pass
    import tvm

    return tvm.runtime.tensor(np.ascontiguousarray(t.detach().cpu().numpy()), device)


def _ffi_functions() -> None:
    global _ARRAY_GET, _FROM_DLPACK
    import tvm  # noqa: F401  (registers tvm.runtime.Tensor: what from_dlpack returns)
    import tvm_ffi

    _ARRAY_GET = tvm_ffi.get_global_func("ffi.ArrayGetItem")
    _FROM_DLPACK = tvm_ffi.from_dlpack


_FROM_DLPACK: Any = None


def use_threads(count: int) -> int:
    """Give TVM's thread pool (of the calling thread) ``count`` workers; returns how many
    it has now.

    The pool is made at its first use with the size asked then (TVM's default otherwise:
    half the logical CPUs on x86) and cannot grow past it afterwards: asking for more
    warns, naming both counts, and runs with what the pool has."""
    import warnings

    import tvm_ffi

    cpus = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
        else list(range(os.cpu_count() or 1))
    listed = [str(cpus[i % len(cpus)]) for i in range(max(count, len(cpus)))]
    tvm_ffi.get_global_func("runtime.config_threadpool")(SHARE_ALL_CORES, count, listed)
    got = _pool_threads()
    for configure in _POOLS.values():  # edgecc's kernel pools follow TVM's pool size
        configure(-1, got)
    if got != count:
        warnings.warn(f"TVM's thread pool in this process runs {got} worker thread(s), not "
                      f"the {count} asked for (the pool was sized at its first use, or this "
                      f"machine has {len(cpus)} CPU(s))", stacklevel=2)
    return got


def _pool_threads() -> int:
    global _NUM_THREADS
    if _NUM_THREADS is None:
        import tvm_ffi

        _NUM_THREADS = tvm_ffi.get_global_func("runtime.NumThreads")
    return int(_NUM_THREADS())


_NUM_THREADS: Any = None  # TVM's runtime.NumThreads, looked up once (~1.5 us a lookup)


def _edgecc_pool(path: str, threads: int) -> bool:
    """Run the loaded library's TVM-generated parallel loops on its hand-written kernels'
    pool (``edgecc_pool_configure``, x86_kernel_ffi) with ``threads`` threads; True when they
    do now. A library without hand-written kernels has no such pool and keeps TVM's (the only
    one then); one whose code uses TVM's barrier keeps TVM's too (False).

    Before, a process ran two pools: TVM's workers (its parallel loops) and edgecc's (the
    kernels), three spinning threads on two cores, and BERT fp32 ran 4.2 or 7.1 ms from run to
    run. The library is registered so that ``use_threads`` sizes its pool as TVM's (the pool
    no longer asks TVM's size on every job). ``EDGECC_ONE_POOL=0`` leaves TVM's loops on
    TVM's pool (as before; for A/B measurements: bench/tvm_runtime.py --pools)."""
    import ctypes

    if path not in _POOLS:
        try:  # the library TVM loaded (RTLD_NOLOAD: never a second copy)
            configure = ctypes.CDLL(path, mode=os.RTLD_NOLOAD | os.RTLD_LOCAL)\
                .edgecc_pool_configure
        except (OSError, AttributeError):
            return False
        configure.argtypes, configure.restype = [ctypes.c_int32, ctypes.c_int32], ctypes.c_int
        _POOLS[path] = configure
    return bool(_POOLS[path](int(os.environ.get("EDGECC_ONE_POOL", "1") != "0"), threads))


_POOLS: dict[str, Any] = {}  # library path -> its edgecc_pool_configure (ctypes)


def _private_copy(path: str) -> str:
    import hashlib
    import shutil
    import tempfile

    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()[:16]
    directory = os.path.join(tempfile.gettempdir(), f"edgecc-libs-{os.getuid()}")
    os.makedirs(directory, exist_ok=True)
    target = os.path.join(directory, f"{digest}-{os.path.basename(path)}")
    if not os.path.exists(target):
        tmp = f"{target}.{os.getpid()}.tmp"
        shutil.copyfile(path, tmp)
        os.replace(tmp, target)
    return target


def _flatten(value: Any) -> list[np.ndarray]:
    if hasattr(value, "numpy"):
        return [value.numpy()]
    out: list[np.ndarray] = []
    for item in value:
        out.extend(_flatten(item))
    return out
