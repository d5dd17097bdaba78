"""prune: unstructured and N:M sparsity masks (magnitude, Taylor, SNIP); apply-masks.

``prune{sparsity=0.5,method=magnitude}`` gives each selected layer a mask (see
:mod:`edgecc.sparsity`); weights keep their values, the graph reads them through
``edgecc.masked``::

    %y = aten.convolution(%x, @conv.weight, ...)
  →
    %w = edgecc.masked(@conv.weight, @conv_weight_mask, 'unstructured')
    %y = aten.convolution(%x, %w, ...)

Scores: ``magnitude`` |w|; ``taylor`` |w · ∂L/∂w| with gradients summed over the calibration
batches; ``snip`` the connection sensitivity |w · ∂L/∂w| / Σ|w · ∂L/∂w| from one batch (Lee et
al. 2019, pruning at initialization, global by default). ``scope=layer`` removes ``sparsity``
of every layer, ``scope=global`` the ``sparsity`` fraction of all selected weights by score
(scores normalised per layer for magnitude). ``pattern=2:4`` / ``4:8`` keeps the N best of
every M weights along the reduction axis, exactly (sparsity fixed at 1 - N/M). A layer
already masked is pruned further (its mask only loses entries). Unstructured sparsity alone
makes no dense kernel faster: it is a size / accuracy tool until a target uses the masks.

``apply-masks`` (lossless) multiplies the masks into the weights and records the pattern in
its stats, for targets that run dense kernels.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch
import torch.fx as fx

from edgecc.pass_base import NoOptions, Pass, PassContext, PassResult
from edgecc.passes.prune.importance import weight_gradients
from edgecc.passes.prune.patterns import check_patterns, selected
from edgecc.passes.quantize.layers import (
    CONV_OPS, LINEAR_OPS, check_calibration, output_error, validate_calibration,
)
from edgecc.program import Program, op_name
from edgecc.sparsity import (
    MASKED, is_masked, nm_mask, parse_pattern, sparsity_of, threshold_mask,
)


@dataclasses.dataclass(frozen=True)
class PruneOptions:
    sparsity: float = 0.5
    method: Literal["magnitude", "taylor", "snip"] = "magnitude"
    pattern: Literal["unstructured", "2:4", "4:8", "1:4"] = "unstructured"
    scope: Literal["layer", "global"] = "layer"
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    error_batches: int = 4

    def __post_init__(self) -> None:
        if not 0 <= self.sparsity < 1:
            raise ValueError(f"sparsity must be in [0, 1), got {self.sparsity}")
        nm = parse_pattern(self.pattern)
        if nm and abs(self.sparsity - (1 - nm[0] / nm[1])) > 1e-9 and self.sparsity != 0.5:
            raise ValueError(f"pattern {self.pattern} fixes sparsity at {1 - nm[0] / nm[1]}")


@dataclasses.dataclass
class PrunableWeight:
    layer: fx.Node
    name: str
    weight: fx.Node  # get_attr of the dense weight
    mask: fx.Node | None  # get_attr of the current mask
    axis: int  # reduction axis (N:M groups run along it)


def prunable_weights(program: Program) -> list[PrunableWeight]:
    """Linear and (non-transposed) convolution weights, masked or not, named by module."""
    from edgecc.passes.quantize.layers import find_layers

    names = {layer.node: layer.name for layer in find_layers(program, embeddings=False)}
    out = []
    for node in program.nodes("call_function"):
        name = op_name(node)
        if name not in LINEAR_OPS and name not in CONV_OPS:
            continue
        if name in CONV_OPS and bool(node.args[6]):
            continue
        w, mask = node.args[1], None
        if is_masked(w) and program.is_constant(w.args[0]):
            w, mask = w.args[0], w.args[1]
        if not program.is_constant(w):
            continue
        label = names.get(node) or str(w.target).removesuffix(".weight")
        out.append(PrunableWeight(node, label, w, mask, 1))
    return out


def select_weights(weights: list[PrunableWeight], include: tuple[str, ...],
                   exclude: tuple[str, ...]) -> list[PrunableWeight]:
    check_patterns([w.name for w in weights], include, exclude)
    return [w for w in weights if selected([w.name], include, exclude)]


def weight_scores(program: Program, weights: list[PrunableWeight], method: str,
                  batches: list[Any] | None) -> list[torch.Tensor]:
    values = [program.tensor(w.weight).detach().float() for w in weights]
    if method == "magnitude":
        return [v.abs() for v in values]
    grads = weight_gradients(program, batches[:1] if method == "snip" else batches,
                             {str(w.weight.target) for w in weights})
    scores = [(v * grads[str(w.weight.target)]).abs() for w, v in zip(weights, values)]
    if method == "snip":
        total = sum(float(s.sum()) for s in scores) or 1.0
        scores = [s / total for s in scores]
    return scores


def compute_masks(program: Program, weights: list[PrunableWeight], scores: list[torch.Tensor],
                  sparsity: float, pattern: str, scope: str
                  ) -> tuple[list[torch.Tensor | None], dict[str, str]]:
    """New masks (only ever removing entries from existing ones; None for a layer skipped);
    the skipped layers with the reason."""
    nm = parse_pattern(pattern)
    old = [program.tensor(w.mask).bool() if w.mask is not None else torch.ones_like(s,
                                                                                   dtype=torch.bool)
           for w, s in zip(weights, scores)]
    scores = [s.masked_fill(~m, -1.0) for s, m in zip(scores, old)]  # pruned stay pruned
    skipped: dict[str, str] = {}
    if nm:
        masks = []
        for w, s, m in zip(weights, scores, old):
            if s.shape[w.axis] % nm[1]:
                skipped[w.name] = (f"reduction axis of {s.shape[w.axis]} is not a multiple "
                                   f"of {nm[1]}")
                masks.append(None)
            else:
                masks.append(nm_mask(s, nm[0], nm[1], w.axis) & m)
        return masks, skipped
    if scope == "layer":
        return [threshold_mask(s, sparsity) & m for s, m in zip(scores, old)], skipped
    normed = [s / s[s > 0].mean().clamp_min(1e-30) if (s > 0).any() else s for s in scores]
    flat = torch.cat([s.reshape(-1) for s in normed])
    k = int(round(sparsity * flat.numel()))
    thr = flat.kthvalue(k).values if k else torch.tensor(-2.0)
    return [(s > thr) & m for s, m in zip(normed, old)], skipped


def set_masks(program: Program, weights: list[PrunableWeight], masks: list[torch.Tensor],
              pattern: str) -> None:
    graph = program.graph
    for w, mask in zip(weights, masks):
        if mask is None:
            continue
        if w.mask is not None:
            program.set_tensor(w.mask, mask)
            w.layer.args[1].args = (w.weight, w.mask, pattern)
            continue
        mnode = program.add_constant(str(w.weight.target) + "_mask", mask, before=w.layer)
        with graph.inserting_before(w.layer):
            m = graph.call_function(MASKED, (w.weight, mnode, pattern))
        w.layer.replace_input_with(w.weight, m)
        w.mask = mnode
    program.graph_module.recompile()
    program.refresh_metadata()


def prune_weights(program: Program, options: PruneOptions,
                  batches: list[Any] | None) -> dict[str, Any]:
    weights = select_weights(prunable_weights(program), options.include, options.exclude)
    scores = weight_scores(program, weights, options.method, batches)
    scope = "global" if options.method == "snip" and options.scope == "layer" else options.scope
    masks, skipped = compute_masks(program, weights, scores, options.sparsity,
                                   options.pattern, scope)
    set_masks(program, weights, masks, options.pattern)
    done = [(w, m) for w, m in zip(weights, masks) if m is not None]
    kept = sum(int(m.sum()) for _, m in done)
    total = sum(m.numel() for _, m in done)
    return {"layers": len(done), "pattern": options.pattern, "method": options.method,
            "scope": scope, "sparsity": round(1 - kept / max(total, 1), 4),
            "per_layer": {w.name: round(sparsity_of(m), 4) for w, m in done},
            "skipped": skipped}


class Prune(Pass):
    """Unstructured / N:M weight masks by magnitude, Taylor or SNIP scores (lossy)."""

    name = "prune"
    Options = PruneOptions
    lossless = False

    def validate(self, program: Program, options: PruneOptions,
                 context: PassContext) -> None:
        if options.method != "magnitude":
            validate_calibration(program, context.calibration,
                                 f"prune{{method={options.method}}}")

    def run(self, program: Program, options: PruneOptions, context: PassContext) -> PassResult:
        reference = program.copy()
        batches = None
        if options.method != "magnitude":
            batches = check_calibration(program, context.calibration,
                                        f"prune{{method={options.method}}}")
        stats = prune_weights(program, options, batches)
        cal = list(context.calibration) if context.calibration is not None else None
        stats["error"] = output_error(reference, program, cal, options.error_batches)
        stats["note"] = ("masks only: dense kernels run no faster; a target that reads the "
                         "masks (sparse kernels) or structured pruning is needed for speed")
        return PassResult(program, stats["layers"] > 0, stats)


class ApplyMasks(Pass):
    """Multiply sparsity masks into the weights (lossless); reports each layer's pattern."""

    name = "apply-masks"
    Options = NoOptions

    def run(self, program: Program, options: Any, context: PassContext) -> PassResult:
        done: dict[str, Any] = {}
        for node in program.nodes("call_function"):
            if not is_masked(node) or not all(program.is_constant(a) for a in node.args[:2]):
                continue
            w, m, pattern = node.args
            value = program.tensor(w).detach() * program.tensor(m).to(program.tensor(w).dtype)
            const = program.add_constant(str(w.target) + "_sparse", value, before=node)
            node.replace_all_uses_with(const)
            done[str(w.target)] = {"pattern": pattern,
                                   "sparsity": round(sparsity_of(program.tensor(m).bool()), 4)}
        program.graph.eliminate_dead_code()
        program.graph_module.recompile()
        program.refresh_metadata()
        return PassResult(program, bool(done), {"masked_weights": done})
