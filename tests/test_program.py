import os

import pytest
import torch
import torch.nn as nn

import edgecc
from edgecc.accounting import measure
from edgecc.errors import InputSpecError, ProgramVerificationError
from edgecc.program import ORIGIN


class Small(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.fc = nn.Linear(8, 5)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def traced(dynamic=False):
    batch = torch.export.Dim("batch", min=1, max=16)
    return edgecc.trace(Small().eval(), (torch.randn(2, 3, 8, 8),),
                        dynamic_shapes=({0: batch},) if dynamic else None)


def test_trace_specs_and_run_match_module():
    torch.manual_seed(0)
    m = Small().eval()
    p = edgecc.trace(m, (torch.randn(2, 3, 8, 8),))
    assert [s.describe() for s in p.input_specs] == ["x: float32[2,3,8,8]"]
    assert [s.describe() for s in p.output_specs] == ["output: float32[2,5]"]
    x = torch.randn(2, 3, 8, 8)
    torch.testing.assert_close(p(x)[0], m(x))


def test_dynamic_dims_are_kept_and_named():
    p = traced(dynamic=True)
    spec = p.input_specs[0]
    assert spec.shape == ("batch", 3, 8, 8)
    assert spec.ranges == (("batch", 1, 16),)
    assert p.output_specs[0].shape == ("batch", 5)
    assert p(torch.randn(7, 3, 8, 8))[0].shape == (7, 5)


@pytest.mark.parametrize("bad, message", [
    ((torch.randn(2, 3, 9, 8),), "shape"),
    ((torch.randn(2, 3, 8, 8).double(),), "dtype float64"),
    ((torch.randn(2, 3, 8, 8), torch.randn(1)), "takes 1 input"),
    ((torch.randn(17, 3, 8, 8),), "batch in [1, 16]"),
])
def test_wrong_inputs_are_rejected_with_the_reason(bad, message):
    with pytest.raises(InputSpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        traced(dynamic=True)(*bad)


def test_copy_is_independent():
    p = traced()
    q = p.copy()
    node = next(n for n in q.nodes("get_attr"))
    q.tensor(node).data.zero_()
    assert not torch.equal(p.tensor(next(n for n in p.nodes("get_attr"))), q.tensor(node))


def test_metadata_shapes_dtypes_and_provenance():
    p = traced()
    conv = next(n for n in p.nodes("call_function") if "convolution" in str(n.target))
    assert tuple(conv.meta["val"].shape) == (2, 8, 8, 8)
    assert conv.meta[ORIGIN] == "frontend"
    assert "conv" in str(list(conv.meta["nn_module_stack"].values())[-1][0])
    text = str(p)
    assert "aten.convolution" in text and "@conv.weight:float32[8,3,3,3]" in text
    assert "# conv" in text


def test_accounting_counts_params_bytes_and_macs():
    p = traced()
    size = measure(p)
    assert size.parameters == 8 * 3 * 9 + 8 + 5 * 8 + 5
    assert size.bytes == 4 * size.parameters
    # conv: out 2*8*8*8 elements x (3*3*3) MACs each; linear: 2*5 x 8
    assert size.macs == 2 * 8 * 8 * 8 * 27 + 2 * 5 * 8
    assert p.op_counts()["aten.convolution"] == 1


def test_verifier_rejects_broken_graphs():
    p = traced()
    p.verify()
    relu = next(n for n in p.nodes("call_function") if "relu" in str(n.target))
    relu.args = (relu.args[0], relu.args[0])  # relu takes one tensor
    with pytest.raises(ProgramVerificationError):
        p.verify()
    q = traced()
    out = q.graph.output_node()
    out.args = ((out.args[0][0], out.args[0][0]),)
    with pytest.raises(ProgramVerificationError, match="returns 2 outputs"):
        q.verify()


@pytest.mark.parametrize("dynamic", [False, True])
def test_verify_propagates_shapes_again_only_after_a_change(dynamic, monkeypatch):
    p = traced(dynamic)
    calls = []
    real = type(p).refresh_metadata
    monkeypatch.setattr(type(p), "refresh_metadata",
                        lambda self: (calls.append(1), real(self))[1])
    p.verify()  # the trace propagated the metadata of this graph: nothing moved since
    p.verify()
    assert len(calls) == 0
    conv = next(n for n in p.nodes("get_attr") if p.tensor(n).dim() == 4)
    p.set_tensor(conv, p.tensor(conv).clone())  # a new value, the same layout
    p.verify()
    assert len(calls) == 0
    relu = next(n for n in p.nodes("call_function") if "relu" in str(n.target))
    relu.meta["val"] = relu.meta["val"].to(torch.float16)  # a pass's wrong metadata
    with pytest.raises(ProgramVerificationError, match="metadata says"):
        p.verify()
    assert len(calls) == 1
    q = traced(dynamic)
    q.verify()
    w = next(n for n in q.nodes("get_attr") if q.tensor(n).dim() == 4)
    q.set_tensor(w, q.tensor(w)[:, :2].contiguous())  # a weight of another shape
    with pytest.raises(ProgramVerificationError):
        q.verify()
    r = traced(dynamic)
    r.refresh_metadata()  # a pass's own propagation: the driver's verify after it is free
    done = len(calls)
    r.verify()
    assert len(calls) == done


class Deep(nn.Module):
    def __init__(self):
        super().__init__()
        self.layers = nn.ModuleList(nn.Linear(16, 16) for _ in range(6))

    def forward(self, x):
        for layer in self.layers:
            x = torch.relu(layer(x))
        return (x.sum(-1),)


def _layouts(p):
    return {n.name: describe(n.meta.get("val")) for n in p.graph.nodes}


def describe(v):
    if isinstance(v, torch.Tensor):
        return (str(tuple(v.shape)), v.dtype, str(v.stride()))
    return repr(v)


def _full_propagation(p):
    q = p.copy()
    q._propagated = {}  # forget the record: every node propagated
    q.refresh_metadata()
    assert q.propagated_nodes == len(q.nodes("call_function")) + len(q.nodes("get_attr"))
    return _layouts(q)


@pytest.mark.parametrize("dynamic", [False, True])
def test_refresh_after_a_local_rewrite_propagates_only_what_it_reaches(dynamic):
    batch = torch.export.Dim("batch", min=1, max=16)
    p = edgecc.trace(Deep().eval(), (torch.randn(4, 16),),
                     dynamic_shapes=({0: batch},) if dynamic else None)
    n_nodes = len(p.graph.nodes)
    relu = [n for n in p.nodes("call_function") if "relu" in str(n.target)][2]
    with p.graph.inserting_after(relu):  # the same layout: the next layer's nodes keep theirs
        doubled = p.graph.call_function(torch.ops.aten.mul.Tensor, (relu, 2.0))
    relu.replace_all_uses_with(doubled, delete_user_cb=lambda u: u is not doubled)
    p.graph_module.recompile()
    p.verify()
    assert p.propagated_nodes == 2  # the new node and its user
    assert _layouts(p) == _full_propagation(p)
    # a new layout travels: every node after a batch-doubling concat propagates again
    x = p.nodes("placeholder")[0]
    first = next(iter(x.users))
    with p.graph.inserting_before(first):
        cat = p.graph.call_function(torch.ops.aten.cat.default, ([x, x], 0))
    first.replace_input_with(x, cat)
    p.graph_module.recompile()
    p.verify()
    assert p.propagated_nodes > n_nodes // 2
    assert _layouts(p) == _full_propagation(p)
    assert p.graph.output_node().args[0][0].meta["val"].shape[0] == 2 * (
        p.nodes("placeholder")[0].meta["val"].shape[0])


def test_copy_keeps_the_propagation_record():
    p = edgecc.trace(Deep().eval(), (torch.randn(4, 16),))
    q = p.copy()
    q.refresh_metadata()
    assert q.propagated_nodes == 0  # everything carried over
    assert _layouts(q) == _full_propagation(q)


def test_save_and_load_pt2_round_trip(tmp_path):
    p = traced(dynamic=True)
    path = os.path.join(tmp_path, "m.pt2")
    p.save(path)
    q = edgecc.load(path)
    assert isinstance(q.input_specs[0].shape[0], str)
    x = torch.randn(3, 3, 8, 8)
    torch.testing.assert_close(p(x)[0], q(x)[0])


def test_trace_keeps_attention_as_one_operator():
    class Attn(nn.Module):
        def forward(self, q, k, v):
            return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)

    x = torch.randn(1, 2, 4, 8)
    p = edgecc.trace(Attn(), (x, x, x))
    assert p.op_counts()["aten.scaled_dot_product_attention"] == 1


def test_copy_does_not_carry_the_record_of_an_erased_node_to_its_namesake():
    p = edgecc.trace(Deep().eval(), (torch.randn(4, 16),))
    relu = [n for n in p.nodes("call_function") if "relu" in str(n.target)][2]
    name = relu.name
    with p.graph.inserting_after(relu):  # a namesake with wrong, never propagated metadata
        twin = p.graph.call_function(torch.ops.aten.relu.default, relu.args)
    relu.replace_all_uses_with(twin)
    p.graph.erase_node(relu)
    twin.name = name
    twin.meta["val"] = relu.meta["val"].to(torch.float16)
    q = p.copy()
    with pytest.raises(ProgramVerificationError, match="metadata says"):
        q.verify()
