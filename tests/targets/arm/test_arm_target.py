"""-t arm64: aarch64 libraries cross-compiled here, run under qemu-aarch64 and compared with
the host target and PyTorch."""

from __future__ import annotations

import os
import subprocess

import pytest
import torch

import edgecc
from edgecc.errors import LoweringError
from edgecc.recipe import VerifyOptions
from edgecc.targets.arm.runner import EmulatedRunner
from tests.models import mobilenet_v2, resnet20, token_inputs, transformer

ONE = VerifyOptions(samples=1)


def build(model, inputs, tmp_path, name, target="arm64", **kw):
    kw.setdefault("verify_options", ONE)
    return edgecc.compile(model, target, example_inputs=inputs, pipeline="fold-batchnorm,fuse,dce",
                          output_dir=str(tmp_path / name), **kw)


def is_aarch64_elf(path):
    with open(path, "rb") as f:
        header = f.read(20)
    return header[:4] == b"\x7fELF" and int.from_bytes(header[18:20], "little") == 183


def test_fp32_resnet_under_qemu_matches_host_and_pytorch(qemu, tmp_path):
    x = torch.randn(1, 3, 32, 32)
    model = resnet20()
    # one qemu launch: the artifact run here instead of compile()'s verification
    arm = build(model, (x,), tmp_path, "arm", target_options={"preset": "cortex-a76"},
                verify=False)
    assert is_aarch64_elf(os.path.join(arm.output_dir, "model.so"))
    assert {a["path"] for a in arm.report["artifacts"]} == {"model.so", "run_model.py",
                                                             "README.txt"}
    host = build(model, (x,), tmp_path, "host", target="host")
    fresh = torch.randn(1, 3, 32, 32)
    out = arm.run(fresh)
    torch.testing.assert_close(out, host.run(fresh), atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(out, model(fresh), atol=1e-4, rtol=1e-4)


def test_fp32_mobilenet_v2_verified_under_qemu(qemu, tmp_path):
    arm = build(mobilenet_v2(), (torch.randn(1, 3, 32, 32),), tmp_path, "arm",
                target_options={"preset": "cortex-a53"})
    verification = arm.report["verification"]
    assert verification["performed"] and verification["passed"]  # vs PyTorch, 1e-4
    assert verification["max_abs"] <= 1e-4


@pytest.mark.slow
def test_fp32_bert_runs_under_qemu_and_matches_host(qemu, tmp_path):
    inputs = token_inputs()
    model = transformer("bert")
    arm = build(model, inputs, tmp_path, "arm", target_options={"preset": "neoverse-n1"},
                verify=False)
    host = build(model, inputs, tmp_path, "host", target="host")
    out = arm.run(*inputs)
    torch.testing.assert_close(out, host.run(*inputs), atol=1e-4, rtol=1e-4)
    with torch.no_grad():
        torch.testing.assert_close(out, model(*inputs), atol=1e-4, rtol=1e-4)


def test_fp16_program_and_the_deploy_runner(qemu, tmp_path):
    import numpy as np

    x = torch.randn(1, 3, 32, 32, dtype=torch.float16)
    model = resnet20().half()
    arm = build(model, (x,), tmp_path, "arm", target_options={"preset": "cortex-a76"},
                verify=False)
    # the bundle's own runner, as on a board (here under qemu), with its latency option
    np.savez(tmp_path / "in.npz", arg0=x.numpy())
    runner = EmulatedRunner(arm.output_dir, "model.so")
    proc = subprocess.run(runner.command(str(tmp_path / "in.npz"), str(tmp_path / "out.npz"),
                                         "--repeat", "2"), capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    assert "ms over 2 runs" in proc.stdout
    out = torch.from_numpy(np.load(tmp_path / "out.npz")["out0"])
    assert out.dtype == torch.float16
    torch.testing.assert_close(out.float(), model(x).float(), atol=2e-2, rtol=2e-2)


def test_missing_cross_compiler_names_the_package(tmp_path):
    with pytest.raises(LoweringError, match="apt-get install g\\+\\+-aarch64-linux-gnu"):
        build(resnet20(), (torch.randn(1, 3, 32, 32),), tmp_path, "arm",
              target_options={"cc": "aarch64-nowhere-g++"})
    assert not (tmp_path / "arm").exists()  # nothing half-written
