"""prune-structured / prune-heads: physically remove channels, neurons and attention heads.

Each group found by :mod:`edgecc.passes.prune.dependency` (a layer's output channels and every
dimension coupled to them) loses its least important units; weights, norms and reshapes
shrink together, so parameters and MACs really drop and the program stays valid. Groups the
analysis cannot follow are listed in ``stats["skipped"]`` with the reason.

Before (``prune-structured{ratio=0.5}``, a conv → BN → ReLU → conv chain)::

    %c1 = aten.convolution(%x, @conv1.weight:[32,16,3,3], @conv1.bias:[32], ...)
    %bn = aten._native_batch_norm_legit_no_training(%c1, @bn.weight:[32], ...)
    %c2 = aten.convolution(%relu, @conv2.weight:[64,32,3,3], ...)

After::

    %c1 = aten.convolution(%x, @conv1.weight:[16,16,3,3], @conv1.bias:[16], ...)
    %bn = aten._native_batch_norm_legit_no_training(%c1, @bn.weight:[16], ...)
    %c2 = aten.convolution(%relu, @conv2.weight:[64,16,3,3], ...)

Attention: a query projection's group is coarsened to whole heads (a KV group with its query
heads under grouped-query attention) and takes key, value and output projections with it.
``ratio`` is the fraction of each group's units removed (``scope=layer``) or of all units,
ranked by importance normalised per group (``scope=global``, at least one unit kept per
group); ``round_to`` keeps channel counts a multiple of the vector width.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Literal

import torch

from edgecc.accounting import measure
from edgecc.errors import OptionError
from edgecc.pass_base import Pass, PassContext, PassResult
from edgecc.passes.prune.dependency import Group, Unsupported, build_group, remove_units
from edgecc.passes.prune.importance import group_scores, rank_units
from edgecc.passes.prune.patterns import check_patterns, selected
from edgecc.passes.quantize.layers import (
    check_calibration, find_layers, output_error, validate_calibration,
)
from edgecc.program import Program


@dataclasses.dataclass(frozen=True)
class PruneStructuredOptions:
    ratio: float = 0.5
    importance: Literal["l1", "l2", "taylor", "bn-scale"] = "l2"
    scope: Literal["layer", "global"] = "layer"
    round_to: int = 1  # kept channels are a multiple of this (hardware vector width)
    kinds: Literal["all", "channels", "heads"] = "all"
    include: tuple[str, ...] = ()  # only groups containing a layer matching these globs
    exclude: tuple[str, ...] = ()  # never groups containing a layer matching these
    error_batches: int = 4

    def __post_init__(self) -> None:
        if not 0 <= self.ratio < 1:
            raise ValueError(f"ratio must be in [0, 1), got {self.ratio}")
        if self.round_to < 1:
            raise ValueError("round_to must be >= 1")


@dataclasses.dataclass(frozen=True)
class PruneHeadsOptions:
    ratio: float = 0.5
    importance: Literal["l1", "l2", "taylor"] = "l2"
    scope: Literal["layer", "global"] = "layer"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    error_batches: int = 4

    def __post_init__(self) -> None:
        if not 0 <= self.ratio < 1:
            raise ValueError(f"ratio must be in [0, 1), got {self.ratio}")


def find_groups(program: Program) -> tuple[list[Group], dict[str, str], dict[Any, str]]:
    """Every prunable group (in graph order), the layers skipped with their reason, and
    the name of every layer node."""
    names = {layer.node: layer.name for layer in find_layers(program, embeddings=False)}
    groups: list[Group] = []
    skipped: dict[str, str] = {}
    covered: set[Any] = set()
    for node, name in names.items():
        if node in covered:
            continue
        try:
            group = build_group(program, node, name)
        except Unsupported as e:
            skipped[name] = str(e)
            continue
        covered.update(group.values)
        groups.append(group)
    return groups, skipped, names


def _layer_names(group: Group, names: dict[Any, str]) -> list[str]:
    return [names[n] for n, _ in group.producers + group.sinks if n in names]


def select_groups(groups: list[Group], names: dict[Any, str], include: tuple[str, ...],
                  exclude: tuple[str, ...], kinds: str) -> list[Group]:
    check_patterns([n for g in groups for n in _layer_names(g, names)], include, exclude)
    return [g for g in groups if (kinds == "all" or g.kind == kinds)
            and selected(_layer_names(g, names), include, exclude)]


def units_to_keep(group: Group, remove_fraction: float, round_to: int) -> int:
    keep = max(1, math.ceil(group.units * (1 - remove_fraction) - 1e-9))
    step = max(1, round_to // group.inner) if group.inner < round_to else 1
    return min(group.units, math.ceil(keep / step) * step)


def plan_removal(groups: list[Group], scores: list[torch.Tensor], ratio: float, scope: str,
                 round_to: int) -> list[list[int]]:
    """Which units of each group to remove."""
    if scope == "layer" or not groups:
        return [rank_units(s, g.units - units_to_keep(g, ratio, round_to))
                for g, s in zip(groups, scores)]
    normed = [s / s.mean().clamp_min(1e-30) for s in scores]
    pooled = torch.cat(normed)
    n_remove = int(ratio * len(pooled))
    threshold = pooled.sort().values[n_remove - 1] if n_remove else -math.inf
    plan = []
    for g, s in zip(groups, normed):
        fraction = float((s <= threshold).sum()) / g.units
        plan.append(rank_units(s, g.units - units_to_keep(g, min(fraction, 1.0), round_to)))
    return plan


def prune_groups(program: Program, options: Any, context: PassContext, kinds: str,
                 round_to: int) -> PassResult:
    reference = program.copy()
    before = measure(program)
    groups, skipped, names = find_groups(program)
    chosen = select_groups(groups, names, options.include, options.exclude, kinds)
    batches = None
    if options.importance == "taylor":
        batches = check_calibration(program, context.calibration, "taylor importance")
    scores, used = group_scores(program, chosen, options.importance, batches)
    plan = plan_removal(chosen, scores, options.ratio, options.scope, round_to)
    try:
        remove_units(program, list(zip(chosen, plan)))
    except Unsupported as e:
        raise OptionError(f"structured pruning: {e}; lower the ratio or exclude that "
                          "layer") from None
    program.verify()
    after = measure(program)
    report = [{"group": g.seed, "kind": g.kind, "units": g.units,
               "kept": g.units - len(p), "channels_per_unit": g.inner, "criterion": c,
               "layers": len(g.producers) + len(g.sinks)}
              for g, p, c in zip(chosen, plan, used)]
    cal = list(context.calibration) if context.calibration is not None else None
    return PassResult(program, any(plan), {
        "groups": report,
        "skipped": _dedupe(skipped),
        "parameters": [before.parameters, after.parameters],
        "macs": [before.macs, after.macs],
        "parameter_reduction": round(1 - after.parameters / max(before.parameters, 1), 4),
        "mac_reduction": round(1 - after.macs / max(before.macs, 1), 4),
        "error": output_error(reference, program, cal, options.error_batches),
    })


def _dedupe(skipped: dict[str, str]) -> dict[str, str]:
    """One entry per reason: 'layer (+N more)' for groups that fail the same way."""
    by_reason: dict[str, list[str]] = {}
    for name, reason in skipped.items():
        by_reason.setdefault(reason, []).append(name)
    return {(names[0] if len(names) == 1 else f"{names[0]} (+{len(names) - 1} more)"): reason
            for reason, names in by_reason.items()}


def _validate_importance(program: Program, options: Any, context: PassContext) -> None:
    if options.importance == "taylor":
        validate_calibration(program, context.calibration, "taylor importance")


class PruneStructured(Pass):
    """Remove channels / neurons / heads with every coupled dimension (lossy)."""

    name = "prune-structured"
    Options = PruneStructuredOptions
    lossless = False

    def validate(self, program: Program, options: PruneStructuredOptions,
                 context: PassContext) -> None:
        _validate_importance(program, options, context)

    def run(self, program: Program, options: PruneStructuredOptions,
            context: PassContext) -> PassResult:
        return prune_groups(program, options, context, options.kinds, options.round_to)


class PruneHeads(Pass):
    """Remove whole attention heads (whole KV groups under grouped-query attention)."""

    name = "prune-heads"
    Options = PruneHeadsOptions
    lossless = False

    def validate(self, program: Program, options: PruneHeadsOptions,
                 context: PassContext) -> None:
        _validate_importance(program, options, context)

    def run(self, program: Program, options: PruneHeadsOptions,
            context: PassContext) -> PassResult:
        return prune_groups(program, options, context, "heads", 1)
