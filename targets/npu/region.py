"""An NPU region: a small int8 dataflow graph with TFLite semantics.

A region is what one NPU call executes: int8 per-tensor activations (NHWC), symmetric int8
weights (per-channel or per-tensor), int32 bias, and the ops an Ethos-U-class NPU runs —
conv2d, depthwise_conv2d, fully_connected, batch_matmul, add, mul, avg_pool2d, max_pool2d,
mean, pad, reshape, transpose, quantize, concat, strided_slice, softmax and the table
activations (logistic, tanh, hard_swish, leaky_relu, gelu: ``lut``) — the arithmetic ones
with a fused clamp (``activation``: NONE, RELU, RELU6, RELU_N1_TO_1). The same object is
simulated bit-exactly (``simulator.py``), written as a ``.tflite`` (``tflite_writer.py``) and
compiled by Vela (``vela_compile.py``).

Layouts follow TFLite: conv weights OHWI, depthwise weights 1HW(C*multiplier), fully connected
weights (O, I). ``RegionBuilder`` adds ops and infers output shapes::

    b = RegionBuilder("r0")
    x = b.input("x", (1, 16, 16, 8), scale=0.05, zero_point=-3)
    y = b.conv2d(x, w, bias, w_scales, out_scale=0.1, out_zero_point=2, stride=1,
                 padding="SAME", activation="RELU")
    region = b.build(outputs=[y])
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

OP_KINDS = ("conv2d", "depthwise_conv2d", "fully_connected", "batch_matmul", "add", "mul",
            "avg_pool2d", "pad", "max_pool2d", "mean", "reshape", "transpose", "quantize",
            "concat", "strided_slice", "softmax", "logistic", "tanh", "hard_swish",
            "leaky_relu", "gelu")
# element-wise int8 -> int8 functions an NPU evaluates as a 256-entry lookup table (Vela: LUT)
LUT_KINDS = ("logistic", "tanh", "hard_swish", "leaky_relu", "gelu")
# the output quantization TFLite requires of int8 LOGISTIC / TANH (scale, zero point)
FIXED_OUTPUT_QUANT = {"logistic": (1.0 / 256, -128), "tanh": (1.0 / 128, 0),
                      "softmax": (1.0 / 256, -128)}
ACTIVATIONS = ("NONE", "RELU", "RELU6", "RELU_N1_TO_1")
PADDINGS = ("SAME", "VALID")


@dataclasses.dataclass(frozen=True)
class Quant:
    """Affine quantization real = scale * (q - zero_point); per-channel along ``axis``."""

    scale: tuple[float, ...]
    zero_point: tuple[int, ...]
    axis: int = 0

    @property
    def per_channel(self) -> bool:
        return len(self.scale) > 1


@dataclasses.dataclass(frozen=True, eq=False)
class TensorSpec:
    name: str
    shape: tuple[int, ...]
    dtype: str  # "int8" | "int32"
    quant: Quant | None = None
    data: np.ndarray | None = None  # set for constants (weights, bias, reshape shape)

    @property
    def is_constant(self) -> bool:
        return self.data is not None


@dataclasses.dataclass(frozen=True, eq=False)
class RegionOp:
    kind: str
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    attrs: Mapping[str, Any] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True, eq=False)
class Region:
    name: str
    tensors: Mapping[str, TensorSpec]
    ops: tuple[RegionOp, ...]
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]

    def macs(self) -> int:
        """Multiply-accumulates of the region's conv/FC ops (what the NPU's MAC array does)."""
        total = 0
        for op in self.ops:
            out = self.tensors[op.outputs[0]].shape
            w = self.tensors[op.inputs[1]].shape if len(op.inputs) > 1 else ()
            if op.kind == "conv2d":
                total += math.prod(out) * w[1] * w[2] * w[3]
            elif op.kind == "depthwise_conv2d":
                total += math.prod(out) * w[1] * w[2]
            elif op.kind == "fully_connected":
                total += math.prod(out) * w[1]
            elif op.kind == "batch_matmul":  # (B, M, K) x (B, K, N): K per output
                total += math.prod(out) * self.tensors[op.inputs[0]].shape[-1]
        return total


def _pair(v: int | Sequence[int]) -> tuple[int, int]:
    return (int(v), int(v)) if isinstance(v, (int, np.integer)) else (int(v[0]), int(v[1]))


def conv_output_size(size: int, kernel: int, stride: int, dilation: int, padding: str) -> int:
    effective = (kernel - 1) * dilation + 1
    if padding == "SAME":
        return (size + stride - 1) // stride
    return (size - effective + stride) // stride


def same_padding(size: int, kernel: int, stride: int, dilation: int) -> tuple[int, int]:
    """(before, after) padding TFLite applies for SAME (the odd element goes after)."""
    effective = (kernel - 1) * dilation + 1
    out = conv_output_size(size, kernel, stride, dilation, "SAME")
    total = max((out - 1) * stride + effective - size, 0)
    return total // 2, total - total // 2


class RegionBuilder:
    """Builds a ``Region`` op by op; every method returns the name of the op's output."""

    def __init__(self, name: str):
        self.name = name
        self._tensors: dict[str, TensorSpec] = {}
        self._ops: list[RegionOp] = []
        self._inputs: list[str] = []

    # tensors ---------------------------------------------------------------------------
    def _add(self, spec: TensorSpec) -> str:
        if spec.name in self._tensors:
            raise ValueError(f"region {self.name}: tensor {spec.name!r} defined twice")
        self._tensors[spec.name] = spec
        return spec.name

    def _fresh(self, stem: str) -> str:
        i = len(self._tensors)
        while f"{stem}_{i}" in self._tensors:
            i += 1
        return f"{stem}_{i}"

    def input(self, name: str, shape: Sequence[int], scale: float, zero_point: int = 0) -> str:
        self._inputs.append(name)
        return self._add(TensorSpec(name, tuple(int(s) for s in shape), "int8",
                                    Quant((float(scale),), (int(zero_point),))))

    def _activation(self, shape, scale, zero_point, name=None) -> str:
        return self._add(TensorSpec(name or self._fresh("t"), tuple(shape), "int8",
                                    Quant((float(scale),), (int(zero_point),))))

    def _weights(self, w: np.ndarray, scales: Sequence[float] | float, axis: int) -> str:
        w = np.asarray(w)
        if w.dtype != np.int8:
            raise TypeError(f"weights must be int8, got {w.dtype}")
        scales = tuple(float(s) for s in np.atleast_1d(np.asarray(scales, dtype=np.float32)))
        if len(scales) not in (1, w.shape[axis]):
            raise ValueError(f"{len(scales)} weight scales for {w.shape[axis]} channels")
        return self._add(TensorSpec(self._fresh("w"), w.shape, "int8",
                                    Quant(scales, (0,) * len(scales), axis), data=w))

    def _bias(self, bias: np.ndarray | None, channels: int, in_scale: float,
              w_scales: tuple[float, ...]) -> str:
        b = np.zeros(channels, np.int32) if bias is None else np.asarray(bias)
        if b.dtype != np.int32 or b.shape != (channels,):
            raise TypeError(f"bias must be int32 of shape ({channels},), got {b.dtype} {b.shape}")
        scales = tuple(float(np.float32(in_scale) * np.float32(s)) for s in w_scales)
        return self._add(TensorSpec(self._fresh("b"), b.shape, "int32",
                                    Quant(scales, (0,) * len(scales)), data=b))

    def _quant(self, name: str) -> Quant:
        q = self._tensors[name].quant
        assert q is not None
        return q

    def _op(self, kind, inputs, output, **attrs) -> str:
        activation = attrs.get("activation", "NONE")
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation {activation!r} is not one of {ACTIVATIONS}")
        if attrs.get("padding", "SAME") not in PADDINGS:
            raise ValueError(f"padding {attrs['padding']!r} is not one of {PADDINGS}")
        self._ops.append(RegionOp(kind, tuple(inputs), (output,), attrs))
        return output

    # ops -------------------------------------------------------------------------------
    def conv2d(self, x: str, w: np.ndarray, bias: np.ndarray | None, w_scales, out_scale: float,
               out_zero_point: int = 0, stride=1, padding="SAME", dilation=1,
               activation="NONE", name: str | None = None) -> str:
        n, h, wd, c = self._tensors[x].shape
        o, kh, kw, ci = np.shape(w)
        if ci != c:
            raise ValueError(f"conv2d weights take {ci} input channels, {x!r} has {c}")
        (sh, sw), (dh, dw) = _pair(stride), _pair(dilation)
        wt = self._weights(w, w_scales, axis=0)
        bt = self._bias(bias, o, self._quant(x).scale[0], self._quant(wt).scale)
        shape = (n, conv_output_size(h, kh, sh, dh, padding),
                 conv_output_size(wd, kw, sw, dw, padding), o)
        y = self._activation(shape, out_scale, out_zero_point, name)
        return self._op("conv2d", (x, wt, bt), y, stride=(sh, sw), dilation=(dh, dw),
                        padding=padding, activation=activation)

    def depthwise_conv2d(self, x: str, w: np.ndarray, bias: np.ndarray | None, w_scales,
                         out_scale: float, out_zero_point: int = 0, stride=1, padding="SAME",
                         dilation=1, depth_multiplier=1, activation="NONE",
                         name: str | None = None) -> str:
        n, h, wd, c = self._tensors[x].shape
        one, kh, kw, oc = np.shape(w)
        if one != 1 or oc != c * depth_multiplier:
            raise ValueError(f"depthwise weights must be (1, KH, KW, {c * depth_multiplier})")
        (sh, sw), (dh, dw) = _pair(stride), _pair(dilation)
        wt = self._weights(w, w_scales, axis=3)
        bt = self._bias(bias, oc, self._quant(x).scale[0], self._quant(wt).scale)
        shape = (n, conv_output_size(h, kh, sh, dh, padding),
                 conv_output_size(wd, kw, sw, dw, padding), oc)
        y = self._activation(shape, out_scale, out_zero_point, name)
        return self._op("depthwise_conv2d", (x, wt, bt), y, stride=(sh, sw),
                        dilation=(dh, dw), padding=padding, depth_multiplier=depth_multiplier,
                        activation=activation)

    def fully_connected(self, x: str, w: np.ndarray, bias: np.ndarray | None, w_scales,
                        out_scale: float, out_zero_point: int = 0, activation="NONE",
                        name: str | None = None) -> str:
        shape = self._tensors[x].shape
        o, i = np.shape(w)
        if shape[-1] != i:
            raise ValueError(f"fully_connected weights take {i} inputs, {x!r} has {shape[-1]}")
        wt = self._weights(w, w_scales, axis=0)
        bt = self._bias(bias, o, self._quant(x).scale[0], self._quant(wt).scale)
        rows = math.prod(shape[:-1])
        y = self._activation((rows, o), out_scale, out_zero_point, name)
        return self._op("fully_connected", (x, wt, bt), y, activation=activation)

    def batch_matmul(self, a: str, b: str, out_scale: float, out_zero_point: int = 0,
                     name: str | None = None) -> str:
        """TFLite BATCH_MATMUL of two int8 activations: (B, M, K) x (B, K, N) -> (B, M, N),
        int32 accumulation of (a - zp_a) * (b - zp_b), per-tensor requantization."""
        sa, sb = self._tensors[a].shape, self._tensors[b].shape
        if len(sa) != 3 or len(sb) != 3 or sa[0] != sb[0] or sa[2] != sb[1]:
            raise ValueError(f"batch_matmul takes (B, M, K) x (B, K, N), got {sa} x {sb}")
        y = self._activation((sa[0], sa[1], sb[2]), out_scale, out_zero_point, name)
        return self._op("batch_matmul", (a, b), y, activation="NONE")

    def _binary(self, kind, a, b, out_scale, out_zero_point, activation, name) -> str:
        shape = np.broadcast_shapes(self._tensors[a].shape, self._tensors[b].shape)
        y = self._activation(shape, out_scale, out_zero_point, name)
        return self._op(kind, (a, b), y, activation=activation)

    def add(self, a: str, b: str, out_scale: float, out_zero_point: int = 0,
            activation="NONE", name: str | None = None) -> str:
        return self._binary("add", a, b, out_scale, out_zero_point, activation, name)

    def mul(self, a: str, b: str, out_scale: float, out_zero_point: int = 0,
            activation="NONE", name: str | None = None) -> str:
        return self._binary("mul", a, b, out_scale, out_zero_point, activation, name)

    def _pool(self, kind, x, kernel, stride, padding, activation, name) -> str:
        n, h, w, c = self._tensors[x].shape
        (kh, kw), (sh, sw) = _pair(kernel), _pair(stride)
        q = self._quant(x)  # TFLite int8 pools keep the input's quantization
        shape = (n, conv_output_size(h, kh, sh, 1, padding),
                 conv_output_size(w, kw, sw, 1, padding), c)
        y = self._activation(shape, q.scale[0], q.zero_point[0], name)
        return self._op(kind, (x,), y, kernel=(kh, kw), stride=(sh, sw), padding=padding,
                        activation=activation)

    def avg_pool2d(self, x: str, kernel, stride=None, padding="VALID", activation="NONE",
                   name: str | None = None) -> str:
        return self._pool("avg_pool2d", x, kernel, stride or kernel, padding, activation, name)

    def max_pool2d(self, x: str, kernel, stride=None, padding="VALID", activation="NONE",
                   name: str | None = None) -> str:
        return self._pool("max_pool2d", x, kernel, stride or kernel, padding, activation, name)

    def pad(self, x: str, pads: Sequence[int], name: str | None = None) -> str:
        """Spatial padding (top, left, bottom, right) of an NHWC tensor with its zero point
        (a real 0), as TFLite's int8 PAD does: a convolution's explicit padding."""
        n, h, w, c = self._tensors[x].shape
        t, l, b, r = (int(p) for p in pads)
        paddings = np.array([[0, 0], [t, b], [l, r], [0, 0]], np.int32)
        pt = self._add(TensorSpec(self._fresh("paddings"), (4, 2), "int32", data=paddings))
        q = self._quant(x)
        y = self._activation((n, h + t + b, w + l + r, c), q.scale[0], q.zero_point[0], name)
        return self._op("pad", (x, pt), y, pads=(t, l, b, r))

    def reshape(self, x: str, shape: Sequence[int], name: str | None = None) -> str:
        src = self._tensors[x]
        shape = tuple(int(s) for s in shape)
        if math.prod(shape) != math.prod(src.shape):
            raise ValueError(f"cannot reshape {src.shape} to {shape}")
        st = self._add(TensorSpec(self._fresh("shape"), (len(shape),), "int32",
                                  data=np.asarray(shape, np.int32)))
        q = self._quant(x)
        y = self._activation(shape, q.scale[0], q.zero_point[0], name)
        return self._op("reshape", (x, st), y, new_shape=shape)

    def mean(self, x: str, out_scale: float, out_zero_point: int = 0, keep_dims: bool = False,
             name: str | None = None) -> str:
        """TFLite MEAN over H and W of an NHWC tensor (a global average pool), requantized to
        the output's scale and zero point in the same step."""
        n, h, w, c = self._tensors[x].shape
        axis = self._add(TensorSpec(self._fresh("axis"), (2,), "int32",
                                    data=np.array([1, 2], np.int32)))
        y = self._activation((n, 1, 1, c) if keep_dims else (n, c), out_scale, out_zero_point,
                             name)
        return self._op("mean", (x, axis), y, keep_dims=bool(keep_dims))

    def transpose(self, x: str, perm: Sequence[int], name: str | None = None) -> str:
        """TFLite TRANSPOSE (same quantization): e.g. NHWC -> NCHW before a flatten."""
        src = self._tensors[x]
        perm = tuple(int(p) for p in perm)
        if sorted(perm) != list(range(len(src.shape))):
            raise ValueError(f"transpose permutation {perm} of a rank-{len(src.shape)} tensor")
        pt = self._add(TensorSpec(self._fresh("perm"), (len(perm),), "int32",
                                  data=np.asarray(perm, np.int32)))
        q = self._quant(x)
        y = self._activation(tuple(src.shape[p] for p in perm), q.scale[0], q.zero_point[0],
                             name)
        return self._op("transpose", (x, pt), y, perm=perm)

    def quantize(self, x: str, out_scale: float, out_zero_point: int = 0,
                 name: str | None = None) -> str:
        """TFLite QUANTIZE int8 -> int8: requantize to a new scale and zero point."""
        y = self._activation(self._tensors[x].shape, out_scale, out_zero_point, name)
        return self._op("quantize", (x,), y)

    def concat(self, xs: Sequence[str], axis: int, name: str | None = None) -> str:
        """TFLite CONCATENATION of int8 tensors that share one quantization."""
        specs = [self._tensors[x] for x in xs]
        q = specs[0].quant
        if any(s.quant != q for s in specs):
            raise ValueError("concat inputs must share one quantization")
        shape = list(specs[0].shape)
        axis = axis % len(shape)
        shape[axis] = sum(s.shape[axis] for s in specs)
        y = self._activation(shape, q.scale[0], q.zero_point[0], name)
        return self._op("concat", tuple(xs), y, axis=axis)

    def strided_slice(self, x: str, begin: Sequence[int], end: Sequence[int],
                      strides: Sequence[int] | None = None, name: str | None = None) -> str:
        """TFLite STRIDED_SLICE (positive begin / end / strides, no masks)."""
        src = self._tensors[x]
        strides = tuple(strides or (1,) * len(begin))
        shape = tuple(len(range(b_, e_, s_)) for b_, e_, s_ in zip(begin, end, strides))
        consts = [self._add(TensorSpec(self._fresh(n), (len(v),), "int32",
                                       data=np.asarray(v, np.int32)))
                  for n, v in (("begin", begin), ("end", end), ("strides", strides))]
        q = src.quant
        y = self._activation(shape, q.scale[0], q.zero_point[0], name)
        return self._op("strided_slice", (x, *consts), y, begin=tuple(begin), end=tuple(end),
                        strides=strides)

    def lut(self, x: str, kind: str, out_scale: float | None = None,
            out_zero_point: int | None = None, alpha: float = 0.01, approximate: bool = False,
            name: str | None = None) -> str:
        """An element-wise activation the NPU applies through a 256-entry int8 table: TFLite
        LOGISTIC (output fixed at scale 1/256, zero point -128), TANH (1/128, 0), HARD_SWISH,
        LEAKY_RELU (``alpha``) or GELU (``approximate``: tanh form)."""
        if kind not in LUT_KINDS:
            raise ValueError(f"lut kind {kind!r} is not one of {LUT_KINDS}")
        if kind in FIXED_OUTPUT_QUANT:
            fixed = FIXED_OUTPUT_QUANT[kind]
            out_scale = fixed[0] if out_scale is None else out_scale
            out_zero_point = fixed[1] if out_zero_point is None else out_zero_point
            if (float(np.float32(out_scale)), int(out_zero_point)) != (float(np.float32(
                    fixed[0])), fixed[1]):
                raise ValueError(f"TFLite int8 {kind} writes scale {fixed[0]:g}, zero point "
                                 f"{fixed[1]}; requantize after it (RegionBuilder.quantize)")
        if out_scale is None:
            raise ValueError(f"{kind} needs an output scale")
        if kind == "leaky_relu" and not alpha >= 0:
            raise ValueError(f"leaky_relu alpha {alpha} < 0 is not lowered to the NPU")
        y = self._activation(self._tensors[x].shape, out_scale, int(out_zero_point or 0), name)
        attrs = {"alpha": float(np.float32(alpha))} if kind == "leaky_relu" else (
            {"approximate": bool(approximate)} if kind == "gelu" else {})
        return self._op(kind, (x,), y, **attrs)

    def softmax(self, x: str, beta: float = 1.0, name: str | None = None) -> str:
        """TFLite int8 SOFTMAX over the last axis; the output is at TFLite's fixed
        quantization (scale 1/256, zero point -128)."""
        scale, zp = FIXED_OUTPUT_QUANT["softmax"]
        y = self._activation(self._tensors[x].shape, scale, zp, name)
        return self._op("softmax", (x,), y, beta=float(np.float32(beta)))

    def build(self, outputs: Sequence[str]) -> Region:
        for o in outputs:
            if o not in self._tensors:
                raise ValueError(f"region {self.name}: unknown output {o!r}")
        return Region(self.name, dict(self._tensors), tuple(self._ops), tuple(self._inputs),
                      tuple(outputs))
