"""Index operators: Gather, GatherElements, GatherND, ScatterND, Trilu.

Negative indices are wrapped explicitly (torch's index ops reject them); a Gather from a
:class:`ShapeValue` stays symbolic.
"""

from __future__ import annotations

import math

import torch

from edgecc.onnx_import.converter import Converter, ShapeValue, T


def _gather(ctx, data, indices):
    axis = ctx.attr("axis", 0)
    if isinstance(data, ShapeValue):
        idx = ctx.ints(1, indices) if not isinstance(indices, ShapeValue) else indices.values
        scalar = isinstance(indices, ShapeValue) and indices.scalar or (
            isinstance(indices, torch.Tensor) and indices.dim() == 0)
        picked = [data.values[int(i)] for i in idx]
        return ShapeValue(picked, scalar=scalar)
    data, indices = T(data), T(indices)
    indices = torch.where(indices < 0, indices + data.shape[axis], indices)
    if indices.dim() == 0:
        return data.select(axis, indices) if ctx.static(1) is None else data.select(
            axis, int(ctx.static(1)) % data.shape[axis])
    out = torch.index_select(data, axis, indices.reshape(-1))
    return out.reshape(*data.shape[:axis], *indices.shape, *data.shape[axis + 1:])


def _gather_elements(ctx, data, indices):
    axis = ctx.attr("axis", 0)
    data, indices = T(data), T(indices)
    indices = torch.where(indices < 0, indices + data.shape[axis], indices)
    return torch.gather(data, axis, indices)


def _gather_nd(ctx, data, indices):
    data, indices = T(data), T(indices)
    b = ctx.attr("batch_dims", 0)
    k = indices.shape[-1]
    batch = list(data.shape[:b])
    nb = math.prod(batch) if batch else 1
    d = data.reshape(nb, *data.shape[b:])
    idx = indices.reshape(nb, -1, k)
    idx = torch.where(idx < 0, idx + torch.tensor(list(d.shape[1:k + 1])), idx)
    rows = torch.arange(nb).reshape(nb, 1).expand(nb, idx.shape[1])
    out = d[(rows, *[idx[..., j] for j in range(k)])]
    return out.reshape(*batch, *indices.shape[b:-1], *data.shape[b + k:])


def _scatter_nd(ctx, data, indices, updates):
    data, indices, updates = T(data), T(indices), T(updates)
    k = indices.shape[-1]
    flat_idx = indices.reshape(-1, k)
    index = tuple(flat_idx[:, j] for j in range(k))
    upd = updates.reshape(flat_idx.shape[0], *data.shape[k:])
    return data.index_put(index, upd)


def _trilu(ctx, x, k=None):
    x = T(x)
    kk = ctx.ints(1, k)[0] if k is not None else 0
    return torch.triu(x, kk) if ctx.attr("upper", 1) else torch.tril(x, kk)


CONVERTERS = (
    Converter("Gather", _gather),
    Converter("GatherElements", _gather_elements),
    Converter("GatherND", _gather_nd),
    Converter("ScatterND", _scatter_nd),
    Converter("Trilu", _trilu, since_opset=14),
)
