"""``x86_linear_qkv``: an attention's separate q / k / v projections (BERT, MiniLM) run as one
linear call whose output the attention kernel reads in place; the outputs are the three-call
build's bit for bit and within 1e-5 of PyTorch; a projection that something else also reads
keeps its attention's three calls. The linear path counter proves the merged call ran (a
silent fallback to three calls fails)."""

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import edgecc
from edgecc.targets.tvm import lowering, x86_attention, x86_fp32, x86_linear

pytestmark = pytest.mark.skipif(not x86_attention.supported(lowering.llvm_target(None, None)),
                                reason="needs an x86 CPU with AVX2 + FMA")

# 2 x 61 = 122 rows (>= x86_linear's 96: every linear on edgecc_x86_linear), 3 heads of 16
B, S, D, HEADS = 2, 61, 48, 3


class TwoAttentions(nn.Module):
    """BERT-style self-attention (padding mask) twice; the second block's k projection is
    also an output of the model (a second reader: that attention keeps three calls)."""

    def __init__(self):
        super().__init__()
        self.q1, self.k1, self.v1, self.o1 = (nn.Linear(D, D) for _ in range(4))
        self.q2, self.k2, self.v2, self.o2 = (nn.Linear(D, D) for _ in range(4))

    @staticmethod
    def heads(t):
        return t.view(B, S, HEADS, D // HEADS).transpose(1, 2)

    def attend(self, q, k, v, bias):
        o = F.scaled_dot_product_attention(self.heads(q), self.heads(k), self.heads(v),
                                           attn_mask=bias)
        return o.transpose(1, 2).reshape(B, S, D)

    def forward(self, x, attention_mask):
        keep = (attention_mask > 0)[:, None, None, :].expand(B, 1, S, S)
        bias = torch.where(keep, 0.0, float("-inf"))
        h = x + self.o1(self.attend(self.q1(x), self.k1(x), self.v1(x), bias))
        k2 = self.k2(h)
        h = h + self.o2(self.attend(self.q2(h), k2, self.v2(h), bias))
        return h, k2


def _inputs(seed):
    torch.manual_seed(seed)
    mask = torch.ones(B, S, dtype=torch.long)
    mask[1, 40:] = 0
    return torch.randn(B, S, D), mask


_APPLY = x86_linear.apply


@pytest.fixture(scope="module")
def builds(tmp_path_factory):
    """The default build (q / k / v merged where they can be) and one with
    ``merge_qkv=False``."""
    torch.manual_seed(0)
    model = TwoAttentions().eval()
    out = {}
    for name, merge in (("merged", True), ("three", False)):
        mp = pytest.MonkeyPatch()
        if not merge:
            mp.setattr(x86_linear, "apply", lambda module, library=True, options=None: _APPLY(
                module, library, x86_linear.LinearOptions(merge_qkv=False)))
        try:
            res = edgecc.compile(model, "host", example_inputs=_inputs(0), pipeline="",
                                 output_dir=str(tmp_path_factory.mktemp(name)))
        finally:
            mp.undo()
        assert res.report["verification"]["passed"]
        out[name] = res
    return model, out


def test_merges_only_where_the_projections_have_no_other_reader(builds):
    _, built = builds
    merged = built["merged"].report["lowering"]["x86_attention"]
    three = built["three"].report["lowering"]["x86_attention"]
    assert (merged["qkv_merged"], merged["x86_attention"]) == (1, 2), merged
    assert (merged["x86_linear"], three["x86_linear"]) == (6, 8)
    assert three["qkv_merged"] == 0
    target = lowering.llvm_target(None, None)
    module = lowering.to_relax(built["merged"].program)
    module, stats = x86_attention.apply(x86_fp32.apply(module, target)[0], target)
    text = module["main"].script(show_meta=False)
    assert text.count('"edgecc_x86_linear"') == 6 and '"edgecc_x86_sgemm"' not in text
    assert stats.qkv_merged == 1


def test_outputs_equal_three_calls_bit_for_bit(builds):
    """Same sums per column: equal to the three-call build bit for bit, within 1e-5 of
    PyTorch; path counter 3 (linear calls) grows by 6 per run, not 8."""
    model, built = builds
    ours = built["merged"]
    ours.run(*_inputs(1))
    paths = ours._runner.module.get_function(x86_attention.PATH_QUERY, query_imports=True)
    for seed in (1, 2):
        inputs = _inputs(seed)
        before = int(paths(3))
        got = ours.run(*inputs)
        assert int(paths(3)) - before == 6
        ref = built["three"].run(*inputs)
        with torch.no_grad():
            expect = model(*inputs)
        for g, r, e in zip(got, ref, expect):
            g, r, e = np.asarray(g), np.asarray(r), e.numpy()
            assert np.array_equal(g, r)
            assert np.abs(g - e).max() <= 1e-5 * np.abs(e).max()
