"""Weight decompression (``constexpr_*``) and activation ``quantize``/``dequantize`` MIL ops.

These see their inputs exactly as stored and follow Core ML's definitions (and coremltools'
reference arithmetic, dtype for dtype), so a decompressed weight is bit-identical to
``op.materialized_val_inference()``:

    %w = constexpr_blockwise_shift_scale(data=int4[64, 128], scale=fp32[64, 4])
        -> w[i, j] = scale[i, j // 32] * data[i, j]                  (block size 128 / 4 = 32)
    %w = constexpr_lut_to_dense(indices=uint4[64, 128], lut=fp32[1, 4, 16, 1])
        -> w[i, j] = lut[0, j // 32, indices[i, j], 0]               (grouped LUT)
    %w = constexpr_sparse_to_dense(nonzero_data=fp32[n], mask=uint1[64, 128])
        -> w[mask] = nonzero_data (row-major), 0 elsewhere

iOS16 forms (bit-packed ``indices``/``mask`` with a ``shape``) and iOS18 forms are both read.
"""

from __future__ import annotations

import numpy as np


def _unpack_bits(packed: np.ndarray, nbits: int, count: int) -> np.ndarray:
    """LSB-first bit fields of ``nbits`` from a uint8 byte vector (iOS16 packing)."""
    bits = np.unpackbits(np.asarray(packed).astype(np.uint8), bitorder="little")
    bits = bits[:count * nbits].reshape(count, nbits).astype(np.uint32)
    return (bits << np.arange(nbits, dtype=np.uint32)).sum(axis=1)


def _axis_shape(param: np.ndarray, rank: int, axis) -> np.ndarray:
    """A scalar or per-axis vector parameter shaped to broadcast against a rank-``rank`` tensor."""
    param = np.asarray(param)
    if param.ndim == rank:
        return param
    if param.ndim == 0:
        return param.reshape((1,) * rank)
    shape = [1] * rank
    shape[int(axis) % rank] = param.size
    return param.reshape(shape)


def _blocks(param: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    """A per-block parameter (param.shape divides shape) repeated to the full shape."""
    param = np.asarray(param)
    for axis, (full, part) in enumerate(zip(shape, param.shape)):
        if full != part:
            param = np.repeat(param, full // part, axis=axis)
    return param


def affine_dequantize(v, op):
    q = np.asarray(v["quantized_data"])
    scale = np.asarray(v["scale"])
    axis = v.get("axis", 0)
    out = q.astype(np.float32) - _axis_shape(v["zero_point"], q.ndim, axis).astype(np.float32)
    return (out * _axis_shape(scale, q.ndim, axis)).astype(scale.dtype)


def blockwise_shift_scale(v, op):
    data, scale = np.asarray(v["data"]), np.asarray(v["scale"])
    out = data.astype(scale.dtype)
    if v.get("offset") is not None:
        out = out - _blocks(v["offset"], data.shape)
    return _blocks(scale, data.shape) * out


def _lut_lookup(indices: np.ndarray, lut: np.ndarray, vector_axis) -> np.ndarray:
    """iOS18 LUT: lut has shape (*groups, palettes, vector); a group covers a block of indices."""
    indices = np.asarray(indices).astype(np.int64)
    rank = indices.ndim
    vector = lut.shape[-1]
    table = _blocks(lut, indices.shape + lut.shape[-2:])  # (*indices.shape, palettes, vector)
    picked = np.take_along_axis(table, indices[..., None, None], axis=rank)[..., 0, :]
    if vector == 1:
        return picked[..., 0]
    axis = int(vector_axis) % rank
    # each index expands to `vector` consecutive elements along vector_axis
    picked = np.moveaxis(picked, -1, axis + 1)  # (..., n_axis, vector, ...)
    shape = list(indices.shape)
    shape[axis] *= vector
    return picked.reshape(shape)


def lut_to_dense(v, op):
    lut = np.asarray(v["lut"])
    if v.get("shape") is not None:  # iOS16: packed indices into one per-tensor LUT
        shape = [int(s) for s in np.atleast_1d(v["shape"])]
        nbits = int(np.log2(lut.size))
        idx = _unpack_bits(v["indices"], nbits, int(np.prod(shape)))
        return lut[idx].reshape(shape)
    return _lut_lookup(v["indices"], lut, v.get("vector_axis"))


def _scatter(nonzero: np.ndarray, mask: np.ndarray) -> np.ndarray:
    out = np.zeros(mask.shape, dtype=nonzero.dtype)
    out[mask != 0] = nonzero
    return out


def sparse_to_dense(v, op):
    nonzero = np.asarray(v["nonzero_data"])
    if v.get("shape") is not None:  # iOS16: bit-packed mask
        shape = [int(s) for s in np.atleast_1d(v["shape"])]
        mask = _unpack_bits(v["mask"], 1, int(np.prod(shape))).reshape(shape)
        return _scatter(nonzero, mask)
    return _scatter(nonzero, np.asarray(v["mask"]))


def sparse_blockwise_shift_scale(v, op):
    mask = np.asarray(v["data_mask"])
    dense = blockwise_shift_scale(
        {"data": _scatter(np.asarray(v["nonzero_data"]), mask), "scale": v["scale"],
         "offset": v.get("offset")}, op)
    return mask, dense[mask != 0]


def lut_to_sparse(v, op):
    mask = np.asarray(v["indices_mask"])
    lut = np.asarray(v["lut"])
    dense = _lut_lookup(_scatter(np.asarray(v["indices_nonzero_data"]), mask), lut,
                        v.get("vector_axis"))
    if lut.shape[-1] > 1:
        mask = np.repeat(mask, lut.shape[-1], axis=int(v["vector_axis"]))
    return mask, dense[mask != 0]


def constexpr_cast(v, op):
    return np.asarray(v["source_val"]).astype(str(v["output_dtype"]).replace("fp", "float"))


def quantize(v, op):
    """clip(round_half_even(x / scale) + zero_point) in the output integer type."""
    x = np.asarray(v["input"], dtype=np.float32)
    dtype = np.dtype(str(v["output_dtype"]))
    axis = v.get("axis")
    q = np.around(x / _axis_shape(np.asarray(v["scale"], dtype=np.float32), x.ndim, axis))
    if v.get("zero_point") is not None:
        q = q + _axis_shape(v["zero_point"], x.ndim, axis).astype(np.float32)
    info = np.iinfo(dtype)
    return np.clip(q, info.min, info.max).astype(dtype)


def dequantize(v, op):
    q = np.asarray(v["input"])
    scale = np.asarray(v["scale"])
    axis = v.get("axis")
    out = q.astype(np.float32)
    if v.get("zero_point") is not None:
        out = out - _axis_shape(v["zero_point"], q.ndim, axis).astype(np.float32)
    return (out * _axis_shape(scale, q.ndim, axis)).astype(scale.dtype)


OPS = {
    "constexpr_affine_dequantize": affine_dequantize,
    "constexpr_blockwise_shift_scale": blockwise_shift_scale,
    "constexpr_lut_to_dense": lut_to_dense,
    "constexpr_sparse_to_dense": sparse_to_dense,
    "constexpr_sparse_blockwise_shift_scale": sparse_blockwise_shift_scale,
    "constexpr_lut_to_sparse": lut_to_sparse,
    "constexpr_cast": constexpr_cast,
    "quantize": quantize,
    "dequantize": dequantize,
}
