"""palettize: k-means look-up tables, exact packing, host execution."""

from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import edgecc
from edgecc.passes.quantize.palettize import kmeans_1d
from edgecc.quant import is_palette_dequantize, pack_bits, unpack_bits


@pytest.mark.parametrize("bits", [2, 4, 8])
def test_bit_packing_round_trips(bits):
    codes = torch.randint(0, 1 << bits, (5, 16))
    assert torch.equal(unpack_bits(pack_bits(codes, bits), bits), codes)
    assert pack_bits(codes, bits).numel() == codes.numel() * bits // 8


def test_kmeans_recovers_well_separated_clusters():
    g = torch.Generator().manual_seed(0)
    centers = torch.tensor([-3.0, -1.0, 0.5, 2.0])
    v = centers[torch.randint(0, 4, (5000,), generator=g)] + 0.01 * torch.randn(5000,
                                                                                generator=g)
    c, codes = kmeans_1d(v, 4, 25)
    assert torch.allclose(c, centers, atol=0.01)
    assert torch.equal(c[codes], c[torch.bucketize(v, (c[1:] + c[:-1]) / 2)])


@pytest.mark.parametrize("group_size", [0, 16])
def test_palettized_model_runs_on_the_host_target(group_size, tmp_path):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(32, 64), nn.ReLU(), nn.Linear(64, 16)).eval()
    x = torch.randn(4, 32)
    res = edgecc.compile(model, target="host", example_inputs=(x,),
                         pipeline=f"palettize{{bits=4,group_size={group_size}}},dce",
                         output_dir=str(tmp_path / "out"))
    prog = res.program
    assert sum(is_palette_dequantize(n) for n in prog.nodes("call_function")) == 2
    stats = res.report["pipeline"]["passes"][0]["stats"]
    assert stats["weight_compression"] > 6 and min(stats["worst_layers_sqnr_db"].values()) > 15
    v = res.report["verification"]
    assert v["passed"] and v["max_abs"] < 1e-5  # the host expands the table exactly
    assert v["fidelity"]["cosine"] > 0.99
