"""Frontends: turn a user's model into a ``Program``.

* ``trace(module, example_inputs, dynamic_shapes=...)`` -- an ``nn.Module`` through
  ``torch.export``;
* ``load(path)`` -- a ``.pt2`` archive written by ``torch.export.save``. Pickled ``.pt`` /
  ``.pth`` files are refused unless the caller says it trusts them, because unpickling
  runs arbitrary code; even then, state dicts are read with ``weights_only=True``. A
  ``.pt2`` is mostly JSON and raw tensor bytes, but ``torch.export.load`` unpickles some
  entries with ``weights_only=False`` (sample inputs, tensor-subclass weights, opaque
  constants); those are checked first with torch's weights-only unpickler
  (:func:`check_pt2_pickles`) unless the caller trusts the file.

A program's outputs are plain tensors. Models that return a key/value cache object (a
transformers decoder called with its defaults: ``use_cache=True`` returns a
``DynamicCache``) are traced with that cache flattened to its tensors, layer by layer,
``(key, value)`` each -- the legacy tuple layout -- so the prefill's cache is an output
of the program like any other.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import os
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import torch

from edgecc.errors import EdgeccError, InputSpecError, ModelLoadError, one_line
from edgecc.program import Program

SUPPORTED_SUFFIXES = (".pt2", ".onnx", ".gguf", ".pt", ".pth")

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
        with _cache_outputs_as_tensors(module):
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
    _drop_empty_cat_operands(program)
    program.rename_dims(_dim_names(dynamic_shapes, program, example_kwargs))
    return program


def _cache_layers(obj: Any) -> tuple[tuple[torch.Tensor, torch.Tensor], ...] | None:
    """A key/value cache's tensors as ``((key, value), ...)`` per layer, or None when ``obj``
    is not a cache. Recognised by shape, not by import: transformers' ``Cache`` (a list of
    ``layers`` holding ``keys`` / ``values``) and its pre-4.56 form (``key_cache`` /
    ``value_cache`` lists); layers never written (``keys is None``) hold no tensors."""
    layers = getattr(obj, "layers", None)
    if type(obj).__name__.endswith("Cache") and isinstance(layers, (list, tuple)):
        if all(isinstance(getattr(layer, "keys", None), (torch.Tensor, type(None)))
               and isinstance(getattr(layer, "values", None), (torch.Tensor, type(None)))
               for layer in layers):
            return tuple((layer.keys, layer.values) for layer in layers
                         if layer.keys is not None)
    keys, values = getattr(obj, "key_cache", None), getattr(obj, "value_cache", None)
    if isinstance(keys, list) and isinstance(values, list):
        return tuple(zip(keys, values))
    return None


@contextlib.contextmanager
def _cache_outputs_as_tensors(module: torch.nn.Module) -> Iterator[None]:
    """While exporting, ``module``'s outputs have their cache objects replaced by
    ``_cache_layers`` tuples. torch.export cannot return an object it has no pytree rule
    for; registering one would change a global table in another library, and wrapping the
    module in another would rename every parameter (``model.`` prefix) and break the layer
    globs of ``quantize{exclude=...}``. So the module's own ``forward`` is wrapped for the
    duration of the export (same parameters, same signature) and restored afterwards."""
    own = module.__dict__.get("forward")
    forward = module.forward

    def plain(x: Any) -> Any:
        layers = _cache_layers(x)
        return x if layers is None else layers

    @functools.wraps(forward)
    def plain_forward(*args: Any, **kwargs: Any) -> Any:
        return torch.utils._pytree.tree_map(plain, forward(*args, **kwargs),
                                            is_leaf=lambda x: _cache_layers(x) is not None)

    module.forward = plain_forward
    try:
        yield
    finally:
        if own is None:
            del module.forward
        else:
            module.forward = own


def _drop_empty_cat_operands(program: Program) -> None:
    """Remove the 1-D empty operands of ``aten.cat`` that PyTorch's legacy rule skips.

    ``torch.cat`` ignores operands of shape ``(0,)`` whatever the others' rank; a fresh
    transformers KV cache starts each layer as such an empty tensor and concatenates the
    new keys onto it (a lifted constant in the exported graph). No other framework has the
    rule (TVM Relax and ONNX reject a rank mismatch), so the program is made explicit here.

    Before: k = cat([lifted_tensor_0 (shape (0,)), new_k (2, 4, 8, 8)], dim=-2)
    After:  k = cat([new_k], dim=-2)
    """
    graph = program.graph
    changed = False
    for node in program.nodes("call_function"):
        if node.target is not torch.ops.aten.cat.default:
            continue
        operands = list(node.args[0])
        out = node.meta.get("val")
        if out is None or out.dim() == 1:
            continue

        def empty_1d(a: Any) -> bool:
            val = a.meta.get("val") if isinstance(a, torch.fx.Node) else None
            return isinstance(val, torch.Tensor) and val.dim() == 1 and val.shape[0] == 0

        kept = [a for a in operands if not empty_1d(a)]
        if len(kept) in (0, len(operands)):
            continue
        node.args = (kept, *node.args[1:])
        changed = True
        for dropped in {a for a in operands if empty_1d(a)}:
            _erase_dead_constant(program, dropped)
    if changed:
        graph.lint()
        program.graph_module.recompile()


_COPIES = (torch.ops.aten.clone.default, torch.ops.aten.lift_fresh_copy.default,
           torch.ops.aten.alias.default, torch.ops.aten.detach.default)


def _erase_dead_constant(program: Program, node: torch.fx.Node) -> None:
    """Erase ``node`` when nothing reads it and it is a constant or a copy of one (the
    empty tensor a cache layer starts from: ``clone(get_attr lifted_tensor_0)``), with the
    weight it was the last reader of."""
    while not node.users:
        if node.op == "call_function" and node.target in _COPIES \
                and isinstance(node.args[0], torch.fx.Node):
            source = node.args[0]
            program.graph.erase_node(node)
            node = source
            continue
        if node.op == "get_attr":
            target = str(node.target)
            program.graph.erase_node(node)
            if not any(n.op == "get_attr" and str(n.target) == target
                       for n in program.graph.nodes):
                owner, _, attr = target.rpartition(".")
                delattr(program.graph_module.get_submodule(owner), attr)
        return


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
    import_check: Any = True,
    keep_q4_1: bool = False,
) -> Program:
    """Load a model file into a ``Program``.

    ``.onnx``: imported by edgecc's own ONNX importer; ``input_shapes`` fixes named inputs'
    shapes (other symbolic dimensions stay dynamic). The import is checked against
    onnxruntime (``edgecc.onnx_import.self_check``); ``import_check=False`` skips that, an
    ``ImportCheckOptions`` tunes it.

    ``.gguf``: a llama.cpp Llama-family decoder (``edgecc.gguf_import``); ``keep_q4_1``
    carries Q4_1 tensors as ``edgecc.dequantize_offset`` instead of float32.

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
        return _load_pt2(path, trust_pickle)
    if suffix in (".pt", ".pth"):
        return _load_pickle(path, trust_pickle, example_inputs)
    if input_shapes and suffix == ".pt2":
        raise InputSpecError(
            f"'{path}': input shapes are fixed when the .pt2 is exported; --input-shape "
            "applies to .onnx and pickled models"
        )
    if suffix == ".onnx":
        from edgecc.onnx_import import load_onnx as import_onnx

        check_onnx_inputs(path, input_shapes)
        load_onnx = _importer_errors_as_load_errors(import_onnx, path, "ONNX")
        from edgecc.onnx_import.self_check import ImportCheckOptions

        check = import_check if isinstance(import_check, ImportCheckOptions) else \
            ImportCheckOptions(enabled=bool(import_check))
        return load_onnx(path, input_shapes=input_shapes, check=check)
    if suffix == ".gguf":
        from edgecc.gguf_import import load_gguf as import_gguf

        load_gguf = _importer_errors_as_load_errors(import_gguf, path, "GGUF")

        return load_gguf(path, keep_q4_1=keep_q4_1)
    raise ModelLoadError(
        f"'{path}': unknown model file extension '{suffix or '(none)'}'; "
        f"edgecc reads {', '.join(SUPPORTED_SUFFIXES)}"
    )


