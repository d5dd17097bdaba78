import pytest
import torch
import torch.nn as nn

import edgecc
from edgecc.passes import FoldBatchNorm
from edgecc.testing import assert_close, assert_structural_equal, op_counts

BN = "aten._native_batch_norm_legit_no_training"


def randomize_bn(module):
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.affine:
                nn.init.uniform_(m.weight, 0.5, 1.5)
                nn.init.uniform_(m.bias, -0.5, 0.5)
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2.0)
    return module.eval()


CASES = {
    "conv1d": (nn.Sequential(nn.Conv1d(3, 6, 3), nn.BatchNorm1d(6)), (2, 3, 10)),
    "conv2d": (nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6)), (2, 3, 8, 8)),
    "conv3d": (nn.Sequential(nn.Conv3d(2, 4, 3), nn.BatchNorm3d(4)), (1, 2, 5, 5, 5)),
    "conv2d-nobias": (nn.Sequential(nn.Conv2d(3, 6, 3, bias=False), nn.BatchNorm2d(6)),
                      (2, 3, 8, 8)),
    "grouped": (nn.Sequential(nn.Conv2d(4, 8, 3, groups=2), nn.BatchNorm2d(8)), (2, 4, 8, 8)),
    "depthwise": (nn.Sequential(nn.Conv2d(4, 4, 3, groups=4), nn.BatchNorm2d(4)), (2, 4, 8, 8)),
    "conv-transpose": (nn.Sequential(nn.ConvTranspose2d(4, 6, 3, stride=2), nn.BatchNorm2d(6)),
                       (2, 4, 5, 5)),
    "conv-transpose-grouped": (nn.Sequential(nn.ConvTranspose2d(4, 6, 3, groups=2),
                                             nn.BatchNorm2d(6)), (2, 4, 5, 5)),
    "conv-transpose1d": (nn.Sequential(nn.ConvTranspose1d(3, 5, 4, stride=2), nn.BatchNorm1d(5)),
                         (2, 3, 7)),
    "linear": (nn.Sequential(nn.Linear(5, 7), nn.BatchNorm1d(7)), (4, 5)),
    "linear-nobias": (nn.Sequential(nn.Linear(5, 7, bias=False), nn.BatchNorm1d(7)), (4, 5)),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_fold_batchnorm_removes_bn_and_keeps_outputs(case):
    module, shape = CASES[case]
    torch.manual_seed(0)
    program = edgecc.trace(randomize_bn(module), (torch.randn(shape),))
    result = FoldBatchNorm()(program.copy())
    assert result.modified and result.stats["folded"] == 1
    assert op_counts(result.program)[BN] == 0
    assert_close(program, result.program, samples=4, atol=1e-5, rtol=1e-4)


def test_bn_without_affine_folds():
    module = randomize_bn(nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4, affine=False)))
    program = edgecc.trace(module, (torch.randn(2, 3, 8, 8),))
    result = FoldBatchNorm()(program.copy())
    assert op_counts(result.program)[BN] == 0
    assert_close(program, result.program, atol=1e-5, rtol=1e-4)


def test_conv_output_used_elsewhere_is_not_folded():
    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    program = edgecc.trace(randomize_bn(Branch()), (torch.randn(2, 3, 8, 8),))
    result = FoldBatchNorm()(program.copy())
    assert not result.modified
    assert "has other users" in result.stats["skipped"][0]


def test_shared_weight_is_not_changed_under_the_other_user():
    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.bn = nn.BatchNorm2d(3)

        def forward(self, x):
            return self.bn(self.conv(x)) + self.conv(x * 2)

    program = edgecc.trace(randomize_bn(Shared()), (torch.randn(2, 3, 8, 8),))
    result = FoldBatchNorm()(program.copy())
    assert result.stats["folded"] == 1
    assert_close(program, result.program, atol=1e-5, rtol=1e-4)


def test_linear_on_3d_input_is_not_folded():
    class Seq(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 6)
            self.bn = nn.BatchNorm1d(5)  # normalizes dim 1 (sequence), not the features

        def forward(self, x):
            return self.bn(self.fc(x))

    program = edgecc.trace(randomize_bn(Seq()), (torch.randn(2, 5, 4),))
    result = FoldBatchNorm()(program.copy())
    assert not result.modified
    assert_close(program, result.program)


# -- Before / Expected -------------------------------------------------------------------

def test_fold_batchnorm_before_expected():
    # Before: y = batch_norm(conv2d(x, w, b), mean, var, gamma, beta)
    before = edgecc.trace(randomize_bn(nn.Sequential(nn.Conv2d(3, 6, 3), nn.BatchNorm2d(6))),
                          (torch.randn(2, 3, 8, 8),))
    after = FoldBatchNorm()(before.copy()).program
    w_folded, b_folded = torch.empty(6, 3, 3, 3), torch.empty(6)

    def expected(x):
        return torch.conv2d(x, w_folded, b_folded)

    assert_structural_equal(after, expected)
    assert_close(before, after, samples=4, atol=1e-5, rtol=1e-4)
    after.verify()  # graph lint and the IR verifier


def test_declined_fold_is_reported_with_its_reason():
    class Branch(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3)
            self.bn = nn.BatchNorm2d(4)

        def forward(self, x):
            y = self.conv(x)
            return self.bn(y) + y

    program = edgecc.trace(randomize_bn(Branch()), (torch.randn(2, 3, 8, 8),))
    conv = next(n.name for n in program.nodes("call_function") if "convolution" in str(n.target))
    result = FoldBatchNorm()(program.copy())
    assert result.stats["rules"] == {
        "conv-bn": {"matched": 0, "declined": {f"{conv} has other users": 1}}}
