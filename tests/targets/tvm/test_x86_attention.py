"""x86 transformer float kernels (``x86_attention``): every attention / layer norm / GELU of
a BERT-style and a GPT-2-style block runs on them (none silently left to TVM's loop nests),
in the fp32 build and in the w8a8 integer build (whose activation quantizes they write);
outputs equal TVM's own kernels within 1e-5 relative, masked and causal rows included, on the
AVX-512 and the AVX2 paths; exp / erf / tanh are at least as accurate as TVM's polynomials."""

import math

import numpy as np
import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F

import edgecc
from edgecc.targets.tvm import lowering, x86_attention, x86_fp32

pytestmark = pytest.mark.skipif(not x86_attention.supported(lowering.llvm_target(None, None)),
                                reason="needs an x86 CPU with AVX2 + FMA")

D, HEADS, FF = 48, 3, 80


class Blocks(nn.Module):
    """A BERT block (boolean padding mask: a sample with every key masked gives the
    ``where(keep, ·, 0)`` rows; post-LN; erf GELU) then a GPT-2 block (causal; pre-LN, the
    residual sum read twice; GELU written out with tanh and a cube)."""

    def __init__(self):
        super().__init__()
        self.qkv1, self.o1 = nn.Linear(D, 3 * D), nn.Linear(D, D)
        self.ln1, self.ln2 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.f1, self.f2 = nn.Linear(D, FF), nn.Linear(FF, D)
        self.qkv2, self.o2 = nn.Linear(D, 3 * D), nn.Linear(D, D)
        self.ln3, self.ln4 = nn.LayerNorm(D), nn.LayerNorm(D)
        self.g1, self.g2 = nn.Linear(D, FF), nn.Linear(FF, D)

    @staticmethod
    def heads(t, b, s):
        return t.view(b, s, HEADS, D // HEADS).transpose(1, 2)

    def attend(self, qkv, x, **kw):
        b, s, _ = x.shape
        q, k, v = (self.heads(t, b, s) for t in qkv(x).split(D, -1))
        o = F.scaled_dot_product_attention(q, k, v, **kw)
        return o.transpose(1, 2).reshape(b, s, D)

    def forward(self, x, attention_mask):
        b, s, _ = x.shape
        keep = (attention_mask > 0)[:, None, None, :].expand(b, 1, s, s)
        bias = torch.where(keep, 0.0, float("-inf"))  # as transformers' sdpa path
        a = self.attend(self.qkv1, x, attn_mask=bias)  # (export adds the where of rows
        # with no key left: zeros, not softmax's NaN)
        h = self.ln1(x + self.o1(a))
        h = self.ln2(h + self.f2(F.gelu(self.f1(h))))
        h = h + self.o2(self.attend(self.qkv2, self.ln3(h), is_causal=True))
        u = self.g1(self.ln4(h))
        u = 0.5 * u * (1.0 + torch.tanh(math.sqrt(2.0 / math.pi)
                                        * (u + 0.044715 * torch.pow(u, 3.0))))
        return h + self.g2(u)


def _inputs(seed):
    torch.manual_seed(seed)
    x = torch.randn(3, 19, D)
    mask = torch.ones(3, 19, dtype=torch.long)
    mask[1, 13:] = 0  # padding
    mask[2] = 0  # every key masked: softmax NaN, zeroed by the where
    return x, mask


def test_every_attention_norm_and_gelu_is_rewritten():
    model = Blocks().eval()
    program = edgecc.trace(model, _inputs(0))
    module, _ = x86_fp32.apply(lowering.to_relax(program), lowering.llvm_target(None, None))
    module, stats = x86_attention.rewrite(module)
    assert (stats.attention, stats.layer_norm, stats.gelu) == (2, 4, 2), stats
    assert stats.left == (), stats  # (residual adds: fused here or into the sgemm before)
    text = module["main"].script(show_meta=False)
    for op in ("R.nn.softmax", "R.nn.layer_norm", "R.nn.gelu", "R.tanh", "R.matmul",
               "R.permute_dims"):
        assert op not in text, op
    assert text.count("R.where(") == 1  # the mask's own where(keep, 0, -inf): the
    # attention's where(rows, ·, 0) is in the kernel
    assert (module.attrs or {}).get("external_mods")


def _relative(a, b):
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / np.abs(b).max())


