"""Shape, indexing and data-movement MIL ops in numpy.

    %y = slice_by_index(x=%x, begin=[0, 1], end=[0, 4], stride=[1, 1], begin_mask=[true, false],
                        end_mask=[true, false], squeeze_mask=[false, false])  ->  x[:, 1:4]
"""

from __future__ import annotations

import numpy as np

from .dtypes import var_dtype


def _static_shape(var):
    shape = var.shape
    if shape is not None and all(isinstance(d, (int, np.integer)) for d in shape):
        return tuple(int(d) for d in shape)
    return None


def _ilist(value):
    return [int(a) for a in np.atleast_1d(value)]


def reshape(v, op):
    x = np.asarray(v["x"])
    shape = _ilist(v["shape"])
    if 0 in shape:  # iOS17: a 0 copies the dim of x counted from the right (1 when out of range)
        k = len(shape)
        shape = [(x.shape[x.ndim - (k - i)] if x.ndim - (k - i) >= 0 else 1) if s == 0 else s
                 for i, s in enumerate(shape)]
    return x.reshape(shape)


def transpose(v, op):
    return np.transpose(v["x"], _ilist(v["perm"]))


def concat(v, op):
    values = [np.asarray(a) for a in v["values"]]
    axis = int(v["axis"])
    if v.get("interleave"):
        axis %= values[0].ndim
        stacked = np.stack(values, axis=axis + 1)
        shape = list(values[0].shape)
        shape[axis] *= len(values)
        return stacked.reshape(shape)
    return np.concatenate(values, axis=axis)


def stack(v, op):
    return np.stack([np.asarray(a) for a in v["values"]], axis=int(v["axis"]))


def slice_by_index(v, op):
    x = np.asarray(v["x"])
    n = x.ndim
    begin, end = _ilist(v["begin"]), _ilist(v["end"])
    stride = _ilist(v["stride"]) if v.get("stride") is not None else [1] * n
    bmask = list(np.atleast_1d(v["begin_mask"])) if v.get("begin_mask") is not None else [False] * n
    emask = list(np.atleast_1d(v["end_mask"])) if v.get("end_mask") is not None else [False] * n
    smask = (list(np.atleast_1d(v["squeeze_mask"])) if v.get("squeeze_mask") is not None
             else [False] * n)
    index = []
    for i in range(n):
        if smask[i]:
            index.append(begin[i])
        else:
            index.append(slice(None if bmask[i] else begin[i], None if emask[i] else end[i],
                               stride[i]))
    return x[tuple(index)]


def slice_by_size(v, op):
    x = np.asarray(v["x"])
    begin, size = _ilist(v["begin"]), _ilist(v["size"])
    index = []
    for i, (b, s) in enumerate(zip(begin, size)):
        b = b % x.shape[i] if b < 0 else b
        index.append(slice(b, None if s == -1 else b + s))
    return x[tuple(index)]


def squeeze(v, op):
    x = np.asarray(v["x"])
    axes = v.get("axes")
    if axes is None:
        return np.squeeze(x)
    return np.squeeze(x, axis=tuple(int(a) for a in np.atleast_1d(axes)))


def expand_dims(v, op):
    x = np.asarray(v["x"])
    axes = sorted(int(a) % (x.ndim + len(np.atleast_1d(v["axes"])))
                  for a in np.atleast_1d(v["axes"]))
    for a in axes:
        x = np.expand_dims(x, a)
    return x


