"""edgecc's compression carried into Core ML MIL exactly: converters of our own for the
edgecc operators, registered with coremltools' torch frontend (``register_torch_op``).

The codes, indices, masks, zero points and scales are edgecc's own tensors, copied; nothing
is recomputed from float weights (``coremltools.optimize.coreml`` and the frontend's
compression-metadata path recompute them and are never used here)::

    edgecc.dequantize(@q:int8[O,I], @s:[O], @z, axis=0, block=0)      (a weight)
      -> constexpr_blockwise_shift_scale(data=int8[O,I], scale=[O,1], offset=[O,1])   iOS18+
      -> constexpr_affine_dequantize(quantized_data, zero_point, scale, axis)        iOS16/17
    edgecc.dequantize(@q:uint4 packed[O,I/2], @s:[O,I/32], @z, axis=1, block=32)
      -> constexpr_blockwise_shift_scale(data=uint4[O,I], scale=[O,I/32], offset=uint4)
    same, with >= 37.5% (8-bit) / 50% (4-bit) of codes at the zero point (pruned weights)
      -> constexpr_sparse_blockwise_shift_scale(mask, nonzero codes, ...) -> constexpr_sparse_to_dense
    edgecc.palette_dequantize(@codes, @lut:[G,2^b], bits, group_size)
      -> constexpr_lut_to_dense(indices=uint<b>[O,...], lut=[G,1,..,2^b,1])   (iOS16: G == 1)
    same, > 1/b of the weights at an exact 0.0 entry (pruned, then palettized; iOS18)
      -> constexpr_lut_to_sparse(mask, nonzero indices, lut) -> constexpr_sparse_to_dense
    edgecc.masked(@w, @mask, pattern)
      -> constexpr_sparse_to_dense(nonzero_data=w[mask], mask=uint1)         (iOS16: bytes)
    edgecc.quantize / dequantize / fake_quantize of activations
      -> clip (narrow ranges) + quantize / dequantize (int8, uint8; iOS17+)

A weight the deployment target cannot hold raises ``Refused`` (the lowering turns it into a
one-line error), or with ``fallback=dequantize`` becomes a float constant of its exact
dequantized values and is listed in ``Carry.fallbacks``.

The converters read the options of the conversion in progress from ``_ACTIVE`` (set by
:func:`carrying`): coremltools calls converters with its context only.
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from edgecc.quant import qformat, stored_packed_dim, unpack_bits, unpack_int4
from edgecc.targets.apple.presets import Deployment, needs


class Refused(Exception):
    """A compression the deployment target cannot hold (``str``: the one-line reason)."""


@dataclasses.dataclass
class CarriedWeight:
    """One compressed weight as written into the MIL program."""

    key: str  # edgecc's constant name of the codes / weight (ExportedProgram prefix dropped)
    mil_op: str  # the MIL op name whose output is the dense weight
    form: str  # "blockwise_shift_scale", "affine_dequantize", "lut_to_dense", ...
    detail: str  # "uint4 per-block 32", "4-bit LUT x1", ...
    shape: tuple[int, ...]
    codes: np.ndarray | None = None  # what must be stored bit-exact (codes / indices / mask)
    scale: np.ndarray | None = None
    sparse: bool = False
    mask: np.ndarray | None = None


@dataclasses.dataclass
class Carry:
    """What one conversion carried over (filled by the converters)."""

    deployment: Deployment
    fp32: bool
    fallback: str
    weights: list[CarriedWeight] = dataclasses.field(default_factory=list)
    fallbacks: list[str] = dataclasses.field(default_factory=list)  # "layer: why"
    activations: int = 0  # activation quantize/dequantize pairs

    def refuse_or_fall_back(self, key: str, why: str) -> bool:
        """True when the weight is to be stored as float (fallback), else raise."""
        if self.fallback == "dequantize":
            self.fallbacks.append(f"{key}: {why}")
            return True
        raise Refused(f"{key}: {why}; or --target-option fallback=dequantize (stored as "
                      "float)")


_ACTIVE: list[Carry] = []


@contextlib.contextmanager
def carrying(carry: Carry) -> Iterator[Carry]:
    """Register the converters (once) and make ``carry`` the conversion's record."""
    _register()
    _ACTIVE.append(carry)
    try:
        yield carry
    finally:
        _ACTIVE.remove(carry)


