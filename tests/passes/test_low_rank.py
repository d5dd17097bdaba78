"""low-rank: SVD / activation-aware SVD factorization and LoRC."""

from __future__ import annotations

import pytest
import torch

import edgecc
from edgecc.errors import OptionError, PipelineSyntaxError
from edgecc.pass_base import PassContext
from edgecc.pass_manager import PassManager
from edgecc.passes.low_rank import factorize
from tests.models import held_out_fidelity, resnet20, token_inputs, transformer


def test_full_rank_factorization_is_exact():
    w = torch.randn(12, 20, dtype=torch.float64)
    a, b = factorize(w, 12)
    torch.testing.assert_close(b @ a, w)
    cov = torch.randn(50, 20, dtype=torch.float64)
    a, b = factorize(w, 12, cov.T @ cov / 50, damp=0.0)
    torch.testing.assert_close(b @ a, w)


def test_asvd_minimises_output_error_not_weight_error():
    torch.manual_seed(0)
    w = torch.randn(32, 64, dtype=torch.float64)
    x = torch.randn(500, 64, dtype=torch.float64) * torch.logspace(-2, 1, 64)  # skewed
    cov = x.T @ x / 500
    plain = factorize(w, 8)
    aware = factorize(w, 8, cov, damp=1e-6)
    out_err = [((w - b @ a) @ x.T).norm() for a, b in (plain, aware)]
    w_err = [(w - b @ a).norm() for a, b in (plain, aware)]
    assert out_err[1] < 0.7 * out_err[0] and w_err[0] <= w_err[1]


@pytest.mark.parametrize("options", ["rank_ratio=0.5", "energy=0.9", "param_ratio=0.4",
                                     "method=asvd,rank_ratio=0.5"])
def test_resnet_factorized_runs_and_saves(options):
    x = torch.randn(2, 3, 32, 32)
    prog = edgecc.trace(resnet20(), (x,))
    calib = [(torch.randn(2, 3, 32, 32),) for _ in range(2)]
    res = PassManager(f"low-rank{{{options}}}")(prog.copy(),
                                               context=PassContext(calibration=calib))
    stats = res.stats["passes"][0]["stats"]
    res.program.verify()
    assert stats["layers"] and stats["parameter_ratio"] < 1
    for why in stats["skipped"].values():
        assert "saves no parameters" in why
    for info in stats["layers"].values():
        n_k, lr = info["parameters"]
        assert lr < n_k
    if options.startswith("param_ratio"):
        assert stats["parameter_ratio"] <= 0.4 + 1e-3
    assert res.program.run(x)[0].shape == (2, 10)


def test_bad_options():
    prog = edgecc.trace(resnet20(), (torch.randn(1, 3, 32, 32),))
    for text in ["low-rank", "low-rank{rank_ratio=0.5,energy=0.9}", "low-rank{rank_ratio=1.5}"]:
        with pytest.raises(PipelineSyntaxError, match="exactly one of"):
            PassManager(text)
    with pytest.raises(OptionError, match="matches no"):
        PassManager("low-rank{rank_ratio=0.5,include=[nothing.*]}")(prog.copy())
    with pytest.raises(Exception, match="calibration"):
        PassManager("low-rank{method=asvd,rank_ratio=0.5}")(prog.copy(),
                                                            context=PassContext())


def test_lorc_reduces_quantization_error():
    prog = edgecc.trace(transformer("bert"), token_inputs())
    calib = [token_inputs() for _ in range(2)]
    errors = []
    for rank in (0, 16):  # (random weights: a flat error spectrum, the hardest case)
        res = PassManager(f"quantize{{scheme=w4a16,group_size=16,embeddings=false,"
                          f"lorc_rank={rank}}}")(
            prog.copy(), context=PassContext(calibration=calib))
        stats = res.stats["passes"][0]["stats"]
        errors.append(stats["error"]["sqnr_db"])
        assert bool(stats.get("lorc_parameters")) == bool(rank)
    assert errors[1] > errors[0] + 2.0  # dB


FFN = "include=[*intermediate.dense,*.output.dense],exclude=[*attention.output.dense]"


@pytest.mark.slow
def test_minilm_activation_aware_svd_beats_plain_svd(minilm):
    plain, stats = held_out_fidelity(minilm, f"low-rank{{rank_ratio=0.5,{FFN}}}")
    aware, aware_stats = held_out_fidelity(minilm, f"low-rank{{method=asvd,rank_ratio=0.5,"
                                                   f"{FFN}}}")
    assert len(stats["layers"]) == 12 and stats["parameter_ratio"] == aware_stats[
        "parameter_ratio"]  # same parameter count
    print(f"MiniLM FFN rank 50% (params x{stats['parameter_ratio']}): held-out cosine "
          f"svd {plain:.5f}  asvd {aware:.5f}")
    assert aware > plain
