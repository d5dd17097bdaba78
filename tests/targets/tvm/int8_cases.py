"""Random operands for the x86 int8 / AMX kernel tests: int8 tensors and requantizing
epilogues drawn from one generator (so a test's draws, and its cases, stay as written)."""

from __future__ import annotations

import numpy as np


def random_int8(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.integers(-128, 128, shape).astype(np.int8)


def random_requant(rng: np.random.Generator, n: int):
    """A requantizing ``x86_int8.Epilogue`` for ``n`` channels (31-bit multipliers, shifts
    36-41, clamp [-100, 120], output zero point 3)."""
    from edgecc.targets.tvm import x86_int8

    shift = rng.integers(36, 42, n).astype(np.int64)
    return x86_int8.Epilogue(
        off=rng.integers(-5000, 5000, n).astype(np.int32), requant=True,
        mult=rng.integers(2 ** 30, 2 ** 31, n).astype(np.int64),
        add=(np.int64(1) << (shift - 1)) + rng.integers(-2 ** 38, 2 ** 38, n),
        shift=shift, lo=-100, hi=120, zy=3)


def build_and_load(module, path: str):
    """``module`` built for this CPU (2 threads) into ``path`` and loaded: (library, VM)."""
    import tvm
    from tvm import relax

    from edgecc.targets.tvm import lowering

    lowering.build(module, lowering.llvm_target(None, 2), path)
    lib = tvm.runtime.load_module(path)
    return lib, relax.VirtualMachine(lib, tvm.cpu())
