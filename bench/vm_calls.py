"""The calls a compiled model's VM makes in one run, for the per-call benches
(``bench/tvm_runtime.py``, ``bench/x86_fp32_profile.py``). No side effects on import: the
benches set their own thread counts before TVM starts."""

from __future__ import annotations


def kernel_calls(runner, inputs) -> list:
    """(function, symbol, arguments) of every call the VM makes in one run."""
    from edgecc.targets.tvm.runner import tvm_tensor

    calls = []

    def instrument(func, symbol, before, _ret, *args):
        if before:
            calls.append((func, str(symbol), list(args)))
        return 0

    runner.vm.set_instrument(instrument)
    try:
        runner.vm["main"](*[tvm_tensor(t, runner.device) for t in inputs])
    finally:
        runner.vm.set_instrument(None)
    return calls