def _load_pt2(path: str, trust_pickle: bool = False) -> Program:
    corrupt = (f"'{path}' is a corrupt torch.export archive" + " ({}); "
               "re-create it with torch.export.save")
    if not zipfile.is_zipfile(path):
        raise ModelLoadError(
            f"'{path}' is not a torch.export archive (truncated or not a zip file); "
            "re-create it with torch.export.save"
        )
    try:
        check_pt2_archive(path, trust_pickle=trust_pickle)
        exported = torch.export.load(path)
        program = Program.from_exported(exported, source=os.path.basename(path))
        _drop_empty_cat_operands(program)
    except ModelLoadError:
        raise
    except Exception as exc:  # torch's reader and deserializer raise anything on bad bytes
        raise ModelLoadError(corrupt.format(one_line(exc))) from exc
    return program


# Entries of a .pt2 that torch.export.load unpickles (torch 2.13, pt2_archive/_package.py
# and _export/serde/serialize.py): sample inputs and legacy state dicts/constants (.pt,
# torch.load weights_only=True, then *False* on failure), payloads a config marks
# ``use_pickle`` (tensor subclasses: weights_only=False), torchbind objects (custom_obj_*)
# and opaque objects (pickle.loads).
_CUSTOM_OBJ, _OPAQUE_OBJ = "custom_obj_", "opaque_obj_"
# torch.export.save stores entries uncompressed; a re-zipped archive may deflate them, but
# an entry declaring many times the archive's size is a zip bomb or a lying header
_MAX_INFLATION = 16


