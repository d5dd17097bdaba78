"""Which nodes ``-t apple`` writes, and what must be rewritten first.

Every node goes into the one ML Program: ATen operators through coremltools' torch
frontend (an operator it has no converter for fails the lowering, naming the node),
edgecc's compression operators through the converters in ``carry`` (exact carry-over).
``LEGALIZATION``: ``decompose-composites`` (Core ML has no fused conv+activation operator;
its compiler fuses again on the device). Pruning masks are *not* applied: they become
``constexpr_sparse_to_dense``.

``pipeline_problems`` refuses, before any pass runs, a quantize / palettize step whose
result the deployment target cannot hold (int4, per-block or grouped look-up tables below
iOS18, activation quantization below iOS17), naming the deployment that holds it.
``compression_problems`` lists, before lowering, the compressed weights the deployment
target cannot hold (the same rules the converters apply), so a refusal names every layer
at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from edgecc.passes import DecomposeComposites
from edgecc.pipeline_text import PassStep, flat_steps
from edgecc.program import Program
from edgecc.quant import is_dequantize, is_fake_quantize, is_palette_dequantize, is_quantize, \
    qformat
from edgecc.targets.apple.presets import Deployment, needs

LEGALIZATION = (PassStep(DecomposeComposites, DecomposeComposites.Options()),)


def compression_problems(program: Program, dep: Deployment) -> list[str]:
    """``"node: why"`` for each compression ``dep`` cannot hold."""
    out = []
    for node in program.nodes("call_function"):
        if is_dequantize(node) and program.is_constant(node.args[0]):
            fmt, block = qformat(node.args[5]), node.args[4]
            if fmt.is_float and fmt.name != "float16":
                out.append(f"{node.name}: {fmt.name} weights have no Core ML constant form")
            elif not fmt.is_float and (fmt.bits == 4 or block) and not dep.int4_and_blocks:
                what = f"{fmt.name} weights" if fmt.bits == 4 else f"per-block ({block}) weights"
                out.append(f"{node.name}: {needs(what, 18, dep)}")
        elif is_palette_dequantize(node) and program.is_constant(node.args[1]):
            if program.tensor(node.args[1]).shape[0] > 1 and not dep.grouped_lut:
                out.append(f"{node.name}: {needs('grouped look-up tables', 18, dep)}")
        elif is_quantize(node) or is_fake_quantize(node) or (
                is_dequantize(node) and not program.is_constant(node.args[0])):
            dtype = node.args[7] if not is_dequantize(node) else node.args[5]
            if not dep.activation_qdq and dtype != "float16":
                out.append(f"{node.name}: {needs('quantized activations', 17, dep)}")
            elif dtype not in ("int8", "uint8", "float16"):
                out.append(f"{node.name}: Core ML quantizes activations to int8/uint8 "
                           f"(or casts to float16), not "
                           f"{dtype}")
    return out


def pipeline_problems(steps: Sequence[Any], dep: Deployment) -> list[str]:
    """``"step: why"`` for each quantize / palettize step of the user's pipeline whose
    result ``dep`` cannot hold (checked on the options, before any pass runs)."""
    from edgecc.passes import Palettize, Quantize
    from edgecc.passes.quantize.quantize import resolve_scheme

    out = []
    for step in flat_steps(steps):
        if step.pass_cls is Quantize and step.options.scheme != "auto":
            scheme, _ = resolve_scheme(step.options, None)
            w, a = scheme.weights, scheme.activations
            label = f"quantize{{scheme={step.options.scheme}}}"
            if not dep.int4_and_blocks and qformat(w.dtype).bits == 4:
                out.append(f"{label}: {needs(f'{w.dtype} weights', 18, dep)}")
            elif not dep.int4_and_blocks and w.granularity == "per-group":
                out.append(f"{label}: {needs(f'per-block ({w.group_size}) weights', 18, dep)}")
            if (a is not None and not dep.activation_qdq and not qformat(a.dtype).is_float):
                out.append(f"{label}: {needs(f'{a.dtype} activations', 17, dep)}")
        elif step.pass_cls is Palettize and step.options.group_size and not dep.grouped_lut:
            out.append(f"palettize{{group_size={step.options.group_size}}}: "
                       f"{needs('grouped look-up tables (one per group of channels)', 18, dep)}")
    return out
