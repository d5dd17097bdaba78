"""Models the tests share: the example CNNs and small transformer configs (random weights)."""

from __future__ import annotations

import torch

from examples.models import mobilenet_v2, resnet20  # noqa: F401

VOCAB = 128


class LastHiddenState(torch.nn.Module):
    """Wrap a transformers model so it takes (input_ids, attention_mask) -> hidden states."""

    def __init__(self, model: torch.nn.Module, use_cache: bool):
        super().__init__()
        self.model = model
        self.use_cache = use_cache

    def forward(self, input_ids, attention_mask):
        kwargs = {"use_cache": False} if self.use_cache else {}
        return self.model(input_ids=input_ids, attention_mask=attention_mask,
                          **kwargs).last_hidden_state


def transformer(name: str) -> torch.nn.Module:
    import transformers as tf

    torch.manual_seed(0)
    common = dict(vocab_size=VOCAB, attn_implementation="sdpa")
    if name == "bert":
        model = tf.BertModel(tf.BertConfig(hidden_size=64, num_hidden_layers=2,
                                           num_attention_heads=4, intermediate_size=128,
                                           max_position_embeddings=64, **common))
        return LastHiddenState(model, use_cache=False).eval()
    if name == "gpt2":
        model = tf.GPT2Model(tf.GPT2Config(n_embd=64, n_layer=2, n_head=4, n_positions=64,
                                           **common))
    elif name == "llama":  # grouped-query attention: 4 query heads share 2 KV heads
        model = tf.LlamaModel(tf.LlamaConfig(hidden_size=64, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=2,
                                             intermediate_size=128, max_position_embeddings=64,
                                             **common))
    else:
        raise ValueError(name)
    return LastHiddenState(model, use_cache=True).eval()


def token_inputs(batch: int = 2, seq: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    ids = torch.randint(0, VOCAB, (batch, seq))
    mask = torch.ones(batch, seq, dtype=torch.long)
    mask[1, seq - 4:] = 0  # padding in the second sequence
    return ids, mask


def held_out_fidelity(minilm, pipeline: str):
    """Mean held-out embedding cosine of ``pipeline`` applied to the ``minilm`` fixture, and
    the last pass's stats."""
    from edgecc.pass_base import PassContext
    from edgecc.pass_manager import PassManager

    prog, calib, held, refs = minilm
    res = PassManager(pipeline)(prog.copy(), context=PassContext(calibration=calib))
    cos = torch.cat([torch.nn.functional.cosine_similarity(res.program.run(*b)[0], r)
                     for b, r in zip(held, refs)])
    return cos.mean().item(), res.stats["passes"][-1]["stats"]
