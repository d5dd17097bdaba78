"""Observers: each method's range on data where the right answer is known."""

from __future__ import annotations

import pytest
import torch

from edgecc.passes.quantize.observers import OBSERVERS, make_observer
from edgecc.passes.quantize.scheme import TensorQuant
from edgecc.quant import params_from_scale, scale_from_range

INT8 = TensorQuant("int8", symmetric=False)


def heavy_tailed(seed=0, n=200_000):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, generator=g) ** 3  # heavy tails: clipping some of them pays


def mse_of(lo, hi, x):
    s, z = scale_from_range(lo, hi, "int8", symmetric=False)
    return (params_from_scale("int8", s, z).fake_quantize(x) - x).pow(2).mean().item()


def test_minmax_is_exact():
    obs = make_observer("minmax")
    for chunk in heavy_tailed().chunk(5):
        obs.update(chunk)
    lo, hi = obs.range(INT8)
    assert lo == heavy_tailed().min() and hi == heavy_tailed().max()


def test_moving_average_follows_recent_batches():
    obs = make_observer("moving-average", momentum=0.5)
    obs.update(torch.tensor([-1.0, 1.0]))
    obs.update(torch.tensor([-3.0, 3.0]))
    lo, hi = obs.range(INT8)
    assert lo.item() == pytest.approx(-2.0) and hi.item() == pytest.approx(2.0)


def test_percentile_clips_outliers():
    obs = make_observer("percentile", percentile=99.9)
    obs.update(heavy_tailed())
    lo, hi = obs.range(INT8)
    x = heavy_tailed()
    assert hi == pytest.approx(torch.quantile(x[:100_000], 0.999).item(), rel=0.2)
    assert hi < 0.5 * x.max() and lo > 0.5 * x.min()


def test_mse_observer_beats_minmax_on_heavy_tails():
    x = heavy_tailed()
    obs, base = make_observer("mse"), make_observer("minmax")
    obs.update(x)
    base.update(x)
    assert mse_of(*obs.range(INT8), x) < 0.9 * mse_of(*base.range(INT8), x)


def test_unknown_observer():
    with pytest.raises(ValueError, match="unknown observer 'kl'"):
        make_observer("kl")
    assert set(OBSERVERS) == {"minmax", "moving-average", "percentile", "mse", "entropy"}


def test_entropy_threshold_drops_rare_outliers_but_keeps_the_bulk():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(200_000, generator=g)
    x[:10] = 60.0
    obs = make_observer("entropy")
    obs.update(x)
    lo, hi = obs.range(INT8)
    assert 3.0 < hi < 30.0 and lo == -hi  # symmetric threshold, far below the outliers
