"""The numpy MIL interpreter on models converted by coremltools from PyTorch.

Each module below is exported with ``torch.export`` (core-ATen decompositions minus linear and
SDPA, as the Apple target exports), converted with ``coremltools.convert`` to an ML Program,
saved as ``.mlpackage``, loaded back from disk and run by the interpreter; PyTorch eager is
the reference. fp32 programs: relative error <= 1e-4; fp16 programs: cosine >= 0.999.

``to_mlpackage`` is shared by the other ``test_mil_*`` files.
"""

from __future__ import annotations

import contextlib
import io
import logging

import numpy as np
import pytest
import torch

ct = pytest.importorskip("coremltools")

from edgecc.targets.apple.mil.interpreter import (  # noqa: E402
    SUPPORTED_OPS, load_program, run_mlpackage)


def to_mlpackage(module, inputs: dict[str, torch.Tensor], path, precision: str = "fp32",
                 target=None, n_outputs: int = 1):
    """Convert ``module`` (called with ``inputs`` as positional args, in order) to ``path``."""
    target = target or ct.target.iOS18
    table = torch.export.default_decompositions()
    table.pop(torch.ops.aten.linear.default)
    table.pop(torch.ops.aten.scaled_dot_product_attention.default)
    with torch.no_grad():
        ep = torch.export.export(module.eval(), tuple(inputs.values())).run_decompositions(table)
    float_type = np.float16 if precision == "fp16-io" else np.float32
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        logging.disable(logging.WARNING)
        try:
            mlm = ct.convert(
                ep, convert_to="mlprogram", minimum_deployment_target=target,
                inputs=[ct.TensorType(name=k, shape=tuple(v.shape),
                                      dtype=float_type if v.is_floating_point() else np.int32)
                        for k, v in inputs.items()],
                outputs=[ct.TensorType(name=f"out{i}", dtype=float_type)
                         for i in range(n_outputs)],
                compute_precision=(ct.precision.FLOAT32 if precision == "fp32"
                                   else ct.precision.FLOAT16))
        finally:
            logging.disable(logging.NOTSET)
    mlm.save(str(path))
    return path


def op_types(path) -> set[str]:
    return {op.op_type for op in load_program(path).functions["main"].operations}


def rel_err(got, ref) -> float:
    ref = np.asarray(ref, dtype=np.float64)
    return float(np.abs(np.asarray(got, np.float64) - ref).max() / max(np.abs(ref).max(), 1e-6))


def cosine(got, ref) -> float:
    a, b = np.asarray(got, np.float64).ravel(), np.asarray(ref, np.float64).ravel()
    return float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b)))


class SmallCNN(torch.nn.Module):
    """conv+bn+relu, a residual add, grouped and depthwise convs, pooling, linear."""

    def __init__(self):
        super().__init__()
        self.c1 = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.bn = torch.nn.BatchNorm2d(8)
        self.c2 = torch.nn.Conv2d(8, 8, 3, padding=1, groups=2)
        self.dw = torch.nn.Conv2d(8, 8, 3, stride=2, padding=1, groups=8)
        self.fc = torch.nn.Linear(8, 5)

    def forward(self, x):
        y = torch.relu(self.bn(self.c1(x)))
        y = torch.relu(self.c2(y) + y)
        y = self.dw(y)
        return self.fc(y.mean((2, 3)))


@pytest.fixture(scope="module")
def cnn(tmp_path_factory):
    torch.manual_seed(0)
    model = SmallCNN().eval()
    with torch.no_grad():  # non-trivial batch-norm statistics
        model.bn.running_mean.uniform_(-0.5, 0.5)
        model.bn.running_var.uniform_(0.5, 2.0)
    x = torch.randn(2, 3, 16, 16)
    path = to_mlpackage(model, {"x": x}, tmp_path_factory.mktemp("cnn") / "cnn.mlpackage")
    return model, path


def test_small_cnn_fp32_matches_torch(cnn):
    model, path = cnn
    assert {"conv", "relu", "add", "linear"} <= op_types(path)
    for seed in range(2):  # fresh inputs
        x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(seed))
        got = run_mlpackage(path, {"x": x.numpy()})["out0"]
        with torch.no_grad():
            ref = model(x).numpy()
        assert got.dtype == np.float32 and got.shape == ref.shape
        assert rel_err(got, ref) <= 1e-4


def test_every_converted_op_is_supported(cnn):
    assert op_types(cnn[1]) - {"const"} <= SUPPORTED_OPS