def strip_prefix(name: str) -> str:
    """ExportedProgram placeholder name -> edgecc's constant name (``p_``/``b_``/``c_``)."""
    for prefix in ("p_", "b_", "c_"):
        if name.startswith(prefix):
            return name[len(prefix):]
    return name


# -- numpy forms of edgecc's stored tensors ------------------------------------------------

def unpacked_codes(q: np.ndarray, dtype: str, scale_shape: tuple[int, ...] = (),
                   axis: int = 0, block: int = 0) -> np.ndarray:
    """edgecc's stored codes, unpacked (4-bit: int8 / uint8 holding one value each; packed
    along the last dimension or, per-block with an odd last dimension, the block axis)."""
    fmt = qformat(dtype)
    if fmt.packed:
        dim = stored_packed_dim(q.shape, scale_shape, axis, block)
        vals = unpack_int4(torch.from_numpy(np.ascontiguousarray(q)), fmt.signed, dim).numpy()
        return vals.astype(np.int8 if fmt.signed else np.uint8)
    return q


def expanded_param(p: np.ndarray, shape: tuple[int, ...], axis: int, block: int) -> np.ndarray:
    """A scale / zero point in the rank of the weight, as constexpr_blockwise_shift_scale
    reads it (per-tensor: all ones; per-axis: the axis; per-block: blocks along the axis)."""
    rank = len(shape)
    if p.ndim == 0:
        return p.reshape((1,) * rank)
    if block:
        return p  # edgecc keeps per-block parameters in the weight's rank already
    view = [1] * rank
    view[axis % rank] = p.shape[0]
    return p.reshape(view)


def _mil_types() -> dict[str, Any]:
    from coremltools.converters.mil.mil import types

    def nptype(name: str) -> Any:
        return types.nptype_from_builtin(types.string_to_builtin(name))

    return {"int4": nptype("int4"), "uint4": nptype("uint4"), "uint1": nptype("uint1"),
            "uint2": nptype("uint2"), "uint3": nptype("uint3"), "uint6": nptype("uint6"),
            "int8": np.int8, "uint8": np.uint8}


def _const(context: Any, name: Any) -> np.ndarray | None:
    """The value of a converter input that is a constant (a lifted weight), else None."""
    if not isinstance(name, str) or name not in context:
        return None
    var = context[name]
    return None if var.val is None else np.asarray(var.val)


def _float_dtype(fp32: bool) -> type:
    return np.float32 if fp32 else np.float16


# -- the converters ------------------------------------------------------------------------

