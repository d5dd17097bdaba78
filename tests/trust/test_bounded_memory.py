"""Bounded memory (issue 20): compile shares weight tensors between the original program
and the working one instead of copying the model (copy-on-write: a pass replaces a weight,
never changes one in place); a training pass gets private copies; any other in-place change
is named. The peak-RSS figures themselves come from ``bench/memory.py``."""

import pytest
import torch

import edgecc
from edgecc.compiler import SharedWeightsGuard
from edgecc.errors import EdgeccError
from edgecc.pass_base import Pass, PassResult
from edgecc.pass_manager import PassManager
from edgecc.pipeline_text import step


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.fc1 = torch.nn.Linear(16, 32)
        self.norm = torch.nn.LayerNorm(32)
        self.fc2 = torch.nn.Linear(32, 8)

    def forward(self, x):
        return self.fc2(torch.relu(self.norm(self.fc1(x))))


@pytest.fixture(scope="module")
def traced():
    torch.manual_seed(0)
    return edgecc.trace(Net().eval(), (torch.randn(2, 16),))


@pytest.fixture
def program(traced):
    return traced.copy()  # a test may change it


def _weights(p):
    return dict(p.graph_module.named_parameters()) | dict(p.graph_module.named_buffers())


def test_shared_copy_holds_the_same_tensors_and_replacing_one_is_private(program):
    shared = program.copy(share_weights=True)
    deep = program.copy()
    for name, t in _weights(program).items():
        assert _weights(shared)[name] is t
        assert _weights(deep)[name] is not t and torch.equal(_weights(deep)[name], t)
    node = next(n for n in shared.nodes("get_attr") if "fc1" in str(n.target)
                and "weight" in str(n.target))
    before = program.tensor(node).clone()
    shared.set_tensor(node, torch.zeros_like(before))  # a pass replaces a weight
    assert torch.equal(program.tensor(node), before)  # the original keeps its own
    assert not shared.shared_weights_changed()
    x = torch.randn(2, 16)
    assert not torch.allclose(shared.run(x)[0], program.run(x)[0])


def test_in_place_change_is_seen_and_own_weights_clones_keeping_ties(program):
    gm = program.graph_module
    first = next(n for n, _ in gm.named_parameters())
    setattr(gm, "tied_alias", gm.get_parameter(first))  # one tensor under two names
    shared = program.copy(share_weights=True)
    t = shared.graph_module.get_parameter(first)
    with torch.no_grad():
        t.add_(1.0)
    changed = shared.shared_weights_changed()
    assert len(changed) == 1 and changed[0] in (first, "tied_alias")  # one tensor
    assert shared.own_weights() == len({id(v) for v in _weights(program).values()})
    mine = shared.graph_module.get_parameter(first)
    assert mine is not t and mine is shared.graph_module.tied_alias  # tie kept
    assert not shared.shared_weights_changed()


class ScaleInPlace(Pass):
    """A (wrong) pass that changes a weight in place."""

    name = "scale-in-place"

    def run(self, program, options, context):
        with torch.no_grad():
            next(iter(program.graph_module.parameters())).mul_(2.0)
        return PassResult(program, True, {})


class TrainsInPlace(ScaleInPlace):
    name = "trains-in-place"
    trains_weights = True


def test_guard_names_a_pass_that_changes_shared_weights_and_protects_training(program):
    original = {k: v.clone() for k, v in _weights(program).items()}
    work = program.copy(share_weights=True)
    PassManager([step(TrainsInPlace)], instruments=[SharedWeightsGuard()])(work)
    for k, v in _weights(program).items():
        assert torch.equal(v, original[k]), k  # the trainer got private copies
    work = program.copy(share_weights=True)
    with pytest.raises(EdgeccError, match="scale-in-place.*changed 1 weight"):
        PassManager([step(ScaleInPlace)], instruments=[SharedWeightsGuard()])(work)


def test_compile_shares_unchanged_weights_and_keeps_the_input_program(program, tmp_path):
    before = {k: v.clone() for k, v in _weights(program).items()}
    calib = [(torch.randn(2, 16),) for _ in range(2)]
    res = edgecc.compile(program, "onnx", pipeline="quantize{scheme=w8a8}",
                         calibration=calib, output_dir=str(tmp_path / "out"), progress=False,
                         target_options={"external_data": "always"})
    assert res.report["verification"]["passed"]
    orig, work = _weights(res.original), _weights(res.program)
    for name, t in _weights(program).items():
        assert orig[name] is t  # no copy of the input program
        assert torch.equal(t, before[name])
    assert work["norm.weight"] is orig["norm.weight"]  # unchanged: shared, not copied
    assert any(k.endswith("_qweight") and v.dtype == torch.int8 for k, v in work.items())
    stats = next(p["stats"] for p in res.report["pipeline"]["passes"]
                 if p["pass"] == "quantize")
    assert set(stats["layer_sqnr_db"]) == {"fc1", "fc2"}


def test_large_models_get_a_fixed_mmap_threshold_small_ones_glibc_defaults(monkeypatch):
    import subprocess
    import sys

    from edgecc import malloc

    code = ("import edgecc.malloc as m; "
            "print(m.bound_heap(1 << 20), m.bound_heap(1 << 30), m.bound_heap(1 << 30))")
    env = {k: v for k, v in __import__("os").environ.items()
           if k not in ("EDGECC_MMAP_THRESHOLD", "MALLOC_MMAP_THRESHOLD_")}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                         env=env, check=True).stdout.split()
    assert out == ["None", "1048576", "1048576"]  # mallopt accepted it (glibc)
    monkeypatch.setattr(malloc, "_applied", None)
    monkeypatch.setenv("EDGECC_MMAP_THRESHOLD", "0")  # opted out: glibc left alone
    assert malloc.bound_heap(1 << 30) is None
    monkeypatch.delenv("EDGECC_MMAP_THRESHOLD")
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")  # glibc's own setting wins
    assert malloc.bound_heap(1 << 30) is None
