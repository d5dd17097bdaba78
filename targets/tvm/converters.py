"""Relax converters of our own for the operators TVM's importer lacks or gets wrong.

The edgecc composites (``conv_act``, ``linear_act``) reuse TVM's convolution / linear
converters and apply the activation, so Relax's operator fusion emits one kernel per
composite; scaled-dot-product attention becomes two batched matmuls and a softmax; the
quantization operators are converted in ``quant_lowering``. Converters that TVM 0.27 gets
wrong are overridden here too (see ``_hardtanh``).
"""

from __future__ import annotations

from typing import Any

import torch.fx as fx

from edgecc.errors import LoweringError
from edgecc.targets.tvm.quant_lowering import CONVERTERS as QUANT_CONVERTERS


def emit_activation(bb: Any, x: Any, act: str) -> Any:
    from tvm import relax

    nn = relax.op.nn
    dtype = x.ty.dtype
    if act == "relu":
        return bb.emit(nn.relu(x))
    if act == "relu6":
        return bb.emit(relax.op.clip(x, 0, 6))
    if act == "gelu":
        return bb.emit(nn.gelu(x))
    if act == "gelu_tanh":
        return bb.emit(nn.gelu_tanh(x))
    if act == "silu":
        return bb.emit(nn.silu(x))
    if act == "sigmoid":
        return bb.emit(relax.op.sigmoid(x))
    if act == "hardswish":
        x3 = relax.op.clip(relax.op.add(x, relax.const(3, dtype)), 0, 6)
        return bb.emit(relax.op.multiply(x, relax.op.divide(x3, relax.const(6, dtype))))
    raise LoweringError(f"TVM targets cannot lower activation '{act}'")


def _conv_act(node: fx.Node, importer: Any) -> Any:
    conv = importer._convolution(node)  # TVM's converter; reads args[0:9] positionally
    return emit_activation(importer.block_builder, conv, node.args[9])


def _linear_act(node: fx.Node, importer: Any) -> Any:
    lin = importer._linear(node)
    return emit_activation(importer.block_builder, lin, node.args[3])


def _hardtanh(node: fx.Node, importer: Any) -> Any:
    # TVM 0.27 reads min_val/max_val from kwargs only; torch.export passes them positionally.
    from tvm import relax

    x = importer.env[node.args[0]]
    lo = node.args[1] if len(node.args) > 1 else node.kwargs.get("min_val", -1.0)
    hi = node.args[2] if len(node.args) > 2 else node.kwargs.get("max_val", 1.0)
    return importer.block_builder.emit(relax.op.clip(x, lo, hi))


def _index(node: fx.Node, importer: Any) -> Any:
    """``aten.index`` with PyTorch's negative indices (Falcon's ``fused_qkv[..., [-2], :]``):
    TVM 0.27's converter ``take``s them unchecked and reads outside the tensor, so each
    index tensor is first wrapped into range (``i + size`` where ``i < 0``)."""
    from tvm import relax

    bb, env = importer.block_builder, importer.env
    data = env[node.args[0]]
    saved = {}
    for axis, idx in enumerate(node.args[1]):
        if not isinstance(idx, fx.Node) or idx in saved:
            continue
        i, size = env[idx], data.ty.shape[axis]
        if not str(i.ty.dtype).startswith("int") or not hasattr(size, "value"):
            continue  # unsigned or boolean indices; a symbolic size stays as TVM takes it
        saved[idx] = i
        dtype = str(i.ty.dtype)
        env[idx] = bb.emit(relax.op.where(relax.op.less(i, relax.const(0, dtype)),
                                          relax.op.add(i, relax.const(size.value, dtype)), i))
    try:
        return importer._index_tensor(node)
    finally:
        env.update(saved)


def _accumulate_in_fp32(base: Any) -> Any:
    """TVM's convolution converters produce float32 whatever the input type (then fail to
    add a float16 bias): run float16 / bfloat16 layers on float32 copies of their operands
    (float32 accumulation, as fp16 GEMM libraries do) and cast the result back."""

    def convert(node: fx.Node, importer: Any) -> Any:
        from tvm import relax

        bb, env = importer.block_builder, importer.env
        dtype = env[node.args[0]].ty.dtype
        if dtype == "float32":
            return base(node, importer)
        saved = {a: env[a] for a in node.args[:3] if isinstance(a, fx.Node)}
        try:
            for a, v in saved.items():
                env[a] = bb.emit(relax.op.astype(v, "float32"))
            out = base(node, importer)
        finally:
            env.update(saved)
        return bb.emit(relax.op.astype(out, dtype))

    return convert


def _convolution(node: fx.Node, importer: Any) -> Any:
    return importer._convolution(node)


def _linear(node: fx.Node, importer: Any) -> Any:
    return importer._linear(node)


def _attention(node: fx.Node, importer: Any) -> Any:
    """float32 4-D scaled-dot-product attention as two batched matmuls and a softmax (the
    matmuls then get the default schedule's register tile; TVM's fused attention kernel
    is left unscheduled), honouring ``scale`` (which TVM's converter drops) and
    ``is_causal`` (top-left aligned, as PyTorch), key/value heads broadcast. Other forms
    go to TVM's converter."""
    import math

    import numpy as np
    from tvm import relax

    bb, env = importer.block_builder, importer.env
    q, k, v = (env[a] for a in node.args[:3])
    arg = lambda i, name, default: (node.args[i] if len(node.args) > i  # noqa: E731
                                    else node.kwargs.get(name, default))
    mask, dropout, causal = arg(3, "attn_mask", None), arg(4, "dropout_p", 0.0), \
        arg(5, "is_causal", False)
    shapes = [tuple(int(d) for d in t.ty.shape) for t in (q, k, v)]
    # key/value batch and head dims broadcast against the query's as in PyTorch (one
    # shared key/value head: multi-query attention, Falcon); TVM's converter gets that wrong
    broadcast = all(len(s) == 4 and s[d] in (shapes[0][d], 1)
                    for s in shapes[1:] for d in (0, 1))
    if (q.ty.dtype != "float32" or any(len(s) != 4 for s in shapes) or dropout
            or node.kwargs.get("enable_gqa") or not broadcast
            or (mask is not None and env[mask].ty.dtype != "float32")):
        return importer._scaled_dot_product_attention(node)
    scale = node.kwargs.get("scale") or 1.0 / math.sqrt(shapes[0][-1])
    scores = bb.emit(relax.op.matmul(q, bb.emit(relax.op.permute_dims(k, [0, 1, 3, 2]))))
    scores = bb.emit(relax.op.multiply(scores, relax.const(scale, "float32")))
    if mask is not None:
        scores = bb.emit(relax.op.add(scores, env[mask]))
    if causal:
        length, source = shapes[0][2], shapes[1][2]
        keep = np.tril(np.ones((length, source), dtype=bool))
        scores = bb.emit(relax.op.add(scores, relax.const(
            np.where(keep, 0.0, -np.inf).astype("float32"))))
    probs = bb.emit(relax.op.nn.softmax(scores, axis=-1))
    return bb.emit(relax.op.matmul(probs, v))


CUSTOM_CONVERTERS = {
    "scaled_dot_product_attention.default": _attention,
    "convolution.default": _accumulate_in_fp32(_convolution),
    "conv_act.default": _accumulate_in_fp32(_conv_act),
    "linear.default": _accumulate_in_fp32(_linear),
    "linear_act.default": _accumulate_in_fp32(_linear_act),
    "hardtanh.default": _hardtanh,
    "index.Tensor": _index,
    **QUANT_CONVERTERS,
}
