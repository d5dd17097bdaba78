"""AWQ (Lin et al., 2024): activation-aware weight quantization.

For the linear layers that read one input ``x`` (e.g. query/key/value), search a per-input-
channel scale ``s = mean|x|^α / sqrt(max · min)`` over a grid of ``α ∈ [0, 1]`` that minimises
the output error of ``Q(W · s) / s`` on calibration activations; ``α = 0`` is plain
round-to-nearest, so the search is never worse than RTN on the calibration data. The input
is divided by ``s`` in the graph (``x * (1/s)``) and the weights multiplied by it — exact in
float. Then, optionally, a per-group clipping ratio in ``[0.5, 1]`` is searched the same way.
"""

from __future__ import annotations

import torch

from edgecc.passes.quantize.scheme import TensorQuant
from edgecc.passes.quantize.weights import block_view, weight_params


def _fake_quant(w: torch.Tensor, tq: TensorQuant, clip: torch.Tensor | None = None,
                scale_dtype: torch.dtype = torch.float32) -> torch.Tensor:
    p = weight_params(w, tq, 0, 1, clip=clip, scale_dtype=scale_dtype)
    return p.fake_quantize(w)


def search_scale(weights: list[torch.Tensor], x: torch.Tensor, tq: TensorQuant, *,
                 grid: int = 20, scale_dtype: torch.dtype = torch.float32
                 ) -> tuple[torch.Tensor, float, float]:
    """Best input-channel scale for the linears ``weights`` (all ``[*, K]``) reading ``x``
    (``[T, K]``); returns ``(s, best α, error reduction vs α = 0)``."""
    x = x.to(torch.float32)
    x_mean = x.abs().mean(0)
    refs = [x @ w.T for w in weights]
    best = (torch.ones_like(x_mean), 0.0, None)
    base = None
    for k in range(grid):
        alpha = k / grid
        s = x_mean.pow(alpha).clamp_min(1e-4)
        s = s / (s.max() * s.min()).sqrt()
        err = 0.0
        for w, ref in zip(weights, refs):
            wq = _fake_quant(w * s, tq, scale_dtype=scale_dtype) / s
            err += (x @ wq.T - ref).pow(2).mean().item()
        if base is None:
            base = err
        if best[2] is None or err < best[2]:
            best = (s, alpha, err)
    s, alpha, err = best
    return s, alpha, (1 - err / base) if base else 0.0


def search_clip(w: torch.Tensor, x: torch.Tensor, tq: TensorQuant, *, steps: int = 10,
                min_ratio: float = 0.5, scale_dtype: torch.dtype = torch.float32
                ) -> torch.Tensor:
    """Per-group (or per-channel) clipping ratio minimising the output error of ``w``."""
    x = x.to(torch.float32)
    group = tq.group_size if tq.granularity == "per-group" else w.shape[1]
    xg = block_view(x, 1, group)  # [T, G, g]
    best_err = None
    best = None
    for k in range(steps + 1):
        ratio = 1.0 - (1.0 - min_ratio) * k / steps
        p = weight_params(w, tq, 0, 1, clip=ratio, scale_dtype=scale_dtype)
        diff = block_view(w - p.fake_quantize(w), 1, group)  # [N, G, g]
        err = torch.einsum("tGg,nGg->tnG", xg, diff).pow(2).mean(0)  # [N, G]
        if best_err is None:
            best_err, best = err, torch.full_like(err, ratio)
        else:
            better = err < best_err
            best_err = torch.where(better, err, best_err)
            best = torch.where(better, torch.full_like(err, ratio), best)
    return best if tq.granularity == "per-group" else best[:, 0]
