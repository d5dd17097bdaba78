"""distill: recover accuracy of a compressed program by distilling from the original model.

Runs :func:`edgecc.train.finetune` on the calibration batches with the program as it was
before any lossy pass (``context.original``) as teacher: soft targets with temperature ``T``
(KL scaled by T²) or MSE for embeddings, plus, for the node names in ``features``, MSE on
intermediate activations through learned projectors where pruning changed their width. Works
on pruned (masks stay), structurally pruned, low-rank and fake-quantized students. The graph
is unchanged; only weights move::

    prune-structured{ratio=0.5},distill{epochs=5,temperature=2}

:func:`finetune_from_original` is the fine-tune step of every pass that trains against the
original model (``distill``, ``qat``, ``sparse-finetune``); their options extend
:class:`edgecc.train.FinetuneOptions`.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Sequence
from typing import Any

import torch

from edgecc.errors import InputSpecError
from edgecc.pass_base import Pass, PassContext, PassResult
from edgecc.passes.quantize.layers import check_calibration, output_error, validate_calibration
from edgecc.program import Program
from edgecc.train import FinetuneOptions, finetune

# ``train(program, batches, *, teacher, options, progress, device) -> stats`` with ``stats["loss"]``
# the mean loss of each epoch: plain fine-tuning, or a schedule (QAT, gradual pruning, ...)
Trainer = Callable[..., dict[str, Any]]


@dataclasses.dataclass(frozen=True)
class DistillOptions(FinetuneOptions):
    temperature: float = 2.0
    alpha: float = 1.0  # all distillation: a pass has no labels
    error_batches: int = 4  # calibration batches the change is measured on


def check_distillation(program: Program, context: PassContext, why: str) -> None:
    """A pass that fine-tunes against the original model needs calibration batches and
    ``context.original`` (set by ``edgecc.compile``): its ``validate``."""
    validate_calibration(program, context.calibration, why)
    if context.original is None:
        raise InputSpecError(f"{why} distils from the original model: run it inside "
                             "edgecc.compile(), or call edgecc.train.finetune directly")


def plain_finetune(program: Program, batches: Sequence[Any], *, teacher: Any,
                   options: FinetuneOptions, progress: bool | None,
                   device: Any = None) -> dict[str, Any]:
    return {"loss": finetune(program, batches, teacher=teacher, options=options,
                             progress=progress, device=device)}


def finetune_from_original(program: Program, options: FinetuneOptions, context: PassContext,
                           why: str, *, error_batches: int,
                           train: Trainer = plain_finetune) -> dict[str, Any]:
    """Train ``program`` in place on the calibration batches against ``context.original``
    (which the pass's ``validate`` checked with :func:`check_distillation`); returns
    ``train``'s stats with the epochs, the loss per epoch and, as ``error``, the output
    change (SQNR, cosine, max-abs against the program as it was before training)."""
    batches = check_calibration(program, context.calibration, why)
    reference = program.copy()
    dev = context.device if context.device is not None else torch.device("cpu")
    # the trainer trains on dev (finetune(device=...) moves the program and the teacher there
    # and back); graph rewrites around training (QAT's prepare / convert) stay on the CPU
    t0 = time.perf_counter()
    stats = train(program, batches, teacher=context.original, options=options,
                  progress=context.progress, device=dev)
    stats["train_seconds"] = round(time.perf_counter() - t0, 3)
    stats["device"] = str(dev)
    stats = {"epochs": options.epochs, **stats,
             "loss": [round(h, 6) for h in stats["loss"]]}
    stats["error"] = output_error(reference, program, batches, error_batches)
    return stats


class Distill(Pass):
    """Fine-tune the compressed program against the original model (lossy)."""

    name = "distill"
    Options = DistillOptions
    lossless = False

    def validate(self, program: Program, options: DistillOptions,
                 context: PassContext) -> None:
        check_distillation(program, context, "distill")

    def run(self, program: Program, options: DistillOptions,
            context: PassContext) -> PassResult:
        stats = finetune_from_original(program, options, context, "distill",
                                       error_batches=options.error_batches)
        return PassResult(program, True, stats)
