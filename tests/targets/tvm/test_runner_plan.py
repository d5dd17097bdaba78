"""The native plan runner (``plan_runner``): a CNN's run replayed from the recorded kernel
calls in one native call gives the VM's outputs bit for bit (fp32 and w8a8), the fast path
demonstrably ran (the library's ``edgecc_plan_runs``), outputs are the caller's and inputs
are never written, and every case it cannot replay falls back to the VM."""

from __future__ import annotations

import ctypes
import os
import sys

import pytest
import torch

import edgecc

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
sys.path.insert(0, ROOT)

from examples.models import mobilenet_v2, resnet20  # noqa: E402

W8A8 = "fold-batchnorm,quantize{scheme=w8a8},fuse,dce"
FP32 = "fold-batchnorm,fuse,dce"
MODELS = {"resnet20": resnet20, "mobilenet_v2": mobilenet_v2}


def _compile(name: str, kind: str, directory: str, **options):
    torch.manual_seed(0)
    model = MODELS[name]().eval()
    x = torch.randn(1, 3, 32, 32)
    opts = {"num_threads": 2, **options}
    if kind == "int8":
        opts["integer_kernels"] = True
    calib = [(torch.randn(1, 3, 32, 32),) for _ in range(2)] if kind == "int8" else None
    with torch.no_grad():
        return edgecc.compile(model, "host", example_inputs=(x,), verify=False,
                              pipeline=W8A8 if kind == "int8" else FP32, calibration=calib,
                              output_dir=directory, progress=False, target_options=opts)


def _plan_runs(runner) -> int:
    lib = ctypes.CDLL(runner.library, mode=os.RTLD_NOLOAD | os.RTLD_LOCAL)
    return ctypes.c_int64.in_dll(lib, "edgecc_plan_runs").value


@pytest.mark.parametrize("name,kind", [("resnet20", "fp32"), ("resnet20", "int8"),
                                       ("mobilenet_v2", "fp32"), ("mobilenet_v2", "int8")])
def test_plan_replays_the_vm_bit_for_bit(tmp_path, name, kind):
    res = _compile(name, kind, str(tmp_path / "o"))
    x0 = torch.randn(1, 3, 32, 32)
    res.run(x0)
    runner = res._runner
    plan = runner.plan
    assert plan is not None, "the CNN's run was not planned"
    assert plan.steps >= 20  # every kernel call (no builtin) of the run
    before = _plan_runs(runner)
    xs = [torch.randn(1, 3, 32, 32) for _ in range(4)]
    saved = [x.clone() for x in xs]
    fast = [runner.run(x) for x in xs]
    assert _plan_runs(runner) == before + len(xs)  # each run went through the plan
    runner.plan = None  # the VM on the same inputs
    slow = [runner.run(x) for x in xs]
    runner.plan = plan
    assert _plan_runs(runner) == before + len(xs)
    for f, s, x, x_saved in zip(fast, slow, xs, saved):
        assert len(f) == len(s)
        for a, b in zip(f, s):
            assert a.dtype == b.dtype and a.shape == b.shape
            assert torch.equal(a, b)
        assert torch.equal(x, x_saved)  # inputs never written
    # each run's outputs are its own: a later run does not write into them
    kept = [o.clone() for o in fast[0]]
    runner.run(xs[1])
    assert all(torch.equal(a, b) for a, b in zip(fast[0], kept))
    assert fast[0][0].data_ptr() != fast[1][0].data_ptr()


