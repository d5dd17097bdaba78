"""``-t apple``: options, presets, refusals, and the package check on a small network.

Conversions take seconds each: the small programs are traced once per module and every
compiled package is built once (``_build``) and shared by the tests that read it.
"""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

import edgecc
from edgecc.errors import LoweringError, OptionError, VerificationFailedError

pytest.importorskip("coremltools")

from edgecc.targets.apple import carry, check  # noqa: E402
from edgecc.targets.apple.target import AppleTarget, version_problem  # noqa: E402


class SmallCNN(torch.nn.Module):
    """conv (3x3, 1x1), depthwise conv, residual add, pooling, linear: the CNN ops the
    acceptance models use, small enough to convert in a few seconds."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(4, 16, 3, padding=1)
        self.dw = torch.nn.Conv2d(16, 16, 3, padding=1, groups=16)
        self.pw = torch.nn.Conv2d(16, 16, 1)
        self.fc = torch.nn.Linear(16, 64)
        self.head = torch.nn.Linear(64, 8)

    def forward(self, x):
        y = torch.relu(self.conv(x))
        y = y + torch.nn.functional.relu6(self.pw(self.dw(y)))
        y = y.mean(dim=(2, 3))
        return self.head(torch.relu(self.fc(y)))


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return edgecc.trace(SmallCNN().eval(), (torch.randn(1, 4, 8, 8),))


_BUILT: dict[tuple[str, str], edgecc.CompileResult] = {}


def _build(program, pipeline, tmp_path_factory, **options):
    key = (pipeline, json.dumps(options, sort_keys=True))
    if key not in _BUILT:
        out = tmp_path_factory.mktemp("apple")
        calib = [(torch.randn(1, 4, 8, 8),) for _ in range(2)]
        _BUILT[key] = edgecc.compile(program, target="apple", pipeline=pipeline,
                                     output_dir=str(out / "o"), target_options=options,
                                     calibration=calib)
    return _BUILT[key]


def test_targets_listing_names_the_deployments():
    text = AppleTarget().listing()
    for name in ("ios16", "ios17", "ios18", "ios26", "macos13", "macos14", "macos15",
                 "macos26", "cpu_and_ne", "fp16"):
        assert name in text
    line = next(ln for ln in text.splitlines() if ln.strip().startswith("ios18"))
    assert "int4/uint4 per-block" in line


def test_coremltools_version_outside_the_tested_range_is_one_clear_line():
    assert version_problem("9.0") is None
    for found in ("8.3.0", "9.1", "10.0b1"):
        msg = version_problem(found)
        assert msg.startswith(f"coremltools {found} is outside the tested range >=9.0,<9.1")
        assert "\n" not in msg and "coremltools==9.0" in msg
    assert "missing coremltools" in version_problem(None)


@pytest.mark.parametrize("options,message", [
    ({"deployment": "ios15"}, "unknown deployment 'ios15'"),
    ({"compute_units": "npu"}, "'compute_units' of 'apple' must be one of 'all'"),
    ({"fallback": "float"}, "'fallback' of 'apple' must be one of 'error', 'dequantize'"),
])
def test_bad_options_say_what_to_write(small, tmp_path, options, message):
    with pytest.raises(OptionError, match=message):
        edgecc.compile(small, target="apple", pipeline="dce", target_options=options,
                       output_dir=str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_int4_below_ios18_is_refused_before_any_pass_runs(small, tmp_path):
    with pytest.raises(OptionError) as err:
        edgecc.compile(small, "apple:ios17", pipeline="quantize{scheme=w4a16,group_size=16}",
                       output_dir=str(tmp_path / "o"))
    msg = str(err.value)
    assert "uint4 weights need --target-option deployment=ios18" in msg and "\n" not in msg
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("spec,pipeline,fix", [
    ("macos14", "quantize{scheme=w4a16}", "deployment=macos15"),
    ("ios17", "quantize{scheme=w8a16,group_size=32}", "deployment=ios18"),
    ("ios16", "palettize{bits=4,group_size=8}", "deployment=ios18"),
    ("macos13", "palettize{bits=4,group_size=8}", "deployment=macos15"),
    ("ios16", "quantize{scheme=w8a8}", "deployment=ios17"),
])
def test_what_a_deployment_cannot_hold_is_refused_at_option_validation(spec, pipeline, fix):
    """check_pipeline (before any pass, before the program is looked at) names the
    deployment that holds it; with fallback=dequantize it is accepted."""
    from edgecc.pipeline_text import parse_pipeline

    target = AppleTarget()
    with pytest.raises(OptionError) as err:
        target.check_pipeline(parse_pipeline(pipeline), AppleTarget.Options(deployment=spec))
    assert fix in str(err.value) and "\n" not in str(err.value)
    target.check_pipeline(parse_pipeline(pipeline),
                          AppleTarget.Options(deployment=spec, fallback="dequantize"))
    target.check_pipeline(parse_pipeline(pipeline), AppleTarget.Options(deployment="ios18"))


def test_activation_quantization_below_ios17_is_refused(small, tmp_path):
    calib = [(torch.randn(1, 4, 8, 8),)]
    with pytest.raises(OptionError, match="int8 activations need --target-option "
                                          "deployment=ios17"):
        edgecc.compile(small, "apple:ios16", pipeline="quantize{scheme=w8a8}",
                       calibration=calib, output_dir=str(tmp_path / "o"))


def test_an_operator_without_core_ml_equivalent_is_named(tmp_path):
    class Lgamma(torch.nn.Module):
        def forward(self, x):
            return torch.lgamma(x.abs() + 1)

    prog = edgecc.trace(Lgamma(), (torch.randn(2, 8),))
    with pytest.raises(LoweringError) as err:
        edgecc.compile(prog, target="apple", pipeline="dce", output_dir=str(tmp_path / "o"))
    assert "node 'lgamma' (aten.lgamma.default) has no Core ML equivalent" in str(err.value)
    assert not (tmp_path / "o").exists()


def test_w8a16_fp32_codes_scales_and_weights_bit_exact(small, tmp_path_factory):
    res = _build(small, "quantize{scheme=w8a16}", tmp_path_factory, compute_precision="fp32")
    rep = res.report["lowering"]
    chk = rep["apple_check"]
    assert chk["op_counts"]["constexpr_blockwise_shift_scale"] == 5
    assert {w["format"] for w in rep["compressed_weights"]} == {"int8 per-channel axis 0"}
    assert all(w["codes_bit_exact"] and w["weight_bit_exact"] and w["scales_bit_exact"]
               for w in chk["weights"]) and len(chk["weights"]) == 5
    assert chk["inputs"][0]["dtype"] == "FLOAT32" and chk["outputs"][0]["dtype"] == "FLOAT32"
    assert chk["weight_bin_matches_payload"]
    # the check reads the package back: the codes on disk are edgecc's
    mil, _ = check.load_mil(f"{res.output_dir}/model.mlpackage")
    ops = {op.name: op for op in mil.functions["main"].operations}
    stored = ops[rep["compressed_weights"][0]["mil_op"]].inputs["data"].val
    assert np.array_equal(stored, res.program.tensor(
        next(n for n in res.program.graph.nodes if n.op == "get_attr"
             and str(n.target) == rep["compressed_weights"][0]["weight"])).numpy())
    it = chk["interpreter"]
    assert it["performed"] and it["passed"] and it["max_abs_relative"] <= 1e-4
    assert "execution by Core ML on an Apple device" in res.report["not_verified"][0]
    readme = open(f"{res.output_dir}/README.txt").read()
    assert "ct.ComputeUnit.ALL" in readme and "compute units chosen" in readme.lower()
    assert res.report["target"]["options"]["compute_units"] == "all"


def test_w8a8_activations_become_mil_quantize_dequantize(small, tmp_path_factory):
    res = _build(small, "quantize{scheme=w8a8}", tmp_path_factory, deployment="ios17")
    chk = res.report["lowering"]["apple_check"]
    assert chk["op_counts"]["quantize"] == chk["op_counts"]["dequantize"] == 5
    assert chk["op_counts"]["constexpr_affine_dequantize"] == 5  # iOS17: int8 weights
    assert chk["interpreter"]["cosine"] >= 0.999


def test_grouped_palette_below_ios18_falls_back_to_float_when_asked(small, tmp_path_factory):
    res = _build(small, "palettize{bits=4,group_size=8}", tmp_path_factory,
                 deployment="ios16", fallback="dequantize")
    rep = res.report["lowering"]
    assert rep["stored_as_float"] and all("deployment=ios18" in s
                                          for s in rep["stored_as_float"])
    assert rep["apple_check"]["interpreter"]["cosine"] >= 0.999


def test_pruning_masks_carry_over_as_sparse_constants(small, tmp_path_factory):
    res = _build(small, "prune{sparsity=0.6}", tmp_path_factory, compute_precision="fp32")
    chk = res.report["lowering"]["apple_check"]
    assert chk["op_counts"]["constexpr_sparse_to_dense"] == 5
    assert all(w["codes_bit_exact"] and w["weight_bit_exact"] for w in chk["weights"])


def test_a_corrupted_code_fails_the_check(small, tmp_path, monkeypatch):
    """The check can fail: one flipped code in the package is caught."""
    original = carry.unpacked_codes

    def corrupt(q, dtype, *layout):
        codes = original(q, dtype, *layout).copy()
        codes.reshape(-1)[0] = codes.reshape(-1)[0] ^ 1
        return codes

    monkeypatch.setattr(carry, "unpacked_codes", corrupt)
    with pytest.raises(VerificationFailedError, match="codes DIFFER"):
        edgecc.compile(small, target="apple", pipeline="quantize{scheme=w8a16,include=[fc]}",
                       output_dir=str(tmp_path / "o"))
    assert not (tmp_path / "o").exists()


def test_fp16_scheme_becomes_fp16_casts_and_fp16_weights(small, tmp_path_factory):
    res = _build(small, "quantize{scheme=fp16}", tmp_path_factory, deployment="ios16")
    chk = res.report["lowering"]["apple_check"]
    assert "quantize" not in chk["op_counts"]  # float16 "quantization" is a cast
    assert chk["interpreter"]["passed"] and chk["interpreter"]["cosine"] >= 0.999


def test_cli_refusal_is_one_line_and_writes_nothing(small, tmp_path, capsys):
    from edgecc.cli import main

    path = tmp_path / "m.pt2"
    small.save(str(path))
    code = main(["compile", str(path), "-t", "apple:macos14", "-p",
                 "quantize{scheme=w4a16,group_size=16}", "-o", str(tmp_path / "o")])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1 and "uint4" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.skipif(not __import__("edgecc.targets.apple.runner", fromlist=["x"])
                    .predict_works(),
                    reason="Core ML predict runs only on macOS (coremltools' native library)")
def test_macos_predict_is_compile_verification(small, tmp_path_factory):
    res = _build(small, "quantize{scheme=w8a16}", tmp_path_factory, compute_precision="fp32")
    assert res.report["verification"]["performed"] and res.report["verification"]["passed"]
    assert not any("Apple device" in s for s in res.report["not_verified"])


def test_int4_conv_weights_pack_along_the_block_axis():
    """A 3x3 / 1x1 convolution weight in blocks along input channels (odd last dimension)
    packs its 4-bit codes along the block axis; dequantize (eager and fake) reads it back."""
    from edgecc.quant import packed_dim, params_from_scale, stored_packed_dim

    torch.manual_seed(0)
    for shape in ((8, 6, 3, 3), (8, 48, 1, 1), (4, 16, 2, 2)):
        w = torch.randn(shape)
        nb = -(-shape[1] // 32)
        scale = torch.rand(shape[0], nb, *shape[2:]) + 0.1
        p = params_from_scale("int4", scale, axis=1, block_size=32)
        q = p.quantize(w)
        dim = packed_dim(shape, 1, 32)
        assert dim == (3 if shape[-1] % 2 == 0 else 1)
        assert q.shape[dim] == shape[dim] // 2
        assert stored_packed_dim(q.shape, scale.shape, 1, 32) == dim
        assert torch.equal(p.dequantize(q), p.fake_quantize(w))
        fake = torch.library.opcheck  # the fake kernel gives the logical shape
        fake(torch.ops.edgecc.dequantize.default,
             (q, scale, p.zero_point, 1, 32, "int4", torch.float32))
    assert packed_dim((8, 3, 3, 3), 1, 32) is None  # no even axis: stays float


def test_same_program_same_bytes_later_in_the_process(small, tmp_path_factory):
    """coremltools' process-wide name counter (Builder.name_count) advanced by other
    conversions no longer changes model.mlmodel or the debug-handle map: every file of the
    package is byte-identical (nothing is listed in lowering.varies)."""
    import hashlib
    import os

    from coremltools.converters.mil.mil.builder import Builder

    first = _build(small, "quantize{scheme=w8a16}", tmp_path_factory, compute_precision="fp32")
    for name in [*Builder.name_count, "const", "cast", "dequantize_1_scale"]:
        Builder.name_count[name] += 7  # as after other conversions in this process
    out = tmp_path_factory.mktemp("apple") / "again"
    second = edgecc.compile(small, target="apple", pipeline="quantize{scheme=w8a16}",
                            output_dir=str(out), target_options={"compute_precision": "fp32",
                                                                 "check_samples": 0})

    def digests(root):
        return {os.path.relpath(os.path.join(d, f), root): hashlib.sha256(
            open(os.path.join(d, f), "rb").read()).hexdigest()
            for d, _, files in os.walk(os.path.join(root, "model.mlpackage")) for f in files}

    assert digests(first.output_dir) == digests(second.output_dir)
    assert "varies" not in second.report["lowering"]


def test_pruned_then_palettized_weights_become_lut_to_sparse(small, tmp_path_factory):
    """iOS18 joint sparse + palettized: the exact-zero centroid of a pruned weight becomes
    the mask of constexpr_lut_to_sparse; mask, nonzero indices and LUT are edgecc's."""
    res = _build(small, "prune{sparsity=0.6},apply-masks,palettize{bits=4}", tmp_path_factory,
                 compute_precision="fp32")
    rep = res.report["lowering"]
    chk = rep["apple_check"]
    joint = [w for w in rep["compressed_weights"] if w["form"] == "constexpr_lut_to_sparse"]
    assert joint and chk["op_counts"]["constexpr_lut_to_sparse"] == len(joint)
    assert chk["op_counts"].get("constexpr_lut_to_dense", 0) == 0
    assert all(r["codes_bit_exact"] and r["weight_bit_exact"] and r["scales_bit_exact"]
               for r in chk["weights"])
    assert chk["weight_bin_matches_payload"]
    # the sparse form is smaller than the dense indices it replaces (4 bits per weight)
    assert all(r["stored_bytes"] < r["float32_bytes"] / 8 + 64 for r in chk["weights"])
    assert chk["interpreter"]["passed"] and chk["interpreter"]["max_abs_relative"] <= 1e-4


