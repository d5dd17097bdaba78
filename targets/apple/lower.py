"""Lower a program for ``-t apple``: coremltools' torch.export frontend with edgecc's own
converters for its compression (``carry``), saved as ``model.mlpackage``, plus the bundle's
``README.txt``.

The program is re-exported with static shapes (its example inputs) and decomposed to core
ATen except ``linear`` and ``scaled_dot_product_attention`` (Core ML has both); inputs and
outputs are declared fp32 (int32 for integer inputs) so the package's interface does not
change with ``compute_precision``.
"""

from __future__ import annotations

import collections
import contextlib
import json
import logging
import os
import uuid
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from edgecc.errors import LoweringError, one_line
from edgecc.program import Program
from edgecc.target import Artifact, Lowered, example_shape
from edgecc.targets.apple import carry as carry_mod
from edgecc.targets.apple.presets import DEPLOYMENTS

if TYPE_CHECKING:
    from edgecc.targets.apple.target import AppleOptions

MODEL = "model.mlpackage"
README = "README.txt"


def export_for_coreml(program: Program) -> torch.export.ExportedProgram:
    """The program as a static-shape ExportedProgram in core ATen minus linear and SDPA."""
    table = torch.export.default_decompositions()
    for op in (torch.ops.aten.linear.default,
               torch.ops.aten.scaled_dot_product_attention.default):
        table.pop(op, None)
    program = _float_bounds(program)
    with torch.no_grad():
        ep = torch.export.export(program.graph_module, tuple(program.example_inputs))
        return _default_sdpa_scale(ep.run_decompositions(table))


def _default_sdpa_scale(ep: torch.export.ExportedProgram) -> torch.export.ExportedProgram:
    """``scaled_dot_product_attention(..., scale=s)`` with ``s`` the default
    ``1/sqrt(head_dim)`` (in float32) loses its ``scale`` argument, so coremltools emits
    the fused iOS18 ``scaled_dot_product_attention`` op (it has no scale input and fuses
    only when none is given; transformers always passes one)::

        before: sdpa(q, k, v, mask, scale=0.125)      # head_dim 64
        after:  sdpa(q, k, v, mask)                    # the same function
    """
    changed = False
    for node in ep.graph.nodes:
        if (node.op != "call_function"
                or node.target is not torch.ops.aten.scaled_dot_product_attention.default
                or node.kwargs.get("scale") is None):
            continue
        val = node.args[0].meta.get("val")
        if val is None:
            continue
        head = int(val.shape[-1])
        default = np.float32(1.0 / np.sqrt(head))
        if np.float32(node.kwargs["scale"]) == default:
            node.kwargs = {k: v for k, v in node.kwargs.items() if k != "scale"}
            changed = True
    if changed:
        ep.graph_module.recompile()
    return ep


def _float_bounds(program: Program) -> Program:
    """``hardtanh`` / ``clamp`` with integer bounds (``F.relu6`` gives ``0, 6``) as float
    bounds: coremltools' ``clip`` rejects int32 bounds on a float input."""
    ops = (torch.ops.aten.hardtanh.default, torch.ops.aten.clamp.default)
    nodes = [n for n in program.nodes("call_function") if n.target in ops
             and any(isinstance(a, int) and not isinstance(a, bool) for a in n.args[1:])]
    if not nodes:
        return program
    program = program.copy()
    for node in program.nodes("call_function"):
        if node.target in ops:
            node.args = (node.args[0], *(float(a) if isinstance(a, int) and not isinstance(
                a, bool) else a for a in node.args[1:]))
    program.graph_module.recompile()
    return program


