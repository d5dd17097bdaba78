"""Tiny random-weight Llama-family decoders for the GGUF tests (a few hundred KB each)."""

from __future__ import annotations

import torch

import edgecc

VOCAB = 96
SEQ = 12


def llama_gqa(*, tied: bool = False, theta: float = 500000.0) -> torch.nn.Module:
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=tied,
        rope_theta=theta, rms_norm_eps=1e-5)).eval()


def qwen2() -> torch.nn.Module:
    """Qwen2: q/k/v biases (random here: transformers initialises them to zero, which would
    hide a bias written in the wrong RoPE order), tied embeddings."""
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(1)
    model = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
        num_attention_heads=4, num_key_value_heads=2, tie_word_embeddings=True)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias"):
                p.normal_(0.0, 0.5)
    return model


def token_ids(seed: int = 0) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randint(3, VOCAB, (1, SEQ), generator=g)


def trace(model: torch.nn.Module) -> edgecc.Program:
    return edgecc.trace(model, (token_ids(),))


def llama_256(layers: int = 2, ffn: int = 320) -> torch.nn.Module:
    """Rows of 256 (hidden) and ``ffn`` (ffn_down's input; 320: one Q4_K does not take,
    llama.cpp's K-quant fallback)."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(
        vocab_size=VOCAB, hidden_size=256, intermediate_size=ffn, num_hidden_layers=layers,
        num_attention_heads=4, num_key_value_heads=2, rms_norm_eps=1e-5)).eval()