def split(v, op):
    x = np.asarray(v["x"])
    axis = int(v["axis"])
    sizes = v.get("split_sizes")
    if sizes is not None:
        cuts = np.cumsum(_ilist(sizes))[:-1]
    else:
        cuts = int(v["num_splits"])
        if x.shape[axis] % cuts:  # uneven: MIL gives the last piece the remainder
            step = -(-x.shape[axis] // cuts)
            cuts = list(range(step, x.shape[axis], step))
    return tuple(np.split(x, cuts, axis=axis))


def gather(v, op):
    x, idx = np.asarray(v["x"]), np.asarray(v["indices"]).astype(np.int64)
    axis = int(v.get("axis", 0)) % x.ndim
    batch_dims = int(v.get("batch_dims", 0) or 0)
    idx = np.where(idx < 0, idx + x.shape[axis], idx)
    if batch_dims == 0:
        return np.take(x, idx, axis=axis)
    # batched: x[b..., take along axis] for each leading batch index
    lead = x.shape[:batch_dims]
    out = [np.take(x[b], idx[b], axis=axis - batch_dims) for b in np.ndindex(*lead)]
    return np.stack(out).reshape(lead + out[0].shape)


def gather_along_axis(v, op):
    x, idx = np.asarray(v["x"]), np.asarray(v["indices"]).astype(np.int64)
    axis = int(v.get("axis", 0)) % x.ndim
    idx = np.where(idx < 0, idx + x.shape[axis], idx)
    return np.take_along_axis(x, idx, axis=axis)


def gather_nd(v, op):
    x, idx = np.asarray(v["x"]), np.asarray(v["indices"]).astype(np.int64)
    batch_dims = int(v.get("batch_dims", 0) or 0)
    if batch_dims:
        lead = x.shape[:batch_dims]
        out = [x[b][tuple(np.moveaxis(idx[b], -1, 0))] for b in np.ndindex(*lead)]
        return np.stack(out).reshape(lead + out[0].shape)
    return x[tuple(np.moveaxis(idx, -1, 0))]


def tile(v, op):
    return np.tile(v["x"], _ilist(v["reps"]))


def pad(v, op):
    x = np.asarray(v["x"])
    pads = _ilist(v["pad"])
    k = len(pads) // 2
    width = [(0, 0)] * (x.ndim - k) + [(pads[2 * i], pads[2 * i + 1]) for i in range(k)]
    mode = v.get("mode") or "constant"
    if mode == "constant":
        return np.pad(x, width, constant_values=v.get("constant_val", 0.0))
    return np.pad(x, width, mode={"reflect": "reflect", "replicate": "edge"}[mode])


def select(v, op):
    return np.where(np.asarray(v["cond"]).astype(bool), v["a"], v["b"])


def cast(v, op):
    x = np.asarray(v["x"])
    dtype = var_dtype(op.outputs[0])
    if dtype is not None and np.issubdtype(dtype, np.integer) and np.issubdtype(
            x.dtype, np.floating):
        return np.trunc(x).astype(dtype)
    return x  # the interpreter casts every result to its MIL type


def identity(v, op):
    return np.array(v["x"], copy=True)


def shape(v, op):
    return np.array(np.shape(v["x"]), dtype=np.int32)


def fill(v, op):
    return np.full(_ilist(v["shape"]), v.get("value", 0.0))


def fill_like(v, op):
    return np.full(np.shape(v["ref_tensor"]), v.get("value", 0.0))


def range_1d(v, op):
    return np.arange(v["start"], v["end"], v["step"])


def band_part(v, op):
    x = np.asarray(v["x"])
    lower, upper = int(v.get("lower", -1)), int(v.get("upper", -1))
    m, n = x.shape[-2:]
    i, j = np.arange(m)[:, None], np.arange(n)[None, :]
    keep = ((lower < 0) | (i - j <= lower)) & ((upper < 0) | (j - i <= upper))
    return np.where(keep, x, 0)


def cumsum(v, op):
    x = np.asarray(v["x"])
    axis = int(v.get("axis", 0))
    if v.get("reverse"):
        x = np.flip(x, axis)
    y = np.cumsum(x, axis=axis)
    if v.get("exclusive"):
        y = y - x
    return np.flip(y, axis) if v.get("reverse") else y


def topk(v, op):
    x = np.asarray(v["x"])
    k, axis = int(v.get("k", 1)), int(v.get("axis", -1))
    ascending = bool(v.get("ascending", False))
    order = np.argsort(x if ascending else -x, axis=axis, kind="stable")
    idx = np.take(order, np.arange(k), axis=axis)
    return np.take_along_axis(x, idx, axis=axis), idx.astype(np.int32)


def argsort(v, op):
    x = np.asarray(v["x"])
    axis = int(v.get("axis", -1))
    return np.argsort(x if v.get("ascending") else -x, axis=axis, kind="stable").astype(np.int32)


def reverse(v, op):
    x = np.asarray(v["x"])
    axes = v.get("axes")
    return np.flip(x, axis=None if axes is None else tuple(_ilist(axes)))


def flatten2d(v, op):
    x = np.asarray(v["x"])
    axis = int(v.get("axis", 1)) % (x.ndim + 1)
    return x.reshape(int(np.prod(x.shape[:axis])), -1)


def reshape_like(v, op):
    x = np.asarray(v["x"])
    out = _static_shape(op.outputs[0])
    if out is None:
        raise ValueError("reshape_like with a symbolic output shape")
    return x.reshape(out)


def pixel_shuffle(v, op):
    x = np.asarray(v["x"])
    r = int(v["upscale_factor"])
    n, c, h, w = x.shape
    x = x.reshape(n, c // (r * r), r, r, h, w).transpose(0, 1, 4, 2, 5, 3)
    return x.reshape(n, c // (r * r), h * r, w * r)


def pixel_unshuffle(v, op):
    x = np.asarray(v["x"])
    r = int(np.atleast_1d(v["downscale_factor"])[0])
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // r, r, w // r, r).transpose(0, 1, 3, 5, 2, 4)
    return x.reshape(n, c * r * r, h // r, w // r)


def one_hot(v, op):
    idx = np.asarray(v["indices"]).astype(np.int64)
    depth = int(v["one_hot_vector_size"])
    axis = int(v.get("axis", -1))
    on, off = v.get("on_value", 1), v.get("off_value", 0)
    hot = np.arange(depth) == idx[..., None]
    return np.moveaxis(np.where(hot, on, off), -1, axis)


def einsum(v, op):
    return np.einsum(str(v["equation"]), *[np.asarray(a) for a in v["values"]])


def crop(v, op):
    x = np.asarray(v["x"])
    (top, bottom), (left, right) = _ilist(v["crop_height"]), _ilist(v["crop_width"])
    return x[..., top:x.shape[-2] - bottom, left:x.shape[-1] - right]


def space_to_depth(v, op):
    """TensorFlow's channel order: (block row * r + block col) * C + c (coremltools' TF
    frontend maps SpaceToDepth onto this op directly)."""
    x = np.asarray(v["x"])
    r = int(v["block_size"])
    n, c, h, w = x.shape
    x = x.reshape(n, c, h // r, r, w // r, r).transpose(0, 3, 5, 1, 2, 4)
    return x.reshape(n, c * r * r, h // r, w // r)


def depth_to_space(v, op):
    x = np.asarray(v["x"])
    r = int(v["block_size"])
    n, c, h, w = x.shape
    x = x.reshape(n, r, r, c // (r * r), h, w).transpose(0, 3, 4, 1, 5, 2)
    return x.reshape(n, c // (r * r), h * r, w * r)


def non_zero(v, op):
    return np.argwhere(np.asarray(v["x"])).astype(np.int32)


OPS = {
    "reshape": reshape, "transpose": transpose, "concat": concat, "stack": stack,
    "slice_by_index": slice_by_index, "slice_by_size": slice_by_size, "squeeze": squeeze,
    "expand_dims": expand_dims, "split": split, "gather": gather,
    "gather_along_axis": gather_along_axis, "gather_nd": gather_nd, "tile": tile, "pad": pad,
    "select": select, "cast": cast, "identity": identity, "shape": shape, "fill": fill,
    "fill_like": fill_like, "range_1d": range_1d, "band_part": band_part, "cumsum": cumsum,
    "topk": topk, "argsort": argsort, "reverse": reverse, "flatten2d": flatten2d,
    "reshape_like": reshape_like, "pixel_shuffle": pixel_shuffle,
    "pixel_unshuffle": pixel_unshuffle, "one_hot": one_hot, "non_zero": non_zero,
    "einsum": einsum, "crop": crop, "space_to_depth": space_to_depth, "depth_to_space": depth_to_space,
}
