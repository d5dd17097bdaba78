"""Output comparison metrics shared by instruments, verification and lossy passes.

* ``max_abs`` -- largest absolute difference over all outputs and samples;
* ``max_rel`` -- ``max_abs`` of each output divided by that output's largest magnitude
  (the worst over outputs), robust to near-zero elements;
* ``cosine`` -- the lowest cosine similarity of any flattened output with its reference;
* ``sqnr_db`` -- signal-to-quantization-noise ratio, 10·log10(|ref|² / |ref - got|²);
* ``passed`` -- every element satisfies ``|got - ref| <= atol + rtol * |ref|``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch


def _as_tensor(x: Any) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach()
    return torch.as_tensor(x)


def compare_outputs(
    reference: Sequence[Sequence[Any]],
    actual: Sequence[Sequence[Any]],
    *,
    atol: float,
    rtol: float,
) -> dict[str, Any]:
    """Compare per-sample output tuples; returns the metrics above as plain floats."""
    max_abs = 0.0
    max_rel = 0.0
    cosine = 1.0
    signal = 0.0
    noise = 0.0
    passed = True
    for ref_outs, got_outs in zip(reference, actual, strict=True):
        if len(ref_outs) != len(got_outs):
            raise ValueError(f"{len(got_outs)} outputs where {len(ref_outs)} were expected")
        for ref, got in zip(ref_outs, got_outs):
            r = _as_tensor(ref).to(torch.float64).reshape(-1)
            g = _as_tensor(got).to(torch.float64).reshape(-1)
            if r.shape != g.shape:
                raise ValueError(f"output shape {tuple(g.shape)} != reference {tuple(r.shape)}")
            if r.numel() == 0:
                continue
            diff = (r - g).abs()
            finite = torch.isfinite(r) & torch.isfinite(g)
            same_nonfinite = (~finite) & ((r == g) | (r.isnan() & g.isnan()))
            d = torch.where(finite, diff, torch.where(same_nonfinite, 0.0, math.inf))
            max_abs = max(max_abs, float(d.max()))
            scale = float(r[torch.isfinite(r)].abs().max()) if finite.any() else 0.0
            max_rel = max(max_rel, float(d.max()) / scale if scale > 0 else float(d.max()))
            passed = passed and bool((d <= atol + rtol * r.abs().nan_to_num(posinf=0.0)).all())
            rf, gf = r[finite], g[finite]
            denom = float(rf.norm() * gf.norm())
            cos = float(rf @ gf) / denom if denom > 0 else (1.0 if float(rf.norm()) == float(gf.norm()) else 0.0)
            cosine = min(cosine, cos)
            signal += float((rf * rf).sum())
            noise += float(((rf - gf) ** 2).sum())
    sqnr = math.inf if noise == 0 else 10.0 * math.log10(signal / noise) if signal > 0 else -math.inf
    return {
        "max_abs": max_abs,
        "max_rel": max_rel,
        "cosine": cosine,
        "sqnr_db": sqnr,
        "atol": atol,
        "rtol": rtol,
        "passed": passed,
    }