def unsupported(ep: torch.export.ExportedProgram) -> list[tuple[str, str]]:
    """``(node, operator)`` for every node coremltools' frontend has no converter for."""
    from coremltools.converters.mil.frontend.torch.torch_op_registry import (
        _TORCH_OPS_REGISTRY,
    )
    from coremltools.converters.mil.frontend.torch.utils import sanitize_op_kind

    carry_mod._register()
    out = []
    for node in ep.graph.nodes:
        if node.op != "call_function":
            continue
        name = sanitize_op_kind(str(node.target) if isinstance(node.target, torch._ops.OpOverload)
                                else getattr(node.target, "__name__", str(node.target)))
        if name in ("getitem",) or _TORCH_OPS_REGISTRY.get_func(name) is not None:
            continue
        out.append((node.name, str(node.target)))
    return out


def _io_types(program: Program) -> tuple[list[Any], list[Any]]:
    import coremltools as ct

    inputs = []
    for spec, example in zip(program.input_specs, program.example_inputs):
        dtype = np.float32 if example.is_floating_point() else np.int32
        inputs.append(ct.TensorType(name=spec.name, shape=tuple(example.shape), dtype=dtype))
    outputs = [ct.TensorType(name=spec.name, dtype=np.float32) for spec in program.output_specs]
    return inputs, outputs


def convert(program: Program, options: AppleOptions) -> tuple[Any, carry_mod.Carry]:
    """The in-memory ``MLModel`` and what was carried over; ``LoweringError`` on failure."""
    import coremltools as ct

    dep = DEPLOYMENTS[options.deployment]
    ep = export_for_coreml(program)
    missing = unsupported(ep)
    if missing:
        node, op = missing[0]
        more = f" (and {len(missing) - 1} more)" if len(missing) > 1 else ""
        raise LoweringError(f"-t apple: node '{node}' ({op}) has no Core ML equivalent in "
                            f"coremltools {ct.__version__}{more}; rewrite or exclude it")
    inputs, outputs = _io_types(program)
    record = carry_mod.Carry(dep, options.compute_precision == "fp32", options.fallback)
    precision = (ct.precision.FLOAT32 if options.compute_precision == "fp32"
                 else ct.precision.FLOAT16)
    quiet = logging.getLogger("coremltools")
    level = quiet.level
    quiet.setLevel(logging.ERROR)
    try:
        with carry_mod.carrying(record), fresh_mil_names():
            mlmodel = ct.convert(ep, convert_to="mlprogram",
                                 minimum_deployment_target=getattr(ct.target, dep.ct_target),
                                 compute_precision=precision, inputs=inputs, outputs=outputs)
    except carry_mod.Refused as exc:
        raise LoweringError(f"-t apple (deployment={dep.name}): {exc}") from None
    except Exception as exc:
        raise LoweringError(f"coremltools could not convert the program: "
                            f"{one_line(exc)}") from exc
    finally:
        quiet.setLevel(level)
    return mlmodel, record


@contextlib.contextmanager
def fresh_mil_names() -> Iterator[None]:
    """coremltools names the constants and ops it creates without a name from a counter
    shared by the whole process (``Builder.name_count``: ``dequantize_1_scale_0``, then
    ``_3`` after two more conversions), so the same program converted later in a process
    gave a different ``model.mlmodel`` and debug-handle map. Names need only be unique
    within one program: each conversion counts from zero (as in a fresh process) and the
    process's counter is put back afterwards."""
    from coremltools.converters.mil.mil.builder import Builder

    saved = Builder.name_count
    Builder.name_count = collections.defaultdict(int)
    try:
        yield
    finally:
        Builder.name_count = saved


