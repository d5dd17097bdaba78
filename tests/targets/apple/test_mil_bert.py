"""End to end: a 2-layer BERT (transformers config, random weights) converted by coremltools
and run by the numpy MIL interpreter, against PyTorch, with a padded attention mask.

fp32 program: relative error <= 1e-4 and cosine >= 0.999 per sequence; fp16 program (fp32
I/O): cosine >= 0.999 per token (the interpreter rounds each op to fp16; it does not emulate
the Neural Engine's accumulation).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from .test_mil_convert import cosine, op_types, rel_err, to_mlpackage

transformers = pytest.importorskip("transformers")
pytest.importorskip("coremltools")

from edgecc.targets.apple.mil.interpreter import run_mlpackage  # noqa: E402


class Encoder(torch.nn.Module):
    def __init__(self, bert):
        super().__init__()
        self.bert = bert

    def forward(self, input_ids, attention_mask):
        return self.bert(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state


@pytest.fixture(scope="module")
def bert():
    torch.manual_seed(0)
    cfg = transformers.BertConfig(vocab_size=200, hidden_size=64, num_hidden_layers=2,
                                  num_attention_heads=4, intermediate_size=128,
                                  max_position_embeddings=32, attn_implementation="sdpa")
    return Encoder(transformers.BertModel(cfg).eval()).eval()


def _batch(seed):
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, 200, (3, 16), generator=gen)
    mask = torch.ones(3, 16, dtype=torch.long)
    mask[1, 11:] = 0  # padded sequences
    mask[2, 5:] = 0
    return ids, mask


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_bert_two_layers_matches_torch(bert, precision, tmp_path):
    ids, mask = _batch(0)
    path = to_mlpackage(bert, {"input_ids": ids.int(), "attention_mask": mask.int()},
                        tmp_path / f"bert_{precision}.mlpackage", precision=precision)
    ops = op_types(path)
    assert {"linear", "matmul", "softmax", "layer_norm", "gelu", "gather"} <= ops
    for seed in (1, 2):  # fresh inputs, not the conversion's example
        ids, mask = _batch(seed)
        got = run_mlpackage(path, {"input_ids": ids.int().numpy(),
                                   "attention_mask": mask.int().numpy()})["out0"]
        with torch.no_grad():
            ref = bert(ids, mask).numpy()
        assert got.dtype == np.float32 and got.shape == ref.shape
        tokens = [cosine(g, r) for g, r in zip(got.reshape(-1, 64), ref.reshape(-1, 64))]
        assert min(tokens) >= 0.999, min(tokens)
        if precision == "fp32":
            assert rel_err(got, ref) <= 1e-4
