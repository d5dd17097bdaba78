"""Decoder LLMs as programs with an explicit, static-size KV cache.

    dec = edgecc.llm.export_decoder(LlamaForCausalLM(...), max_seq_len=256)  # or "x.gguf"
    dec = dec.apply("quantize{scheme=w4a16,method=gptq}",
                    calibration=dec.calibration(token_sequences))     # any edgecc pipeline
    prefill, decode = dec.prefill(32), dec.decode()                   # static Programs

One traced step function serves both phases (``DecoderStep``)::

    step(input_ids i64[1, T], input_pos i64[1], k_cache f32[L, KV, S, D], v_cache f32[L, KV, S, D])
      -> (logits f32[1, T, V], k_new f32[L, KV, T, D], v_new f32[L, KV, T, D])

The ``T`` new tokens (positions ``input_pos .. input_pos + T - 1``) attend to the cache
slots before ``input_pos`` and to the new tokens up to their own (a boolean mask over
``S + T`` keys: shapes never change). The step returns only the new keys and values; the
runtime writes them into its cache in place (``write_cache``: ``cache[:, :, p:p+T] =
new``). ``S`` is ``max_seq_len``, ``L`` layers, ``KV`` key/value heads, ``D`` the head size.

Why explicit cache inputs and outputs rather than program state (ExecuTorch's mutable
buffers): edgecc's IR is functional (``torch.export`` graphs with flat tensor inputs and
outputs), every pass, the verifier and TVM Relax's importer take it as it is, and the
runtime owns the cache memory. Returning the whole updated cache (``index_put``, as this
module first did) made every step copy the cache several times — the write, the stack of
all layers, GQA's ``expand`` to the query heads — and, in TVM, spend about a quarter of a
SmolLM2-135M decode step on it; now the cache is read once a layer and written by the
runtime only where it changes::

    before: k_all = k_cache[i].index_put(slots, k)           # copy of the layer's cache
            sdpa(q [H, T], expand(k_all) [H, S])             # KV -> H heads: another copy
            return logits, stack(k_all...)                   # the whole cache again
    after:  k_all = cat(k_cache[i], k)                       # [KV, S + T]
            sdpa(q regrouped [KV, group*T], k_all [KV, S+T]) # no expansion
            return logits, stack(k...)                       # [L, KV, T, D]

What stays recognisable in the graph: RoPE (``cos`` / ``sin`` of ``inv_freq · position``,
``rotate_half``), GQA (the query heads of each key/value head as the rows of one
``scaled_dot_product_attention`` a layer), tied embeddings (``lm_head`` reads
``embed_tokens``' weight), and the parameter names of the ``transformers`` model
(``model.layers.N.self_attn.q_proj.weight``), so ``quantize{exclude=...}`` globs and ``-t gguf``'s recognition work.

The step is traced once with ``T`` dynamic (``DecoderPrograms.program``); passes run on
that one program, so prefill and decode always hold the same (quantized) weights.
``prefill(T)`` / ``decode()`` re-export it with ``T`` fixed, which is what the TVM targets
build (static shapes: one kernel set per phase). Prompts longer than the prefill length
run in chunks; the last chunk is padded, and the padding's cache entries lie at or beyond
the position every later step starts at (it sees only slots before it) until a decode
step overwrites them.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterable, Sequence
from typing import Any

import torch

from edgecc.errors import InputSpecError, ModelLoadError
from edgecc.program import Program, TensorSpec

INPUT_NAMES = ("input_ids", "input_pos", "k_cache", "v_cache")
FAMILIES = ("LlamaForCausalLM", "Qwen2ForCausalLM", "MistralForCausalLM")


class PromptTooLongError(InputSpecError):
    """A prompt (plus the tokens to generate) that does not fit the static KV cache."""


@dataclasses.dataclass(frozen=True)
class DecoderConfig:
    """The shape facts a runtime needs (stored in a bundle's ``decoder.json``)."""

    family: str  # "LlamaForCausalLM", "Qwen2ForCausalLM", ...
    n_layer: int
    n_head: int
    n_kv_head: int
    head_dim: int
    vocab_size: int
    max_seq_len: int
    tied_embeddings: bool
    rope_theta: float
    eos_token_ids: tuple[int, ...] = ()
    bos_token_id: int | None = None

    @property
    def cache_shape(self) -> tuple[int, int, int, int]:
        return (self.n_layer, self.n_kv_head, self.max_seq_len, self.head_dim)

    def to_json(self) -> dict[str, Any]:
        data = dataclasses.asdict(self)
        data["eos_token_ids"] = list(self.eos_token_ids)
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DecoderConfig:
        return cls(**{**data, "eos_token_ids": tuple(data.get("eos_token_ids", ()))})

    def empty_cache(self) -> tuple[torch.Tensor, torch.Tensor]:
        return torch.zeros(self.cache_shape), torch.zeros(self.cache_shape)


class DecoderStep(torch.nn.Module):
    """One step of a Llama-family decoder over a static KV cache (see the module docstring).

    Holds the ``transformers`` model's own submodules as ``model`` and ``lm_head``, so
    parameter names are the causal LM's. Only attention is written here (the cache and
    the mask); norms, projections and MLPs are the model's modules, called as they are.
    """

    def __init__(self, causal_lm: torch.nn.Module, max_seq_len: int):
        super().__init__()
        self.model = causal_lm.model
        self.lm_head = causal_lm.lm_head
        config = causal_lm.config
        self.n_head = config.num_attention_heads
        self.n_kv_head = getattr(config, "num_key_value_heads", None) or self.n_head
        self.head_dim = getattr(config, "head_dim", None) or config.hidden_size // self.n_head
        self.max_seq_len = max_seq_len

    def forward(self, input_ids: torch.Tensor, input_pos: torch.Tensor,
                k_cache: torch.Tensor, v_cache: torch.Tensor
                ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

        tokens = input_ids.shape[1]
        steps = torch.arange(tokens, dtype=torch.int64)
        positions = input_pos + steps  # [T]
        hidden = self.model.embed_tokens(input_ids)
        cos, sin = self.model.rotary_emb(hidden, positions[None])
        group = self.n_head // self.n_kv_head
        # the keys a token sees: the cache slots written before (slot < input_pos) and the
        # new tokens up to its own
        slots = torch.arange(self.max_seq_len, dtype=torch.int64)
        earlier = (slots < input_pos).expand(tokens, self.max_seq_len)  # [T, S]
        causal = steps[None, :] <= steps[:, None]  # [T, T]
        mask = torch.cat([earlier, causal], 1)  # [T, S+T]
        bias = torch.zeros(mask.shape).masked_fill(~mask, float("-inf"))
        scale = self.head_dim ** -0.5  # scaled_dot_product_attention's, and transformers'
        keys, values = [], []
        for i, layer in enumerate(self.model.layers):
            attn = layer.self_attn
            x = layer.input_layernorm(hidden)
            q = attn.q_proj(x).view(1, tokens, self.n_head, self.head_dim).transpose(1, 2)
            k = attn.k_proj(x).view(1, tokens, self.n_kv_head, self.head_dim).transpose(1, 2)
            v = attn.v_proj(x).view(1, tokens, self.n_kv_head, self.head_dim).transpose(1, 2)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            k, v = k.contiguous(), v.contiguous()
            keys.append(k[0])
            values.append(v[0])
            # the layer's cache (read, never copied whole) followed by the new entries
            k_all = torch.cat([k_cache.narrow(0, i, 1), k], 2)  # [1, KV, S+T, D]
            v_all = torch.cat([v_cache.narrow(0, i, 1), v], 2)
            # GQA: the `group` query heads of a key/value head attend to it together (a
            # broadcast batch dimension; query head h reads key/value head h // group, as
            # transformers' repeat_kv, without copying the cache `group` times)
            q_grouped = q.view(1, self.n_kv_head, group, tokens, self.head_dim)
            scores = torch.matmul(q_grouped, k_all.transpose(2, 3)[:, :, None]) * scale
            probs = torch.softmax(scores + bias, dim=-1)  # [1, KV, group, T, S+T]
            o = torch.matmul(probs, v_all[:, :, None])  # [1, KV, group, T, D]
            o = o.view(1, self.n_head, tokens, self.head_dim)
            hidden = hidden + attn.o_proj(o.transpose(1, 2).reshape(1, tokens, -1))
            hidden = hidden + layer.mlp(layer.post_attention_layernorm(hidden))
        logits = self.lm_head(self.model.norm(hidden))
        return logits, torch.stack(keys), torch.stack(values)


def write_cache(cache: torch.Tensor, new: torch.Tensor, start: int) -> None:
    """Write a step's new keys or values ``[L, KV, T, D]`` into ``cache [L, KV, S, D]`` at
    positions ``start .. start + T - 1``, in place (what a runtime does after each step)."""
    cache[:, :, start:start + new.shape[2]] = new


@dataclasses.dataclass
class DecoderPrograms:
    """A decoder step traced with a dynamic token count, and its static phases.

    ``program`` is the one passes run on (``apply``); ``prefill(T)`` and ``decode()``
    fix ``T`` for building. ``tokenizer`` is a ``transformers`` tokenizer or None;
    ``gguf_meta`` what a GGUF source said (hyper-parameters, tokenizer keys)."""

    program: Program
    config: DecoderConfig
    tokenizer: Any = None
    gguf_meta: dict[str, Any] | None = None

    def apply(self, pipeline: str, *, calibration: Iterable[Sequence[Any]] | None = None
              ) -> DecoderPrograms:
        """The decoder after an edgecc pipeline (passes' text), calibrated on
        ``calibration`` (step inputs: see ``calibration``); a new object."""
        from edgecc.pass_base import PassContext
        from edgecc.pass_manager import PassManager
        from edgecc.pipeline_text import parse_pipeline

        program = self.program.copy()
        batches = list(calibration) if calibration is not None else None
        context = PassContext(calibration=batches, original=self.program)
        PassManager(parse_pipeline(pipeline))(program, context=context)
        return dataclasses.replace(self, program=program)

    def step_inputs(self, token_ids: Sequence[int] | torch.Tensor, start: int = 0
                    ) -> tuple[torch.Tensor, ...]:
        """Inputs of one step: ``token_ids`` at ``start`` over an empty cache."""
        ids = torch.as_tensor(token_ids, dtype=torch.int64).reshape(1, -1)
        check_fits(ids.shape[1] + start, 0, self.config.max_seq_len)
        return (ids, torch.tensor([start], dtype=torch.int64), *self.config.empty_cache())

    def calibration(self, sequences: Iterable[Sequence[int] | torch.Tensor]
                    ) -> list[tuple[torch.Tensor, ...]]:
        """Calibration batches for the passes (GPTQ, AWQ, SmoothQuant, static activation
        ranges): each token sequence as one prefill from position 0."""
        return [self.step_inputs(s) for s in sequences]

    def prefill(self, tokens: int) -> Program:
        """The step with ``T = tokens`` (static)."""
        return specialize(self.program, tokens, self.config)

    def decode(self) -> Program:
        """The step with ``T = 1`` (static)."""
        return specialize(self.program, 1, self.config)


def check_fits(needed: int, new_tokens: int, max_seq_len: int) -> None:
    """``PromptTooLongError`` unless a prompt of ``needed`` tokens plus ``new_tokens``
    generated ones fits the cache."""
    if needed + new_tokens > max_seq_len or needed < 1:
        if needed < 1:
            raise PromptTooLongError("the prompt is empty: give at least one token")
        raise PromptTooLongError(
            f"a prompt of {needed} tokens" + (f" plus {new_tokens} to generate"
                                               if new_tokens else "")
            + f" does not fit the KV cache of {max_seq_len} positions: shorten the prompt, "
            f"generate fewer tokens, or export with a larger max_seq_len")


# -- export -------------------------------------------------------------------------------

def export_decoder(model: Any, *, max_seq_len: int = 256, tokenizer: Any = None,
                   strict: bool = False) -> DecoderPrograms:
    """A Llama-family causal LM -> ``DecoderPrograms`` with a KV cache of ``max_seq_len``.

    ``model``: a ``transformers`` ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` /
    ``MistralForCausalLM`` module, a ``.gguf`` path, or a ``Program`` that
    ``edgecc.load("x.gguf")`` made (its file is read again: the step needs the model,
    not the single-pass graph). GGUF weights keep their Q8_0 / Q4_0 quantization as
    edgecc quantization, as ``edgecc.load`` does; the tokenizer comes from the file.
    """
    if max_seq_len < 2:
        raise InputSpecError(f"max_seq_len={max_seq_len}: the KV cache needs at least 2 "
                             "positions")
    gguf_meta, weights = None, None
    if isinstance(model, Program):
        meta = model.graph_module.meta.get("gguf")
        if not meta or not os.path.exists(str(meta.get("source", ""))):
            raise ModelLoadError(
                "export_decoder takes a transformers causal LM, a .gguf path, or a Program "
                "edgecc.load made from a .gguf file that still exists; this Program is "
                f"'{model.source}': pass the nn.Module instead")
        model = meta["source"]
    if isinstance(model, (str, os.PathLike)):
        path = os.fspath(model)
        if not path.lower().endswith(".gguf"):
            raise ModelLoadError(f"'{path}': export_decoder reads .gguf files (or takes a "
                                 "transformers causal LM module)")
        model, weights, gguf_meta = _gguf_model(path, strict)
        if tokenizer is None:
            tokenizer = gguf_tokenizer(path)
    if not isinstance(model, torch.nn.Module):
        raise ModelLoadError(f"export_decoder cannot take a {type(model).__name__}: give a "
                             "transformers causal LM, a .gguf path or a Program from one")
    family = type(model).__name__
    if family not in FAMILIES or not hasattr(model, "model") \
            or not hasattr(model.model, "layers"):
        raise ModelLoadError(f"export_decoder supports {', '.join(FAMILIES)}, not {family}")
    config = _config(model, max_seq_len, tokenizer)
    step = DecoderStep(model, max_seq_len).eval()
    program = _trace(step, config)
    if weights is not None:
        from edgecc.gguf_import import carry_quantization

        carry_quantization(program, weights, tied=config.tied_embeddings)
    if gguf_meta is not None:
        program.graph_module.meta["gguf"] = gguf_meta
    return DecoderPrograms(program, config, tokenizer, gguf_meta)


def _config(model: torch.nn.Module, max_seq_len: int, tokenizer: Any) -> DecoderConfig:
    c = model.config
    n_head = c.num_attention_heads
    eos = getattr(c, "eos_token_id", None)
    if eos is None and tokenizer is not None:
        eos = getattr(tokenizer, "eos_token_id", None)
    eos_ids = tuple(eos) if isinstance(eos, (list, tuple)) else (() if eos is None else (eos,))
    tied = model.lm_head.weight is model.model.embed_tokens.weight
    return DecoderConfig(
        family=type(model).__name__, n_layer=c.num_hidden_layers, n_head=n_head,
        n_kv_head=getattr(c, "num_key_value_heads", None) or n_head,
        head_dim=getattr(c, "head_dim", None) or c.hidden_size // n_head,
        vocab_size=c.vocab_size, max_seq_len=max_seq_len, tied_embeddings=tied,
        rope_theta=float(getattr(c, "rope_theta", None)
                         or (getattr(c, "rope_parameters", None) or {}).get("rope_theta",
                                                                           10000.0)),
        eos_token_ids=tuple(int(e) for e in eos_ids),
        bos_token_id=getattr(c, "bos_token_id", None))


def _trace(step: DecoderStep, config: DecoderConfig) -> Program:
    import edgecc

    example_t = min(4, config.max_seq_len)
    ids = torch.arange(example_t, dtype=torch.int64).reshape(1, -1) % config.vocab_size
    pos = torch.zeros(1, dtype=torch.int64)
    k, v = config.empty_cache()
    tokens = torch.export.Dim("tokens", min=1, max=config.max_seq_len)
    program = edgecc.trace(step, (ids, pos, k, v), dynamic_shapes=({1: tokens}, None, None, None))
    _name_io(program)
    program.source = config.family
    return program


def _name_io(program: Program) -> None:
    program.input_specs = tuple(dataclasses.replace(s, name=n)
                                for s, n in zip(program.input_specs, INPUT_NAMES))
    program.output_specs = tuple(dataclasses.replace(s, name=n) for s, n in
                                 zip(program.output_specs, ("logits", "k_new", "v_new")))


def specialize(program: Program, tokens: int, config: DecoderConfig) -> Program:
    """``program`` (the step with a dynamic token count) re-exported with ``T = tokens``."""
    if not 1 <= tokens <= config.max_seq_len:
        raise InputSpecError(f"a step of {tokens} tokens does not fit the KV cache of "
                             f"{config.max_seq_len} positions")
    ids = torch.zeros(1, tokens, dtype=torch.int64)
    pos = torch.zeros(1, dtype=torch.int64)
    k, v = config.empty_cache()
    example = (ids, pos, k, v)
    # the same graph module (export reads it, never changes it: no copy of the weights)
    fixed = Program(program.graph_module,
                    [TensorSpec(s.name, tuple(x.shape), s.dtype)
                     for s, x in zip(program.input_specs, example)],
                    program.output_specs, example, source=program.source)
    static = Program.from_exported(fixed.export(), source=program.source)
    _name_io(static)
    static.graph_module.meta.update(program.graph_module.meta)
    return static


# -- GGUF sources --------------------------------------------------------------------------

def _gguf_model(path: str, strict: bool) -> tuple[torch.nn.Module, Any, dict[str, Any]]:
    """The ``transformers`` model a GGUF file describes, its weights (with the codes of
    the carried tensors) and the metadata ``edgecc.load`` records (``read_gguf``)."""
    from edgecc.gguf_import import read_gguf

    g = read_gguf(path, strict=strict)
    for key, value, *_ in g.meta["tokenizer"]:
        if key == "tokenizer.ggml.eos_token_id":
            g.model.config.eos_token_id = int(value)
        if key == "tokenizer.ggml.bos_token_id":
            g.model.config.bos_token_id = int(value)
    return g.model, g.weights, g.meta


def gguf_tokenizer(path: str) -> Any:
    """The file's tokenizer as a ``transformers`` fast tokenizer, or None when
    transformers cannot build one (a vocabulary without merges, ``no_vocab``)."""
    try:
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(os.path.dirname(os.path.abspath(path)),
                                             gguf_file=os.path.basename(path))
    except Exception:  # noqa: BLE001 - a file without a usable vocabulary: ids only
        return None
