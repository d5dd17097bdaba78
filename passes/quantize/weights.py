"""Round-to-nearest weight quantization parameters for any granularity."""

from __future__ import annotations

import torch

from edgecc.quant import QuantParams, packed_dim, params_from_scale, qformat, scale_from_range
from edgecc.passes.quantize.scheme import TensorQuant


def block_view(w: torch.Tensor, axis: int, group: int) -> torch.Tensor:
    """``w`` with ``axis`` split into ``[ceil(n / group), group]`` blocks (zero-padded),
    moved last: shape ``[..., n_blocks, group]``."""
    moved = w.movedim(axis, -1)
    n = moved.shape[-1]
    pad = (-n) % group
    if pad:
        moved = torch.nn.functional.pad(moved, (0, pad))
    return moved.unflatten(-1, (moved.shape[-1] // group, group))


def weight_range(w: torch.Tensor, tq: TensorQuant, out_axis: int, reduction_axis: int
                 ) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """``(lo, hi, axis, block_size)`` of ``w`` at the granularity of ``tq``."""
    w = w.detach().to(torch.float32)
    if tq.granularity == "per-tensor":
        return w.min(), w.max(), 0, 0
    if tq.granularity == "per-channel":
        dims = [d for d in range(w.dim()) if d != out_axis]
        return w.amin(dim=dims), w.amax(dim=dims), out_axis, 0
    blocks = block_view(w, reduction_axis, tq.group_size)
    # padding zeros do not widen the range: every range includes 0 anyway
    lo = blocks.amin(-1).movedim(-1, reduction_axis)
    hi = blocks.amax(-1).movedim(-1, reduction_axis)
    return lo, hi, reduction_axis, tq.group_size


def weight_params(w: torch.Tensor, tq: TensorQuant, out_axis: int, reduction_axis: int, *,
                  clip: torch.Tensor | float | None = None,
                  scale_dtype: torch.dtype = torch.float32) -> QuantParams:
    """Scale / zero point for ``w``; ``clip`` (<= 1) shrinks the range (AWQ, MSE search)."""
    fmt = qformat(tq.dtype)
    if fmt.is_float and fmt.bits == 16:
        return params_from_scale(tq.dtype, torch.tensor(1.0))
    lo, hi, axis, block = weight_range(w, tq, out_axis, reduction_axis)
    if clip is not None:
        lo, hi = lo * clip, hi * clip
    qmin, qmax = tq.range()
    scale, zp = scale_from_range(lo, hi, tq.dtype, symmetric=tq.symmetric, qmin=qmin,
                                 qmax=qmax)
    # store the scale at its storage precision, and quantize with exactly that value
    scale = scale.to(scale_dtype)
    zp = zp if fmt.is_float else zp.to(fmt.zero_point_dtype)
    return params_from_scale(tq.dtype, scale, zp, axis=axis, block_size=block, qmin=qmin,
                             qmax=qmax)


def can_quantize(w: torch.Tensor, tq: TensorQuant, reduction_axis: int = 1,
                 block_axis_packing: bool = False, out_axis: int = 0) -> str | None:
    """Why ``w`` cannot be stored in ``tq``'s format, or None (``block_axis_packing``: the
    target reads 4-bit values packed along the quantization axis, ``packed_dim``)."""
    if qformat(tq.dtype).packed and w.shape[-1] % 2:
        block = tq.group_size if tq.granularity == "per-group" else 0
        axis = out_axis if tq.granularity == "per-channel" else reduction_axis
        if (block_axis_packing and tq.granularity != "per-tensor"
                and packed_dim(w.shape, axis, block) is not None):
            return None
        return f"4-bit storage packs the last dimension, which is odd ({w.shape[-1]})"
    return None


def one_block_per_channel(w: torch.Tensor, tq: TensorQuant, reduction_axis: int) -> bool:
    """A convolution whose whole reduction (input channels x kernel) fits in one group:
    blocks along the input channels would give each kernel position its own scale (a
    depthwise 3x3 in blocks of 32: 9 scales for 9 weights); one scale per output channel
    is the group of <= ``group_size`` weights the scheme asks for."""
    if tq.granularity != "per-group" or w.dim() < 3:
        return False
    return w.numel() // w.shape[0] <= tq.group_size and w.shape[reduction_axis] < tq.group_size
