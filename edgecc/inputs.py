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


def split_batches(arrays: Sequence[np.ndarray], specs: Sequence[Any], source: str
                  ) -> list[tuple[torch.Tensor, ...]]:
    """Batches from one array per input: each array is one batch (the input's rank), a
    stack of batches (one more leading dimension), or samples along a batch dimension that
    is a multiple of the model's static batch size (split into batches of that size)."""
    per_input: list[list[np.ndarray]] = []
    for arr, spec in zip(arrays, specs):
        rank = len(spec.shape)
        if arr.ndim == rank + 1:
            per_input.append(list(arr))
        elif arr.ndim == rank:
            b = spec.shape[0] if rank else None
            if isinstance(b, int) and b > 0 and arr.shape[0] != b and arr.shape[0] % b == 0:
                per_input.append([arr[i:i + b] for i in range(0, arr.shape[0], b)])
            else:
                per_input.append([arr])
        else:
            raise InputSpecError(
                f"'{source}': array for input '{spec.name}' has shape {list(arr.shape)}; "
                f"expected {spec.describe()} (one batch) or a stack of such batches")
    counts = {len(b) for b in per_input}
    if len(counts) != 1:
        raise InputSpecError(f"'{source}': the inputs hold different numbers of batches "
                             f"({', '.join(str(len(b)) for b in per_input)})")
    return [tuple(torch.from_numpy(np.ascontiguousarray(b[i])) for b in per_input)
            for i in range(counts.pop())]


def load_calibration(path: str, specs: Sequence[Any]) -> list[tuple[torch.Tensor, ...]]:
    """Calibration batches from ``path``:

    * an ``.npz`` with one array per input (named after it, or in order);
    * a folder of ``.npz`` files (one or more batches each);
    * a folder of ``.npy`` files: for a one-input model, any names (sorted); otherwise one
      file per input named ``<input>.npy``.

    Arrays are split into batches by :func:`split_batches`.
    """
    if os.path.isdir(path):
        npz = sorted(f for f in os.listdir(path) if f.endswith(".npz"))
        npy = sorted(f for f in os.listdir(path) if f.endswith(".npy"))
        if npz:
            return [b for f in npz for b in split_batches(
                _npz_arrays(os.path.join(path, f), specs), specs, f)]
        if not npy:
            raise InputSpecError(f"calibration folder '{path}' holds no .npz or .npy files")
        if len(specs) == 1:
            return [b for f in npy for b in split_batches(
                [_load_npy(os.path.join(path, f))], specs, f)]
        missing = [s.name for s in specs if f"{s.name}.npy" not in npy]
        if missing:
            raise InputSpecError(f"calibration folder '{path}' needs one .npy per input; "
                                 f"missing {', '.join(m + '.npy' for m in missing)}")
        return split_batches([_load_npy(os.path.join(path, f"{s.name}.npy")) for s in specs],
                             specs, path)
    return split_batches(_npz_arrays(path, specs), specs, path)


def _load_npy(path: str) -> np.ndarray:
    try:
        return np.load(path, allow_pickle=False)
    except Exception as exc:
        raise InputSpecError(f"cannot read '{path}': expected a .npy written by numpy.save "
                             f"({exc})") from exc


def _npz_arrays(path: str, specs: Sequence[Any]) -> list[np.ndarray]:
    return [t.numpy() for t in load_npz_inputs(path, specs)]
