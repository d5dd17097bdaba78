"""Sparsity masks in the IR: ``edgecc.masked(weight, mask, pattern)`` and N:M patterns.

A pruned weight keeps its dense values and reads through a mask, so targets and exporters
see which weights are pruned and with which pattern, and fine-tuning keeps them pruned::

    %y = aten.linear(%x, @fc.weight, @fc.bias)
  →
    %w = edgecc.masked(@fc.weight, @fc_weight_mask:bool, '2:4')
    %y = aten.linear(%x, %w, @fc.bias)

``pattern`` is ``'unstructured'`` or ``'N:M'`` (at most N non-zeros in every M consecutive
weights along the reduction axis — the input features of a linear, the input channels of a
convolution at each kernel position — the layout sparse tensor cores execute). The op passes
the gradient straight through to every weight (pruned ones stay masked in the forward;
RigL's grow step reads their gradient). The ``apply-masks`` pass folds masks into the weights
for targets that run dense kernels.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx


@torch.library.custom_op("edgecc::masked", mutates_args=())
def masked(weight: torch.Tensor, mask: torch.Tensor, pattern: str) -> torch.Tensor:
    return weight * mask.to(weight.dtype)


@masked.register_fake
def _masked_fake(weight, mask, pattern):
    return torch.empty_like(weight)


def _masked_setup(ctx: Any, inputs: tuple[Any, ...], output: torch.Tensor) -> None:
    pass


def _masked_backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:
    return grad, None, None


masked.register_autograd(_masked_backward, setup_context=_masked_setup)

MASKED = torch.ops.edgecc.masked.default


def is_masked(node: Any) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_function" and node.target is MASKED


def parse_pattern(pattern: str) -> tuple[int, int] | None:
    """``'2:4'`` → (2, 4); ``'unstructured'`` → None."""
    if pattern == "unstructured":
        return None
    n, m = (int(v) for v in pattern.split(":"))
    return n, m


def _grouped(t: torch.Tensor, axis: int, m: int) -> torch.Tensor:
    moved = t.movedim(axis, -1)
    if moved.shape[-1] % m:
        raise ValueError(f"reduction axis of size {moved.shape[-1]} is not a multiple of {m}")
    return moved.reshape(*moved.shape[:-1], moved.shape[-1] // m, m)


def nm_mask(scores: torch.Tensor, n: int, m: int, axis: int) -> torch.Tensor:
    """Keep the ``n`` highest scores in every ``m`` consecutive entries along ``axis``."""
    g = _grouped(scores, axis, m)
    keep = torch.zeros_like(g, dtype=torch.bool)
    keep.scatter_(-1, g.topk(n, dim=-1).indices, True)
    moved_shape = scores.movedim(axis, -1).shape
    return keep.reshape(moved_shape).movedim(-1, axis)


def satisfies_nm(mask: torch.Tensor, n: int, m: int, axis: int) -> bool:
    return bool((_grouped(mask.to(torch.int32), axis, m).sum(-1) <= n).all())


def threshold_mask(scores: torch.Tensor, sparsity: float) -> torch.Tensor:
    """Remove the ``sparsity`` fraction of lowest scores (exactly that many, ties by order)."""
    k = int(round(sparsity * scores.numel()))
    mask = torch.ones(scores.numel(), dtype=torch.bool)
    if k:
        mask[scores.reshape(-1).argsort(stable=True)[:k]] = False
    return mask.reshape(scores.shape)


def sparsity_of(mask: torch.Tensor) -> float:
    return 1.0 - float(mask.sum()) / max(mask.numel(), 1)
