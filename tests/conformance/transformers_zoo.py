"""Small random-weight transformers models, one per architecture family, built offline
from config classes (nothing is downloaded), called the way their users call them.

* encoders (and encoder-decoders' encoders): ``model(input_ids, attention_mask)``, the
  second sequence padded;
* decoders: the causal-LM class with ``input_ids`` only and transformers' defaults
  (``use_cache=True``: the logits and the prefill's KV cache are the outputs);
* vision models and conv-transformer hybrids: ``model(pixel_values)``.

Every config is tiny (2 layers, hidden 32, sequences of 12 tokens, 32x32 images)
so that building a family costs about as much as its TVM build.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable

import torch

VOCAB = 96
BATCH, SEQ = 2, 12
TEXT = dict(vocab_size=VOCAB, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
            intermediate_size=64, max_position_embeddings=64)
# Decoders: grouped-query attention where the family has it (4 query heads, 2 KV heads).
DECODER = dict(TEXT, num_key_value_heads=2)


@dataclasses.dataclass(frozen=True)
class Family:
    name: str
    kind: str  # encoder | decoder | encoder-decoder's encoder | vision | conv-transformer
    build: Callable[[], torch.nn.Module]
    inputs: Callable[[int], tuple[torch.Tensor, ...]]  # seed -> one batch


def text_inputs(seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Token ids and an attention mask whose second sequence is padded (last 4 tokens)."""
    gen = torch.Generator().manual_seed(seed)
    ids = torch.randint(0, VOCAB, (BATCH, SEQ), generator=gen)
    mask = torch.ones(BATCH, SEQ, dtype=torch.long)
    mask[1, SEQ - 4:] = 0
    return ids, mask


