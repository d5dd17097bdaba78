"""How much each prunable unit matters: magnitude, Taylor and batch-norm-scale criteria.

* ``l1`` / ``l2`` — mean |w| / mean w² of the unit's rows in every producer weight (the
  layers whose outputs the group removes), each producer normalised by its own mean so a
  wide layer does not outvote a narrow one;
* ``taylor`` — first-order estimate of the loss change when the unit is removed,
  ``|Σ w · ∂L/∂w|`` over every weight slice of the unit (producers, sinks, norms), gradients
  summed over the calibration batches (Molchanov et al. 2019). With no labels the loss is the
  cross-entropy against the model's own predictions for ``[batch, classes]`` outputs and the
  output energy ``mean(y²)`` otherwise;
* ``bn-scale`` — |γ| of the batch norms in the group (network slimming, Liu et al. 2017);
  ``l2`` for groups without a batch norm.

``weight_gradients`` is shared with unstructured Taylor pruning and SNIP.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from edgecc.passes.prune.dependency import Group, Slot
from edgecc.program import Program


def self_supervised_loss(out: torch.Tensor) -> torch.Tensor:
    if out.dim() == 2 and out.shape[-1] > 1:
        return F.cross_entropy(out, out.detach().argmax(-1))
    return out.pow(2).mean()


def weight_gradients(program: Program, batches: Sequence[Sequence[torch.Tensor]],
                     targets: Sequence[str] | None = None) -> dict[str, torch.Tensor]:
    """∂L/∂w summed over ``batches`` for the float constants (all, or those ``targets``)."""
    from edgecc.train import running_statistics

    gm = program.graph_module
    stats = running_statistics(program)
    params = {str(n.target): program.tensor(n) for n in program.nodes("get_attr")
              if program.tensor(n).is_floating_point() and str(n.target) not in stats
              and (targets is None or str(n.target) in targets)}
    for t in params.values():
        t.requires_grad_(True)
        t.grad = None
    try:
        for batch in batches:
            out = gm(*batch)
            out = out[0] if isinstance(out, (tuple, list)) else out
            self_supervised_loss(out).backward()
        return {k: (t.grad.detach().clone() if t.grad is not None else torch.zeros_like(t))
                for k, t in params.items()}
    finally:
        for t in params.values():
            t.requires_grad_(False)
            t.grad = None


def _per_unit(t: torch.Tensor, slot: Slot, units: int, reduce: str) -> torch.Tensor:
    """Reduce ``t`` over each unit's slice along ``slot.axis``: a ``[units]`` tensor (0 for
    units the slot does not hold)."""
    n = slot.hi - slot.lo
    part = t.detach().movedim(slot.axis, 0).narrow(0, slot.offset, n * slot.inner).reshape(n, -1)
    val = {"l1": part.abs().mean(1), "l2": part.pow(2).mean(1), "sum": part.sum(1)}[reduce]
    out = torch.zeros(units, dtype=torch.float64)
    out[slot.lo:slot.hi] = val.double()
    return out


def unit_scores(program: Program, group: Group, importance: str,
                grads: dict[str, torch.Tensor] | None = None) -> tuple[torch.Tensor, str]:
    """Importance of each unit of ``group`` and the criterion actually used."""
    if importance == "bn-scale":
        norms = [w for w in group.norms if w in group.values]
        if norms:
            score = sum(_per_unit(program.tensor(w), group.values[w], group.units, "l1")
                        for w in norms)
            return score, "bn-scale"
        importance = "l2"
    if importance == "taylor":
        assert grads is not None
        score = torch.zeros(group.units, dtype=torch.float64)
        for node, slot in group.constants():
            g = grads.get(str(node.target))
            if g is not None:
                score += _per_unit(program.tensor(node) * g, slot, group.units, "sum")
        return score.abs(), "taylor"
    score = torch.zeros(group.units, dtype=torch.float64)
    for _, w in group.producers:
        s = _per_unit(program.tensor(w), group.values[w], group.units, importance)
        score += s / s[s > 0].mean().clamp_min(1e-30) if (s > 0).any() else s
    return score, importance


def rank_units(scores: torch.Tensor, remove: int) -> list[int]:
    """The ``remove`` least important units (ties broken by index), sorted."""
    order = sorted(range(len(scores)), key=lambda u: (float(scores[u]), u))
    return sorted(order[:remove])


def group_scores(program: Program, groups: Sequence[Group], importance: str,
                 batches: Sequence[Sequence[Any]] | None) -> tuple[list[torch.Tensor], list[str]]:
    grads = None
    if importance == "taylor":
        names = {str(n.target) for g in groups for n, _ in g.constants()}
        grads = weight_gradients(program, batches or [], names)
    out = [unit_scores(program, g, importance, grads) for g in groups]
    return [s for s, _ in out], [c for _, c in out]
