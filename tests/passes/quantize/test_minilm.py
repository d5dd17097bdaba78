"""Acceptance on a real transformer: all-MiniLM-L6-v2 (real weights, offline), sentence
embeddings of held-out English text that the calibration never saw."""

from __future__ import annotations

import pytest
import torch

import edgecc
from edgecc.pass_base import PassContext
from edgecc.pass_manager import PassManager
from examples.minilm import load_minilm, tokenize
from examples.text_corpus import calibration_sentences, heldout_sentences

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def minilm():
    model, tok = load_minilm()
    calib = tokenize(tok, calibration_sentences(128), batch_size=16)
    held = tokenize(tok, heldout_sentences(64), batch_size=16)
    prog = PassManager("dce")(edgecc.trace(model, calib[0])).program
    refs = [prog.run(*b)[0] for b in held]
    return prog, calib, held, refs


def fidelity(minilm, pipeline):
    prog, calib, held, refs = minilm
    res = PassManager(pipeline)(prog.copy(), context=PassContext(calibration=calib))
    cos = torch.cat([torch.nn.functional.cosine_similarity(res.program.run(*b)[0], r)
                     for b, r in zip(held, refs)])
    return cos.mean().item(), res.stats["passes"][-1]["stats"]


def test_w8a8_keeps_embeddings_and_shrinks_weights_4x(minilm):
    cos, stats = fidelity(minilm, "quantize{scheme=w8a8}")
    print(f"w8a8: held-out mean cosine {cos:.5f}, weight bytes {stats['weight_compression']}x")
    assert cos >= 0.99
    assert stats["weight_compression"] >= 3.9


def test_w4a16_gptq_and_awq_beat_round_to_nearest(minilm):
    rtn, rtn_stats = fidelity(minilm, "quantize{scheme=w4a16,group_size=32}")
    gptq, _ = fidelity(minilm, "quantize{scheme=w4a16,group_size=32,algorithm=gptq}")
    awq, _ = fidelity(minilm, "quantize{scheme=w4a16,group_size=32,algorithm=awq,awq_grid=10}")
    print(f"w4a16 g32 held-out mean cosine: rtn {rtn:.5f} gptq {gptq:.5f} awq {awq:.5f}; "
          f"weight bytes {rtn_stats['weight_compression']}x")
    assert gptq >= 0.98
    assert gptq > rtn and awq > rtn
    assert rtn_stats["weight_compression"] >= 6.5
