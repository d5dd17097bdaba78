"""The one table of the ops edgecc offloads to an NPU: for each, the description op name
(``ops.<name>``, also the BYOC pattern root), its family (how ``byoc.py`` matches and lowers
it and how ``partition.py`` explains it: one pattern builder, one layer builder and one fx
check per family), the Relax ops at its root, the torch ops the fx report recognises as it,
and the region op kind it becomes. Adding an op of an existing family is one row here.
"""

from __future__ import annotations

import dataclasses


@dataclasses.dataclass(frozen=True)
class NpuOp:
    name: str  # ops.<name>, the pattern root
    family: str  # layer | binary | pool | table | softmax | concat | slice
    relax: tuple[str, ...]  # Relax op(s) at the root (hardswish: a composite, see byoc.py)
    fx: tuple[str, ...]  # torch op names (without overload) in the program's graph
    kind: str  # the region op (RegionBuilder / simulator / TFLite writer)


# priority order: depthwise before conv2d (both are relax.nn.conv2d), fully_connected (a
# constant right operand) before matmul (two activations)
OPS: tuple[NpuOp, ...] = (
    NpuOp("depthwise_conv2d", "layer", ("relax.nn.conv2d",), ("convolution", "conv_act"),
          "depthwise_conv2d"),
    NpuOp("conv2d", "layer", ("relax.nn.conv2d",), ("convolution", "conv_act"), "conv2d"),
    NpuOp("fully_connected", "layer", ("relax.matmul",), ("linear", "linear_act"),
          "fully_connected"),
    NpuOp("matmul", "binary", ("relax.matmul",), ("matmul", "bmm"), "batch_matmul"),
    NpuOp("add", "binary", ("relax.add",), ("add",), "add"),
    NpuOp("mul", "binary", ("relax.multiply",), ("mul",), "mul"),
    NpuOp("max_pool2d", "pool", ("relax.nn.max_pool2d",),
          ("max_pool2d_with_indices", "max_pool2d"), "max_pool2d"),
    NpuOp("avg_pool2d", "pool", ("relax.nn.avg_pool2d",), ("avg_pool2d",), "avg_pool2d"),
    NpuOp("mean", "pool", ("relax.mean",), ("mean",), "mean"),
    NpuOp("sigmoid", "table", ("relax.sigmoid",), ("sigmoid",), "logistic"),
    NpuOp("tanh", "table", ("relax.tanh",), ("tanh",), "tanh"),
    NpuOp("hardswish", "table", (), ("hardswish",), "hard_swish"),
    NpuOp("leaky_relu", "table", ("relax.nn.leakyrelu",), ("leaky_relu",), "leaky_relu"),
    NpuOp("gelu", "table", ("relax.nn.gelu", "relax.nn.gelu_tanh"), ("gelu",), "gelu"),
    NpuOp("softmax", "softmax", ("relax.nn.softmax",), ("softmax", "_softmax"), "softmax"),
    NpuOp("concat", "concat", ("relax.concat",), ("cat",), "concat"),
    NpuOp("strided_slice", "slice", ("relax.strided_slice",), ("slice",), "strided_slice"),
)
BY_NAME = {op.name: op for op in OPS}
ROOTS = tuple(op.name for op in OPS)


def family(name: str) -> tuple[str, ...]:
    """The op names of a family, in table order."""
    return tuple(op.name for op in OPS if op.family == name)


def for_fx(base: str) -> tuple[NpuOp, ...]:
    """The ops a torch op (name without overload) can be."""
    return tuple(op for op in OPS if base in op.fx)
