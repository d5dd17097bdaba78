"""Reproducible artifacts (issue 20): the same model compiled twice with the same options
gives byte-identical artifacts (the manifest's sha256 per file) for every target, except
the files a target lists in ``lowering.varies`` with the reason.

Two compiles in one process, into directories of different names (a path embedded in an
artifact shows up as a difference). Checked across processes by hand for host, arm64,
onnx, npu and gguf (identical). Verification is off: it reads artifacts, never writes them.
"""

import json
import os
import platform

import pytest
import torch

import edgecc
from edgecc.registry import default_target_registry


class Net(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(3, 8, 3, padding=1)
        self.fc = torch.nn.Linear(8, 4)

    def forward(self, x):
        return self.fc(torch.relu(self.conv(x)).mean((2, 3)))


def net_case():
    torch.manual_seed(0)
    x = torch.randn(1, 3, 16, 16)
    return Net().eval(), {"example_inputs": (x,)}


def llama_case():
    from tests.targets.gguf import tiny

    return tiny.trace(tiny.llama_gqa()), {}


CALIB = [(torch.randn(1, 3, 16, 16, generator=torch.Generator().manual_seed(i)),)
         for i in range(2)]
CASES = {
    "host": (net_case, {"pipeline": "fold-batchnorm,fuse,dce"}),
    # x86: the int8 kernels (VNNI / AVX2 C++ compiled into model.so) and the weight-only
    # int4 kernel (packed codes); elsewhere these builds take TVM's own kernels
    "host#w8a8": (net_case, {"pipeline": "quantize{scheme=w8a8}", "calibration": CALIB,
                             "target_options": {"integer_kernels": True}}),
    "host#w4a16": (net_case, {"pipeline": "quantize{scheme=w4a16,group_size=8}"}),
    "arm64": (net_case, {"pipeline": "fuse,dce"}),
    "onnx": (net_case, {"pipeline": "fuse,dce"}),
    "npu:ethos-u55-128": (net_case, {"pipeline": "quantize{scheme=w8a8}", "calibration": CALIB}),
    "jetson:orin-nano": (net_case, {"calibration": CALIB}),
    "gguf": (llama_case, {"pipeline": "dce"}),
    "apple": (net_case, {"pipeline": "fuse,dce"}),
}
def params():
    for spec in CASES:
        marks = [pytest.mark.slow]
        yield pytest.param(spec, marks=marks, id=spec.split(":")[0].replace("#", "-"))


@pytest.mark.parametrize("spec", params())
def test_same_input_same_options_same_bytes(spec, tmp_path, monkeypatch):
    spec, _, _variant = spec.partition("#")
    name = spec.split(":")[0]
    target_cls = default_target_registry().get(name)
    avail = target_cls().availability()
    if not avail.available:
        pytest.skip(f"{name}: {avail.detail}")
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    make, options = CASES[spec + ("#" + _variant if _variant else "")]
    model, inputs = make()
    reports = []
    for out in ("first", "second-build-dir"):
        res = edgecc.compile(model, spec, output_dir=str(tmp_path / out), verify=False,
                             **inputs, **options)
        reports.append(json.loads((tmp_path / out / "manifest.json").read_text()))
        assert reports[-1] == json.loads(json.dumps(res.report))
    if _variant and platform.machine() in ("x86_64", "AMD64"):  # the C++ kernels were built
        kernels = reports[0]["lowering"]["integer_kernels"]
        assert (kernels.get("x86_kernels", 0) if _variant == "w8a8" else
                kernels["weight_only"]["weight_only_layers"]) > 0, kernels
    first, second = ({a["path"]: a["sha256"] for a in r["artifacts"]} for r in reports)
    assert sorted(first) == sorted(second) and first
    varies = reports[0]["lowering"].get("varies", {})
    assert all(isinstance(why, str) and why for why in varies.values())
    differ = sorted(p for p in first if first[p] != second[p] and p not in varies)
    assert not differ, f"{spec}: artifacts differ between identical compiles: {differ}"
    # each listed sha256 is the file's (the manifest is what a user checks against)
    from edgecc.manifest import sha256_of

    for path, sha in second.items():
        assert sha256_of(os.path.join(tmp_path / "second-build-dir", path)) == sha
    assert reports[0]["created"] == reports[1]["created"] == "2023-11-14T22:13:20+00:00"
