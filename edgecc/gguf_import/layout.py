"""How a Llama-family decoder's tensors are laid out in GGUF: names, shapes, RoPE order.

Shared by the GGUF importer (``edgecc.load("model.gguf")``) and the ``-t gguf`` target, so
the two directions cannot drift apart. Plain Python and numpy: no ``gguf`` import here.

Names (``transformers`` module path -> GGUF tensor, per layer ``N``)::

    model.embed_tokens   token_embd        model.norm                    output_norm
    lm_head              output (omitted when tied to token_embd)
    model.layers.N.input_layernorm  blk.N.attn_norm    .post_attention_layernorm  blk.N.ffn_norm
    model.layers.N.self_attn.{q,k,v,o}_proj  blk.N.attn_{q,k,v,output}
    model.layers.N.mlp.{gate,up,down}_proj   blk.N.ffn_{gate,up,down}

RoPE: llama.cpp's ``llama`` architecture rotates adjacent pairs (``x[2i], x[2i+1]``);
``transformers`` rotates halves (``x[i], x[i + d/2]``). The q / k projections' output rows
(and biases) are therefore permuted per head when written (``permute_rope``) and permuted
back when read (``unpermute_rope``), as llama.cpp's own converter does. ``qwen2`` files use
llama.cpp's NEOX RoPE, which is the halves order: no permutation.
"""

from __future__ import annotations

import dataclasses
import re

import numpy as np

# ``Program.graph_module.meta`` key under which the importer leaves what a GGUF file said
# beyond its tensors (``{"hparams": HParams as a dict, "tokenizer": [(key, value, type,
# subtype), ...], "source": path, "dequantized": {tensor: type}}``), so that the ``-t gguf``
# target writes the same hyper-parameters and tokenizer back
PROGRAM_META = "gguf"


@dataclasses.dataclass(frozen=True)
class HParams:
    """A Llama-family decoder's hyper-parameters, as GGUF's ``{arch}.*`` keys hold them."""

    n_layer: int
    n_embd: int
    n_ff: int
    n_head: int
    n_head_kv: int
    head_dim: int
    n_vocab: int
    rms_eps: float
    rope_theta: float
    context_length: int


# GGUF architectures edgecc reads, and whether their q/k rows are stored RoPE-permuted
ARCHITECTURES = {"llama": True, "mistral": True, "qwen2": False}

GLOBAL_NAMES = {
    "model.embed_tokens": "token_embd",
    "model.norm": "output_norm",
    "lm_head": "output",
}
LAYER_NAMES = {
    "input_layernorm": "attn_norm",
    "post_attention_layernorm": "ffn_norm",
    "self_attn.q_proj": "attn_q",
    "self_attn.k_proj": "attn_k",
    "self_attn.v_proj": "attn_v",
    "self_attn.o_proj": "attn_output",
    "mlp.gate_proj": "ffn_gate",
    "mlp.up_proj": "ffn_up",
    "mlp.down_proj": "ffn_down",
}
_LAYER = re.compile(r"^model\.layers\.(\d+)\.(.+)$")
_BLOCK = re.compile(r"^blk\.(\d+)\.(.+)$")


def gguf_name(module_path: str) -> str | None:
    """The GGUF base name (no ``.weight``) of a transformers module path, or None."""
    if module_path in GLOBAL_NAMES:
        return GLOBAL_NAMES[module_path]
    m = _LAYER.match(module_path)
    if m and m.group(2) in LAYER_NAMES:
        return f"blk.{m.group(1)}.{LAYER_NAMES[m.group(2)]}"
    return None


def hf_name(gguf_base: str) -> str | None:
    """The transformers module path of a GGUF base name (inverse of ``gguf_name``)."""
    for hf, g in GLOBAL_NAMES.items():
        if g == gguf_base:
            return hf
    m = _BLOCK.match(gguf_base)
    if m:
        for hf, g in LAYER_NAMES.items():
            if g == m.group(2):
                return f"model.layers.{m.group(1)}.{hf}"
    return None


def rope_heads(gguf_base: str, n_head: int, n_head_kv: int) -> int:
    """How many heads a tensor's rows are permuted over (0: not a RoPE'd projection)."""
    if gguf_base.endswith(".attn_q"):
        return n_head
    if gguf_base.endswith(".attn_k"):
        return n_head_kv
    return 0


def permute_rope(w: np.ndarray, n_head: int) -> np.ndarray:
    """transformers' half-rotation row order -> llama.cpp's pair order, per head."""
    return np.ascontiguousarray(
        w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:])
        .swapaxes(1, 2).reshape(w.shape))


def unpermute_rope(w: np.ndarray, n_head: int) -> np.ndarray:
    """The inverse of ``permute_rope``."""
    return np.ascontiguousarray(
        w.reshape(n_head, w.shape[0] // n_head // 2, 2, *w.shape[1:])
        .swapaxes(1, 2).reshape(w.shape))
