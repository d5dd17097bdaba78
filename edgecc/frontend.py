"""Frontends: turn a user's model into a ``Program``.

* ``trace(module, example_inputs, dynamic_shapes=...)`` -- an ``nn.Module`` through
  ``torch.export``;
* ``load(path)`` -- a ``.pt2`` archive written by ``torch.export.save``. Pickled ``.pt`` /
  ``.pth`` files are refused unless the caller says it trusts them, because unpickling
  runs arbitrary code; even then, state dicts are read with ``weights_only=True``.
"""

from __future__ import annotations

import os
import zipfile
from collections.abc import Mapping, Sequence
from typing import Any

import torch

from edgecc.errors import InputSpecError, ModelLoadError, one_line
from edgecc.program import Program

SUPPORTED_SUFFIXES = (".pt2", ".onnx", ".pt", ".pth")

PT2_HOWTO = (
    "save a .pt2 instead: torch.export.save(torch.export.export(model, example_inputs), "
    "'model.pt2')"
)


def trace(
    module: torch.nn.Module,
    example_inputs: Sequence[Any] = (),
    *,
    example_kwargs: Mapping[str, Any] | None = None,
    dynamic_shapes: Any = None,
    strict: bool = False,
) -> Program:
    """Trace ``module`` with ``torch.export`` into a ``Program`` (eval mode, ATen IR).

    ``dynamic_shapes`` is passed to ``torch.export.export``; the dimensions it declares
    dynamic stay symbolic in the program and in its input specs.
    """
    if not isinstance(module, torch.nn.Module):
        raise ModelLoadError(
            f"trace() needs a torch.nn.Module, got {type(module).__name__}"
        )
    if isinstance(example_inputs, torch.Tensor):
        example_inputs = (example_inputs,)
    if not isinstance(example_inputs, (tuple, list)):
        raise InputSpecError(
            "example_inputs must be a tuple of tensors, e.g. (torch.randn(1, 3, 224, 224),)"
        )
    was_training = module.training
    module.eval()
    try:
        exported = torch.export.export(
            module,
            tuple(example_inputs),
            kwargs=dict(example_kwargs or {}),
            dynamic_shapes=dynamic_shapes,
            strict=strict,
        )
    except Exception as exc:
        raise ModelLoadError(
            f"torch.export could not trace {type(module).__name__} with the given example "
            f"inputs: {one_line(exc)}"
        ) from exc
    finally:
        module.train(was_training)
    program = Program.from_exported(exported, source=type(module).__name__)
    program.rename_dims(_dim_names(dynamic_shapes, program, example_kwargs))
    return program


def _dim_names(dynamic_shapes: Any, program: Program, kwargs: Mapping[str, Any] | None
               ) -> dict[str, str]:
    """Map the export's symbols (``s31``) to the user's ``Dim`` names (``batch``)."""
    if dynamic_shapes is None:
        return {}
    if isinstance(dynamic_shapes, Mapping):
        per_input = [dynamic_shapes.get(s.name) for s in program.input_specs]
    else:
        per_input = list(dynamic_shapes) + [None] * len(program.input_specs)
        if kwargs:
            per_input = list(dynamic_shapes)[: len(program.input_specs)]
    names: dict[str, str] = {}
    for spec, dims in zip(program.input_specs, per_input):
        items = dims.items() if isinstance(dims, Mapping) else enumerate(dims or ())
        for axis, dim in items:
            name = getattr(dim, "__name__", None)
            if name and axis < len(spec.shape) and isinstance(spec.shape[axis], str):
                names.setdefault(spec.shape[axis], name)
    return names


def load(
    path: str | os.PathLike[str],
    *,
    trust_pickle: bool = False,
    example_inputs: Sequence[torch.Tensor] | None = None,
    input_shapes: Mapping[str, Sequence[int]] | None = None,
) -> Program:
    """Load a model file into a ``Program``.

    ``.onnx``: imported by edgecc's own ONNX importer; ``input_shapes`` fixes named inputs'
    shapes (other symbolic dimensions stay dynamic).

    ``.pt2``: a ``torch.export`` archive. ``.pt``/``.pth``: a pickled ``nn.Module``, only
    with ``trust_pickle=True`` and ``example_inputs`` (pickles can run code).
    """
    path = os.fspath(path)
    if not os.path.exists(path):
        raise ModelLoadError(f"model file '{path}' does not exist")
    if os.path.isdir(path):
        raise ModelLoadError(f"'{path}' is a directory; give the model file itself")
    suffix = os.path.splitext(path)[1].lower()
    if suffix == ".pt2":
        return _load_pt2(path)
    if suffix in (".pt", ".pth"):
        return _load_pickle(path, trust_pickle, example_inputs)
    if input_shapes and suffix == ".pt2":
        raise InputSpecError(
            f"'{path}': input shapes are fixed when the .pt2 is exported; --input-shape "
            "applies to .onnx and pickled models"
        )
    if suffix == ".onnx":
        from edgecc.onnx_import import load_onnx

        return load_onnx(path, input_shapes=input_shapes)
    raise ModelLoadError(
        f"'{path}': unknown model file extension '{suffix or '(none)'}'; "
        f"edgecc reads {', '.join(SUPPORTED_SUFFIXES)}"
    )


def _load_pt2(path: str) -> Program:
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(
            f"'{path}' is not a torch.export archive (truncated or not a zip file); "
            "re-create it with torch.export.save"
        )
    try:
        exported = torch.export.load(path)
    except Exception as exc:
        raise ModelLoadError(
            f"'{path}' is a corrupt torch.export archive ({one_line(exc)}); "
            "re-create it with torch.export.save"
        ) from exc
    return Program.from_exported(exported, source=os.path.basename(path))


def _load_pickle(
    path: str, trust_pickle: bool, example_inputs: Sequence[torch.Tensor] | None
) -> Program:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:
        if not trust_pickle:
            if "weights_only" in str(exc) or "Unsupported global" in str(exc):
                raise ModelLoadError(
                    f"'{path}' is a pickled model; loading it would run arbitrary code. "
                    f"{PT2_HOWTO[0].upper() + PT2_HOWTO[1:]}, or pass --trust-pickle "
                    "(trust_pickle=True) if you trust the file"
                ) from exc
            raise ModelLoadError(
                f"'{path}' is not a readable PyTorch file ({one_line(exc)})"
            ) from exc
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as exc2:
            raise ModelLoadError(
                f"'{path}' is not a readable PyTorch file ({one_line(exc2)})"
            ) from exc2
    if not isinstance(obj, torch.nn.Module):
        raise ModelLoadError(
            f"'{path}' holds a {type(obj).__name__} (weights only), not a model: build the "
            f"module in Python and call edgecc.trace, or {PT2_HOWTO}"
        )
    if not example_inputs:
        raise InputSpecError(
            f"'{path}' is a pickled module without an input signature: give example inputs "
            "(--input-shape NAME:1x3x224x224 on the CLI)"
        )
    return trace(obj, tuple(example_inputs))
