"""Symmetric int4 scales snapped onto llama.cpp's Q4_K grid, so ``-t gguf`` writes Q4_K.

Q4_K stores 256 weights along a row as 8 sub-blocks of 32: one fp16 ``d`` and ``dmin`` per
256 and 6-bit codes ``sc[j]``, ``m[j]`` per sub-block; ``x = d·sc[j]·q - dmin·m[j]`` with
``q`` in 0..15. A symmetric int4 weight ``x = s[j]·c`` (``c`` in -8..7, zero point 0) is
exactly that when ``s[j] = d·sc[j]`` (``q = c + 8``, ``dmin = 8·d``, ``m[j] = sc[j]``),
so this module replaces per-32 scales ``[N, K/32]`` by ``d·sc[j]`` with, per 256 weights,
``d = fp16(max_j s[j] / 63)`` and ``sc[j] = clamp(round(s[j] / d), 1, 63)`` (float32: the
product of an fp16 value and a 6-bit integer is exact). The change of each scale is at most
``d / 2 = max_j s[j] / 126`` -- the grid's own rounding, which Q4_K pays too.

Rows whose length is not a multiple of 256 have no Q4_K layout; ``snap_q4k`` returns None
for them and the caller keeps the plain per-32 fp16 scales (Q4_0).
"""

from __future__ import annotations

import torch

from edgecc.quant import QuantParams

SUPER = 256
GROUP = 32
SC_MAX = 63
_FP16_TINY = 2.0 ** -24  # smallest fp16 subnormal: d of an all-zero block


def q4k_reason(params: QuantParams, cols: int) -> str | None:
    """Why ``params`` cannot be put on the Q4_K grid (None: it can)."""
    if params.format.bits != 4 or params.block_size != GROUP or params.axis % 2 != 1:
        return "Q4_K needs 4-bit weights in groups of 32 along the row"
    if bool((params.zero_point.to(torch.int32) != (0 if params.format.signed else 8)).any()):
        return "Q4_K's grid is used with symmetric int4 (zero point 0) here"
    if cols % SUPER:
        return f"rows of {cols} weights are not a multiple of {SUPER} (Q4_K super-blocks)"
    return None


def snap_q4k(params: QuantParams, cols: int) -> QuantParams | None:
    """``params`` with its scales on the Q4_K grid, or None when ``q4k_reason`` says no."""
    if q4k_reason(params, cols):
        return None
    s = params.scale.to(torch.float32)
    rows = s.shape[0]
    sb = s.reshape(rows, cols // SUPER, SUPER // GROUP)
    d = (sb.amax(-1, keepdim=True) / SC_MAX).to(torch.float16).to(torch.float32)
    d = d.clamp_min(_FP16_TINY)
    sc = torch.clamp(torch.round(sb / d), 1, SC_MAX)
    scale = (d * sc).reshape(s.shape)
    return QuantParams(params.dtype, scale, params.zero_point, params.axis, params.block_size,
                       params.qmin, params.qmax)


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
