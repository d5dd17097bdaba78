"""GPTQ (Frantar et al., 2023): quantize a weight column by column, each time spreading the
rounding error over the columns not yet quantized, weighted by the inverse Hessian of the
layer's inputs (``H = 2/n · Σ x xᵀ`` over the calibration tokens).

Options follow the reference implementation: ``block`` columns per lazy-batch update,
``damp`` (fraction of the mean Hessian diagonal added for stability), ``act_order``
(quantize columns in order of decreasing Hessian diagonal; groups then keep their original
contiguous columns — "static groups" — so the stored per-group scales stay ONNX-blocked).

Memory: a Hessian is ``K x K`` float64 (a 1.1B Llama's ``down_proj`` input: 254 MB; its 22
blocks' Hessians together 7.7 GB, 1.9x the fp32 weights). The quantize pass therefore holds
only a run of consecutive layer inputs' Hessians at a time (:func:`hessian_chunks`, a byte
budget), summed in float64 as before: the weights are the same as with every Hessian
accumulated at once; each later run goes on from where the previous one stopped (the values
the rest of the graph reads, kept per batch while they fit the budget; else it runs the
calibration prefix again).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Sequence
from typing import Any

import torch

from edgecc.passes.quantize.scheme import TensorQuant
from edgecc.passes.quantize.weights import weight_params
from edgecc.quant import QuantParams


class HessianAccumulator:
    """``H = 2/n Σ x xᵀ`` over every row of every batch of a layer's input: each batch's
    product a float32 GEMM (twice float64's speed: the calibration run's largest cost, e.g.
    all-MiniLM-L6-v2's 1536-wide FFN inputs; relative error ~1e-6 against float64, far
    below GPTQ's 1% damping), the running sum in float64."""

    def __init__(self) -> None:
        self.h: torch.Tensor | None = None
        self.n = 0

    def update(self, x: torch.Tensor) -> None:
        x = x.detach().reshape(-1, x.shape[-1]).to(torch.float32)
        m = x.shape[0]
        if self.h is None:
            self.h = torch.zeros(x.shape[1], x.shape[1], dtype=torch.float64, device=x.device)
        self.h *= self.n / (self.n + m)
        self.n += m
        # the batch's own product (not of rows pre-scaled by the running count): the same
        # float32 values however the batches are split across runs or ranks
        self.h.add_((x.T @ x).to(torch.float64), alpha=2.0 / self.n)


def hessian_bytes(columns: int) -> int:
    """Bytes of one accumulated Hessian (``columns x columns`` float64)."""
    return columns * columns * 8


def hessian_chunks(sizes: list[int], budget: int) -> list[list[int]]:
    """Indices of consecutive Hessians (``sizes`` in bytes, graph order) grouped so that a
    group's total stays within ``budget`` bytes (a Hessian larger than it is alone)."""
    chunks: list[list[int]] = []
    total = 0
    for i, size in enumerate(sizes):
        if chunks and total + size <= budget:
            chunks[-1].append(i)
            total += size
        else:
            chunks.append([i])
            total = size
    return chunks


class _ColumnQuantizers:
    """Per-row scale, zero point and offset (float32) that apply to a weight column:
    converted to float32 once per params, sliced per column (a group's column of the
    per-group tensors). The zero point is None when it is zero everywhere (symmetric) and
    the offset None without one (``QuantParams.offset``): the column loop then skips
    adding and subtracting them (the same values; at most a zero's sign differs)."""

    def __init__(self, params: QuantParams) -> None:
        self.s = params.scale.to(torch.float32)
        z = params.zero_point.to(torch.float32)
        self.z = None if not bool(z.any()) else z
        self.o = None if params.offset is None else params.offset.to(torch.float32)
        self.block = params.block_size if self.s.dim() else 0
        self.per_column = self.s.dim() > 0 and self.block > 0

    def __call__(self, col: int) -> tuple[torch.Tensor, torch.Tensor | None,
                                          torch.Tensor | None]:
        if not self.per_column:
            return self.s, self.z, self.o  # per tensor, or per channel along the rows
        g = col // self.block
        return (self.s[:, g], None if self.z is None else self.z[:, g],
                None if self.o is None else self.o[:, g])

    def quantize_into(self, col: int, x: torch.Tensor, q: torch.Tensor, qmin: float,
                      qmax: float) -> None:
        """``q = (clamp(round((x - o) / s) + z, qmin, qmax) - z) * s + o``, written into
        ``q`` in place (no temporaries: the column loop's per-column op count is its
        cost)."""
        s, z, o = self(col)
        if o is None:
            torch.div(x, s, out=q)
        else:
            torch.sub(x, o, out=q)
            q.div_(s)
        q.round_()
        if z is not None:
            q.add_(z)
        q.clamp_(qmin, qmax)
        if z is not None:
            q.sub_(z)
        q.mul_(s)
        if o is not None:
            q.add_(o)


NUMPY_COLUMNS = True  # static groups on the CPU: the column loop through numpy (same bits)
_UPDATE_BLOCK_BYTES = 1 << 24  # the trailing update's product, a block of rows (16 MiB)


def gptq_quantize(w: torch.Tensor, h: torch.Tensor, tq: TensorQuant, *, block: int = 128,
                  damp: float = 0.01, act_order: bool = True,
                  scale_dtype: torch.dtype = torch.float32,
                  snap: Callable[[QuantParams], QuantParams] | None = None,
                  row_splits: Sequence[int] | None = None
                  ) -> tuple[torch.Tensor, QuantParams]:
    """GPTQ of a linear weight ``[N, K]``; returns the dequantized weight and its params.
    ``snap`` moves the scales onto a storage grid first (then groups are static).
    ``row_splits``: ``w`` is several layers' weights stacked (row counts in order, summing to
    N) that share ``h``; the trailing update's product runs per layer's rows, so each
    layer's result is the one its own call gives, bit for bit."""
    w = w.detach().to(torch.float32).clone()
    h = h.detach().to(torch.float32, copy=True)
    n_cols = w.shape[1]
    dead = torch.diag(h) == 0
    h[dead, dead] = 1
    w[:, dead] = 0
    group = tq.group_size if tq.granularity == "per-group" else 0
    static = group == 0 or act_order or snap is not None
    params = weight_params(w, tq, 0, 1, scale_dtype=scale_dtype)
    if snap is not None:
        params = snap(params)
    qmin, qmax = params.range
    perm = (torch.argsort(torch.diag(h), descending=True) if act_order
            else torch.arange(n_cols, device=h.device))
    # K x K float32 temporaries, at most three alive (a 1.1B Llama's down_proj: 127 MB
    # each): one gather for the permutation, the damping added on the diagonal in place
    # (the same sums as adding damp·I), the Hessian freed once its inverse exists
    w, h = w[:, perm], h[perm[:, None], perm]
    h.diagonal().add_(damp * torch.mean(torch.diag(h)))
    try:
        hinv = _upper_cholesky_of_inverse(h)
    except torch.linalg.LinAlgError:
        h.diagonal().add_(0.1 * torch.mean(torch.diag(h)))
        hinv = _upper_cholesky_of_inverse(h)
    del h
    q_all = torch.zeros_like(w)
    rows = max(1, _UPDATE_BLOCK_BYTES // max(1, 4 * n_cols))  # rows of a float32 update
    bounds = [0, *itertools.accumulate(row_splits or [w.shape[0]])]
    if bounds[-1] != w.shape[0]:
        raise ValueError(f"row_splits sum to {bounds[-1]}, the weight has {w.shape[0]} rows")
    spans = list(zip(bounds, bounds[1:]))
    scales, zeros = params.scale.clone(), params.zero_point.clone()
    order = perm.tolist()  # the columns' indices as ints, once (not a sync per column)
    columns = _ColumnQuantizers(params)
    for i1 in range(0, n_cols, block):
        i2 = min(i1 + block, n_cols)
        # the block transposed: column i of the weights is row i here, contiguous (the
        # same element-wise arithmetic on the same values as on the columns)
        w1 = w[:, i1:i2].t().contiguous()
        err1 = torch.empty_like(w1)
        q1 = torch.empty_like(w1)
        update = torch.empty_like(w1)  # the rank-1 steps' products
        hinv1 = hinv[i1:i2, i1:i2]
        diag = hinv1.diagonal().tolist()
        if static and w1.device.type == "cpu" and NUMPY_COLUMNS:  # numpy's cheaper calls
            _static_columns_numpy(w1, err1, q1, update, hinv1, diag, order[i1:i2], columns,
                                  qmin, qmax)
        else:
            for i in range(i2 - i1):
                col = order[i1 + i]
                if not static and col % group == 0:
                    # dynamic groups: the group's range from the error-updated weights
                    cols = torch.cat((w1[i:].t(), w[:, i2:]), dim=1)[:, :group]
                    gp = weight_params(cols, TensorQuant(tq.dtype, "per-channel", tq.symmetric,
                                                         narrow=tq.narrow), 0, 1,
                                       scale_dtype=scale_dtype)
                    scales[:, col // group] = gp.scale
                    zeros[:, col // group] = gp.zero_point
                    params = QuantParams(params.dtype, scales, zeros, params.axis,
                                         params.block_size, params.qmin, params.qmax)
                    columns = _ColumnQuantizers(params)
                x, e = w1[i], err1[i]
                columns.quantize_into(col, x, q1[i], qmin, qmax)
                torch.sub(x, q1[i], out=e)
                e.div_(diag[i])
                # the rank-1 step as a broadcast product: the same products e_r * h_c (an
                # outer product through a K=1 matmul was a BLAS call per column), into a
                # buffer, subtracted (addcmul_ / addr_ fuse the multiply-add somewhere: other
                # bits)
                step = update[: i2 - i1 - i]
                torch.mul(hinv1[i, i:].unsqueeze(1), e.unsqueeze(0), out=step)
                w1[i:] -= step
        q_all[:, i1:i2] = q1.t()
        err1 = err1.t().contiguous()  # the layout the trailing product always had
        # the trailing update a block of rows at a time: the product's temporary is ~16 MiB,
        # not a weight's worth (an LLM's output layer: 250 MB at the 1.1B shape, the GPTQ
        # pass's peak); rows are independent, the same products row by row
        for start, stop in spans:
            for r1 in range(start, stop, rows):
                r2 = min(r1 + rows, stop)
                w[r1:r2, i2:] -= err1[r1:r2] @ hinv[i1:i2, i2:]
    del w, hinv  # before the un-permuted copy of q_all (bounded memory)
    inv = torch.argsort(perm)
    return q_all[:, inv], params


def _static_columns_numpy(w1: torch.Tensor, err1: torch.Tensor, q1: torch.Tensor,
                          update: torch.Tensor, hinv1: torch.Tensor, diag: list[float],
                          order: list[int], columns: _ColumnQuantizers, qmin: float,
                          qmax: float) -> None:
    """A block's column loop with static groups, on CPU tensors through numpy views: the
    same float32 operations in the same order as the torch loop (IEEE division, round half
    to even, clamp, the rank-1 step as a product then a subtraction), so the same bits
    (``tests/passes/quantize/test_gptq_column_loop.py``), at numpy's ~1 us a call instead of
    torch's ~5: the loop is ~10 calls a column, K columns a layer (all-MiniLM-L6-v2's
    1536-wide FFN output layers: 0.21 -> ~0.07 s each)."""
    import numpy as np

    w1n, e1n, q1n, upd = w1.numpy(), err1.numpy(), q1.numpy(), update.numpy()
    hn = hinv1.numpy()
    nb = w1n.shape[0]

    def table(t: torch.Tensor | None) -> Any:
        if t is None:
            return None
        return t.t().contiguous().numpy() if columns.per_column else t.numpy()

    s_all, z_all, o_all = table(columns.s), table(columns.z), table(columns.o)
    block = columns.block
    for i in range(nb):
        if columns.per_column:
            g = order[i] // block
            s = s_all[g]
            z = None if z_all is None else z_all[g]
            o = None if o_all is None else o_all[g]
        else:
            s, z, o = s_all, z_all, o_all
        x, e, q = w1n[i], e1n[i], q1n[i]
        if o is None:
            np.divide(x, s, out=q)
        else:
            np.subtract(x, o, out=q)
            q /= s
        np.rint(q, out=q)
        if z is not None:
            q += z
        np.clip(q, qmin, qmax, out=q)
        if z is not None:
            q -= z
        q *= s
        if o is not None:
            q += o
        np.subtract(x, q, out=e)
        e /= diag[i]
        step = upd[: nb - i]
        np.multiply(hn[i, i:, None], e[None, :], out=step)
        w1n[i:] -= step


def _upper_cholesky_of_inverse(h: torch.Tensor) -> torch.Tensor:
    """``cholesky(inverse(h), upper=True)`` through ``h``'s Cholesky factor, each
    intermediate freed as soon as the next exists."""
    factor = torch.linalg.cholesky(h)
    inverse = torch.cholesky_inverse(factor)
    del factor
    return torch.linalg.cholesky(inverse, upper=True)


def output_error(w: torch.Tensor, w_hat: torch.Tensor, h: torch.Tensor) -> float:
    """``tr((W - Ŵ) H (W - Ŵ)ᵀ)``: the layer's expected squared output error (float64,
    accumulated over blocks of rows: no whole-weight float64 temporaries)."""
    h = h.to(torch.float64)
    rows = max(1, (1 << 24) // max(1, 8 * w.shape[1]))  # ~16 MiB of float64 per block
    total = 0.0
    for i in range(0, w.shape[0], rows):
        d = w[i:i + rows].to(torch.float64) - w_hat[i:i + rows].to(torch.float64)
        total += float(torch.einsum("ik,kl,il->", d, h, d))
    return total


__all__ = ["HessianAccumulator", "gptq_quantize", "hessian_bytes", "hessian_chunks",
           "output_error"]
