"""A model's run as one native call: the kernel calls of one run of the Relax VM's ``main``
recorded (``vm.set_instrument``) and replayed by the plan runner of the hand-written kernels'
library (``plan_runner_source``), with the intermediate buffers that run used held fixed —
as TVM's AOT executor runs a model, without the VM's per-run instructions
(``vm.builtin.alloc_storage`` / ``alloc_tensor``, ``null_value``, ``make_tuple``, the input
checks: 84 instructions for ResNet-20 fp32's 23 kernel calls, 108 for w8a8's 24).

The runner's first call runs ``main`` twice (to learn which outputs each run allocates
afresh); the second run is recorded (``recorded_run``) and ``Plan.record`` makes the plan of
it. It returns None (the runner keeps the VM) unless ``main`` is one straight line of packed
calls (``straight_line``: no branch, no call of another VM function), every instruction of
the recorded run is a kernel call or one of ``PLANNED_BUILTINS`` (allocation, the input
checks, reference drops), the library has the plan runner, and every tensor a call reads or
writes is either an input or an output of the run (exactly: replaced on each run), or memory
neither overlaps (an intermediate or a constant: held by the plan). Outputs are allocated
afresh for every run (torch, 64-byte aligned as TVM's), so a returned tensor is the
caller's; inputs are passed as the VM gets them, and a run whose inputs' shapes or dtypes
differ from the recorded ones goes to the VM (``Plan.run`` returns None).

Measured (bench/vm_overhead.py, Zen 4 KVM under load 4-5.5, interleaved, paired per round;
outputs bit-identical): the caller's CPU time at 1 thread, plan/VM ResNet-20 fp32 0.979
(p10-p90 0.82-1.15), w8a8 0.972 (0.83-1.13), MobileNetV2-32 fp32 0.974, w8a8 0.898 (300
rounds); ResNet-20 w8a8 at 1 thread, medians: runner with the plan 236.8 us, the bare VM
242.6, the kernel calls alone timed in place 235.4 — the VM's ~5-10 us a run outside the
kernels is gone, and nothing larger was left (the s15 estimate of ~25 us was the runner's
Python before its DLPack fast path). At 2 threads (wall) the machine's load left p10-p90
of 0.1-8x; medians plan/VM 0.97 (ResNet-20 w8a8), 1.00 (fp32), 0.94 / 0.98 (MobileNetV2-32).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import tvm  # noqa: F401  (registers tvm.runtime.Tensor: what tvm_ffi.from_dlpack returns)
import tvm_ffi

# The VM builtins a planned run may contain: their effects are fixed for a static-shape
# ``main`` (the buffers they allocate, and reshaped views of them, are the recorded ones,
# held by the plan — a view of an input or an output is refused by ``Plan.record``; the
# checks hold for inputs of the recorded shapes and dtypes, which ``Plan.run`` checks).
PLANNED_BUILTINS = frozenset({
    "vm.builtin.check_tensor_info", "vm.builtin.match_shape", "vm.builtin.alloc_storage",
    "vm.builtin.alloc_tensor", "vm.builtin.null_value", "vm.builtin.make_tuple",
    "vm.builtin.reshape",
})


class Plan:
    """The recorded calls of one run, held by the library's plan runner."""

    def __init__(self, functions: tuple[Any, Any, Any], handle: int,
                 inputs: list[tuple[tuple[int, ...], torch.dtype]],
                 outputs: list[tuple[tuple[int, ...], torch.dtype]], steps: int):
        self._run, self._free, _ = functions
        self.handle = handle
        self.inputs = inputs      # (shape, dtype) of each input, as recorded
        self.outputs = outputs    # (shape, dtype) of each output, allocated per run
        self.steps = steps        # kernel calls per run

    def __del__(self):
        try:
            self._free(self.handle)
        except Exception:  # noqa: BLE001 (interpreter shutdown)
            pass

    def run(self, inputs: tuple[torch.Tensor, ...], args: list[Any]) -> tuple | None:
        """The outputs (fresh torch tensors) for ``inputs`` (as given to the runner) and
        ``args`` (their VM tensors); None when an input's shape or dtype is not the
        recorded one (the VM checks such a run)."""
        if len(inputs) != len(self.inputs):
            return None
        for t, (shape, dtype) in zip(inputs, self.inputs):
            if t.dtype != dtype or t.shape != shape:
                return None
        outs = [torch.empty(shape, dtype=dtype) for shape, dtype in self.outputs]
        self._run(self.handle, *args, *[_FROM_DLPACK(o) for o in outs])
        return tuple(outs)

    @staticmethod
    def record(inputs: tuple[torch.Tensor, ...], args: list[Any], value: Any,
               recording: Recording) -> Plan | None:
        """The plan of a run of ``main`` on ``args`` (``inputs``' VM tensors) that returned
        ``value``, its calls in ``recording`` (``recorded_run``), or None where the run cannot
        be replayed so (see the module's docstring)."""
        functions, calls = recording.functions, recording.calls
        results = [value] if hasattr(value, "__dlpack__") else list(value)
        if recording.unplanned or not calls or not all(hasattr(v, "__dlpack__") for v in results):
            return None
        slots = [*args, *results]  # the run's tensors replaced on every run
        spans = [_span(t) for t in slots]
        written = [False] * len(slots)
        steps = []
        for func, call_args in calls:
            binds: list[int] = []
            held: list[Any] = []
            for pos, arg in enumerate(call_args):
                if isinstance(arg, torch.Tensor) or not hasattr(arg, "data_ptr"):
                    if any(arg is a for a in args):
                        return None  # an input passed on as an object
                    held.append(arg)
                    continue
                span = _span(arg)
                slot = next((i for i, s in enumerate(spans) if s == span), None)
                if slot is None:
                    if any(_overlap(span, s) for s in spans):
                        return None  # a view into an input or an output
                    held.append(arg)
                    continue
                binds += [pos, slot]
                written[slot] = True
                held.append(None)
            steps.append((func, binds, held))
        if not all(written[len(args):]):
            return None  # an output no call writes (a constant, an input)
        new, step_fn = functions[2], recording.step
        handle = int(new())
        plan = Plan(functions, handle, [(tuple(t.shape), t.dtype) for t in inputs],
                    [(tuple(r.shape), _torch_dtype(r)) for r in results], len(steps))
        try:
            for func, binds, held in steps:
                step_fn(handle, func, len(binds) // 2, *binds, *held)
        except Exception:  # noqa: BLE001 (an argument the plan cannot hold: keep the VM)
            return None
        if any(d is None for _, d in plan.outputs):
            return None
        return plan


class Recording:
    """The kernel calls of one run of ``main`` (the VM's instrument, ``vm.set_instrument``):
    each call's function and arguments, and the VM builtins it ran outside
    ``PLANNED_BUILTINS``; with the library's plan functions (``Plan.record``'s material)."""

    def __init__(self, functions: tuple[Any, Any, Any], step: Any):
        self.functions = functions  # the library's (run, free, new) plan functions
        self.step = step  # edgecc_plan_step
        self.calls: list[tuple[Any, list[Any]]] = []
        self.unplanned: list[str] = []

    def instrument(self, func: Any, symbol: Any, before: bool, _ret: Any, *call_args: Any) -> int:
        if before:
            try:  # never fails the run it watches: a call it cannot note leaves no plan
                name = str(symbol)
                if name.startswith("vm.builtin."):
                    if name not in PLANNED_BUILTINS:
                        self.unplanned.append(name)
                else:
                    self.calls.append((func, list(call_args)))
            except Exception:  # noqa: BLE001
                self.unplanned.append("(unrecorded)")
        return 0


def recorded_run(runner: Any, inputs: tuple[torch.Tensor, ...], args: list[Any]
                 ) -> tuple[Any, Recording | None]:
    """``runner``'s ``main`` on ``args`` (``inputs``' VM tensors): its value, and its kernel
    calls recorded where a plan could be made of them (every input a tensor, the library
    has the plan runner, ``main`` is a ``straight_line``), else None (a plain run)."""
    recording = None
    try:  # (an input the VM gets as an object, as state, is not replayable)
        if all(isinstance(t, torch.Tensor) for t in inputs):
            functions = _plan_functions(runner.module)
            if functions is not None and straight_line(_vm_text(runner.module)):
                recording = Recording(functions, _step_function(runner.module))
                runner.vm.set_instrument(recording.instrument)
    except Exception:  # noqa: BLE001 (no instrument: a plain run, no plan)
        recording = None
    if recording is None:
        return runner._main(*args), None
    try:
        value = runner._main(*args)
    finally:
        runner.vm.set_instrument(None)
    return value, recording


def straight_line(text: str | None, function: str = "main") -> bool:
    """Whether ``function`` of a VM executable (``text``: its ``as_text``) is one straight
    line of calls of packed functions ending in ``ret``: no branch (``If`` / ``Goto``: the
    recorded run would replay one side of a data-dependent choice) and no call of another
    VM function (whose instructions the instrument does not show)::

        @main:
          call  vm.builtin.check_tensor_info in: %0, i2, c[0], c[1] dst: %void
          call  fused_relu_add   in: %0, %2       dst: %void
          ret   %3
        @fused_relu_add packed_func;
    """
    if not text:
        return False
    lines = text.splitlines()
    try:
        first = lines.index(f"@{function}:") + 1
    except ValueError:
        return False
    packed = {ln[1:-len(" packed_func;")] for ln in lines
              if ln.startswith("@") and ln.endswith(" packed_func;")}
    for line in lines[first:]:
        if not line.strip():
            break
        op, _, rest = line.strip().partition(" ")
        if op == "ret":
            return True
        if op != "call" or rest.split()[0] not in packed:
            return False
    return False


def _vm_text(module: Any) -> str | None:
    try:
        return str(module["as_text"]())
    except Exception:  # noqa: BLE001 (an executable without its text: no plan)
        return None


def _span(t: Any) -> tuple[int, int, tuple[int, ...], str, tuple[int, ...] | None]:
    """A tensor's memory and layout: (address, bytes, shape, dtype, strides)."""
    shape = tuple(int(d) for d in t.shape)
    n = 1
    for d in shape:
        n *= d
    dtype = t.dtype
    itemsize = (dtype.bits * dtype.lanes + 7) // 8
    strides = t.strides
    return (int(t.data_ptr()), n * itemsize, shape, str(dtype),
            tuple(strides) if strides is not None else None)


def _overlap(a: tuple, b: tuple) -> bool:
    return a[0] < b[0] + max(b[1], 1) and b[0] < a[0] + max(a[1], 1)


_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
           "float64": torch.float64, "int8": torch.int8, "uint8": torch.uint8,
           "int16": torch.int16, "int32": torch.int32, "int64": torch.int64, "bool": torch.bool}


def _torch_dtype(t: Any) -> torch.dtype | None:
    return _DTYPES.get(str(t.dtype))


def _plan_functions(module: Any) -> tuple[Any, Any, Any] | None:
    """The library's (run, free, new) plan functions, or None (a library without
    hand-written kernels, or built before the plan runner)."""
    try:
        found = [module.get_function(f"edgecc_plan_{n}", query_imports=True)
                 for n in ("run", "free", "new")]
    except (AttributeError, RuntimeError):
        return None
    return None if any(f is None for f in found) else tuple(found)


def _step_function(module: Any) -> Any:
    return module.get_function("edgecc_plan_step", query_imports=True)


# a fresh output for the plan runner (tvm_ffi checks the alignment and contiguity), bound once
_FROM_DLPACK = functools.partial(tvm_ffi.from_dlpack, require_alignment=64,
                                 require_contiguous=True)
