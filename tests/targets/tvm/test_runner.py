"""The in-process TVM VM runner: each runner runs with its own thread count, set on TVM's
thread pool explicitly (a second runner's count is not silently ignored)."""

from __future__ import annotations

import subprocess
import sys

import torch

import edgecc

SCRIPT = """
import sys, torch
from edgecc.targets.tvm.runner import VmRunner, _pool_threads
two, one = VmRunner(sys.argv[1], 2), VmRunner(sys.argv[1], 1)
x = torch.randn(2, 8)
counts = []
for runner in (two, one, two):
    runner.run(x)
    counts.append(_pool_threads())
print(counts)
"""


def test_two_runners_keep_their_own_thread_counts(tmp_path):
    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU()).eval()
    res = edgecc.compile(model, "host", example_inputs=(torch.randn(2, 8),), pipeline="",
                         output_dir=str(tmp_path / "o"), verify=False)
    # a fresh process: the pool is sized at its first use, which must be the first runner
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(tmp_path / "o" / "model.so")],
                          capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[2, 1, 2]"
    assert res.report["target"]["options"]["num_threads"] == 0


def test_inputs_are_read_in_place_or_copied_and_never_written(tmp_path):
    """Contiguous, 64-byte-aligned inputs go to the VM without a copy (``tvm_tensor``);
    a transposed view or one at an unaligned offset is copied; either way the outputs are
    the same and the caller's tensors are untouched."""
    from edgecc.targets.tvm.runner import tvm_tensor

    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU()).eval()
    res = edgecc.compile(model, "host", example_inputs=(torch.randn(2, 8),), pipeline="",
                         output_dir=str(tmp_path / "o"), verify=False)
    x = torch.randn(2, 8)
    assert x.data_ptr() % 64 == 0
    shared = tvm_tensor(x, None)
    shared.numpy()  # a view of x's memory, not a copy:
    x[0, 0] += 1.0
    assert float(shared.numpy()[0, 0]) == float(x[0, 0])
    base = torch.randn(17)
    unaligned = base[1:17].view(2, 8)  # 4 bytes past an aligned start
    transposed = torch.randn(8, 2).t()
    for value in (x, unaligned, transposed):
        before = value.clone()
        expected = model(value).detach()
        torch.testing.assert_close(res.run(value), expected, rtol=1e-5, atol=1e-6)
        assert torch.equal(value, before)


class _FiveOutputs(torch.nn.Module):
    """Outputs the VM allocates per call (a linear, a comparison, a reduction), a view of
    the input and a constant."""

    def __init__(self):
        super().__init__()
        self.lin = torch.nn.Linear(8, 8)
        self.register_buffer("c", torch.arange(4.0))

    def forward(self, x):
        return self.lin(x).relu(), x.reshape(16), self.c, x > 0, x.sum().to(torch.int64)


def test_outputs_are_the_callers_and_no_later_call_writes_them(tmp_path):
    """Outputs the VM allocates afresh per call come back without a copy (the first call
    runs twice to find them: ``VmRunner._owned``); a view of the input and a constant are
    copied. A second call leaves the first call's outputs as they were, and writing into
    returned outputs changes neither the caller's input nor the next call's results."""
    model = _FiveOutputs().eval()
    x1, x2 = torch.randn(2, 8), torch.randn(2, 8)
    res = edgecc.compile(model, "host", example_inputs=(x1,), pipeline="",
                         output_dir=str(tmp_path / "o"), verify=False, progress=False)
    first = res.run(x1)
    assert res._runner._owned == [True, False, False, True, True]
    kept = [o.clone() for o in first]
    second = res.run(x2)
    for got, was, want in zip(first, kept, model(x1)):
        assert torch.equal(got, was)  # untouched by the second call
        torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-6)
    assert not torch.equal(first[0], second[0])
    assert first[0].data_ptr() != second[0].data_ptr()
    inputs = x2.clone()
    for o in second:  # the caller owns them: writes go nowhere else
        o.add_(1) if o.dtype != torch.bool else o.logical_not_()
    assert torch.equal(x2, inputs)
    for got, want in zip(res.run(x2), model(x2)):
        torch.testing.assert_close(got, want.detach(), rtol=1e-5, atol=1e-6)