def check_pt2_archive(path: str, *, trust_pickle: bool = False) -> None:
    """Refuse a ``.pt2`` whose entries would run code or exhaust memory when loaded.

    Every entry torch would unpickle must load with torch's weights-only unpickler (tensors,
    containers, dtypes: no callables); torchbind and opaque Python objects are refused.
    With ``trust_pickle`` the pickles are not checked. Entries that declare more bytes than
    the archive could hold (a zip bomb, an oversized entry) are refused either way.
    """
    size = os.path.getsize(path)
    with zipfile.ZipFile(path) as archive:
        infos = archive.infolist()
        for info in infos:
            stored_lie = (info.compress_type == zipfile.ZIP_STORED
                          and info.file_size != info.compress_size)
            if stored_lie or info.file_size > size * _MAX_INFLATION + (1 << 20):
                raise ModelLoadError(
                    f"'{path}': entry '{info.filename}' declares {info.file_size} bytes in a "
                    f"{size}-byte archive (oversized or corrupt); re-create it with "
                    "torch.export.save")
        if trust_pickle:
            return
        names = [i.filename for i in infos]
        pickled, raw = set(), set()
        for name in names:
            if name.endswith("_config.json"):
                try:
                    config = json.loads(archive.read(name)).get("config", {})
                    entries = list(config.values())
                except (ValueError, AttributeError):
                    continue  # torch rejects it as corrupt; nothing is unpickled from it
                folder = name.rpartition("/")[0]
                for meta in entries:
                    if isinstance(meta, dict) and isinstance(meta.get("path_name"), str):
                        target = f"{folder}/{meta['path_name']}"
                        (pickled if meta.get("use_pickle") else raw).add(target)
        for name in names:
            base = name.rpartition("/")[2]
            if base.startswith((_CUSTOM_OBJ, _OPAQUE_OBJ)):
                _refuse_pickle(path, name, "a pickled Python object")
            if name in pickled or name.endswith(".pt") or name.endswith(".pkl") \
                    or (name not in raw and _looks_pickled(archive, name)):
                data = archive.read(name)
                try:
                    torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
                except Exception as exc:
                    _refuse_pickle(path, name, f"a pickle torch's weights-only loader "
                                   f"rejects ({one_line(exc)[:120]})")


def _looks_pickled(archive: zipfile.ZipFile, name: str) -> bool:
    with archive.open(name) as f:
        head = f.read(4)
    return head.startswith(b"\x80") or head == b"PK\x03\x04"


def _refuse_pickle(path: str, entry: str, what: str) -> None:
    raise ModelLoadError(
        f"'{path}': entry '{entry}' is {what}; loading it could run arbitrary code. "
        "Re-export the model with torch.export.save, or pass --trust-pickle "
        "(trust_pickle=True) if you trust the file")


def _importer_errors_as_load_errors(importer: Any, path: str, kind: str) -> Any:
    """``importer`` with every failure that is not already an ``EdgeccError`` turned into
    one line (``ModelLoadError``): a malformed file must never surface as a traceback from
    inside the importer (found by tests/trust/test_fuzz_loaders.py)."""

    @functools.wraps(importer)
    def guarded(*args: Any, **kwargs: Any) -> Program:
        try:
            return importer(*args, **kwargs)
        except (EdgeccError, KeyboardInterrupt):
            raise
        except Exception as exc:
            raise ModelLoadError(
                f"'{path}' could not be imported as {kind} ({one_line(exc)[:300]}); the file "
                "is malformed or uses something edgecc does not support: check it with "
                + ("onnx.checker.check_model(model, full_check=True)" if kind == "ONNX"
                   else "llama.cpp") + ", re-export it, and report it if it is valid"
            ) from exc

    return guarded


MAX_INPUT_ELEMENTS = 1 << 31  # an example input larger than this is a corrupt declaration


def check_onnx_inputs(path: str, input_shapes: Mapping[str, Sequence[int]] | None) -> None:
    """Refuse graph inputs whose declared shape is negative or too large to materialize
    (the importer builds example inputs from it): a lying header must not exhaust memory.
    ``input_shapes`` overrides the declared shapes, as in the importer."""
    import onnx

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception:
        return  # unreadable: the importer says so, in its own words
    weights = {t.name for t in model.graph.initializer}
    for value in model.graph.input:
        if value.name in weights or not value.type.HasField("tensor_type"):
            continue
        dims = [d.dim_value if d.HasField("dim_value") else 1
                for d in value.type.tensor_type.shape.dim]
        if input_shapes and value.name in input_shapes:
            dims = [int(d) for d in input_shapes[value.name]]
        if any(d < 0 for d in dims):
            raise ModelLoadError(
                f"'{path}': input '{value.name}' declares a negative dimension {dims}; "
                "the file is corrupt: re-export it")
        elements = 1
        for d in dims:
            elements *= d
        if elements > MAX_INPUT_ELEMENTS:
            raise ModelLoadError(
                f"'{path}': input '{value.name}' declares shape {dims} ({elements} elements); "
                "that is a corrupt or wrong declaration: fix it with --input-shape "
                f"{value.name}:1x... (input_shapes=...) or re-export the model")


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