@pytest.fixture(scope="module")
def fp32_builds(tmp_path_factory):
    torch.manual_seed(0)
    model = Blocks().eval()
    out = {}
    for schedule in ("edgecc", "tvm"):
        res = edgecc.compile(model, "host", example_inputs=_inputs(0), pipeline="",
                             target_options={"schedule": schedule},
                             output_dir=str(tmp_path_factory.mktemp(schedule)))
        assert res.report["verification"]["passed"]
        out[schedule] = res
    return model, out


@pytest.mark.parametrize("isa", ["native", "avx2"])
def test_outputs_equal_tvms_kernels(fp32_builds, monkeypatch, isa):
    """Same program, these kernels vs TVM's own schedule (its fast_exp / fast_erf /
    fast_tanh loop nests): within 1e-5 of the largest output on fresh inputs, padded,
    fully masked and causal rows included; PyTorch agrees too."""
    model, built = fp32_builds
    ours = built["edgecc"]
    ours.run(*_inputs(1))  # loads the library
    lanes = ours._runner.module.get_function(x86_attention.LANES_QUERY, query_imports=True)
    if isa == "avx2":  # read at each call: the AVX2 path of the same library
        monkeypatch.setenv("EDGECC_X86_ATTN_NO_AVX512", "1")
    assert lanes() == (16 if isa == "native" and _has_avx512() else 8)  # no silent fallback
    for seed in (1, 2):
        x, mask = _inputs(seed)
        with torch.no_grad():
            expected = model(x, mask)
        got, theirs = ours.run(x, mask), built["tvm"].run(x, mask)
        assert torch.isfinite(got).all()
        assert _relative(got, theirs) <= 1e-5
        assert _relative(got, expected) <= 1e-5


def _has_avx512():
    with open("/proc/cpuinfo") as f:
        flags = set(f.read().split())
    return {"avx512f", "avx512bw", "avx512dq", "avx512vl"} <= flags


W8A8 = "quantize{scheme=w8a8},fuse,dce"


def _sqnr_db(got, ref):
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    return float(10 * np.log10((ref ** 2).sum() / ((got - ref) ** 2).sum()))


def test_w8a8_build_writes_its_activation_quantizes(tmp_path):
    """The integer build: the quantize after each attention / layer norm / GELU that feeds a
    linear is written by the kernel (int8 output), nothing is left on TVM's loop nests, and
    the artifact stays as close to the simulator (PyTorch running the quantized program) as
    TVM's own kernels keep it (measured: 52-53 dB on these inputs; a wrong scale, zero point
    or rounding costs tens of dB)."""
    from edgecc.targets.tvm import x86_int8

    torch.manual_seed(0)
    model = Blocks().eval()
    calib = [_inputs(seed) for seed in (3, 4, 5)]
    res = edgecc.compile(model, "host", example_inputs=_inputs(0), pipeline=W8A8,
                         calibration=calib, target_options={"integer_kernels": True},
                         output_dir=str(tmp_path / "int8"))
    assert res.report["verification"]["passed"]
    target = lowering.llvm_target(None, None)
    module = lowering.to_relax(res.program, integer_kernels=True, isa=x86_int8.ISA)
    module, stats = x86_attention.rewrite(x86_fp32.apply(module, target)[0])
    assert (stats.attention, stats.layer_norm, stats.gelu) == (2, 4, 2), stats
    # every layer feeding a linear: 2 attentions, 3 norms (ln1's output feeds a residual and
    # the FFN: both outputs), 2 GELUs
    assert stats.quantize_fused == 7 and stats.left == (), stats
    text = module["main"].script(show_meta=False)
    for op in ("R.nn.softmax", "R.nn.layer_norm", "R.nn.gelu", "R.tanh", "R.permute_dims"):
        assert op not in text, op
    assert text.count("R.round(") == 1  # the model input's quantize (before qkv1)
    for seed in (1, 2):
        x, mask = _inputs(seed)
        with torch.no_grad():
            simulated = res.program.run(x, mask)[0]
        assert _sqnr_db(res.run(x, mask), simulated) >= 45.0
