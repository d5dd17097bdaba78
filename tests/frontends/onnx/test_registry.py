"""The converter table (``registry.py``): built explicitly from the op families' entries,
overlapping opset ranges rejected, lookups by operator and opset."""

import pytest
import torch
from onnx import helper

from edgecc.onnx_import import registry
from edgecc.onnx_import.converter import Converter
from edgecc.onnx_import.ops import activation, elementwise, quantized
from edgecc.onnx_import.registry import CONVERTERS, ConverterTableError, build_table


def _a(ctx, x):
    return x


def _b(ctx, x):
    return -x


def test_overlapping_opset_ranges_are_rejected_when_the_table_is_built():
    with pytest.raises(ConverterTableError, match=r"Foo: overlapping opset ranges.*_a.*_b"):
        build_table([Converter("Foo", _a, since_opset=1, until_opset=13),
                     Converter("Foo", _b, since_opset=13)])


def test_an_open_ended_range_overlaps_any_later_one():
    with pytest.raises(ConverterTableError, match="overlapping opset ranges"):
        build_table([Converter("Foo", _b, since_opset=18), Converter("Foo", _a)])


def test_the_same_entry_twice_is_an_overlap():
    with pytest.raises(ConverterTableError, match="overlapping opset ranges"):
        build_table([*elementwise.CONVERTERS, *elementwise.CONVERTERS])


def test_an_empty_opset_range_is_rejected():
    with pytest.raises(ConverterTableError, match="empty opset range"):
        build_table([Converter("Foo", _a, since_opset=13, until_opset=12)])


def test_disjoint_ranges_each_cover_their_opsets():
    table = build_table([Converter("Foo", _b, since_opset=13), Converter("Foo", _a, until_opset=12)])
    assert table.lookup("Foo", 1) is _a and table.lookup("Foo", 12) is _a
    assert table.lookup("Foo", 13) is _b and table.lookup("Foo", 21) is _b
    assert table.lookup("Bar", 13) is None
    assert table.supported_ops() == {"Foo": [(1, 12), (13, None)]}


def test_other_domains_are_keyed_by_domain():
    table = build_table([Converter("Foo", _a, domain="com.vendor"), Converter("Foo", _b)])
    assert table.lookup("com.vendor.Foo", 17) is _a and table.lookup("Foo", 17) is _b
    vendor = helper.make_node("Foo", ["x"], ["y"], domain="com.vendor")
    assert registry.node_key(vendor) == "com.vendor.Foo"
    assert registry.node_key(helper.make_node("Foo", ["x"], ["y"], domain="ai.onnx")) == "Foo"


def test_the_table_is_exactly_the_families_entries():
    entries = [c for family in registry.FAMILIES for c in family.CONVERTERS]
    assert all(isinstance(c, Converter) for c in entries)
    assert sum(len(v) for v in CONVERTERS.entries.values()) == len(entries)
    assert build_table(entries).supported_ops() == CONVERTERS.supported_ops()
    with pytest.raises(TypeError):  # built once; nothing can add to it afterwards
        CONVERTERS.entries["Foo"] = ()


def test_softmax_semantics_change_at_opset_13():
    old, new = CONVERTERS.lookup("Softmax", 12), CONVERTERS.lookup("Softmax", 13)
    assert {old, new} <= {c.fn for c in activation.CONVERTERS if c.op_type == "Softmax"}
    assert old is not new
    assert CONVERTERS.lookup("Gelu", 19) is None and CONVERTERS.lookup("Gelu", 20) is not None


def test_onnxruntime_contrib_ops_are_looked_up_by_domain():
    qgemm = next(c for c in quantized.CONVERTERS if c.op_type == "QGemm")
    assert registry.lookup("com.microsoft.QGemm", 17) is qgemm.fn
    assert registry.lookup("QGemm", 17) is None


def test_a_unary_entry_converts():
    relu = CONVERTERS.lookup("Relu", 17)
    x = torch.tensor([-1.0, 2.0])
    assert torch.equal(relu(None, x), torch.tensor([0.0, 2.0]))
