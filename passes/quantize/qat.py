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
batches, distilling from the program as it was before quantization (``context.original``).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from edgecc.errors import InputSpecError
from edgecc.pass_base import Pass, PassContext, PassResult
from edgecc.passes.quantize.layers import QRANGE, check_calibration
from edgecc.program import Program
from edgecc.quant import (
    DEQUANTIZE, FAKE_QUANTIZE, QUANTIZE, is_dequantize, is_fake_quantize, is_quantize,
    node_params, qformat,
)


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

    def run(self, program: Program, options: Any, context: PassContext) -> PassResult:
        _, n = prepare_qat(program)
        return PassResult(program, n > 0, {"fake_quant_nodes": n})


class ConvertQAT(Pass):
    """Trainable fake-quant program → stored integer weights and Q/DQ pairs (exact)."""

    name = "convert-qat"
    lossless = True

    def run(self, program: Program, options: Any, context: PassContext) -> PassResult:
        _, n = convert_qat(program)
        return PassResult(program, n > 0, {"converted": n})


@dataclasses.dataclass(frozen=True)
class QATOptions:
    epochs: int = 3
    lr: float = 1e-4
    optimizer: str = "adam"
    temperature: float = 1.0
    loss: str = "auto"  # "auto": KL on logits (2-D outputs), else MSE to the teacher
    learn_scales: bool = False
    seed: int = 0


class QAT(Pass):
    """Fine-tune a quantized program on the calibration batches, distilling from the
    program as it was before any lossy pass (lossy: it changes the weights)."""

    name = "qat"
    Options = QATOptions
    lossless = False

    def validate(self, program: Program, options: QATOptions, context: PassContext) -> None:
        from edgecc.passes.distill import check_distillation

        check_distillation(program, context, "qat")

    def run(self, program: Program, options: QATOptions, context: PassContext) -> PassResult:
        from edgecc.train import FinetuneOptions, finetune

        batches = check_calibration(program, context.calibration, "qat")
        teacher = getattr(context, "original", None)
        if teacher is None:
            raise InputSpecError("qat distils from the original model: run it inside "
                                 "edgecc.compile(), or call edgecc.train.finetune directly")
        prepare_qat(program)
        history = finetune(program, batches, teacher=teacher, options=FinetuneOptions(
            epochs=options.epochs, lr=options.lr, optimizer=options.optimizer,
            temperature=options.temperature, loss=options.loss,
            learn_scales=options.learn_scales, seed=options.seed),
            progress=context.progress)
        convert_qat(program)
        return PassResult(program, True, {"epochs": options.epochs,
                                          "loss_first": history[0], "loss_last": history[-1]})


__all__ = ["QAT", "ConvertQAT", "PrepareQAT", "convert_qat", "prepare_qat"]
