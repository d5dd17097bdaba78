"""Quantization in the IR: the formats, the three operators, and their exact semantics.

Every target and the PyTorch simulator follow the definitions in this module; nothing
else defines rounding, saturation or packing.

Operators (``torch.library`` custom ops, so a quantized program still runs in PyTorch and
survives ``torch.export``)::

    q = edgecc.quantize(x, scale, zero_point, axis, block_size, qmin, qmax, dtype)
    y = edgecc.dequantize(q, scale, zero_point, axis, block_size, dtype, out_dtype)
    y = edgecc.fake_quantize(x, scale, zero_point, axis, block_size, qmin, qmax, dtype)

Semantics (integer formats ``int8``, ``uint8``, ``int4``, ``uint4``)::

    quantize:    q = clamp(round_half_to_even(x / scale) + zero_point, qmin, qmax)
    dequantize:  y = (q - zero_point) * scale            (computed in float32, cast to out_dtype)
    fake_quantize(x) = dequantize(quantize(x))           (no packing; float in, float out)

These are ONNX ``QuantizeLinear`` / ``DequantizeLinear`` exactly (round half to even,
saturate), so QDQ models import and export without changing a bit. ``[qmin, qmax]`` may be
narrower than the format (``-127..127`` symmetric weights, as TensorRT and ONNX Runtime use).

Float offset (asymmetric grids whose minimum is not a whole number of steps: ggml's Q4_1
``x = d·q + m`` and Q4_K ``x = d·sc·q - dmin·m``; torchao's float zero-point domain;
Core ML's blockwise ops carry a float offset too)::

    y = edgecc.dequantize_offset(q, scale, zero_point, offset, axis, block_size, dtype,
                                 out_dtype)
    dequantize_offset:  y = (q - zero_point) * scale + offset   (float32; ``offset`` has the
                        scale's shape and granularity; integer formats only)
    quantize with an offset (QuantParams.quantize): quantize(x - offset)

It is a separate operator, so code that reads ``edgecc.dequantize`` nodes never mistakes one
for a plain dequantize (a target that does not know it refuses it as an unknown operator).

Float formats (``float8_e4m3fn``, ``float8_e5m2``, ``float16``, ``bfloat16``)::

    quantize:    q = cast(clamp(x / scale, -max, max))   (round to nearest even, saturating)
    dequantize:  y = float32(q) * scale                  (zero_point must be 0)

Granularity follows ONNX (opset 21) too:

* per-tensor: ``scale`` and ``zero_point`` are 0-d;
* per-axis:   1-d of length ``x.shape[axis]``;
* per-block:  ``block_size > 0``; same rank as ``x`` with
  ``scale.shape[axis] == ceil(x.shape[axis] / block_size)`` — e.g. a linear weight
  ``[N, K]`` quantized in groups of 64 along ``K`` has ``axis=1, block_size=64`` and a
  ``[N, K/64]`` scale.

Palettization: ``edgecc.palette_dequantize(codes, lut, bits, group_size, out_dtype)`` reads
a weight from a look-up table, ``y[r, ...] = lut[r // group_size, code[r, ...]]``, with
2/4/8-bit codes packed along the last dimension (lowest bits first).

Storage: ``int8``/``uint8`` are ``torch.int8``/``torch.uint8``; 4-bit formats are packed two
per byte along the last dimension into ``torch.uint8`` (element ``2i`` in the low nibble,
``2i+1`` in the high nibble, as ONNX packs INT4), so the last dimension must be even;
per-block values whose last dimension is odd and whose block axis is not the last pack
along the block axis instead (a 3x3 or 1x1 convolution weight ``[O, I, kh, kw]`` in blocks
along ``I``: ``uint8[O, I/2, kh, kw]``; :func:`packed_dim`; the per-block scale, of the
weight's rank, tells the two apart: :func:`stored_packed_dim`). ``zero_point`` is stored
unpacked (``int8``/``uint8``). Float formats use the matching ``torch`` dtype.

Gradients: ``fake_quantize`` is differentiable with the clipped straight-through estimator
(``dy/dx = 1`` inside ``[qmin, qmax]``, 0 where it saturates) and, when ``scale`` requires
grad, the LSQ gradient for the scale (Esser et al., 2020), so a prepared program trains (QAT).

Requantization (integer kernels, e.g. ``dq → linear → q``): with symmetric weights
(``zero_point_w = 0``), ``acc = Σ (q_x - z_x) · q_w`` in int32, bias as
``round_half_to_even(b / (s_x · s_w))`` in int32, and
``q_y = clamp(round_half_to_even(acc · s_x · s_w / s_y) + z_y, qmin, qmax)``: the same value
``quantize(linear(dequantize(q_x), dequantize(q_w), b))`` gives up to the float rounding of
the product, so a target's integer result is within one quantization step of the simulator.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.fx as fx


@dataclasses.dataclass(frozen=True)
class QFormat:
    name: str
    bits: int
    signed: bool
    is_float: bool
    storage: torch.dtype

    @property
    def qmin(self) -> int:
        return -(2 ** (self.bits - 1)) if self.signed else 0

    @property
    def qmax(self) -> int:
        return 2 ** (self.bits - 1) - 1 if self.signed else 2**self.bits - 1

    @property
    def packed(self) -> bool:
        return self.bits == 4

    @property
    def float_max(self) -> float:
        return float(torch.finfo(self.storage).max)

    @property
    def zero_point_dtype(self) -> torch.dtype:
        if self.is_float:
            return torch.float32
        return torch.int8 if self.signed else torch.uint8


FORMATS: dict[str, QFormat] = {
    f.name: f
    for f in (
        QFormat("int8", 8, True, False, torch.int8),
        QFormat("uint8", 8, False, False, torch.uint8),
        QFormat("int4", 4, True, False, torch.uint8),
        QFormat("uint4", 4, False, False, torch.uint8),
        QFormat("float8_e4m3fn", 8, True, True, torch.float8_e4m3fn),
        QFormat("float8_e5m2", 8, True, True, torch.float8_e5m2),
        QFormat("float16", 16, True, True, torch.float16),
        QFormat("bfloat16", 16, True, True, torch.bfloat16),
    )
}


def qformat(name: str) -> QFormat:
    try:
        return FORMATS[name]
    except KeyError:
        raise ValueError(
            f"unknown quantized format '{name}': expected one of {', '.join(FORMATS)}"
        ) from None


# -- broadcasting, packing ---------------------------------------------------------------

def broadcast_param(p: torch.Tensor, shape: tuple[int, ...] | torch.Size, axis: int,
                    block_size: int) -> torch.Tensor:
    """Expand a scale / zero point to broadcast against a tensor of ``shape``
    (``block_size`` -1: ``p`` already has ``shape``'s rank and broadcasts as it is)."""
    if p.dim() == 0 or block_size < 0:
        return p
    rank = len(shape)
    axis = axis % rank
    if block_size > 0:
        p = p.repeat_interleave(block_size, dim=axis)
        return p.narrow(axis, 0, shape[axis])
    view = [1] * rank
    view[axis] = p.shape[0]
    return p.reshape(view)


def packed_dim(shape: tuple[int, ...] | torch.Size, axis: int, block_size: int) -> int | None:
    """The dimension 4-bit values of ``shape`` pack along: the last when it is even, else
    (per-block or per-axis, ``axis`` not the last) ``axis`` when it is even (a 3x3
    convolution in blocks along input channels; a depthwise ``[C, 1, 3, 3]`` per output
    channel); None: neither."""
    rank = len(shape)
    if rank and shape[-1] % 2 == 0:
        return rank - 1
    if rank > 1 and axis % rank != rank - 1 and shape[axis % rank] % 2 == 0:
        return axis % rank
    return None


def stored_packed_dim(packed_shape: tuple[int, ...] | torch.Size,
                      scale_shape: tuple[int, ...] | torch.Size, axis: int,
                      block_size: int) -> int:
    """The dimension stored 4-bit values were packed along (:func:`packed_dim`), read from
    the packed shape and the scale. A per-block scale has the values' rank and their last
    dimension when the block axis is not the last, which the packed last dimension keeps
    only when it was not the packed one; a per-axis scale has the axis' length, which the
    packed axis halves."""
    rank = len(packed_shape)
    if rank < 2 or axis % rank == rank - 1:
        return rank - 1
    a = axis % rank
    if block_size > 0 and len(scale_shape) == rank and packed_shape[-1] == scale_shape[-1]:
        return a
    if block_size == 0 and len(scale_shape) == 1 and scale_shape[0] == 2 * packed_shape[a]:
        return a
    return rank - 1


def pack_int4(q: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """Pack 4-bit values (held in any integer tensor) two per byte along ``dim``."""
    if q.shape[dim] % 2:
        raise ValueError(f"4-bit tensors need an even last dimension (or packed "
                         f"dimension {dim}), got shape {tuple(q.shape)}")
    nib = (q.movedim(dim, -1).to(torch.int16) & 0xF).to(torch.uint8)
    return (nib[..., 0::2] | (nib[..., 1::2] << 4)).movedim(-1, dim).contiguous()


def unpack_int4(packed: torch.Tensor, signed: bool, dim: int = -1) -> torch.Tensor:
    """The inverse of :func:`pack_int4`: int16 values, sign-extended when ``signed``."""
    p = packed.movedim(dim, -1).to(torch.int16)
    lo, hi = p & 0xF, (p >> 4) & 0xF
    q = torch.stack((lo, hi), dim=-1).flatten(-2)
    if signed:
        q = torch.where(q >= 8, q - 16, q)
    return q.movedim(-1, dim).contiguous()


# -- reference semantics -----------------------------------------------------------------

def _block_split(shape: torch.Size, p: torch.Tensor, axis: int, block_size: int
                 ) -> tuple[list[int], int] | None:
    """When per-block params ``p`` tile ``axis`` of a tensor of ``shape`` exactly: the
    tensor's shape with that axis split into ``[blocks, block_size]`` and the axis (the
    params then broadcast as ``p.unsqueeze(axis + 1)``, not expanded to the full shape by
    ``broadcast_param``: the same element-wise arithmetic without a full-size copy of each
    param); else None."""
    rank = len(shape)
    if block_size <= 0 or p.dim() != rank or rank == 0:
        return None
    a = axis % rank
    if shape[a] != p.shape[a] * block_size:
        return None
    return [*shape[:a], p.shape[a], block_size, *shape[a + 1:]], a


def _quantize_values(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                     axis: int, block_size: int, qmin: int, qmax: int,
                     fmt: QFormat) -> torch.Tensor:
    """Quantized values, unpacked, in float32 (integers) or the float format."""
    split = _block_split(x.shape, scale, axis, block_size)
    if split is not None and zero_point.shape == scale.shape:
        view, a = split
        q = _quantize_values(x.reshape(view), scale.unsqueeze(a + 1),
                             zero_point.unsqueeze(a + 1), 0, -1, qmin, qmax, fmt)
        return q.reshape(x.shape)
    s = broadcast_param(scale.to(torch.float32), x.shape, axis, block_size)
    xf = x.to(torch.float32)
    if fmt.is_float:
        lim = fmt.float_max
        return (xf / s).clamp(-lim, lim).to(fmt.storage)
    z = broadcast_param(zero_point.to(torch.float32), x.shape, axis, block_size)
    return torch.clamp(torch.round(xf / s) + z, qmin, qmax)


_DEQUANTIZE_BLOCK_BYTES = 1 << 24  # float32 bytes of rows dequantized at a time (16 MiB)


def _dequantize_values(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                       axis: int, block_size: int, fmt: QFormat,
                       packed_dim: int | None = None) -> torch.Tensor:
    """``(q - zero_point) * scale`` (``q * scale`` for float formats) in float32, written
    into one preallocated tensor a block of rows (dimension 0, ~16 MiB of float32) at a
    time: the temporaries (the codes as float, the full-size broadcast scale and zero point
    of per-group params, the difference) are a block's, not the tensor's — an LLM's output
    layer dequantized whole needed several times its float32 size. Element-wise, so the
    values are those of the whole-tensor expression, bit for bit.

    ``packed_dim``: ``q`` holds 4-bit codes packed two per byte along that dimension (not
    dimension 0), unpacked a block of rows at a time too (whole, the int16 unpacking of an
    LLM's output layer was ~2x its float32 size in temporaries)."""
    if packed_dim is not None:
        shape = list(q.shape)
        shape[packed_dim] *= 2
        q_shape = torch.Size(shape)

        def load(block: torch.Tensor) -> torch.Tensor:
            return unpack_int4(block, fmt.signed, packed_dim)
    else:
        q_shape = q.shape

        def load(block: torch.Tensor) -> torch.Tensor:
            return block
    rank = q.dim()
    n = q.shape[0] if rank else 0
    rows = max(1, _DEQUANTIZE_BLOCK_BYTES // (4 * max(1, q_shape.numel() // max(1, n))))
    first = rank > 0 and axis % rank == 0
    if block_size > 0 and first:  # whole groups per block: the scale rows slice evenly
        rows = max(block_size, rows - rows % block_size)
    if rank == 0 or n <= rows:
        return _dequantize_block(load(q), scale, zero_point, axis, block_size, fmt)
    out = torch.empty(q_shape, dtype=torch.float32, device=q.device)
    for i in range(0, n, rows):
        j = min(n, i + rows)
        out[i:j] = _dequantize_block(
            load(q[i:j]), _param_rows(scale, i, j, n, first, block_size),
            _param_rows(zero_point, i, j, n, first, block_size), axis, block_size, fmt)
    return out


def _param_rows(p: torch.Tensor, i: int, j: int, n: int, first: bool,
                block_size: int) -> torch.Tensor:
    """The part of a scale / zero point that rows ``[i, j)`` of the values read."""
    if p.dim() == 0 or p.shape[0] == 1:
        return p  # one value, or broadcast along dimension 0
    if block_size > 0:
        return p[i // block_size:-(-j // block_size)] if first else p[i:j]
    return p[i:j] if first and p.shape[0] == n else p


def _dequantize_block(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                      axis: int, block_size: int, fmt: QFormat) -> torch.Tensor:
    split = _block_split(q.shape, scale, axis, block_size)
    if split is not None and zero_point.shape == scale.shape:
        view, a = split
        return _dequantize_block(q.reshape(view), scale.unsqueeze(a + 1),
                                 zero_point.unsqueeze(a + 1), 0, -1, fmt).reshape(q.shape)
    s = broadcast_param(scale.to(torch.float32), q.shape, axis, block_size)
    if fmt.is_float:
        return q.to(torch.float32) * s
    z = broadcast_param(zero_point.to(torch.float32), q.shape, axis, block_size)
    return (q.to(torch.float32) - z) * s


def _store(values: torch.Tensor, fmt: QFormat, axis: int = 0, block_size: int = 0
           ) -> torch.Tensor:
    if fmt.is_float:
        return values
    if fmt.packed:
        dim = packed_dim(values.shape, axis, block_size)
        return pack_int4(values.to(torch.int16), -1 if dim is None else dim)
    return values.to(fmt.storage)


def _packed_rows_dim(q: torch.Tensor, fmt: QFormat, scale: torch.Tensor, axis: int,
                     block_size: int) -> int | None:
    """The packed dimension of 4-bit codes when it is not dimension 0 (the codes can then
    be unpacked a block of rows at a time), else None."""
    if not fmt.packed or q.dim() < 2:
        return None
    dim = stored_packed_dim(q.shape, scale.shape, axis, block_size)
    dim = q.dim() - 1 if dim is None else dim % q.dim()
    return dim if dim != 0 else None


def _load(q: torch.Tensor, fmt: QFormat, scale: torch.Tensor | None = None, axis: int = 0,
          block_size: int = 0) -> torch.Tensor:
    if not fmt.packed:
        return q
    dim = stored_packed_dim(q.shape, () if scale is None else scale.shape, axis, block_size)
    return unpack_int4(q, fmt.signed, dim)


# -- the operators ------------------------------------------------------------------------

@torch.library.custom_op("edgecc::quantize", mutates_args=())
def quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int,
             block_size: int, qmin: int, qmax: int, dtype: str) -> torch.Tensor:
    fmt = qformat(dtype)
    return _store(_quantize_values(x, scale, zero_point, axis, block_size, qmin, qmax, fmt),
                  fmt, axis, block_size)


@quantize.register_fake
def _quantize_fake(x, scale, zero_point, axis, block_size, qmin, qmax, dtype):
    fmt = qformat(dtype)
    if fmt.packed:
        dim = packed_dim(x.shape, axis, block_size)
        shape = list(x.shape)
        shape[-1 if dim is None else dim] //= 2
        return x.new_empty(shape, dtype=torch.uint8)
    return x.new_empty(x.shape, dtype=fmt.storage)


@torch.library.custom_op("edgecc::dequantize", mutates_args=())
def dequantize(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int,
               block_size: int, dtype: str, out_dtype: torch.dtype) -> torch.Tensor:
    fmt = qformat(dtype)
    dim = _packed_rows_dim(q, fmt, scale, axis, block_size)
    if dim is None:
        q = _load(q, fmt, scale, axis, block_size)
    return _dequantize_values(q, scale, zero_point, axis, block_size, fmt,
                              packed_dim=dim).to(out_dtype)


@dequantize.register_fake
def _dequantize_fake(q, scale, zero_point, axis, block_size, dtype, out_dtype):
    fmt = qformat(dtype)
    if fmt.packed:
        shape = list(q.shape)
        shape[stored_packed_dim(q.shape, scale.shape, axis, block_size)] *= 2
        return q.new_empty(shape, dtype=out_dtype)
    return q.new_empty(q.shape, dtype=out_dtype)


@torch.library.custom_op("edgecc::fake_quantize", mutates_args=())
def fake_quantize(x: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor, axis: int,
                  block_size: int, qmin: int, qmax: int, dtype: str) -> torch.Tensor:
    fmt = qformat(dtype)
    q = _quantize_values(x, scale, zero_point, axis, block_size, qmin, qmax, fmt)
    return _dequantize_values(q, scale, zero_point, axis, block_size, fmt).to(x.dtype)


@fake_quantize.register_fake
def _fake_quantize_fake(x, scale, zero_point, axis, block_size, qmin, qmax, dtype):
    return torch.empty_like(x)


def _fq_setup(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    x, scale, zero_point, axis, block_size, qmin, qmax, dtype = inputs
    ctx.args = (axis, block_size, qmin, qmax, dtype)
    ctx.scale_shape = scale.shape
    ctx.save_for_backward(x, scale, zero_point)


def _reduce_to(grad: torch.Tensor, shape: torch.Size, axis: int, block_size: int) -> torch.Tensor:
    """Sum a full-shape gradient back to a scale's shape (inverse of broadcast_param)."""
    if len(shape) == 0:
        return grad.sum()
    axis = axis % grad.dim()
    if block_size > 0:
        n = grad.shape[axis]
        pad = shape[axis] * block_size - n
        if pad:
            grad = torch.nn.functional.pad(
                grad.movedim(axis, -1), (0, pad)).movedim(-1, axis)
        g = grad.unflatten(axis, (shape[axis], block_size))
        return g.sum(dim=axis + 1)
    dims = [d for d in range(grad.dim()) if d != axis]
    return grad.sum(dim=dims)


def _fq_backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
    x, scale, zero_point = ctx.saved_tensors
    axis, block_size, qmin, qmax, dtype = ctx.args
    fmt = qformat(dtype)
    s = broadcast_param(scale.to(torch.float32), x.shape, axis, block_size)
    xs = x.to(torch.float32) / s
    if fmt.is_float:
        inside = xs.abs() <= fmt.float_max
        gx = grad * inside
        gs = None
        if ctx.needs_input_grad[1]:
            q = xs.clamp(-fmt.float_max, fmt.float_max).to(fmt.storage).to(torch.float32)
            gs = _reduce_to(grad * (q - xs * inside), ctx.scale_shape, axis, block_size)
        return gx.to(x.dtype), gs, None, None, None, None, None, None
    z = broadcast_param(zero_point.to(torch.float32), x.shape, axis, block_size)
    lo, hi = qmin - z, qmax - z
    inside = (xs >= lo) & (xs <= hi)
    gx = (grad * inside).to(x.dtype)
    gs = None
    if ctx.needs_input_grad[1]:
        # LSQ: d(fake_quant)/d(scale) = round(x/s) - x/s inside, the clip bound outside.
        local = torch.where(inside, torch.round(xs) - xs, torch.where(xs < lo, lo, hi))
        gs = _reduce_to(grad * local, ctx.scale_shape, axis, block_size).to(scale.dtype)
    return gx, gs, None, None, None, None, None, None


fake_quantize.register_autograd(_fq_backward, setup_context=_fq_setup)


@torch.library.custom_op("edgecc::dequantize_offset", mutates_args=())
def dequantize_offset(q: torch.Tensor, scale: torch.Tensor, zero_point: torch.Tensor,
                      offset: torch.Tensor, axis: int, block_size: int, dtype: str,
                      out_dtype: torch.dtype) -> torch.Tensor:
    """``(q - zero_point) * scale + offset`` in float32 (module docstring)."""
    fmt = qformat(dtype)
    if fmt.is_float:
        raise ValueError(f"dequantize_offset applies to integer formats, not {dtype}")
    dim = _packed_rows_dim(q, fmt, scale, axis, block_size)
    if dim is None:
        q = _load(q, fmt, scale, axis, block_size)
    y = _dequantize_values(q, scale, zero_point, axis, block_size, fmt, packed_dim=dim)
    return (y + broadcast_param(offset.to(torch.float32), y.shape, axis, block_size)
            ).to(out_dtype)


@dequantize_offset.register_fake
def _dequantize_offset_fake(q, scale, zero_point, offset, axis, block_size, dtype, out_dtype):
    return _dequantize_fake(q, scale, zero_point, axis, block_size, dtype, out_dtype)


# -- palettization (look-up tables) --------------------------------------------------------

PALETTE_BITS = (2, 4, 8)


def pack_bits(values: torch.Tensor, bits: int) -> torch.Tensor:
    """Pack unsigned ``bits``-wide codes (2, 4 or 8) along the last dim, lowest bits first."""
    if bits == 8:
        return values.to(torch.uint8)
    per = 8 // bits
    if values.shape[-1] % per:
        raise ValueError(f"{bits}-bit codes pack {per} per byte: the last dimension "
                         f"({values.shape[-1]}) must be a multiple of {per}")
    v = values.to(torch.int16).unflatten(-1, (values.shape[-1] // per, per))
    out = torch.zeros(v.shape[:-1], dtype=torch.int16)
    for i in range(per):
        out |= (v[..., i] & ((1 << bits) - 1)) << (bits * i)
    return out.to(torch.uint8)


def unpack_bits(packed: torch.Tensor, bits: int) -> torch.Tensor:
    if bits == 8:
        return packed.to(torch.int64)
    per = 8 // bits
    p = packed.to(torch.int64)
    parts = [(p >> (bits * i)) & ((1 << bits) - 1) for i in range(per)]
    return torch.stack(parts, dim=-1).flatten(-2)


@torch.library.custom_op("edgecc::palette_dequantize", mutates_args=())
def palette_dequantize(indices: torch.Tensor, lut: torch.Tensor, bits: int, group_size: int,
                       out_dtype: torch.dtype) -> torch.Tensor:
    """``y[r, ...] = lut[r // group_size, code[r, ...]]`` (``group_size`` 0: one table).

    ``indices`` holds ``bits``-wide codes packed along the last dim (:func:`pack_bits`);
    ``lut`` is ``[groups, 2**bits]``.
    """
    codes = unpack_bits(indices, bits)
    rows = codes.shape[0]
    group = torch.arange(rows) // group_size if group_size > 0 else torch.zeros(
        rows, dtype=torch.int64)
    group = group.reshape(rows, *([1] * (codes.dim() - 1)))
    flat = group * lut.shape[1] + codes
    return lut.reshape(-1)[flat].to(out_dtype)


@palette_dequantize.register_fake
def _palette_fake(indices, lut, bits, group_size, out_dtype):
    per = 8 // bits
    return indices.new_empty((*indices.shape[:-1], indices.shape[-1] * per), dtype=out_dtype)


PALETTE_DEQUANTIZE = torch.ops.edgecc.palette_dequantize.default
QUANTIZE = torch.ops.edgecc.quantize.default
DEQUANTIZE = torch.ops.edgecc.dequantize.default
FAKE_QUANTIZE = torch.ops.edgecc.fake_quantize.default
DEQUANTIZE_OFFSET = torch.ops.edgecc.dequantize_offset.default  # not in QUANT_OPS (see above)
QUANT_OPS = (QUANTIZE, DEQUANTIZE, FAKE_QUANTIZE)


# -- parameters as one value --------------------------------------------------------------

@dataclasses.dataclass(frozen=True)
class QuantParams:
    """Everything a quantize/dequantize node carries, with its scale and zero point."""

    dtype: str
    scale: torch.Tensor
    zero_point: torch.Tensor
    axis: int = 0
    block_size: int = 0
    qmin: int | None = None
    qmax: int | None = None
    # float added after scaling (dequantize_offset); None: none (every existing scheme)
    offset: torch.Tensor | None = None

    @property
    def format(self) -> QFormat:
        return qformat(self.dtype)

    @property
    def range(self) -> tuple[int, int]:
        fmt = self.format
        if fmt.is_float:
            return 0, 0
        return (fmt.qmin if self.qmin is None else self.qmin,
                fmt.qmax if self.qmax is None else self.qmax)

    @property
    def granularity(self) -> str:
        if self.scale.dim() == 0:
            return "per-tensor"
        return "per-block" if self.block_size else "per-axis"

    def _offset_like(self, x: torch.Tensor) -> torch.Tensor:
        assert self.offset is not None
        return broadcast_param(self.offset.to(torch.float32), x.shape, self.axis,
                               self.block_size)

    def quantize(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.range
        if self.offset is not None:
            x = x.to(torch.float32) - self._offset_like(x)
        return quantize(x, self.scale, self.zero_point, self.axis, self.block_size, lo, hi,
                        self.dtype)

    def dequantize(self, q: torch.Tensor, out_dtype: torch.dtype = torch.float32
                   ) -> torch.Tensor:
        if self.offset is not None:
            return dequantize_offset(q, self.scale, self.zero_point, self.offset, self.axis,
                                     self.block_size, self.dtype, out_dtype)
        return dequantize(q, self.scale, self.zero_point, self.axis, self.block_size,
                          self.dtype, out_dtype)

    def fake_quantize(self, x: torch.Tensor) -> torch.Tensor:
        lo, hi = self.range
        if self.offset is not None:
            o = self._offset_like(x)
            return (fake_quantize(x.to(torch.float32) - o, self.scale, self.zero_point,
                                  self.axis, self.block_size, lo, hi, self.dtype) + o
                    ).to(x.dtype)
        return fake_quantize(x, self.scale, self.zero_point, self.axis, self.block_size,
                             lo, hi, self.dtype)

    def describe(self) -> str:
        lo, hi = self.range
        where = "" if self.scale.dim() == 0 else f" axis={self.axis}"
        block = f" block={self.block_size}" if self.block_size else ""
        rng = "" if self.format.is_float else f" [{lo},{hi}]"
        offset = " +offset" if self.offset is not None else ""
        return f"{self.dtype}{rng} {self.granularity}{where}{block}{offset}"


def params_from_scale(dtype: str, scale: torch.Tensor, zero_point: torch.Tensor | None = None,
                      *, axis: int = 0, block_size: int = 0, qmin: int | None = None,
                      qmax: int | None = None) -> QuantParams:
    fmt = qformat(dtype)
    if zero_point is None:
        zero_point = torch.zeros_like(scale, dtype=fmt.zero_point_dtype)
    return QuantParams(dtype, scale, zero_point.to(fmt.zero_point_dtype), axis, block_size,
                       qmin, qmax)


def scale_from_range(lo: torch.Tensor, hi: torch.Tensor, dtype: str, *, symmetric: bool,
                     qmin: int | None = None, qmax: int | None = None,
                     eps: float = 1e-12) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and zero point mapping ``[lo, hi]`` (which always include 0) onto the format.

    Symmetric: ``scale = max(|lo|, |hi|) / ((qmax - qmin) / 2)``, zero point at the middle
    (0 for signed formats, 128 / 8 for unsigned). Asymmetric:
    ``scale = (hi - lo) / (qmax - qmin)``, ``zero_point = clamp(qmin - round(lo / scale))``.
    Float formats: ``scale = max(|lo|, |hi|) / max_representable`` (zero point 0).
    """
    fmt = qformat(dtype)
    lo = torch.minimum(lo.to(torch.float32), torch.zeros_like(lo, dtype=torch.float32))
    hi = torch.maximum(hi.to(torch.float32), torch.zeros_like(hi, dtype=torch.float32))
    if fmt.is_float:
        amax = torch.maximum(lo.abs(), hi.abs())
        return (amax / fmt.float_max).clamp_min(eps), torch.zeros_like(amax)
    q0 = fmt.qmin if qmin is None else qmin
    q1 = fmt.qmax if qmax is None else qmax
    if symmetric:
        amax = torch.maximum(lo.abs(), hi.abs())
        scale = (amax / ((q1 - q0) / 2)).clamp_min(eps)
        mid = 0 if fmt.signed else (q0 + q1 + 1) // 2
        return scale, torch.full_like(scale, mid)
    scale = ((hi - lo) / (q1 - q0)).clamp_min(eps)
    zp = torch.clamp(q0 - torch.round(lo / scale), q0, q1)
    return scale, zp


# -- recognising quantization in a graph --------------------------------------------------

def is_quantize(node: Any) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_function" and node.target is QUANTIZE


QRANGE = "edgecc_qrange"  # node meta: (qmin, qmax) a stored weight was quantized with


def quantized_by_edgecc(program: Any) -> bool:
    """Whether ``program``'s weights were quantized by edgecc's own passes (Quantize marks
    each dequantize it writes with ``QRANGE``). A target may then round activations more
    coarsely (the x86 weight-only kernel's bfloat16 prefill) and ``edgecc.compile`` verifies
    the build as a quantized one (cosine / SQNR), even when the quantization ran before
    ``compile``. Imported quantized weights (GGUF, ONNX) carry no mark: their builds are
    checked against the imported model at float32 tolerance."""
    return any(QRANGE in n.meta for n in program.graph.nodes if n.op == "call_function")


def is_dequantize(node: Any) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_function" and node.target is DEQUANTIZE


def is_fake_quantize(node: Any) -> bool:
    return (isinstance(node, fx.Node) and node.op == "call_function"
            and node.target is FAKE_QUANTIZE)


def is_dequantize_offset(node: Any) -> bool:
    return (isinstance(node, fx.Node) and node.op == "call_function"
            and node.target is DEQUANTIZE_OFFSET)


def is_palette_dequantize(node: Any) -> bool:
    return (isinstance(node, fx.Node) and node.op == "call_function"
            and node.target is PALETTE_DEQUANTIZE)


def is_quant_op(node: Any) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_function" and (
        node.target in QUANT_OPS or node.target is PALETTE_DEQUANTIZE)


def node_params(node: fx.Node, tensor_of: Any) -> QuantParams:
    """The :class:`QuantParams` of a quantize / dequantize / dequantize_offset /
    fake_quantize node.

    ``tensor_of`` maps a ``get_attr`` node to its tensor (``Program.tensor``).
    """
    if is_dequantize(node):
        _, s, z, axis, block, dtype, _ = node.args
        return QuantParams(dtype, tensor_of(s), tensor_of(z), axis, block)
    if is_dequantize_offset(node):
        _, s, z, o, axis, block, dtype, _ = node.args
        return QuantParams(dtype, tensor_of(s), tensor_of(z), axis, block, offset=tensor_of(o))
    _, s, z, axis, block, qmin, qmax, dtype = node.args
    return QuantParams(dtype, tensor_of(s), tensor_of(z), axis, block, qmin, qmax)


def sqnr_db(reference: torch.Tensor, approx: torch.Tensor) -> float:
    """Signal-to-quantization-noise ratio in dB (inf when equal)."""
    ref = reference.detach().double()
    noise = (ref - approx.detach().double()).pow(2).sum().item()
    signal = ref.pow(2).sum().item()
    if noise == 0:
        return math.inf
    return 10 * math.log10(max(signal, 1e-300) / noise)