def lower_program(program: Program, output_dir: str, options: AppleOptions
                  ) -> tuple[Lowered, carry_mod.Carry]:
    mlmodel, record = convert(program, options)
    mlmodel.short_description = f"edgecc {program.source}"
    mlmodel.user_defined_metadata.update({
        "edgecc.deployment": options.deployment,
        "edgecc.compute_precision": options.compute_precision,
        "edgecc.compute_units": options.compute_units})
    path = os.path.join(output_dir, MODEL)
    mlmodel.save(path)
    stable_package_identifiers(path)
    dep = DEPLOYMENTS[options.deployment]
    desc = (f"Core ML ML Program for {dep.name} ({options.compute_precision}), "
            f"{len(record.weights)} compressed weights")
    _write_readme(program, output_dir, desc, options)
    report = {
        "deployment": options.deployment,
        "compute_precision": options.compute_precision,
        "compute_units": options.compute_units,
        "compressed_weights": [
            {"weight": w.key, "mil_op": w.mil_op, "form": f"constexpr_{w.form}",
             "format": w.detail, "shape": list(w.shape)} for w in record.weights],
        "activation_quantizers": record.activations,
        "stored_as_float": record.fallbacks,
    }
    artifacts = package_artifacts(output_dir, desc) + [Artifact(README, "docs", "how to run it")]
    return Lowered(artifacts, report), record


def stable_package_identifiers(package: str) -> None:
    """Replace the random UUIDs coremltools writes into ``Manifest.json`` on every save.

    Each item's identifier becomes ``uuid5(edgecc namespace, item path)``, so compiling the
    same model twice gives byte-identical packages (Core ML only needs the identifiers to be
    unique within the package and ``rootModelIdentifier`` to name the model item)::

        before: {"itemInfoEntries": {"5d95...": {"path": "com.apple.CoreML/model.mlmodel"}}, ...}
        after:  {"itemInfoEntries": {"<uuid5 of the path>": {...}}, "rootModelIdentifier": same}
    """
    manifest_path = os.path.join(package, "Manifest.json")
    with open(manifest_path) as f:
        manifest = json.load(f)
    namespace = uuid.uuid5(uuid.NAMESPACE_URL, "https://edgecc/apple/mlpackage")
    renamed = {old: str(uuid.uuid5(namespace, entry["path"])).upper()
               for old, entry in manifest.get("itemInfoEntries", {}).items()}
    manifest["itemInfoEntries"] = {renamed[old]: entry for old, entry
                                   in sorted(manifest["itemInfoEntries"].items(),
                                             key=lambda kv: kv[1]["path"])}
    root = manifest.get("rootModelIdentifier")
    if root in renamed:
        manifest["rootModelIdentifier"] = renamed[root]
    with open(manifest_path, "w") as f:
        json.dump(manifest, f, indent=4, sort_keys=True)
        f.write("\n")


def package_artifacts(output_dir: str, description: str) -> list[Artifact]:
    """Each file of the ``.mlpackage`` directory (the manifest lists files, not folders)."""
    kinds = {"model.mlmodel": ("model", description),
             "weight.bin": ("weights", "the package's constant data (weight.bin)"),
             "Manifest.json": ("model", "the package's manifest")}
    out = []
    root = os.path.join(output_dir, MODEL)
    for folder, _, files in sorted(os.walk(root)):
        for name in sorted(files):
            rel = os.path.relpath(os.path.join(folder, name), output_dir)
            kind, desc = kinds.get(name, ("model", ""))
            out.append(Artifact(rel, kind, desc))
    return out


def _write_readme(program: Program, output_dir: str, description: str,
                  options: AppleOptions) -> None:
    with open(os.path.join(os.path.dirname(__file__), README)) as f:
        template = f.read()
    specs = program.input_specs
    example = ", ".join(
        f"'{s.name}': np.zeros({example_shape(s)}, np.{'float32' if 'float' in s.dtype else 'int32'})"
        for s in specs)
    units = {"all": "ALL", "cpu_and_ne": "CPU_AND_NE", "cpu_only": "CPU_ONLY",
             "cpu_and_gpu": "CPU_AND_GPU"}[options.compute_units]
    with open(os.path.join(output_dir, README), "w") as f:
        f.write(template.format(description=description, units=units,
                                compute_units=options.compute_units, example=example,
                                inputs=", ".join(s.describe() for s in specs)))
