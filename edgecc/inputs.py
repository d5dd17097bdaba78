"""Fresh random inputs for verification, and loading user inputs from ``.npz`` files."""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from edgecc.errors import InputSpecError


def random_like(val: Any, example: torch.Tensor | None = None, *,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """A random tensor with ``val``'s (hinted) shape and dtype.

    Integer inputs (token ids, indices) are drawn from the range the example input spans,
    so an embedding lookup stays in bounds; floats are standard normal.
    """
    from edgecc.program import concrete_shape

    shape = concrete_shape(val.shape)
    dtype = val.dtype
    if dtype == torch.bool:
        return torch.randint(0, 2, shape, generator=generator).bool()
    if dtype.is_floating_point:
        return torch.randn(shape, generator=generator).to(dtype)
    lo, hi = 0, 16
    if example is not None and example.numel():
        lo, hi = int(example.min()), int(example.max()) + 1
    return torch.randint(lo, max(hi, lo + 1), shape, generator=generator, dtype=dtype)


def fresh_inputs(program: Any, seed: int) -> tuple[torch.Tensor, ...]:
    """Random inputs shaped like the program's example inputs, never the examples themselves."""
    gen = torch.Generator().manual_seed(seed)
    return tuple(random_like(ex, ex, generator=gen) for ex in program.example_inputs)


def load_npz_inputs(path: str, specs: Sequence[Any]) -> tuple[torch.Tensor, ...]:
    """Inputs from an ``.npz`` file, matched to ``specs`` by name, else by position."""
    if not os.path.isfile(path):
        raise InputSpecError(f"inputs file '{path}' does not exist")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: data[k] for k in data.files}
    except Exception as exc:
        raise InputSpecError(
            f"cannot read inputs '{path}': expected an .npz written by numpy.savez ({exc})"
        ) from exc
    names = [s.name for s in specs]
    if set(names) <= set(arrays):
        ordered = [arrays[n] for n in names]
    elif len(arrays) == len(specs):
        ordered = [arrays[k] for k in arrays]  # savez(a, b) names them arr_0, arr_1, ...
    else:
        raise InputSpecError(
            f"'{path}' holds {sorted(arrays)} but the model takes {names}: "
            "save one array per input, named after it"
        )
    return tuple(torch.from_numpy(np.ascontiguousarray(a)) for a in ordered)
