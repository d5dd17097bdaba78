"""edgecc's composite operators: fused regions that targets lower as one kernel.

They are real ``torch.library`` custom ops, so a program that contains them still runs in
PyTorch (numerical checks, calibration) and survives ``torch.export``; each backend maps
them to its own fused kernel.

``edgecc.conv_act(x, w, b, stride, padding, dilation, transposed, output_padding, groups, act)``
    ``act(aten.convolution(x, w, b, ...))``
``edgecc.linear_act(x, w, b, act)``
    ``act(aten.linear(x, w, b))``

``act`` is one of :data:`ACTIVATIONS`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

ACTIVATIONS = ("relu", "relu6", "gelu", "gelu_tanh", "silu", "hardswish", "sigmoid")


def apply_activation(y: torch.Tensor, act: str) -> torch.Tensor:
    """The reference semantics of each fused activation."""
    if act == "relu":
        return F.relu(y)
    if act == "relu6":
        return F.hardtanh(y, 0.0, 6.0)
    if act == "gelu":
        return F.gelu(y)
    if act == "gelu_tanh":
        return F.gelu(y, approximate="tanh")
    if act == "silu":
        return F.silu(y)
    if act == "hardswish":
        return F.hardswish(y)
    if act == "sigmoid":
        return torch.sigmoid(y)
    raise ValueError(f"unknown activation '{act}': expected one of {', '.join(ACTIVATIONS)}")


@torch.library.custom_op("edgecc::conv_act", mutates_args=())
def conv_act(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    stride: list[int],
    padding: list[int],
    dilation: list[int],
    transposed: bool,
    output_padding: list[int],
    groups: int,
    act: str,
) -> torch.Tensor:
    y = torch.ops.aten.convolution.default(
        x, weight, bias, stride, padding, dilation, transposed, output_padding, groups
    )
    return apply_activation(y, act)


@conv_act.register_fake
def _conv_act_fake(x, weight, bias, stride, padding, dilation, transposed, output_padding,
                   groups, act):
    return torch.ops.aten.convolution.default(
        x, weight, bias, stride, padding, dilation, transposed, output_padding, groups
    )


@torch.library.custom_op("edgecc::linear_act", mutates_args=())
def linear_act(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, act: str
) -> torch.Tensor:
    return apply_activation(F.linear(x, weight, bias), act)


@linear_act.register_fake
def _linear_act_fake(x, weight, bias, act):
    return x.new_empty((*x.shape[:-1], weight.shape[0]))


# Composite ops stay differentiable (QAT and distillation train through them): the
# backward re-runs the reference decomposition under autograd.
def _register_autograd() -> None:
    def conv_setup(ctx, inputs, output):
        x, w, b, stride, padding, dilation, transposed, output_padding, groups, act = inputs
        ctx.args = (stride, padding, dilation, transposed, output_padding, groups, act)
        ctx.has_bias = b is not None
        ctx.save_for_backward(x, w, b if b is not None else torch.empty(0))

    def conv_backward(ctx, grad):
        x, w, b = ctx.saved_tensors
        stride, padding, dilation, transposed, output_padding, groups, act = ctx.args
        with torch.enable_grad():
            xs, ws = x.detach().requires_grad_(), w.detach().requires_grad_()
            bs = b.detach().requires_grad_() if ctx.has_bias else None
            y = apply_activation(
                torch.ops.aten.convolution.default(
                    xs, ws, bs, stride, padding, dilation, transposed, output_padding, groups
                ),
                act,
            )
            wrt = [xs, ws] + ([bs] if bs is not None else [])
            grads = torch.autograd.grad(y, wrt, grad, allow_unused=True)
        gb = grads[2] if ctx.has_bias else None
        return grads[0], grads[1], gb, None, None, None, None, None, None, None

    def linear_setup(ctx, inputs, output):
        x, w, b, act = inputs
        ctx.act = act
        ctx.has_bias = b is not None
        ctx.save_for_backward(x, w, b if b is not None else torch.empty(0))

    def linear_backward(ctx, grad):
        x, w, b = ctx.saved_tensors
        with torch.enable_grad():
            xs, ws = x.detach().requires_grad_(), w.detach().requires_grad_()
            bs = b.detach().requires_grad_() if ctx.has_bias else None
            y = apply_activation(F.linear(xs, ws, bs), ctx.act)
            wrt = [xs, ws] + ([bs] if bs is not None else [])
            grads = torch.autograd.grad(y, wrt, grad, allow_unused=True)
        return grads[0], grads[1], (grads[2] if ctx.has_bias else None), None

    conv_act.register_autograd(conv_backward, setup_context=conv_setup)
    linear_act.register_autograd(linear_backward, setup_context=linear_setup)


_register_autograd()
