"""Observers: the range ``[lo, hi]`` an activation is quantized over, from calibration data.

=====================  ==================================================================
``minmax``             the smallest and largest value seen
``moving-average``     exponential moving average (``momentum``) of each batch's min / max
``percentile``         the ``percentile`` / ``100 - percentile`` quantiles of the values seen
``mse``                the clipping range (a fraction of min/max, 100-point grid) whose
                       fake-quantization has the least mean squared error on the values seen
``entropy``            the symmetric threshold minimising the KL divergence between the
                       value histogram and its quantized version (TensorRT's calibrator)
=====================  ==================================================================

Sample-based observers keep a uniform random sample of at most ``max_samples`` values
(reservoir), so memory stays bounded on long calibration runs.
"""

from __future__ import annotations

import math

import torch

OBSERVERS = ("minmax", "moving-average", "percentile", "mse", "entropy")


class Observer:
    def __init__(self, *, momentum: float = 0.9, percentile: float = 99.99,
                 max_samples: int = 1 << 18, seed: int = 0):
        self.lo: torch.Tensor | None = None
        self.hi: torch.Tensor | None = None
        self.momentum = momentum
        self.percentile = percentile
        self.max_samples = max_samples
        self.samples: torch.Tensor | None = None
        self.seen = 0
        self.generator = torch.Generator().manual_seed(seed)

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().to(torch.float32)
        lo, hi = x.min(), x.max()
        self.lo = lo if self.lo is None else torch.minimum(self.lo, lo)
        self.hi = hi if self.hi is None else torch.maximum(self.hi, hi)
        self.seen += 1

    def range(self, quant: object = None) -> tuple[torch.Tensor, torch.Tensor]:
        if self.lo is None or self.hi is None:
            raise RuntimeError("observer saw no data")
        return self.lo, self.hi

    def _keep_sample(self, x: torch.Tensor) -> None:
        flat = x.flatten()
        if flat.numel() > self.max_samples:
            idx = torch.randint(flat.numel(), (self.max_samples,), generator=self.generator)
            flat = flat[idx]
        pool = flat if self.samples is None else torch.cat((self.samples, flat))
        if pool.numel() > self.max_samples:
            idx = torch.randperm(pool.numel(), generator=self.generator)[: self.max_samples]
            pool = pool[idx]
        self.samples = pool


class MinMaxObserver(Observer):
    pass


class MovingAverageObserver(Observer):
    def update(self, x: torch.Tensor) -> None:
        x = x.detach().to(torch.float32)
        lo, hi = x.min(), x.max()
        if self.lo is None:
            self.lo, self.hi = lo, hi
        else:
            m = self.momentum
            self.lo = m * self.lo + (1 - m) * lo
            self.hi = m * self.hi + (1 - m) * hi
        self.seen += 1


class PercentileObserver(Observer):
    def update(self, x: torch.Tensor) -> None:
        super().update(x)
        self._keep_sample(x.detach().to(torch.float32))

    def range(self, quant: object = None) -> tuple[torch.Tensor, torch.Tensor]:
        super().range()
        q = torch.tensor([1 - self.percentile / 100, self.percentile / 100])
        lo, hi = torch.quantile(self.samples, q)
        return lo, hi


class MSEObserver(PercentileObserver):
    """Grid search of the clipping fraction minimising fake-quantization MSE."""

    def range(self, quant: object = None) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = Observer.range(self)
        if quant is None:
            return lo, hi
        from edgecc.quant import params_from_scale, scale_from_range

        x = self.samples
        best, best_err = (lo, hi), math.inf
        q0, q1 = quant.range()
        for frac in torch.linspace(0.05, 1.0, 100):
            clo, chi = lo * frac, hi * frac
            scale, zp = scale_from_range(clo, chi, quant.dtype, symmetric=quant.symmetric,
                                         qmin=q0, qmax=q1)
            p = params_from_scale(quant.dtype, scale, zp, qmin=q0, qmax=q1)
            err = (p.fake_quantize(x) - x).pow(2).mean().item()
            if err < best_err:
                best, best_err = (clo, chi), err
        return best


class EntropyObserver(PercentileObserver):
    """KL-divergence calibration (2048-bin |x| histogram, 128 quantized levels)."""

    bins = 2048
    levels = 128

    def range(self, quant: object = None) -> tuple[torch.Tensor, torch.Tensor]:
        lo, hi = Observer.range(self)
        amax = torch.maximum(lo.abs(), hi.abs()).item()
        if amax == 0:
            return lo, hi
        hist = torch.histc(self.samples.abs(), bins=self.bins, min=0, max=amax).double()
        width = amax / self.bins
        best_i, best_kl = self.bins, math.inf
        for i in range(self.levels, self.bins + 1, 16):
            p = hist[:i].clone()
            p[-1] += hist[i:].sum()
            if p.sum() == 0:
                continue
            # quantize p's first i bins into `levels` buckets, expand back over non-zeros
            chunks = torch.tensor_split(hist[:i], self.levels)
            q = torch.cat([
                torch.where(c > 0, c.sum() / max(int((c > 0).sum()), 1), torch.zeros_like(c))
                for c in chunks])
            p, q = p / p.sum(), q / max(q.sum().item(), 1e-12)
            mask = p > 0
            kl = (p[mask] * torch.log(p[mask] / q[mask].clamp_min(1e-12))).sum().item()
            if kl < best_kl:
                best_i, best_kl = i, kl
        t = torch.tensor((best_i + 0.5) * width)
        return torch.maximum(lo, -t), torch.minimum(hi, t)


def make_observer(kind: str, *, percentile: float = 99.99, momentum: float = 0.9,
                  seed: int = 0) -> Observer:
    cls = {"minmax": MinMaxObserver, "moving-average": MovingAverageObserver,
           "percentile": PercentileObserver, "mse": MSEObserver,
           "entropy": EntropyObserver}.get(kind)
    if cls is None:
        raise ValueError(f"unknown observer '{kind}': expected one of {', '.join(OBSERVERS)}")
    return cls(percentile=percentile, momentum=momentum, seed=seed)
