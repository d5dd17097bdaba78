import pytest
import torch
import torch.nn as nn

import edgecc
from edgecc.errors import LoweringError
from edgecc.registry import default_target_registry
from edgecc.targets.host import HostOptions, HostTarget


def test_host_lists_itself_with_its_toolchain():
    target = default_target_registry().get("host")()
    avail = target.availability()
    assert avail.available and avail.detail.startswith("apache-tvm 0.27")


def test_relu6_lowers_with_the_right_bounds(tmp_path):
    # TVM 0.27's own hardtanh converter ignores positional bounds; ours must not.
    m = nn.Sequential(nn.Linear(4, 4), nn.Hardtanh(-0.5, 0.25))
    res = edgecc.compile(m, "host", pipeline="", example_inputs=(torch.randn(3, 4),),
                         output_dir=str(tmp_path / "o"))
    x = torch.randn(64, 4) * 4 if False else torch.randn(3, 4) * 4
    torch.testing.assert_close(res.run(x), m(x), atol=1e-5, rtol=1e-5)
    assert res.report["verification"]["passed"]


def test_composites_lower_and_dynamic_batch_runs(tmp_path):
    m = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Hardswish(), nn.Flatten(), nn.Linear(4 * 36, 3),
                      nn.GELU()).eval()
    batch = torch.export.Dim("batch", min=1, max=8)
    prog = edgecc.trace(m, (torch.randn(2, 3, 8, 8),), dynamic_shapes=({0: batch},))
    res = edgecc.compile(prog, "host", pipeline="fuse", output_dir=str(tmp_path / "o"))
    assert res.program.op_counts()["edgecc.conv_act"] == 1
    assert res.program.op_counts()["edgecc.linear_act"] == 1
    for n in (1, 5, 8):
        x = torch.randn(n, 3, 8, 8)
        torch.testing.assert_close(res.run(x), m(x), atol=1e-5, rtol=1e-5)


def test_unsupported_operator_is_named_before_lowering(tmp_path):
    class Odd(nn.Module):
        def forward(self, x):
            return torch.special.zeta(x, torch.full_like(x, 2.0))

    prog = edgecc.trace(Odd(), (torch.rand(3) + 1,))
    try:
        HostTarget().lower(prog, str(tmp_path), HostOptions())
    except LoweringError as exc:
        assert "special_zeta" in str(exc) and "no converter" in str(exc)
    else:  # pragma: no cover - TVM gained the op
        raise AssertionError("expected a LoweringError")


class _Attention(torch.nn.Module):
    def __init__(self, causal: bool, scale: float | None, masked: bool):
        super().__init__()
        self.causal, self.scale, self.masked = causal, scale, masked

    def forward(self, q, k, v):
        mask = None
        if self.masked:  # a key-padding mask as models build it: last 3 keys hidden
            mask = torch.zeros(q.shape[0], 1, q.shape[2], k.shape[2])
            mask[..., -3:] = float("-inf")
        return torch.nn.functional.scaled_dot_product_attention(
            q, k, v, attn_mask=mask, is_causal=self.causal, scale=self.scale)


@pytest.mark.parametrize("causal,scale,masked", [(False, None, False), (True, None, False),
                                                 (False, 0.3, True)])
def test_attention_lowers_as_matmuls_with_scale_mask_and_causality(tmp_path, causal, scale,
                                                                   masked):
    """SDPA becomes two batched matmuls + softmax; an explicit ``scale`` (which TVM's own
    converter ignores), causal masking and an additive mask give PyTorch's result."""
    torch.manual_seed(0)
    m = _Attention(causal, scale, masked).eval()
    args = tuple(torch.randn(2, 4, 16, 32) for _ in range(3))
    res = edgecc.compile(m, "host", example_inputs=args, pipeline="",
                         output_dir=str(tmp_path / "o"))
    fresh = tuple(torch.randn(2, 4, 16, 32) for _ in range(3))
    torch.testing.assert_close(res.run(*fresh), m(*fresh), atol=1e-4, rtol=1e-4)
