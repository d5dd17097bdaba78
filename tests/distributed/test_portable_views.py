"""A program exported on the CPU with SDPA attention runs on other devices
(``distributed.move_module`` / ``portable_views``).

Export turns ``reshape`` into ``view`` when the traced CPU strides allow it; the CPU's SDPA
kernel returns a layout that makes ``view(permute(sdpa(...)))`` valid, CUDA's kernels and the
CPU's math kernel do not. The math kernel reproduces the CUDA failure on this machine."""

from __future__ import annotations

import pytest
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel

import edgecc
from edgecc import distributed

transformers = pytest.importorskip("transformers")


class _Embed(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.bert = transformers.BertModel(transformers.BertConfig(
            vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
            intermediate_size=64, attn_implementation="sdpa"), add_pooling_layer=False).eval()

    def forward(self, ids: torch.Tensor) -> torch.Tensor:
        return self.bert(input_ids=ids).last_hidden_state


@pytest.fixture(scope="module")
def sdpa_program():
    ids = torch.randint(0, 100, (2, 8), generator=torch.Generator().manual_seed(1))
    return edgecc.trace(_Embed(), (ids,)), ids


def test_sdpa_program_runs_with_another_sdpa_kernel_after_portable_views(sdpa_program):
    program, ids = sdpa_program
    gm = program.graph_module
    before = gm.code
    want = gm(ids)
    with sdpa_kernel(SDPBackend.MATH), pytest.raises(RuntimeError, match="view size"):
        gm(ids)  # what CUDA's SDPA did to the CPU-exported graph
    assert distributed.portable_views(gm.graph)
    gm.recompile()
    with sdpa_kernel(SDPBackend.MATH):
        torch.testing.assert_close(gm(ids), want, rtol=1e-5, atol=1e-5)
    assert distributed.portable_views(gm.graph, False)  # back: the same graph
    gm.recompile()
    assert gm.code == before


def test_move_module_round_trip_keeps_the_graph(sdpa_program):
    program, ids = sdpa_program
    gm = program.graph_module
    before = gm.code
    distributed.move_module(gm, "cpu")
    assert gm.code == before
    if torch.cuda.is_available():  # the real thing: exported on the CPU, run on CUDA
        want = program.run(ids)[0]
        distributed.move_module(gm, "cuda")
        assert "aten.view.default" not in gm.code and "device(type='cpu')" not in gm.code
        got = gm(ids.cuda())
        got = got[0] if isinstance(got, (tuple, list)) else got
        torch.testing.assert_close(got.cpu(), want, rtol=1e-4, atol=1e-4)
        distributed.move_module(gm, "cpu")
        assert gm.code == before
