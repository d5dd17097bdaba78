"""Fresh random inputs for verification, and loading user inputs from ``.npz`` files.

User files are read without pickle (``allow_pickle=False``), and each array's header is
checked against the bytes the file really holds before numpy allocates the array: a
header that declares a huge shape over a few bytes of data is refused, not believed.
"""

from __future__ import annotations

import math
import os
import zipfile
from collections.abc import Sequence
from typing import IO, Any

import numpy as np
import torch

from edgecc.errors import InputSpecError, one_line

# deflate cannot compress better than ~1032:1; an .npz member declaring more is lying
_MAX_DEFLATE_RATIO = 1032
NUMERIC_KINDS = "biufc"  # bool, signed, unsigned, float, complex


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
        _check_npz(path)
        with np.load(path, allow_pickle=False) as data:
            if not isinstance(data, np.lib.npyio.NpzFile):
                raise ValueError("a single array (.npy), not an .npz archive")
            arrays = {k: data[k] for k in data.files}
    except InputSpecError:
        raise
    except Exception as exc:
        raise InputSpecError(
            f"cannot read inputs '{path}': expected an .npz written by numpy.savez "
            f"({one_line(exc)})"
        ) from exc
    for name, arr in arrays.items():
        _check_dtype(arr, f"'{path}' array '{name}'")
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
    return tuple(_tensor(a, path) for a in ordered)


def _tensor(arr: np.ndarray, source: str) -> torch.Tensor:
    try:
        return torch.from_numpy(np.ascontiguousarray(arr))
    except TypeError as exc:  # a numeric numpy dtype torch has no tensor type for
        raise InputSpecError(f"'{source}': arrays of {arr.dtype} cannot be model inputs; "
                             f"save them as float32 or int64 ({one_line(exc)})") from exc


def _check_dtype(arr: np.ndarray, what: str) -> None:
    if arr.dtype.kind not in NUMERIC_KINDS or arr.dtype.fields is not None:
        raise InputSpecError(f"{what} holds {arr.dtype} values; model inputs are numbers: "
                             "save float32 / int64 arrays")


def _check_npy_header(f: IO[bytes], available: int, what: str) -> None:
    """Read a .npy header from ``f`` and refuse it unless the data it declares fits in the
    ``available`` bytes of the file (and the dtype is numeric). Nothing is allocated."""
    start = f.tell() if f.seekable() else 0
    version = np.lib.format.read_magic(f)
    if version == (1, 0):
        shape, _, dtype = np.lib.format.read_array_header_1_0(f)
    elif version == (2, 0):
        shape, _, dtype = np.lib.format.read_array_header_2_0(f)
    else:  # format 3.0 (utf-8 field names): numpy reads it with its private reader
        reader = getattr(getattr(np.lib, "_format_impl", None), "_read_array_header", None)
        if reader is None:
            raise InputSpecError(f"{what}: .npy format {version} is not supported; "
                                 "save it with numpy.save")
        shape, _, dtype = reader(f, version)
    header = (f.tell() - start) if f.seekable() else 0
    if dtype.hasobject or dtype.kind not in NUMERIC_KINDS or dtype.fields is not None:
        raise InputSpecError(f"{what} holds {dtype} values (not numbers); "
                             "save float32 / int64 arrays with numpy.save / numpy.savez")
    if any(not isinstance(d, int) or d < 0 for d in shape):
        raise InputSpecError(f"{what} declares an invalid shape {list(shape)}")
    nbytes = math.prod(shape) * dtype.itemsize
    if nbytes > available - header:
        raise InputSpecError(
            f"{what} declares shape {list(shape)} ({nbytes} bytes of {dtype}) but holds "
            f"{max(available - header, 0)} bytes of data: the file is truncated or corrupt")


def _check_npz(path: str) -> None:
    """Every member's header against its size, and its size against its compressed size."""
    if not zipfile.is_zipfile(path):
        return  # np.load says what it is (a .npy, or neither)
    with zipfile.ZipFile(path) as archive:
        for info in archive.infolist():
            if not info.filename.endswith(".npy"):
                continue
            what = f"'{path}' member '{info.filename}'"
            if info.file_size > info.compress_size * _MAX_DEFLATE_RATIO + 4096:
                raise InputSpecError(f"{what} declares {info.file_size} bytes from "
                                     f"{info.compress_size} compressed: corrupt")
            with archive.open(info) as f:
                _check_npy_header(f, info.file_size, what)


def _read_npy(path: str) -> np.ndarray:
    with open(path, "rb") as f:
        _check_npy_header(f, os.fstat(f.fileno()).st_size, f"'{path}'")
    arr = np.load(path, allow_pickle=False)
    if not isinstance(arr, np.ndarray):
        raise ValueError("an .npz archive, not a single array (.npy)")
    return arr


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
    if counts == {0}:
        raise InputSpecError(f"'{source}' holds no batches (a stack of 0); "
                             "give at least one batch per input")
    return [tuple(_tensor(b[i], source) for b in per_input) for i in range(counts.pop())]


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
        return _read_npy(path)
    except InputSpecError:
        raise
    except Exception as exc:
        raise InputSpecError(f"cannot read '{path}': expected a .npy written by numpy.save "
                             f"({one_line(exc)})") from exc


def _npz_arrays(path: str, specs: Sequence[Any]) -> list[np.ndarray]:
    return [t.numpy() for t in load_npz_inputs(path, specs)]
