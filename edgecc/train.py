"""Fine-tuning a ``Program``: quantization-aware training and distillation recovery.

``finetune(program, batches, labels=..., teacher=..., options=FinetuneOptions(...))`` trains
the float parameters of the program's graph in place (weights, biases, norms; fake-quant
scales only with ``learn_scales``) and returns the mean loss of each epoch.

Loss, for student outputs ``s`` (the first output), teacher outputs ``t`` and labels ``y``:

* distillation — ``kl``: ``T² · KL(softmax(t/T) ‖ softmax(s/T))`` (Hinton et al.), for
  logits; ``mse``: ``mean((s - t)²)``, for embeddings / regressions; ``auto`` picks ``kl``
  for ``[batch, classes]`` outputs and ``mse`` otherwise;
* task — cross-entropy ``CE(s, y)`` when labels are given;
* both — ``alpha · distillation + (1 - alpha) · task``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any, Literal

import torch
import torch.nn.functional as F

from edgecc.progress import progress_iter
from edgecc.quant import is_fake_quantize


@dataclasses.dataclass(frozen=True)
class FinetuneOptions:
    epochs: int = 3
    lr: float = 1e-4
    optimizer: Literal["adam", "adamw", "sgd"] = "adam"
    weight_decay: float = 0.0
    temperature: float = 1.0
    alpha: float = 0.5
    loss: Literal["auto", "kl", "mse"] = "auto"
    learn_scales: bool = False
    shuffle: bool = True
    seed: int = 0

    def __post_init__(self) -> None:
        if self.epochs < 1 or self.lr <= 0 or self.temperature <= 0:
            raise ValueError("epochs >= 1, lr > 0 and temperature > 0 are required")
        if not 0 <= self.alpha <= 1:
            raise ValueError("alpha must be in [0, 1]")


BATCH_NORMS = ("_native_batch_norm_legit_no_training", "_native_batch_norm_legit",
               "batch_norm", "native_batch_norm")


def running_statistics(program: Any) -> set[str]:
    """Batch-norm running mean / variance: statistics, never trained by gradient."""
    out = set()
    for n in program.nodes("call_function"):
        if getattr(n.target, "__name__", "").split(".")[0] in BATCH_NORMS:
            out.update(str(a.target) for a in n.args[3:5] if program.is_constant(a))
    return out


def trainable_tensors(program: Any, *, learn_scales: bool) -> list[torch.Tensor]:
    """The float constants training may change (fake-quant scales only if asked; never
    batch-norm running statistics)."""
    scales = {str(n.args[1].target) for n in program.nodes("call_function")
              if is_fake_quantize(n) and program.is_constant(n.args[1])}
    scales |= running_statistics(program)
    out, seen = [], set()
    for node in program.nodes("get_attr"):
        t = program.tensor(node)
        if (not t.is_floating_point() or id(t) in seen or t.dim() == 0 and not learn_scales
                or (str(node.target) in scales and not learn_scales)):
            continue
        seen.add(id(t))
        out.append(t)
    return out


def distillation_loss(s: torch.Tensor, t: torch.Tensor, kind: str, temperature: float
                      ) -> torch.Tensor:
    if kind == "auto":
        kind = "kl" if s.dim() == 2 and s.shape[-1] > 1 else "mse"
    if kind == "kl":
        T = temperature
        return F.kl_div(F.log_softmax(s / T, -1), F.log_softmax(t / T, -1), log_target=True,
                        reduction="batchmean") * T * T
    return F.mse_loss(s, t)


def finetune(program: Any, batches: Sequence[Sequence[torch.Tensor]], *,
             labels: Sequence[torch.Tensor] | None = None,
             teacher: Any | Callable[..., Any] | None = None,
             options: FinetuneOptions = FinetuneOptions(),
             progress: bool | None = None) -> list[float]:
    """Train ``program`` in place on ``batches``; returns the mean loss per epoch."""
    if labels is None and teacher is None:
        raise ValueError("finetune needs labels, a teacher, or both")
    if labels is not None and len(labels) != len(batches):
        raise ValueError(f"{len(labels)} label batches for {len(batches)} input batches")
    gm = program.graph_module
    params = trainable_tensors(program, learn_scales=options.learn_scales)
    opt_cls = {"adam": torch.optim.Adam, "adamw": torch.optim.AdamW,
               "sgd": torch.optim.SGD}[options.optimizer]
    for p in params:
        p.requires_grad_(True)
    optim = opt_cls(params, lr=options.lr, weight_decay=options.weight_decay)
    targets: list[torch.Tensor] = []
    if teacher is not None:
        run = teacher.run if hasattr(teacher, "run") else teacher
        with torch.no_grad():
            for b in batches:
                out = run(*b)
                targets.append((out[0] if isinstance(out, (tuple, list)) else out).detach())
    gen = torch.Generator().manual_seed(options.seed)
    history = []
    try:
        steps = [(e, i) for e in range(options.epochs) for i in range(len(batches))]
        order: list[int] = []
        total, count = 0.0, 0
        for _epoch, i in progress_iter(steps, "fine-tuning", enabled=progress):
            if i == 0:
                order = (torch.randperm(len(batches), generator=gen).tolist()
                         if options.shuffle else list(range(len(batches))))
                total, count = 0.0, 0
            k = order[i]
            out = gm(*batches[k])
            s = out[0] if isinstance(out, (tuple, list)) else out
            loss = None
            if teacher is not None:
                loss = distillation_loss(s, targets[k], options.loss, options.temperature)
            if labels is not None:
                task = F.cross_entropy(s, labels[k])
                loss = task if loss is None else (options.alpha * loss
                                                  + (1 - options.alpha) * task)
            optim.zero_grad()
            loss.backward()
            optim.step()
            total += loss.item()
            count += 1
            if i == len(batches) - 1:
                history.append(total / count)
    finally:
        for p in params:
            p.requires_grad_(False)
            p.grad = None
    return history
