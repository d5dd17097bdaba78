"""Symmetric int4 scales snapped onto llama.cpp's Q4_K grid, so ``-t gguf`` writes Q4_K.

Q4_K stores 256 weights along a row as 8 sub-blocks of 32: one fp16 ``d`` and ``dmin`` per
256 and 6-bit codes ``sc[j]``, ``m[j]`` per sub-block; ``x = d·sc[j]·q - dmin·m[j]`` with
``q`` in 0..15. A symmetric int4 weight ``x = s[j]·c`` (``c`` in -8..7, zero point 0) is
exactly that when ``s[j] = d·sc[j]`` (``q = c + 8``, ``dmin = 8·d``, ``m[j] = sc[j]``),
so this module replaces per-32 scales ``[N, K/32]`` by ``d·sc[j]`` with, per 256 weights,
``d = fp16(max_j s[j] / 63)`` and ``sc[j] = clamp(round(s[j] / d), 1, 63)`` (float32: the
product of an fp16 value and a 6-bit integer is exact). The change of each scale is at most
``d / 2 = max_j s[j] / 126`` -- the grid's own rounding, which Q4_K pays too.

Asymmetric int4 (``weight_symmetric=false``) is put on Q4_K's real grid, the one llama.cpp's
own quantizer fills: per 32 weights a scale ``d·sc[j]`` and a min ``dmin·m[j]`` (6-bit
codes, fp16 ``d`` / ``dmin`` per 256), held as ``edgecc.dequantize_offset`` with codes
``c`` in -8..7, zero point -8 and offset ``-dmin·m[j]``::

    x = (c + 8)·d·sc[j] - dmin·m[j]          (= ggml's d1·q - m1, bit for bit)

The per-32 scale and min are fitted as ggml's ``make_qkx2_quants`` does (weights
``rms(x) + |x|``, 21 trial scales, a weighted least-squares refit of scale and min, the min
never above 0), then rounded to 6 bits against the largest of the 256 (``d = fp16(max sc /
63)``, codes at least 1 so no step is 0). GPTQ / AWQ / RTN then round onto that fixed grid.
Error bound (round to nearest): a weight inside its sub-block's range
``[-dmin·m, -dmin·m + 15·d·sc]`` moves by at most half a step ``d·sc / 2``; one outside
(the fit may clip outliers, as ggml's does) is clamped to the range's end.

Rows whose length is not a multiple of 256 have no Q4_K layout; ``snap_q4k`` returns None
for them and the caller keeps the plain per-32 fp16 scales (Q4_0, or Q4_1 when asymmetric).
"""

from __future__ import annotations

import torch

from edgecc.quant import QuantParams

SUPER = 256
GROUP = 32
SC_MAX = 63
_FP16_TINY = 2.0 ** -24  # smallest fp16 subnormal: d of an all-zero block


def q4k_reason(params: QuantParams, cols: int) -> str | None:
    """Why ``params`` cannot be put on the Q4_K grid (None: it can; symmetric or asymmetric
    int4 in groups of 32 along rows of a multiple of 256)."""
    if params.format.bits != 4 or params.block_size != GROUP or params.axis % 2 != 1:
        return "Q4_K needs 4-bit weights in groups of 32 along the row"
    if cols % SUPER:
        return f"rows of {cols} weights are not a multiple of {SUPER} (Q4_K super-blocks)"
    return None


def _symmetric(params: QuantParams) -> bool:
    mid = 0 if params.format.signed else 8
    return not bool((params.zero_point.to(torch.int32) != mid).any())