def _dequantize(context: Any, node: Any) -> None:
    from coremltools.converters.mil import Builder as mb

    carry = _ACTIVE[-1]
    q_name, s_name, z_name, axis, block, dtype = node.inputs[:6]
    q = _const(context, q_name)
    if q is None:  # an activation: the input is the output of a MIL quantize
        _activation_dequantize(context, node, carry)
        return
    scale, zp = _const(context, s_name), _const(context, z_name)
    key = strip_prefix(q_name)
    fmt = qformat(dtype)
    if fmt.is_float:
        # float16 weights (scheme fp16) are the package's own fp16 storage; bfloat16 and
        # float8 have no Core ML constant form
        if fmt.name != "float16":
            carry.refuse_or_fall_back(key, f"{fmt.name} weights have no Core ML constant form")
        context.add(mb.const(val=_dequantized(q, scale, zp, axis, block, dtype),
                             name=node.name))
        return
    codes = unpacked_codes(q, dtype, scale.shape, axis, block)
    shape = codes.shape
    dep = carry.deployment
    if (fmt.bits == 4 or block) and not dep.int4_and_blocks:
        what = f"{fmt.name} weights" if fmt.bits == 4 else f"per-block ({block}) weights"
        if carry.refuse_or_fall_back(key, needs(what + " (constexpr_blockwise_shift_scale)",
                                                18, dep)):
            context.add(mb.const(val=_dequantized(q, scale, zp, axis, block, dtype),
                                 name=node.name))
            return
    ftype = _float_dtype(carry.fp32)
    types_ = _mil_types()
    mil_codes = codes.astype(types_[fmt.name])
    s = expanded_param(scale, shape, axis, block).astype(np.float32)
    z = expanded_param(zp, shape, axis, block)
    core_block = core_ml_block(shape[axis % len(shape)], block, scale.shape[axis % len(
        shape)] if block else 1)
    if core_block != block and block:
        s, z = (regroup(p, axis % len(shape), block, core_block, shape) for p in (s, z))
    symmetric_zero = not np.any(z)
    nonzero = codes != np.broadcast_to(_broadcast(zp, shape, axis, block), shape)
    sparsity = 1.0 - float(nonzero.mean())
    gran = ("per-tensor" if scale.ndim == 0 else f"per-block {block}" if block
            else f"per-channel axis {axis % len(shape)}")
    detail = f"{fmt.name} {gran}"
    sparse = dep.joint_sparse and sparsity >= (0.375 if fmt.bits == 8 else 0.5)
    if not dep.int4_and_blocks:
        # iOS16/17: int8/uint8 per-tensor or per-channel only
        zpv = zp.astype(codes.dtype) if zp.ndim == 0 else zp.reshape(-1).astype(codes.dtype)
        sv = scale.astype(np.float32) if scale.ndim == 0 else scale.reshape(-1).astype(
            np.float32)
        out = mb.constexpr_affine_dequantize(quantized_data=codes, zero_point=zpv,
                                             scale=sv.astype(ftype) if not carry.fp32
                                             else sv, axis=axis % len(shape),
                                             name=node.name)
        form = "affine_dequantize"
        if sparsity >= 0.375:
            detail += f" ({sparsity:.1%} zeros stored dense: joint sparse+quantized is ios18+)"
    elif sparse:
        mask = nonzero.astype(types_["uint1"])
        offset = None if symmetric_zero else z.astype(types_[fmt.name])
        kwargs = {} if offset is None else {"offset": offset}
        m, vals = mb.constexpr_sparse_blockwise_shift_scale(
            data_mask=mask, nonzero_data=mil_codes[nonzero], scale=s.astype(ftype),
            **kwargs, name=node.name + "_sparse_quantized")
        out = mb.constexpr_sparse_to_dense(nonzero_data=vals, mask=m, name=node.name)
        form = "sparse_blockwise_shift_scale"
        detail += f" sparse {sparsity:.1%}"
    else:
        kwargs = {} if symmetric_zero else {"offset": z.astype(types_[fmt.name])}
        out = mb.constexpr_blockwise_shift_scale(data=mil_codes, scale=s.astype(ftype),
                                                 **kwargs, name=node.name)
        form = "blockwise_shift_scale"
    carry.weights.append(CarriedWeight(key, node.name, form, detail, shape, codes=codes,
                                       scale=s, sparse=form.startswith("sparse"),
                                       mask=nonzero if form.startswith("sparse") else None))
    context.add(out)


def core_ml_block(n: int, block: int, blocks: int) -> int:
    """The block size Core ML stores an axis of ``n`` in ``blocks`` edgecc blocks of
    ``block`` with (its blocks divide the axis; edgecc's last one may be short): ``block``
    when it divides ``n``, ``n`` for one block, else ``gcd(block, n)`` (48 input channels in
    blocks of 32: Core ML blocks of 16, each edgecc scale stored twice; exact)."""
    if not block or n % block == 0:
        return block
    return n if blocks == 1 else math.gcd(block, n)


