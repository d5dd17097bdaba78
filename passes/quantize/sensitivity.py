"""Per-layer quantization sensitivity, and the mixed-precision search built on it.

``layer_sensitivity`` quantizes one layer at a time (everything else float) and measures the
program output against the float program on calibration batches: output SQNR in dB (lower
is more sensitive) or a user metric. ``mixed_precision`` (``quantize{scheme=auto}``) keeps
the most sensitive layers at higher precision — float, or ``auto_fallback`` — adding them
most-sensitive-first (doubling, then bisection) until the output cosine drop on the
calibration batches is at most ``max_drop``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Sequence
from typing import Any

import torch

from edgecc.metrics import compare_outputs
from edgecc.pass_base import PassContext
from edgecc.program import Program
from edgecc.progress import progress_iter


def _outputs(program: Program, batches: Sequence[Sequence[torch.Tensor]]) -> list[Any]:
    return [program.run(*b) for b in batches]


def output_drop(reference: list[Any], program: Program,
                batches: Sequence[Sequence[torch.Tensor]]) -> tuple[float, float]:
    """``(1 - cosine, sqnr_db)`` of ``program``'s outputs against ``reference``."""
    m = compare_outputs(reference, _outputs(program, batches), atol=0.0, rtol=0.0)
    return 1.0 - m["cosine"], m["sqnr_db"]


def layer_sensitivity(program: Program, batches: Sequence[Sequence[torch.Tensor]],
                      options: Any, *, metric: Callable[[Program], float] | None = None,
                      context: PassContext | None = None) -> list[dict[str, Any]]:
    """One entry per layer, most sensitive first: ``{"layer", "sqnr_db", "drop"}``
    (plus ``"metric"`` when a user metric is given; higher metric is better)."""
    from edgecc.passes.quantize.layers import find_layers, select
    from edgecc.passes.quantize.quantize import Quantize

    context = context or PassContext(calibration=batches)
    reference = _outputs(program, batches)
    layers, _ = select(find_layers(program, embeddings=options.embeddings), options.exclude,
                       options.include)
    report = []
    for layer in progress_iter(layers, "sensitivity", enabled=context.progress):
        one = dataclasses.replace(options, include=(layer.name,), exclude=(),
                                  error_batches=0)
        trial = Quantize()(program.copy(), one, context=context).program
        drop, sqnr = output_drop(reference, trial, batches)
        entry = {"layer": layer.name, "sqnr_db": round(sqnr, 2), "drop": drop}
        if metric is not None:
            entry["metric"] = metric(trial)
        report.append(entry)
    key = (lambda e: e["metric"]) if metric is not None else (lambda e: e["sqnr_db"])
    return sorted(report, key=key)


def mixed_precision(program: Program, options: Any, context: PassContext,
                    batches: Sequence[Sequence[torch.Tensor]]) -> tuple[Program, dict[str, Any]]:
    """Quantize with ``options.auto_from``, keeping the fewest most-sensitive layers at
    higher precision such that the output cosine drop is <= ``options.max_drop``."""
    from edgecc.passes.quantize.quantize import Quantize

    base = dataclasses.replace(options, scheme=options.auto_from)
    ranking = layer_sensitivity(program, batches, base, context=context)
    names = [e["layer"] for e in ranking]
    reference = _outputs(program, batches)

    def trial(k: int) -> tuple[Program, float]:
        keep = tuple(names[:k])
        p = program.copy()
        if k < len(names):
            p = Quantize()(p, dataclasses.replace(base, exclude=base.exclude + keep),
                           context=context).program
        if keep and options.auto_fallback:
            fb = dataclasses.replace(base, scheme=options.auto_fallback, include=keep,
                                     exclude=(), algorithm="rtn")
            p = Quantize()(p, fb, context=context).program
        return p, output_drop(reference, p, batches)[0]

    tried: dict[int, tuple[Program, float]] = {}

    def ok(k: int) -> bool:
        if k not in tried:
            tried[k] = trial(k)
        return tried[k][1] <= options.max_drop

    lo, hi = -1, None  # lo: largest k known to fail; hi: smallest k known to pass
    k = 0
    while k <= len(names):
        if ok(k):
            hi = k
            break
        lo = k
        k = 1 if k == 0 else k * 2
    if hi is None:
        hi = len(names)
        ok(hi)
    while hi - lo > 1:
        mid = (lo + hi) // 2
        if ok(mid):
            hi = mid
        else:
            lo = mid
    result, drop = tried[hi]
    return result, {
        "auto_from": options.auto_from,
        "auto_fallback": options.auto_fallback or "float",
        "max_drop": options.max_drop,
        "drop": round(drop, 6),
        "budget_met": drop <= options.max_drop,
        "kept_high_precision": names[:hi],
        "sensitivity": [{k: (round(v, 6) if isinstance(v, float) else v)
                         for k, v in e.items()} for e in ranking[:10]],
        "trials": len(tried),
    }