def snap_q4k(params: QuantParams, cols: int, w: torch.Tensor | None = None
             ) -> QuantParams | None:
    """``params`` on the Q4_K grid, or None when ``q4k_reason`` says no. Symmetric int4:
    its scales snapped (``d·sc``, zero point kept). Asymmetric int4 (any other zero point):
    scale and min fitted to ``w`` on Q4_K's real grid (``fit_q4k``; ``w`` is required)."""
    if q4k_reason(params, cols):
        return None
    if not _symmetric(params):
        if w is None:
            raise ValueError("the asymmetric Q4_K grid is fitted to the weight: pass w")
        scale, offset = fit_q4k(w)
        lo = params.format.qmin
        zero = torch.full(scale.shape, lo, dtype=params.zero_point.dtype)
        return QuantParams(params.dtype, scale, zero, params.axis, params.block_size,
                           lo, lo + 15, offset=offset)
    s = params.scale.to(torch.float32)
    rows = s.shape[0]
    sb = s.reshape(rows, cols // SUPER, SUPER // GROUP)
    d = (sb.amax(-1, keepdim=True) / SC_MAX).to(torch.float16).to(torch.float32)
    d = d.clamp_min(_FP16_TINY)
    sc = torch.clamp(torch.round(sb / d), 1, SC_MAX)
    scale = (d * sc).reshape(s.shape)
    return QuantParams(params.dtype, scale, params.zero_point, params.axis, params.block_size,
                       params.qmin, params.qmax)


def _make_qkx2(x: torch.Tensor, nmax: int = 15, rmin: float = -1.0, rdelta: float = 0.1,
               nstep: int = 20) -> tuple[torch.Tensor, torch.Tensor]:
    """ggml's ``make_qkx2_quants`` on every row of ``x`` ``[..., n]`` at once: the scale and
    min (``x ≈ scale·L + min``, ``min <= 0``, ``L`` in 0..nmax) minimising the error weighted
    by ``rms(x) + |x|``; returns ``(scale, -min)`` (both >= 0)."""
    x = x.to(torch.float32)
    wts = x.pow(2).mean(-1, keepdim=True).sqrt() + x.abs()
    sum_w = wts.sum(-1)
    sum_x = (wts * x).sum(-1)
    lo = x.amin(-1).clamp(max=0)
    hi = x.amax(-1)
    span = hi - lo
    flat = span <= 0
    span = torch.where(flat, torch.ones_like(span), span)

    def levels(iscale: torch.Tensor) -> torch.Tensor:
        return torch.clamp(torch.round(iscale[..., None] * (x - lo[..., None])), 0, nmax)

    def error(scale: torch.Tensor, mn: torch.Tensor, lv: torch.Tensor) -> torch.Tensor:
        return (wts * (scale[..., None] * lv + mn[..., None] - x).pow(2)).sum(-1)

    scale, mn = span / nmax, lo.clone()
    best = error(scale, mn, levels(nmax / span))
    for step in range(nstep + 1):
        lv = levels((rmin + rdelta * step + nmax) / span)
        sum_l, sum_l2 = (wts * lv).sum(-1), (wts * lv * lv).sum(-1)
        sum_xl = (wts * lv * x).sum(-1)
        det = sum_w * sum_l2 - sum_l * sum_l
        ok = det > 0
        safe = torch.where(ok, det, torch.ones_like(det))
        this_scale = (sum_w * sum_xl - sum_x * sum_l) / safe
        this_min = (sum_l2 * sum_x - sum_l * sum_xl) / safe
        pos = this_min > 0
        this_scale = torch.where(pos, sum_xl / sum_l2.clamp_min(1e-30), this_scale)
        this_min = torch.where(pos, torch.zeros_like(this_min), this_min)
        err = error(this_scale, this_min, lv)
        better = ok & (err < best)
        best = torch.where(better, err, best)
        scale = torch.where(better, this_scale, scale)
        mn = torch.where(better, this_min, mn)
    scale = torch.where(flat, torch.zeros_like(scale), scale)
    mn = torch.where(flat, lo, mn)
    return scale, -mn


def fit_q4k(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Q4_K's asymmetric grid for a weight ``[N, K]`` (``K % 256 == 0``): float32 per-32
    ``scale = d·sc[j]`` and ``offset = -dmin·m[j]`` ``[N, K/32]`` (module docstring), the
    products of fp16 ``d`` / ``dmin`` and 6-bit codes, exact in float32."""
    rows, cols = w.shape
    scale, mins = _make_qkx2(w.detach().reshape(rows, cols // GROUP, GROUP))
    sb, mb = (t.reshape(rows, cols // SUPER, SUPER // GROUP) for t in (scale, mins))

    def six_bit(v: torch.Tensor, lowest: int) -> torch.Tensor:
        top = v.amax(-1, keepdim=True)
        inv = torch.where(top > 0, SC_MAX / top.clamp_min(1e-30), torch.zeros_like(top))
        code = torch.clamp(torch.round(inv * v), lowest, SC_MAX)
        base = (top / SC_MAX).to(torch.float16).to(torch.float32)
        return base * code, base

    scale_q, d = six_bit(sb, 1)
    # a zero d (an all-zero block) would make every step 0: the smallest fp16 instead
    scale_q = torch.where(d > 0, scale_q, torch.full_like(scale_q, _FP16_TINY))
    min_q, _ = six_bit(mb, 0)
    return scale_q.reshape(rows, -1), (-min_q).reshape(rows, -1)


def snap_q4_0(params: QuantParams, w: torch.Tensor) -> QuantParams | None:
    """ggml's own Q4_0 scale instead of ``amax / 7.5``: per 32 weights ``d = fp16(m / -8)``
    where ``m`` is the weight of largest magnitude *with its sign*, so that weight is code
    -8 exactly and the step is ``amax / 8`` (``d`` is negative when ``m`` is positive; Q4_0
    stores it as is). Round-to-nearest with it is llama.cpp's Q4_0 up to ties (ggml rounds
    halves up, edgecc to even); GPTQ / AWQ then round onto the same grid. None unless
    symmetric int4 in groups of 32 along rows."""
    if (params.format.bits != 4 or params.block_size != GROUP or params.axis % 2 != 1
            or bool((params.zero_point.to(torch.int32)
                     != (0 if params.format.signed else 8)).any())):
        return None
    rows, cols = w.shape
    g = w.detach().float().reshape(rows, -1, GROUP)
    idx = g.abs().argmax(-1, keepdim=True)
    m = g.gather(-1, idx)[..., 0]
    d = (m / -8).to(torch.float16).to(torch.float32)
    d = torch.where(d == 0, torch.full_like(d, _FP16_TINY), d)
    return QuantParams(params.dtype, d.to(params.scale.dtype), params.zero_point, params.axis,
                       params.block_size, params.qmin, params.qmax)


def snap_q5_0(params: QuantParams, w: torch.Tensor) -> QuantParams:
    """ggml's Q5_0 grid for a weight ``[N, K]`` (``K % 32 == 0``), as int8 params GPTQ can
    round onto: per 32 weights ``d = fp16(m / -16)`` (``m`` the weight of largest magnitude
    with its sign, so it is code -16 exactly), codes -16..15, zero point 0 -- what ggml's
    reference quantizer uses (which then rounds to nearest; GPTQ rounds with its error
    feedback instead). ``-t gguf`` writes these as Q5_0 bit-exactly."""
    rows, cols = w.shape
    g = w.detach().float().reshape(rows, -1, GROUP)
    m = g.gather(-1, g.abs().argmax(-1, keepdim=True))[..., 0]
    d = (m / -16).to(torch.float16).to(torch.float32)
    d = torch.where(d == 0, torch.full_like(d, _FP16_TINY), d)
    return QuantParams("int8", d, torch.zeros(d.shape, dtype=torch.int8), 1, GROUP, -16, 15)
