"""Element-wise operators: arithmetic, comparison and logic (binary, broadcasting), unary
math, Where, the variadic Max / Min / Sum / Mean, and Dropout (identity at inference).

Add, Sub, Mul and Div of :class:`ShapeValue` operands stay on Python ints / SymInts, so shape
arithmetic an exporter emits (``Shape -> Mul -> Reshape``) remains symbolic.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from edgecc.onnx_import.converter import Converter, Ctx, ShapeValue, T


def _shape_math(fn: Callable[[Any, Any], Any], a: Any, b: Any, ctx: Ctx) -> Any:
    """Arithmetic on shape values stays on Python ints/SymInts."""
    av = a.values if isinstance(a, ShapeValue) else ctx.ints(0, a)
    bv = b.values if isinstance(b, ShapeValue) else ctx.ints(1, b)
    if len(av) == 1 and len(bv) > 1:
        av = av * len(bv)
    if len(bv) == 1 and len(av) > 1:
        bv = bv * len(av)
    scalar = (not isinstance(a, ShapeValue) or a.scalar) and (not isinstance(b, ShapeValue) or b.scalar)
    return ShapeValue([fn(x, y) for x, y in zip(av, bv)], scalar=scalar)


def _binary(torch_fn: Callable[[Any, Any], Any], int_fn: Callable[[Any, Any], Any] | None = None):
    def convert(ctx, a, b):
        if int_fn is not None and (isinstance(a, ShapeValue) or isinstance(b, ShapeValue)):
            try:
                return _shape_math(int_fn, a, b, ctx)
            except NotImplementedError:
                pass
        return torch_fn(T(a), T(b))

    return convert


def _equal(ctx, a, b):
    """Shapes compared stay Python bools (torch.onnx guards on ranks with ``If(Equal)``)."""
    if isinstance(a, ShapeValue) or isinstance(b, ShapeValue):
        try:
            out = _shape_math(lambda x, y: bool(x == y), a, b, ctx)
            return ShapeValue(out.values, scalar=out.scalar, dtype=torch.bool)
        except (NotImplementedError, TypeError):
            pass
    return torch.eq(T(a), T(b))


def _div(ctx, a, b):
    if isinstance(a, ShapeValue) or isinstance(b, ShapeValue):
        return _shape_math(lambda x, y: x // y, a, b, ctx)
    a, b = T(a), T(b)
    if not a.is_floating_point():
        return torch.div(a, b, rounding_mode="trunc")
    return a / b


def _mod(ctx, a, b):
    a, b = T(a), T(b)
    return torch.fmod(a, b) if ctx.attr("fmod", 0) else torch.remainder(a, b)


def _unary(fn: Callable[[torch.Tensor], torch.Tensor]):
    return lambda ctx, x: fn(T(x))


def _where(ctx, c, a, b):
    return torch.where(T(c), T(a), T(b))


def _variadic(fn: Callable[[Any, Any], Any]):
    def convert(ctx, *xs):
        out = T(xs[0])
        for x in xs[1:]:
            out = fn(out, T(x))
        return out

    return convert


def _mean(ctx, *xs):
    return _variadic(torch.add)(ctx, *xs) / len(xs)


def _dropout(ctx, x, *rest):
    x = T(x)
    if len(ctx.node.output) > 1 and ctx.node.output[1]:
        return x, torch.ones_like(x, dtype=torch.bool)
    return x


_UNARY: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "Relu": F.relu, "Sigmoid": torch.sigmoid, "Tanh": torch.tanh, "Exp": torch.exp,
    "Log": torch.log, "Sqrt": torch.sqrt, "Reciprocal": torch.reciprocal, "Neg": torch.neg,
    "Abs": torch.abs, "Erf": torch.erf, "Floor": torch.floor, "Ceil": torch.ceil,
    "Round": torch.round, "Sign": torch.sign, "Sin": torch.sin, "Cos": torch.cos,
    "Not": torch.logical_not, "Softplus": F.softplus, "Softsign": F.softsign,
    "IsNaN": torch.isnan, "Tan": torch.tan, "Atan": torch.atan, "Asin": torch.asin,
    "Acos": torch.acos, "Sinh": torch.sinh, "Cosh": torch.cosh,
}


CONVERTERS = (
    Converter("Add", _binary(torch.add, lambda x, y: x + y)),
    Converter("Sub", _binary(torch.sub, lambda x, y: x - y)),
    Converter("Mul", _binary(torch.mul, lambda x, y: x * y)),
    Converter("Div", _div),
    Converter("Pow", _binary(lambda a, b: torch.pow(a, b).to(a.dtype))),
    Converter("Equal", _equal),
    Converter("Less", _binary(torch.lt)),
    Converter("LessOrEqual", _binary(torch.le)),
    Converter("Greater", _binary(torch.gt)),
    Converter("GreaterOrEqual", _binary(torch.ge)),
    Converter("And", _binary(torch.logical_and)),
    Converter("Or", _binary(torch.logical_or)),
    Converter("Xor", _binary(torch.logical_xor)),
    Converter("Mod", _mod),
    *(Converter(name, _unary(fn)) for name, fn in _UNARY.items()),
    Converter("Where", _where),
    Converter("Max", _variadic(torch.maximum)),
    Converter("Min", _variadic(torch.minimum)),
    Converter("Sum", _variadic(torch.add)),
    Converter("Mean", _mean),
    Converter("Dropout", _dropout),
)