def ids_only(seed: int) -> tuple[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return (torch.randint(0, VOCAB, (BATCH, SEQ), generator=gen),)


def image_inputs(size: int) -> Callable[[int], tuple[torch.Tensor]]:
    def make(seed: int) -> tuple[torch.Tensor]:
        gen = torch.Generator().manual_seed(seed)
        return (torch.randn(BATCH, 3, size, size, generator=gen),)
    return make


def _tf():
    import transformers

    return transformers


def _model(cls: str, config: str, **kwargs) -> Callable[[], torch.nn.Module]:
    def build() -> torch.nn.Module:
        tf = _tf()
        torch.manual_seed(0)
        return getattr(tf, cls)(getattr(tf, config)(**kwargs)).eval()
    return build


def _bart_encoder() -> torch.nn.Module:
    tf = _tf()
    torch.manual_seed(0)
    model = tf.BartModel(tf.BartConfig(
        vocab_size=VOCAB, d_model=32, encoder_layers=2, decoder_layers=2,
        encoder_attention_heads=4, decoder_attention_heads=4, encoder_ffn_dim=64,
        decoder_ffn_dim=64, max_position_embeddings=64))
    return model.get_encoder().eval()


FAMILIES = [
    # encoders
    Family("bert", "encoder", _model("BertModel", "BertConfig", **TEXT), text_inputs),
    Family("roberta", "encoder", _model("RobertaModel", "RobertaConfig", **TEXT,
                                        pad_token_id=1), text_inputs),
    Family("distilbert", "encoder", _model(
        "DistilBertModel", "DistilBertConfig", vocab_size=VOCAB, dim=32, n_layers=2,
        n_heads=4, hidden_dim=64, max_position_embeddings=64), text_inputs),
    Family("albert", "encoder", _model("AlbertModel", "AlbertConfig", **TEXT,
                                       embedding_size=16), text_inputs),
    Family("electra", "encoder", _model("ElectraModel", "ElectraConfig", **TEXT,
                                        embedding_size=16), text_inputs),
    Family("deberta-v2", "encoder", _model("DebertaV2Model", "DebertaV2Config", **TEXT,
                                           relative_attention=True, position_buckets=8,
                                           pos_att_type=["p2c", "c2p"]), text_inputs),
    # decoders (causal LM, input_ids only, use_cache left at its default True)
    Family("gpt2", "decoder", _model("GPT2LMHeadModel", "GPT2Config", vocab_size=VOCAB,
                                     n_embd=32, n_layer=2, n_head=4, n_positions=64),
           ids_only),
    Family("llama", "decoder", _model("LlamaForCausalLM", "LlamaConfig", **DECODER), ids_only),
    Family("mistral", "decoder", _model("MistralForCausalLM", "MistralConfig", **DECODER,
                                        sliding_window=8), ids_only),
    Family("qwen2", "decoder", _model("Qwen2ForCausalLM", "Qwen2Config", **DECODER), ids_only),
    Family("phi", "decoder", _model("PhiForCausalLM", "PhiConfig", **DECODER), ids_only),
    Family("gpt-neox", "decoder", _model("GPTNeoXForCausalLM", "GPTNeoXConfig", **TEXT),
           ids_only),
    Family("opt", "decoder", _model("OPTForCausalLM", "OPTConfig", vocab_size=VOCAB,
                                    hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                    ffn_dim=64, max_position_embeddings=64,
                                    word_embed_proj_dim=32), ids_only),
    Family("falcon", "decoder", _model("FalconForCausalLM", "FalconConfig", vocab_size=VOCAB,
                                       hidden_size=32, num_hidden_layers=2,
                                       num_attention_heads=4), ids_only),
    # encoder-decoders' encoders
    Family("t5-encoder", "encoder-decoder's encoder", _model(
        "T5EncoderModel", "T5Config", vocab_size=VOCAB, d_model=32, d_kv=8, d_ff=64,
        num_layers=2, num_heads=4, relative_attention_num_buckets=8), text_inputs),
    Family("bart-encoder", "encoder-decoder's encoder", _bart_encoder, text_inputs),
    # vision transformers
    Family("vit", "vision", _model("ViTModel", "ViTConfig", image_size=32, patch_size=8,
                                   hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=64), image_inputs(32)),
    Family("deit", "vision", _model("DeiTModel", "DeiTConfig", image_size=32, patch_size=8,
                                    hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=4, intermediate_size=64),
           image_inputs(32)),
    Family("swin", "vision", _model("SwinModel", "SwinConfig", image_size=32, patch_size=4,
                                    embed_dim=16, depths=[1, 1], num_heads=[2, 4],
                                    window_size=4), image_inputs(32)),
    # conv-transformer hybrids
    Family("levit", "conv-transformer", _model(
        "LevitModel", "LevitConfig", image_size=32, hidden_sizes=[32, 48, 64],
        num_attention_heads=[2, 2, 2], depths=[1, 1, 1], key_dim=[8, 8, 8],
        mlp_ratio=[2, 2, 2], attention_ratio=[2, 2, 2]), image_inputs(32)),
    Family("convnext", "conv-transformer", _model(
        "ConvNextModel", "ConvNextConfig", image_size=32, num_stages=2, hidden_sizes=[16, 32],
        depths=[1, 1]), image_inputs(32)),
]

BY_NAME = {f.name: f for f in FAMILIES}


def flat_outputs(out) -> tuple[torch.Tensor, ...]:
    """Eager outputs in the program's order: the pytree leaves of the model output, a KV
    cache as ``(key, value)`` per layer (what ``edgecc.trace`` makes of it)."""
    from edgecc.frontend import _cache_layers

    leaves = torch.utils._pytree.tree_leaves(
        out, is_leaf=lambda x: _cache_layers(x) is not None)
    flat: list[torch.Tensor] = []
    for leaf in leaves:
        layers = _cache_layers(leaf)
        if layers is not None:
            flat += [t for kv in layers for t in kv]
        elif isinstance(leaf, torch.Tensor):
            flat.append(leaf)
    return tuple(flat)
