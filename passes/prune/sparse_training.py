"""Sparse fine-tuning schedules: gradual magnitude pruning, RigL, lottery-ticket rewinding.

All three train a program in place with :func:`edgecc.train.finetune` (labels and/or a
teacher) and leave ``edgecc.masked`` weights with the final sparsity:

* ``gradual_prune`` — Zhu & Gupta (2017): the sparsity follows the polynomial ramp
  ``s_t = s_f + (s_i − s_f)(1 − t / T)³`` over the first 75% of the steps, re-pruning by
  magnitude every ``prune_every`` steps (a mask only ever loses entries);
* ``rigl`` — Evci et al. (2020): a fixed sparsity; every ``prune_every`` steps each layer
  drops the ``k`` active weights of smallest magnitude and grows the ``k`` inactive ones with
  the largest gradient (grown weights start at zero), ``k = α/2 (1 + cos(π t / T_end))`` of
  its active weights, until 75% of training;
* ``lottery`` — iterative magnitude pruning with rewinding (Frankle et al. 2019, Renda et al.
  2020): snapshot the weights after ``rewind_epoch`` epochs, then ``rounds`` times train,
  prune to ``1 − (1 − s)^(r / rounds)`` and rewind the surviving weights to the snapshot;
  a last training run from the rewound ticket.

``sparse-finetune{method=...}`` runs one of them on the calibration batches distilling from
the original model (inside ``edgecc.compile``), through the fine-tune step shared with
``distill`` and ``qat`` (:func:`edgecc.passes.distill.finetune_from_original`); its options
extend :class:`edgecc.train.FinetuneOptions`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Sequence
from typing import Any, Literal

import torch

from edgecc.pass_base import Pass, PassContext, PassResult
from edgecc.passes.prune.unstructured import (
    PruneOptions, prunable_weights, prune_weights, select_weights,
)
from edgecc.program import Program
from edgecc.distributed import move_module
from edgecc.train import FinetuneOptions, finetune, program_device


def _steps_between(total: int, prune_every: int) -> int:
    return prune_every or max(1, int(0.75 * total) // 10)


def gradual_prune(program: Program, batches: Sequence[Any], sparsity: float, *,
                  initial: float = 0.0, prune_every: int = 0,
                  include: tuple[str, ...] = (), exclude: tuple[str, ...] = (),
                  labels: Sequence[torch.Tensor] | None = None, teacher: Any = None,
                  options: FinetuneOptions = FinetuneOptions(),
                  progress: bool | None = None, device: Any = None) -> dict[str, Any]:
    def prune_to(s: float) -> None:
        # pruning rewrites masks on the CPU; mid-training the program is on the training
        # device: hop there and back (parameters keep their identity for the optimizer)
        dev = program_device(program)
        if dev.type != "cpu":
            move_module(program.graph_module, "cpu")
        prune_weights(program, PruneOptions(sparsity=min(s, sparsity), include=include,
                                            exclude=exclude), None)
        if dev.type != "cpu":
            move_module(program.graph_module, dev)

    prune_to(initial)
    schedule: list[tuple[int, float]] = []
    total = options.epochs * len(batches)
    every = _steps_between(total, prune_every)
    end = max(1, int(0.75 * total))

    def on_step(step: int, total_steps: int) -> None:
        if step == end or (step % every == 0 and step < end):
            s = sparsity + (initial - sparsity) * (1 - step / end) ** 3
            prune_to(s)
            schedule.append((step, round(s, 4)))

    history = finetune(program, batches, labels=labels, teacher=teacher, options=options,
                       progress=progress, on_step=on_step, device=device)
    prune_to(sparsity)
    return {"schedule": schedule, "loss": history}


def rigl(program: Program, batches: Sequence[Any], sparsity: float, *, drop_fraction: float = 0.3,
         prune_every: int = 0, include: tuple[str, ...] = (), exclude: tuple[str, ...] = (),
         labels: Sequence[torch.Tensor] | None = None, teacher: Any = None,
         options: FinetuneOptions = FinetuneOptions(),
         progress: bool | None = None, device: Any = None) -> dict[str, Any]:
    prune_weights(program, PruneOptions(sparsity=sparsity, include=include, exclude=exclude),
                  None)
    weights = select_weights(prunable_weights(program), include, exclude)
    total = options.epochs * len(batches)
    every = _steps_between(total, prune_every)
    end = max(1, int(0.75 * total))
    regrown: list[int] = []

    def on_step(step: int, total_steps: int) -> None:
        if step % every or step > end:
            return
        alpha = drop_fraction / 2 * (1 + math.cos(math.pi * step / end))
        moved = 0
        for w in weights:
            value = program.tensor(w.weight)
            mask = program.tensor(w.mask).bool()
            grad = value.grad
            k = int(alpha * int(mask.sum()))
            if grad is None or k == 0 or k > int((~mask).sum()):
                continue
            active = torch.where(mask, value.detach().abs(), torch.inf).reshape(-1)
            drop = active.topk(k, largest=False).indices
            inactive = torch.where(mask, -torch.inf, grad.abs()).reshape(-1)
            grow = inactive.topk(k).indices
            flat = mask.reshape(-1).clone()
            flat[drop] = False
            flat[grow] = True
            with torch.no_grad():
                value.reshape(-1)[grow] = 0.0  # grown connections start at zero
            program.set_tensor(w.mask, flat.reshape(mask.shape))
            moved += k
        regrown.append(moved)

    history = finetune(program, batches, labels=labels, teacher=teacher, options=options,
                       progress=progress, on_step=on_step, device=device)
    return {"updates": len(regrown), "regrown": sum(regrown), "loss": history}


def lottery(program: Program, batches: Sequence[Any], sparsity: float, *, rounds: int = 1,
            rewind_epoch: int = 0, include: tuple[str, ...] = (),
            exclude: tuple[str, ...] = (), labels: Sequence[torch.Tensor] | None = None,
            teacher: Any = None, options: FinetuneOptions = FinetuneOptions(),
            progress: bool | None = None, device: Any = None) -> dict[str, Any]:
    def train(epochs: int) -> list[float]:
        return finetune(program, batches, labels=labels, teacher=teacher, progress=progress,
                        options=dataclasses.replace(options, epochs=epochs), device=device)

    history = train(rewind_epoch) if rewind_epoch else []
    snapshot = {str(n.target): program.tensor(n).detach().clone()
                for n in program.nodes("get_attr") if program.tensor(n).is_floating_point()}
    levels = []
    for r in range(1, rounds + 1):
        history += train(options.epochs)
        level = 1 - (1 - sparsity) ** (r / rounds)
        prune_weights(program, PruneOptions(sparsity=level, include=include,
                                            exclude=exclude), None)
        with torch.no_grad():  # rewind every surviving (and float) weight to the snapshot
            for n in program.nodes("get_attr"):
                if str(n.target) in snapshot:
                    program.tensor(n).copy_(snapshot[str(n.target)])
        levels.append(round(level, 4))
    history += train(options.epochs)
    return {"levels": levels, "loss": history}


@dataclasses.dataclass(frozen=True)
class SparseFinetuneOptions(FinetuneOptions):
    method: Literal["gradual", "rigl", "lottery"] = "gradual"
    sparsity: float = 0.8
    initial_sparsity: float = 0.0  # gradual
    prune_every: int = 0  # steps between mask updates; 0: about ten over the schedule
    drop_fraction: float = 0.3  # rigl
    rounds: int = 1  # lottery
    rewind_epoch: int = 0  # lottery
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    error_batches: int = 4

    def __post_init__(self) -> None:
        super().__post_init__()
        if not 0 <= self.sparsity < 1 or not 0 <= self.initial_sparsity <= self.sparsity:
            raise ValueError("need 0 <= initial_sparsity <= sparsity < 1")
        if self.rounds < 1 or not 0 < self.drop_fraction < 1:
            raise ValueError("rounds >= 1 and drop_fraction in (0, 1) required")


class SparseFinetune(Pass):
    """Gradual pruning / RigL / lottery rewinding on the calibration batches, distilling
    from the original model (lossy)."""

    name = "sparse-finetune"
    Options = SparseFinetuneOptions
    lossless = False

    def validate(self, program: Program, options: SparseFinetuneOptions,
                 context: PassContext) -> None:
        from edgecc.passes.distill import check_distillation

        check_distillation(program, context, "sparse-finetune")

    def run(self, program: Program, options: SparseFinetuneOptions,
            context: PassContext) -> PassResult:
        from edgecc.passes.distill import finetune_from_original

        common = dict(sparsity=options.sparsity, prune_every=options.prune_every,
                      include=options.include, exclude=options.exclude)
        schedule = {
            "gradual": functools.partial(gradual_prune, initial=options.initial_sparsity,
                                         **common),
            "rigl": functools.partial(rigl, drop_fraction=options.drop_fraction, **common),
            "lottery": functools.partial(lottery, rounds=options.rounds,
                                         rewind_epoch=options.rewind_epoch,
                                         sparsity=options.sparsity, include=options.include,
                                         exclude=options.exclude),
        }[options.method]
        stats = finetune_from_original(program, options, context, "sparse-finetune",
                                       error_batches=options.error_batches, train=schedule)
        weights = prunable_weights(program)
        masks = [program.tensor(w.mask).bool() for w in weights if w.mask is not None]
        stats["sparsity"] = round(1 - sum(int(m.sum()) for m in masks)
                                  / max(sum(m.numel() for m in masks), 1), 4)
        return PassResult(program, True, stats)
