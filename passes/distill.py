"""distill: recover accuracy of a compressed program by distilling from the original model.

Runs :func:`edgecc.train.finetune` on the calibration batches with the program as it was
before any lossy pass (``context.original``) as teacher: soft targets with temperature ``T``
(KL scaled by T²) or MSE for embeddings, plus, for the node names in ``features``, MSE on
intermediate activations through learned projectors where pruning changed their width. Works
on pruned (masks stay), structurally pruned, low-rank and fake-quantized students. The graph
is unchanged; only weights move::

    prune-structured{ratio=0.5},distill{epochs=5,temperature=2}
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from edgecc.errors import InputSpecError
from edgecc.pass_base import Pass, PassContext, PassResult
from edgecc.passes.quantize.layers import check_calibration, output_error
from edgecc.program import Program


@dataclasses.dataclass(frozen=True)
class DistillOptions:
    epochs: int = 3
    lr: float = 1e-4
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    temperature: float = 2.0
    loss: Literal["auto", "kl", "mse"] = "auto"
    features: tuple[str, ...] = ()
    gamma: float = 1.0  # weight of the feature loss
    checkpoint: str = ""  # resume from / save to this file
    seed: int = 0
    error_batches: int = 4


def check_distillation(program: Program, context: PassContext, why: str) -> None:
    """A pass that fine-tunes against the original model needs calibration batches and
    ``context.original`` (set by ``edgecc.compile``)."""
    if context.calibration is None or isinstance(context.calibration, (list, tuple)):
        check_calibration(program, context.calibration, why)
    if getattr(context, "original", None) is None:
        raise InputSpecError(f"{why} distils from the original model: run it inside "
                             "edgecc.compile(), or call edgecc.train.finetune directly")


class Distill(Pass):
    """Fine-tune the compressed program against the original model (lossy)."""

    name = "distill"
    Options = DistillOptions
    lossless = False

    def validate(self, program: Program, options: Any, context: PassContext) -> None:
        check_distillation(program, context, "distill")

    def run(self, program: Program, options: DistillOptions,
            context: PassContext) -> PassResult:
        from edgecc.train import FinetuneOptions, finetune

        self.validate(program, options, context)
        batches = check_calibration(program, context.calibration, "distill")
        reference = program.copy()
        history = finetune(program, batches, teacher=context.original, options=FinetuneOptions(
            epochs=options.epochs, lr=options.lr, optimizer=options.optimizer,
            temperature=options.temperature, loss=options.loss, alpha=1.0,
            features=options.features, gamma=options.gamma,
            checkpoint=options.checkpoint or None, seed=options.seed),
            progress=context.progress)
        return PassResult(program, True, {
            "epochs": options.epochs, "loss": [round(h, 6) for h in history],
            "change": output_error(reference, program, batches, options.error_batches)})