def test_the_first_call_runs_main_twice_and_plans_the_second_run(tmp_path):
    """A fresh runner's first call runs ``main`` twice (the second run, recorded, is the
    plan's: no third run), returns the first run's outputs, and its second call replays the
    plan, bit-identical to the first."""
    from edgecc.targets.tvm.runner import VmRunner

    res = _compile("resnet20", "int8", str(tmp_path / "o"))
    x = torch.randn(1, 3, 32, 32)
    res.run(x)  # (loads the library)
    runner = VmRunner(res._runner.library, 2)
    main, runs = runner.vm["main"], []

    def counted(*args):
        runs.append(1)
        return main(*args)

    runner._main = counted
    first = runner.run(x)
    assert len(runs) == 2 and runner.plan is not None
    before = _plan_runs(runner)
    second = runner.run(x)
    assert len(runs) == 2 and _plan_runs(runner) == before + 1
    assert all(torch.equal(a, b) for a, b in zip(first, second))


def test_plan_falls_back_to_the_vm(tmp_path, monkeypatch):
    """No plan: EDGECC_PLAN_RUNNER=0, a library without hand-written kernels (TVM's own
    schedule), an output that is an input; inputs of another shape or dtype go to the VM
    (which checks them) instead of the plan."""
    from edgecc.targets.tvm.runner import VmRunner

    res = _compile("resnet20", "int8", str(tmp_path / "a"))
    x = torch.randn(1, 3, 32, 32)
    res.run(x)
    assert res._runner.plan is not None
    expected = res._runner.run(x)
    monkeypatch.setenv("EDGECC_PLAN_RUNNER", "0")
    off = VmRunner(res._runner.library, 2)
    got = off.run(x)
    off.run(x)
    assert off.plan is None
    assert torch.equal(got[0], expected[0])
    monkeypatch.delenv("EDGECC_PLAN_RUNNER")
    plan = res._runner.plan
    assert plan.run((x.double(),), []) is None  # another dtype: the VM's
    assert plan.run((torch.randn(2, 3, 32, 32),), []) is None  # another shape
    with pytest.raises(Exception):  # the VM's shape check, not the plan's replay
        res._runner.run(torch.randn(2, 3, 32, 32))

    model = torch.nn.Sequential(torch.nn.Linear(8, 8), torch.nn.ReLU()).eval()
    tvm_only = edgecc.compile(model, "host", example_inputs=(torch.randn(2, 8),), pipeline="",
                              output_dir=str(tmp_path / "b"), verify=False,
                              target_options={"schedule": "tvm"})
    y = torch.randn(2, 8)
    out = tvm_only.run(y)
    assert tvm_only._runner.plan is None
    out = out if isinstance(out, torch.Tensor) else out[0]
    assert torch.allclose(out, model(y), atol=1e-5)

    class Echo(torch.nn.Module):
        def forward(self, a):
            return torch.relu(a), a

    echo = edgecc.compile(Echo().eval(), "host", example_inputs=(torch.randn(2, 8),),
                          pipeline="", output_dir=str(tmp_path / "c"), verify=False)
    z = torch.randn(2, 8)
    a, b = echo.run(z)
    assert echo._runner.plan is None
    assert torch.equal(b, z) and b.data_ptr() != z.data_ptr()


def test_only_a_straight_line_of_packed_calls_is_planned():
    from edgecc.targets.tvm.plan_runner import straight_line

    head = ("@main:\n"
            "  call  vm.builtin.check_tensor_info in: %0, i2, c[0], c[1] dst: %void\n"
            "  call  fused_relu_add   in: %0, %2       dst: %void\n")
    decls = ("\n@vm.builtin.check_tensor_info packed_func;\n\n"
             "@fused_relu_add packed_func;\n\n@sub:\n  ret   %0\n\n@sub vm_func;\n")
    assert straight_line(head + "  ret   %3\n" + decls)
    assert not straight_line(head + "  If    %2, 3\n  ret   %3\n" + decls)  # a branch
    assert not straight_line(head + "  goto  2\n  ret   %3\n" + decls)
    assert not straight_line(head + "  call  sub  in: %0 dst: %4\n  ret   %4\n" + decls)
    assert not straight_line(head + decls)  # no ret before the function ends
    assert not straight_line(None) and not straight_line("@other:\n  ret %0\n")
