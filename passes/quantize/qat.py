"""Quantization-aware training: turn a quantized program into a trainable one and back.

``prepare_qat`` (pass ``prepare-qat``), before → after::

    %wd = edgecc.dequantize(@fc_qweight:int8, @s, @z, 0, 0, 'int8', float32)
    %xq = edgecc.quantize(%x, @as, @az, ...);  %xd = edgecc.dequantize(%xq, @as, @az, ...)
    %y  = aten.linear(%xd, %wd, @b)
  →
    %wf = edgecc.fake_quantize(@fc_weight_qat:float32, @s, @z, 0, 0, -127, 127, 'int8')
    %xf = edgecc.fake_quantize(%x, @as, @az, 0, 0, -128, 127, 'int8')
    %y  = aten.linear(%xf, %wf, @b)

The float weight starts at the dequantized value, so the prepared program computes exactly
what the quantized one does; ``fake_quantize`` passes gradients straight through (and to the
scales, LSQ, when they are trained). ``convert_qat`` (pass ``convert-qat``) quantizes the
trained weights with their (trained) scales and restores the ``quantize → dequantize`` form.
Batch norm is folded before quantization (the ``fold-batchnorm`` pass), so QAT trains the
folded weights, and the activation ranges from calibration are kept ("observers frozen")
unless ``learn_scales`` lets LSQ move them.

The ``qat`` pass runs prepare → :func:`edgecc.train.finetune` → convert on the calibration
batches, distilling from the program as it was before quantization (``context.original``),
through the fine-tune step shared with ``distill`` and ``sparse-finetune``
(:func:`edgecc.passes.distill.finetune_from_original`); its options are
:class:`edgecc.train.FinetuneOptions`. It requires a quantized program and ensures no
fake-quantize node is left.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from edgecc.errors import PostconditionError, PreconditionError
from edgecc.pass_base import Pass, PassContext, PassResult
from edgecc.passes.quantize.layers import QRANGE
from edgecc.program import Program
from edgecc.quant import (
    DEQUANTIZE, FAKE_QUANTIZE, QUANTIZE, is_dequantize, is_fake_quantize, is_quantize,
    node_params, qformat,
)
from edgecc.train import FinetuneOptions, finetune


def prepare_qat(program: Program) -> tuple[Program, int]:
    """In place: Q/DQ pairs and stored weights become fake-quant nodes on float values."""
    graph = program.graph
    changed = 0
    for node in list(graph.nodes):
        if is_dequantize(node) and program.is_constant(node.args[0]):
            q, s, z, axis, block, dtype, out_dtype = node.args
            params = node_params(node, program.tensor)
            fmt = qformat(dtype)
            lo, hi = node.meta.get(QRANGE) or ((0, 0) if fmt.is_float else (fmt.qmin,
                                                                             fmt.qmax))
            w = params.dequantize(program.tensor(q), out_dtype)
            wnode = program.add_constant(str(q.target).replace("_qweight", "") + "_qat", w,
                                         before=node)
            with graph.inserting_before(node):
                fq = graph.call_function(FAKE_QUANTIZE, (wnode, s, z, axis, block, lo, hi,
                                                         dtype))
            fq.meta.update(node.meta)
            node.replace_all_uses_with(fq)
            graph.erase_node(node)
            if not q.users:
                graph.erase_node(q)
            changed += 1
        elif is_quantize(node):
            users = list(node.users)
            if not users or not all(is_dequantize(u) for u in users):
                continue
            x, s, z, axis, block, lo, hi, dtype = node.args
            with graph.inserting_before(node):
                fq = graph.call_function(FAKE_QUANTIZE, (x, s, z, axis, block, lo, hi, dtype))
            fq.meta["val"] = users[0].meta.get("val")
            for u in users:
                u.replace_all_uses_with(fq)
                graph.erase_node(u)
            graph.erase_node(node)
            changed += 1
    graph.eliminate_dead_code()
    program.refresh_metadata()
    program.graph_module.recompile()
    return program, changed


def convert_qat(program: Program) -> tuple[Program, int]:
    """In place: fake-quant nodes become stored weights / Q→DQ pairs again."""
    graph = program.graph
    changed = 0
    for node in list(graph.nodes):
        if not is_fake_quantize(node):
            continue
        x, s, z, axis, block, lo, hi, dtype = node.args
        if program.is_constant(x):
            params = node_params(node, program.tensor)
            q = params.quantize(program.tensor(x).detach())
            qnode = program.add_constant(str(x.target).replace("_qat", "") + "_qweight", q,
                                         before=node)
            with graph.inserting_before(node):
                dq = graph.call_function(DEQUANTIZE, (qnode, s, z, axis, block, dtype,
                                                      torch.float32))
            dq.meta[QRANGE] = (lo, hi)
        else:
            with graph.inserting_before(node):
                qn = graph.call_function(QUANTIZE, (x, s, z, axis, block, lo, hi, dtype))
                dq = graph.call_function(DEQUANTIZE, (qn, s, z, axis, block, dtype,
                                                      torch.float32))
        node.replace_all_uses_with(dq)
        graph.erase_node(node)
        changed += 1
    graph.eliminate_dead_code()
    program.refresh_metadata()
    program.graph_module.recompile()
    return program, changed


class PrepareQAT(Pass):
    """Quantized (Q/DQ) program → trainable fake-quant program (exact)."""

    name = "prepare-qat"
    lossless = True

    def ensures(self, program: Program, options: Any) -> None:
        stored = [n.name for n in program.nodes("call_function")
                  if is_dequantize(n) and program.is_constant(n.args[0])]
        if stored:
            raise PostconditionError("prepare-qat left stored quantized weights: "
                                     + ", ".join(stored[:4]))

    def run(self, program: Program, options: Any, context: PassContext) -> PassResult:
        _, n = prepare_qat(program)
        return PassResult(program, n > 0, {"fake_quant_nodes": n})


class ConvertQAT(Pass):
    """Trainable fake-quant program → stored integer weights and Q/DQ pairs (exact)."""

    name = "convert-qat"
    lossless = True

    def ensures(self, program: Program, options: Any) -> None:
        _ensure_no_fake_quantize(program, "convert-qat")

    def run(self, program: Program, options: Any, context: PassContext) -> PassResult:
        _, n = convert_qat(program)
        return PassResult(program, n > 0, {"converted": n})


@dataclasses.dataclass(frozen=True)
class QATOptions(FinetuneOptions):
    error_batches: int = 4  # calibration batches the change is measured on


def train_qat(program: Program, batches: Any, *, teacher: Any, options: FinetuneOptions,
              progress: bool | None, device: Any = None) -> dict[str, Any]:
    """prepare → fine-tune (on ``device``) → convert, in place (the ``qat`` pass's trainer);
    the graph rewrites run on the CPU, where the program's metadata is."""
    prepare_qat(program)
    history = finetune(program, batches, teacher=teacher, options=options, progress=progress,
                       device=device)
    convert_qat(program)
    return {"loss": history}


class QAT(Pass):
    """Fine-tune a quantized program on the calibration batches, distilling from the
    program as it was before any lossy pass (lossy: it changes the weights)."""

    name = "qat"
    Options = QATOptions
    lossless = False

    def validate(self, program: Program, options: QATOptions, context: PassContext) -> None:
        from edgecc.passes.distill import check_distillation

        check_distillation(program, context, "qat")

    def requires(self, program: Program, options: QATOptions) -> None:
        if not any(is_dequantize(n) or is_fake_quantize(n)
                   for n in program.nodes("call_function")):
            raise PreconditionError("qat fine-tunes a quantized program, and this one holds "
                                    "no quantize/dequantize nodes: run quantize before qat")

    def ensures(self, program: Program, options: QATOptions) -> None:
        _ensure_no_fake_quantize(program, "qat")

    def run(self, program: Program, options: QATOptions, context: PassContext) -> PassResult:
        from edgecc.passes.distill import finetune_from_original

        stats = finetune_from_original(program, options, context, "qat",
                                       error_batches=options.error_batches, train=train_qat)
        return PassResult(program, True, stats)


def _ensure_no_fake_quantize(program: Program, name: str) -> None:
    left = [n.name for n in program.nodes("call_function") if is_fake_quantize(n)]
    if left:
        raise PostconditionError(f"{name} left fake-quantize nodes: {', '.join(left[:4])}")


__all__ = ["QAT", "ConvertQAT", "PrepareQAT", "convert_qat", "prepare_qat"]