def regroup(p: np.ndarray, axis: int, block: int, core_block: int,
            shape: tuple[int, ...]) -> np.ndarray:
    """A per-block parameter of edgecc's blocks repeated for Core ML's smaller blocks."""
    if p.ndim == 0 or p.shape[axis] == 1 or core_block == shape[axis]:
        return p
    rep = np.repeat(p, block // core_block, axis=axis)
    return np.take(rep, np.arange(shape[axis] // core_block), axis=axis)


def _broadcast(p: np.ndarray, shape: tuple[int, ...], axis: int, block: int) -> np.ndarray:
    from edgecc.quant import broadcast_param

    return np.broadcast_to(broadcast_param(torch.from_numpy(np.asarray(p)), shape, axis,
                                           block).numpy(), shape)


def _dequantized(q: np.ndarray, scale: np.ndarray, zp: np.ndarray, axis: int, block: int,
                 dtype: str) -> np.ndarray:
    from edgecc.quant import dequantize

    return dequantize(torch.from_numpy(np.ascontiguousarray(q)), torch.from_numpy(scale),
                      torch.from_numpy(zp), axis, block, dtype, torch.float32).numpy()


def _palette(context: Any, node: Any) -> None:
    from coremltools.converters.mil import Builder as mb

    carry = _ACTIVE[-1]
    idx_name, lut_name, bits, group = node.inputs[:4]
    packed, lut = _const(context, idx_name), _const(context, lut_name)
    key = strip_prefix(idx_name)
    if packed is None or lut is None:
        raise Refused(f"{node.name}: a palettized weight whose codes are not constants")
    codes = unpack_bits(torch.from_numpy(packed), bits).numpy().astype(np.uint8)
    shape = codes.shape
    groups = lut.shape[0]
    dense = lut.reshape(-1)[((np.arange(shape[0]) // group if group else np.zeros(
        shape[0], np.int64)).reshape(-1, *([1] * (len(shape) - 1))) * lut.shape[1]
        + codes)].astype(np.float32)
    ftype = _float_dtype(carry.fp32)
    if not carry.deployment.grouped_lut:
        if groups > 1:
            if carry.refuse_or_fall_back(key, needs(f"{groups} look-up tables "
                                                    f"(group_size={group})", 18,
                                                    carry.deployment)):
                context.add(mb.const(val=dense, name=node.name))
                return
        flat = codes.reshape(-1)
        out = mb.constexpr_lut_to_dense(indices=_pack_lsb_first(flat, bits),
                                        lut=lut.reshape(-1).astype(ftype),
                                        shape=np.array(shape, dtype=np.uint32),
                                        name=node.name)
    else:
        if group and shape[0] % group:
            if carry.refuse_or_fall_back(key, f"{shape[0]} rows are not a multiple of "
                                              f"group_size {group}"):
                context.add(mb.const(val=dense, name=node.name))
                return
        lut_shape = (groups, *([1] * (len(shape) - 1)), lut.shape[1], 1)
        mask = joint_sparse_mask(dense, bits) if carry.deployment.joint_sparse else None
        idx_type = _mil_types()[f"uint{bits}"]
        if mask is not None:
            m, vals = mb.constexpr_lut_to_sparse(
                indices_mask=mask.astype(_mil_types()["uint1"]),
                indices_nonzero_data=codes[mask].astype(idx_type),
                lut=lut.reshape(lut_shape).astype(ftype), name=node.name + "_sparse_palettized")
            out = mb.constexpr_sparse_to_dense(nonzero_data=vals, mask=m, name=node.name)
            carry.weights.append(CarriedWeight(
                key, node.name, "lut_to_sparse",
                f"{bits}-bit LUT x{groups} sparse {1 - mask.mean():.1%}", shape, codes=codes,
                scale=lut.astype(np.float32), sparse=True, mask=mask))
            context.add(out)
            return
        out = mb.constexpr_lut_to_dense(indices=codes.astype(idx_type),
                                        lut=lut.reshape(lut_shape).astype(ftype),
                                        name=node.name)
    carry.weights.append(CarriedWeight(key, node.name, "lut_to_dense",
                                       f"{bits}-bit LUT x{groups}", shape, codes=codes,
                                       scale=lut.astype(np.float32)))
    context.add(out)


def joint_sparse_mask(dense: np.ndarray, bits: int) -> np.ndarray | None:
    """The kept positions of a palettized weight whose table holds an exact +0.0 that more
    than ``1/bits`` of the weights use (pruned, then palettized: the zeros are one
    centroid), else None. Stored as constexpr_lut_to_sparse (iOS18) the weight takes
    1 + bits x density bits per element instead of ``bits``; exact, since a position is
    dropped only where the table gives +0.0 (a -0.0 entry keeps the dense form)::

        palette_dequantize(@codes, @lut)  ->  constexpr_lut_to_sparse(mask, codes[mask], lut)
                                              -> constexpr_sparse_to_dense
    """
    zero = dense == 0
    if not zero.any() or np.signbit(dense[zero]).any() or zero.mean() <= 1.0 / bits:
        return None
    return ~zero


def _pack_lsb_first(values: np.ndarray, bits: int) -> np.ndarray:
    """Core ML iOS16's packing: bit fields one byte at a time from the least significant bit."""
    bitarr = ((values[:, None].astype(np.uint16) >> np.arange(bits)) & 1).astype(np.uint8)
    return np.packbits(bitarr.reshape(-1), bitorder="little")


def _masked(context: Any, node: Any) -> None:
    from coremltools.converters.mil import Builder as mb

    carry = _ACTIVE[-1]
    w_name, m_name, pattern = node.inputs[:3]
    w, mask = _const(context, w_name), _const(context, m_name)
    key = strip_prefix(w_name)
    if w is None or mask is None:
        raise Refused(f"{node.name}: a pruning mask on a weight that is not a constant")
    mask = mask.astype(bool)
    ftype = _float_dtype(carry.fp32)
    values = (w.astype(np.float32) * mask)[mask].astype(ftype)
    if carry.deployment.joint_sparse:
        out = mb.constexpr_sparse_to_dense(nonzero_data=values,
                                           mask=mask.astype(_mil_types()["uint1"]),
                                           name=node.name)
    else:
        out = mb.constexpr_sparse_to_dense(
            nonzero_data=values, mask=np.packbits(mask.reshape(-1), bitorder="little"),
            shape=np.array(mask.shape, dtype=np.uint32), name=node.name)
    carry.weights.append(CarriedWeight(key, node.name, "sparse_to_dense",
                                       f"{pattern} sparse {1 - mask.mean():.1%}", mask.shape,
                                       codes=None, sparse=True, mask=mask))
    context.add(out)


def _activation_params(context: Any, node: Any, s_name: Any, z_name: Any, dtype: str,
                       block: int, carry: Carry) -> tuple[np.ndarray, np.ndarray]:
    fmt = qformat(dtype)
    if not carry.deployment.activation_qdq and not fmt.is_float:
        raise Refused(f"{node.name}: " + needs(f"quantized activations ({dtype}, MIL "
                                               "quantize/dequantize)", 17, carry.deployment))
    if fmt.name not in ("int8", "uint8", "float16") or block:
        raise Refused(f"{node.name}: Core ML quantizes activations to int8/uint8 per tensor "
                      f"or per axis, not {dtype}{' per-block' if block else ''}")
    scale, zp = _const(context, s_name), _const(context, z_name)
    if scale is None or zp is None:
        raise Refused(f"{node.name}: dynamic activation quantization (scales computed at run "
                      "time) has no Core ML form; use a static scheme (w8a8 with calibration)")
    if fmt.is_float:
        return scale.astype(np.float32), zp
    return scale.astype(np.float32), zp.astype(np.int8 if fmt.signed else np.uint8)


def _quantize_var(context: Any, node: Any, x: Any, carry: Carry) -> Any:
    from coremltools.converters.mil import Builder as mb

    _, s_name, z_name, axis, block, qmin, qmax, dtype = node.inputs[:8]
    fmt = qformat(dtype)
    scale, zp = _activation_params(context, node, s_name, z_name, dtype, block, carry)
    if fmt.name == "float16":  # q = fp16(x / scale)
        if scale.ndim:
            raise Refused(f"{node.name}: per-axis float16 activation scales")
        y = x if float(scale) == 1.0 else mb.real_div(x=x, y=np.float32(scale),
                                                      name=node.name + "_div")
        return mb.cast(x=y, dtype="fp16", name=node.name)
    if (qmin, qmax) != (fmt.qmin, fmt.qmax):  # a narrow range: clip first (exact)
        if scale.ndim or zp.ndim:
            raise Refused(f"{node.name}: a narrowed per-axis activation range")
        lo = float((qmin - float(zp)) * float(scale))
        hi = float((qmax - float(zp)) * float(scale))
        x = mb.clip(x=x, alpha=np.float32(lo), beta=np.float32(hi), name=node.name + "_clip")
    kw = {"axis": int(axis)} if scale.ndim else {}
    carry.activations += 1
    return mb.quantize(input=x, scale=scale, zero_point=zp, output_dtype=fmt.name, **kw,
                       name=node.name)


def _activation_dequantize(context: Any, node: Any, carry: Carry) -> None:
    q_name, s_name, z_name, axis, block, dtype = node.inputs[:6]
    scale, zp = _activation_params(context, node, s_name, z_name, dtype, block, carry)
    context.add(_dequantize_var(context[q_name], scale, zp, axis, dtype, node.name))


def _dequantize_var(q: Any, scale: np.ndarray, zp: np.ndarray, axis: int, dtype: str,
                    name: str) -> Any:
    from coremltools.converters.mil import Builder as mb

    if dtype == "float16":  # y = fp32(q) * scale
        y = mb.cast(x=q, dtype="fp32", name=name if float(scale) == 1.0 else name + "_f32")
        return y if float(scale) == 1.0 else mb.mul(x=y, y=np.float32(scale), name=name)
    kw = {"axis": int(axis)} if scale.ndim else {}
    return mb.dequantize(input=q, scale=scale, zero_point=zp, **kw, name=name)


def _quantize(context: Any, node: Any) -> None:
    context.add(_quantize_var(context, node, context[node.inputs[0]], _ACTIVE[-1]))


def _fake_quantize(context: Any, node: Any) -> None:
    from coremltools.converters.mil import Builder as mb

    carry = _ACTIVE[-1]
    _, s_name, z_name, axis, block, _, _, dtype = node.inputs[:8]
    q = _quantize_var(context, _Renamed(node, "_q"), context[node.inputs[0]], carry)
    scale, zp = _activation_params(context, node, s_name, z_name, dtype, block, carry)
    context.add(_dequantize_var(q, scale, zp, axis, dtype, node.name))


class _Renamed:
    """A node seen under another name (fake_quantize's inner quantize)."""

    def __init__(self, node: Any, suffix: str):
        self.inputs, self.name = node.inputs, node.name + suffix


_REGISTERED: list[bool] = []


def _register() -> None:
    if _REGISTERED:
        return
    from coremltools.converters.mil.frontend.torch.torch_op_registry import register_torch_op

    for name, func in (("dequantize", _dequantize), ("quantize", _quantize),
                       ("fake_quantize", _fake_quantize),
                       ("palette_dequantize", _palette), ("masked", _masked)):
        register_torch_op(_named(func, f"edgecc_{name}"),
                          torch_alias=[f"edgecc::{name}", f"edgecc.{name}"], override=True)
    _REGISTERED.append(True)


def _named(func: Any, name: str) -> Any:
    """coremltools registers a converter under its function name: give each a unique one
    (``dequantize`` / ``quantize`` are torch's own)."""
    def converter(context: Any, node: Any) -> None:
        func(context, node)

    converter.__name__ = name
    return converter