class TwoAttentions(torch.nn.Module):
    """Self-attention as transformers writes it (scale given, equal to the default) and
    one with another scale."""

    def __init__(self):
        super().__init__()
        self.qkv = torch.nn.Linear(32, 96)

    def forward(self, x, mask):
        q, k, v = (t.unflatten(-1, (2, 16)).transpose(1, 2) for t in self.qkv(x).chunk(3, -1))
        a = torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask,
                                                             scale=16 ** -0.5)
        b = torch.nn.functional.scaled_dot_product_attention(q, k, v, scale=0.3)
        return (a + b).transpose(1, 2).flatten(2)


def test_default_scaled_attention_is_the_fused_ios18_op(tmp_path):
    torch.manual_seed(0)
    mask = torch.randn(1, 1, 6, 6)
    prog = edgecc.trace(TwoAttentions().eval(), (torch.randn(1, 6, 32), mask))
    res = edgecc.compile(prog, target="apple", pipeline="dce", output_dir=str(tmp_path / "o"),
                         target_options={"compute_precision": "fp32"})
    chk = res.report["lowering"]["apple_check"]
    assert chk["op_counts"]["scaled_dot_product_attention"] == 1  # scale=0.3 stays decomposed
    assert chk["op_counts"]["softmax"] == 1
    assert chk["interpreter"]["passed"] and chk["interpreter"]["max_abs_relative"] <= 1e-4
