"""Bounded memory in GPTQ (issue 20): the quantize pass holds only a run of consecutive layer
inputs' Hessians at a time; each later run runs the float program on from where the previous
one stopped (from the inputs when the kept values would not fit in the budget) up to its last
input, so the weights are bit-identical to those of one calibration run with every Hessian
alive."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import edgecc
from edgecc.pass_base import PassContext
from edgecc.pass_manager import PassManager
from edgecc.passes.quantize import gptq
from edgecc.passes.quantize.layers import RunState, ValueRecorder


class Blocks(nn.Module):
    """Three residual MLP blocks with differently sized inputs (distinct Hessians)."""

    def __init__(self):
        super().__init__()
        self.ups = nn.ModuleList(nn.Linear(32, 96) for _ in range(3))
        self.downs = nn.ModuleList(nn.Linear(96, 32) for _ in range(3))
        self.head = nn.Linear(32, 40)

    def forward(self, x):
        for up, down in zip(self.ups, self.downs):
            x = x + down(torch.relu(up(x)))
        return self.head(x)


def _quantize(prog, budget_mib):
    g = torch.Generator().manual_seed(1)
    calib = [(torch.randn(4, 32, generator=g),) for _ in range(3)]
    # w8a8 + GPTQ: the first run also feeds the activation observers
    text = f"quantize{{scheme=w8a8,algorithm=gptq,hessian_budget_mib={budget_mib}}}"
    res = PassManager(text)(prog.copy(), context=PassContext(calibration=calib))
    return res.program, res.stats["passes"][-1]["stats"]


def _codes(prog):
    return {k: v for k, v in prog.graph_module.state_dict().items()
            if k.endswith(("_qweight", "_scale", "_zero_point"))}


def _nodes_run(monkeypatch):
    """Counts the nodes the calibration runs execute (not the weights' ``get_attr``: a
    resumed run fetches them again)."""
    count = [0]
    run_node = ValueRecorder.run_node

    def counted(self, n):
        count[0] += n.op != "get_attr"
        return run_node(self, n)

    monkeypatch.setattr(ValueRecorder, "run_node", counted)
    return count


@pytest.mark.parametrize("resume", [True, False], ids=["resumed", "from-the-inputs"])
def test_hessians_in_runs_give_the_same_weights_as_one_run(monkeypatch, resume):
    torch.manual_seed(0)
    prog = edgecc.trace(Blocks().eval(), (torch.randn(4, 32),))
    count = _nodes_run(monkeypatch)
    whole, s_whole = _quantize(prog, 0)
    one_run = count[0]
    if not resume:  # the runs' states do not fit in the budget: each run starts anew
        monkeypatch.setattr(RunState, "bytes", lambda self: 1 << 40)
    # 96x96 float64 is 72 KiB, 32x32 8 KiB: a 0.075 MiB budget holds one Hessian per run
    runs, s_runs = _quantize(prog, 0.075)
    assert s_whole["gptq_hessians"]["runs"] == 1
    assert s_whole["gptq_hessians"]["resumed"] == 0
    assert s_runs["gptq_hessians"]["runs"] == 7  # 3 ups + 3 downs + head: 7 inputs
    # each later run goes on from where the previous one stopped: together they run the
    # graph once more at most (after the first, whole run that also feeds the activation
    # observers), not a prefix of it each
    assert s_runs["gptq_hessians"]["resumed"] == (6 if resume else 0)
    assert (count[0] - one_run <= 2 * one_run) == resume
    assert s_runs["gptq_hessians"]["peak_mib"] < s_whole["gptq_hessians"]["peak_mib"]
    a, b = _codes(whole), _codes(runs)
    assert a.keys() == b.keys() and len(a) >= 21
    for k in a:
        assert torch.equal(a[k], b[k]), k
    assert s_runs["error"] == s_whole["error"]
    x = torch.randn(4, 32)
    assert torch.equal(whole.run(x)[0], runs.run(x)[0])


def test_hessian_chunks_keep_graph_order_and_the_budget():
    sizes = [gptq.hessian_bytes(k) for k in (64, 64, 176, 64, 64, 176)]
    chunks = gptq.hessian_chunks(sizes, sizes[0] * 3)
    assert [i for c in chunks for i in c] == list(range(6))
    assert all(sum(sizes[i] for i in c) <= sizes[0] * 3 or len(c) == 1 for c in chunks)
    assert chunks[0] == [0, 1] and [2] in chunks  # 176² > 3·64²: alone


def test_output_error_in_row_blocks_matches_the_whole_tensor_formula():
    g = torch.Generator().manual_seed(0)
    w = torch.randn(3000, 700, generator=g)  # 16 MiB of float64 rows: 1 block is 2996
    w_hat = w + 0.01 * torch.randn(3000, 700, generator=g)
    x = torch.randn(64, 700, generator=g)
    h = (2 * x.T @ x / 64).double()
    d = (w - w_hat).double()
    whole = float(torch.einsum("ik,kl,il->", d, h, d))
    assert abs(gptq.output_error(w, w_hat, h) - whole) <= 1e-9 * whole


def test_weights_quantized_in_row_blocks_give_the_same_codes_and_sqnr(monkeypatch):
    from edgecc.passes.quantize import quantize as qpass
    from edgecc.passes.quantize.scheme import TensorQuant
    from edgecc.passes.quantize.weights import weight_params
    from edgecc.quant import sqnr_db

    monkeypatch.setattr(qpass, "_ROW_BLOCK_BYTES", 100 * 256 * 4)  # blocks of 100 rows
    w = torch.randn(650, 256, generator=torch.Generator().manual_seed(0))  # 7 blocks
    for tq in (TensorQuant("int8", "per-channel", True),
               TensorQuant("uint4", "per-group", False, group_size=128),
               TensorQuant("int8", "per-tensor", True)):
        params = weight_params(w, tq, 0, 1, scale_dtype=torch.float16)
        q = qpass._quantize_rows(params, w)
        assert torch.equal(q, params.quantize(w)), tq
        whole = sqnr_db(w.double(), params.dequantize(q).double())
        assert abs(qpass._weight_sqnr_db(w, q, params) - whole) < 1e-9 * abs(whole)


def test_output_error_runs_dequantize_weights_in_row_blocks_with_the_same_outputs(
        monkeypatch):
    from edgecc.passes.quantize import quantize as qpass

    monkeypatch.setattr(qpass, "_ROW_BLOCK_BYTES", 16 * 32 * 4)  # blocks of 16 rows
    torch.manual_seed(0)
    prog = edgecc.trace(Blocks().eval(), (torch.randn(4, 32),))
    x = torch.randn(4, 32)
    for text in ("quantize{scheme=w4a16,group_size=16}", "quantize{scheme=w8a8}"):
        calib = [(torch.randn(4, 32),) for _ in range(2)]
        q = PassManager(text)(prog.copy(), context=PassContext(calibration=calib)).program
        calls = []
        real = qpass._dequantize_rows
        monkeypatch.setattr(qpass, "_dequantize_rows",
                            lambda *a: calls.append(real(*a)) or calls[-1])
        # beyond the dequantized-weight cache's bound (0 here): each run, in row blocks
        assert torch.equal(qpass._RowwiseDequantized(q, cache_bytes=0).run(x)[0],
                           q.run(x)[0]), text
        split = {tuple(t.shape) for t in calls if t is not None}
        assert split == {(96, 32), (32, 96), (40, 32)}, split  # every weight, in blocks
        # within it (the default): dequantized once, reused by the next runs; same values
        calls.clear()
        cached = qpass._RowwiseDequantized(q)
        for _ in range(3):
            assert torch.equal(cached.run(x)[0], q.run(x)[0]), text
        assert not calls and len(cached.cache) == 7, text  # 7 weights, none split
        monkeypatch.setattr(qpass, "_dequantize_rows", real)


class TiedHead(nn.Module):
    """Blocks whose output layer reads a weight-only value computed at the graph's start
    (as a tied embedding dequantized once for the output layer): 512 KiB, more than the
    budget, alive from the start to the end of every run."""

    def __init__(self):
        super().__init__()
        self.blocks = Blocks()
        self.table = nn.Parameter(torch.randn(4096, 32) * 0.1)

    def forward(self, x):
        table = self.table * 0.5
        h = self.blocks(x)
        return h[:, :32] @ table.t()


def test_weight_only_values_are_held_once_and_not_counted_against_the_budget():
    torch.manual_seed(0)
    prog = edgecc.trace(TiedHead().eval(), (torch.randn(4, 32),))
    whole, _ = _quantize(prog, 0)
    runs, s_runs = _quantize(prog, 0.075)
    assert s_runs["gptq_hessians"]["runs"] == 7
    assert s_runs["gptq_hessians"]["resumed"] == 6
    a, b = _codes(whole), _codes(runs)
    assert a.keys() == b.keys()
    for k in a:
        assert torch.equal(a[k], b[k]), k
    x = torch.randn(4, 32)
    assert torch.equal(whole.run(x)[0], runs.run(x)[0])
