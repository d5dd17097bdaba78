"""The converter table: which function converts an ONNX operator at a given opset.

Built once, explicitly, from the ``CONVERTERS`` tuples of the op-family modules in
``ops/`` (nothing registers itself on import). Two entries for the same operator whose
opset ranges overlap are an error when the table is built, so a lookup never has to choose.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

from edgecc.onnx_import.converter import ConvertFn, Converter, op_key
from edgecc.onnx_import.ops import (
    activation, elementwise, indexing, matmul, nn, quantized, reduce, shape, tensor,
)

FAMILIES = (tensor, shape, indexing, elementwise, activation, nn, matmul, reduce, quantized)


class ConverterTableError(ValueError):
    """The converter entries contradict each other (an edgecc bug, found at import)."""


def _describe(c: Converter) -> str:
    until = "" if c.until_opset is None else str(c.until_opset)
    return f"{c.fn.__module__}.{c.fn.__qualname__} (opsets {c.since_opset}..{until})"


@dataclass(frozen=True)
class ConverterTable:
    """Operator key (see :func:`node_key`) -> its converters, ordered by opset, disjoint."""

    entries: Mapping[str, tuple[Converter, ...]]

    def lookup(self, key: str, opset: int) -> ConvertFn | None:
        for converter in self.entries.get(key, ()):
            if converter.covers(opset):
                return converter.fn
        return None

    def supported_ops(self) -> dict[str, list[tuple[int, int | None]]]:
        """Each operator key with the opset ranges it converts (``None``: no upper bound)."""
        return {key: [(c.since_opset, c.until_opset) for c in convs]
                for key, convs in sorted(self.entries.items())}


def build_table(converters: Iterable[Converter]) -> ConverterTable:
    """The table of ``converters``; raises :class:`ConverterTableError` on an empty opset
    range or on two entries for one operator whose opset ranges overlap."""
    by_key: dict[str, list[Converter]] = {}
    for c in converters:
        if c.until_opset is not None and c.until_opset < c.since_opset:
            raise ConverterTableError(f"{c.key}: {_describe(c)} is an empty opset range")
        by_key.setdefault(c.key, []).append(c)
    table = {}
    for key, convs in by_key.items():
        convs.sort(key=lambda c: c.since_opset)
        for a, b in zip(convs, convs[1:]):
            if a.until_opset is None or b.since_opset <= a.until_opset:
                raise ConverterTableError(
                    f"{key}: overlapping opset ranges, {_describe(a)} and {_describe(b)}; "
                    f"end one range (until_opset) before the other starts"
                )
        table[key] = tuple(convs)
    return ConverterTable(MappingProxyType(table))


CONVERTERS: ConverterTable = build_table(c for family in FAMILIES for c in family.CONVERTERS)


def node_key(node: Any) -> str:
    """Table key of an ONNX node (see :func:`op_key`)."""
    return op_key(node.op_type, node.domain or "")


def lookup(key: str, opset: int) -> ConvertFn | None:
    """The converter for operator ``key`` at default-domain ``opset``, or None."""
    return CONVERTERS.lookup(key, opset)


def supported_ops() -> dict[str, list[tuple[int, int | None]]]:
    return CONVERTERS.supported_ops()
