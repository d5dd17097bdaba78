"""Acceptance on real data: a CNN trained here on scikit-learn's digits, quantized w8a8
(PTQ), then quantization-aware fine-tuned; and the qat pass inside compile()."""

from __future__ import annotations

import pytest

import edgecc
from edgecc.pass_base import PassContext
from edgecc.pass_manager import PassManager
from edgecc.passes.quantize import convert_qat, prepare_qat
from edgecc.quant import is_fake_quantize
from edgecc.train import FinetuneOptions, finetune
from examples.digits import accuracy


def test_w8a8_ptq_then_qat(digits):
    prog, data, xs, ys, fp32 = digits
    res = PassManager("fold-batchnorm,quantize{scheme=w8a8},fuse,dce")(
        prog.copy(), context=PassContext(calibration=xs[:8]))
    q = res.program
    ptq = accuracy(q.run, data.x_test, data.y_test)

    qat = q.copy()
    prepare_qat(qat)
    assert any(is_fake_quantize(n) for n in qat.nodes("call_function"))
    assert accuracy(qat.run, data.x_test, data.y_test) == ptq  # prepare is exact
    history = finetune(qat, xs, labels=ys, teacher=prog,
                       options=FinetuneOptions(epochs=3, lr=1e-4))
    convert_qat(qat)
    assert not any(is_fake_quantize(n) for n in qat.nodes("call_function"))
    after = accuracy(qat.run, data.x_test, data.y_test)
    print(f"digits: fp32 {fp32:.2f}%  w8a8 PTQ {ptq:.2f}%  QAT {after:.2f}%  "
          f"(QAT loss {history[0]:.4g} -> {history[-1]:.4g})")
    assert fp32 - ptq <= 1.0
    assert fp32 - after <= 0.3


def test_qat_pass_in_compile_distils_from_the_original(digits, tmp_path):
    prog, data, xs, ys, fp32 = digits
    res = edgecc.compile(prog, target="host",
                         pipeline="fold-batchnorm,quantize{scheme=w8a8},qat{epochs=1},fuse,dce",
                         calibration=xs[:10], output_dir=str(tmp_path / "out"))
    q = [r for r in res.report["pipeline"]["passes"] if r["pass"] == "qat"][0]
    assert q["stats"]["epochs"] == 1 and not q["lossless"]
    assert res.report["verification"]["passed"]
    host = accuracy(res.run, data.x_test, data.y_test)
    assert fp32 - host <= 1.0


def test_finetune_needs_a_signal(digits):
    prog, data, xs, ys, fp32 = digits
    with pytest.raises(ValueError, match="labels, a teacher"):
        finetune(prog.copy(), xs)
