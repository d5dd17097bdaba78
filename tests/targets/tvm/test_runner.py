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
