"""GGUF -> ``Program``: a Llama-family decoder file rebuilt as a ``transformers`` model and
traced, with the weights llama.cpp would compute with.

Steps: read the file (``gguf.GGUFReader``, memory-mapped); check the architecture and the
hyper-parameters; turn every tensor into the weight ``transformers`` expects (GGUF's
reversed shapes, q / k rows un-permuted for ``llama`` / ``mistral`` files); build a
``LlamaForCausalLM`` (``Qwen2ForCausalLM`` when the attention has q / k / v biases but no
output bias -- what ``qwen2`` files and edgecc's own exports of Qwen2 hold); trace it;
then put the tensors edgecc's quantization holds exactly back as quantized weights.

What each tensor type becomes (decided per the exactness of edgecc's representation,
``edgecc.quant``: ``y = (q - zero_point) * scale`` with an integer zero point)::

    F32, F16, BF16   float32 (exact)
    Q8_0             int8 codes, fp16 scale per 32, zero point 0        -- exact, carried
    Q5_0             int8 codes q - 16 (-16..15), fp16 scale per 32     -- exact, carried
    Q4_0             int4 codes (nib - 8), fp16 scale per 32, zero 0    -- exact, carried
    Q6_K             int8 codes q - 32 (-32..31), float32 scale d * sc per 16 (an fp16
                     times an int8: exact)                              -- exact, carried
    Q4_1             float32 by default: x = d * nib + m with a float min m. With
                     ``keep_q4_1=True``: carried, exactly, as
                     ``edgecc.dequantize_offset(nib:uint4, d, 0, m, 1, 32)`` (each tensor
                     checked value for value against the float decode; one that differs
                     stays float) -- the host target on x86 runs it with the weight-only
                     kernel (``targets/tvm/x86_wonly``: the 4-bit codes and fp16 d / m are
                     what it reads), the other TVM targets in float, ``-t gguf`` writes it
                     back as Q4_1 bit-exactly. Why not by default: an imported Q4_1 model
                     is the float source that edgecc's own quantizations start from (the
                     quantize pass and ``quantize_gguf_mix`` skip weights that are already
                     quantized, so ``quantize{scheme=w8a16}`` would keep them 4-bit:
                     bench/llm.py's w8 / w4, llm_quality's tables)
    other types      float32 through ``gguf.quants.dequantize`` (Q4_K, Q5_K, Q5_1, IQ*);
                     ``strict=True`` refuses them

The types dequantized are listed in ``program.graph_module.meta["gguf"]["dequantized"]``,
with the hyper-parameters and the tokenizer / chat template keys (``layout.PROGRAM_META``),
which ``-t gguf`` writes back.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from edgecc.errors import ModelLoadError, one_line
from edgecc.gguf_import import blocks
from edgecc.gguf_import.layout import (
    ARCHITECTURES, PROGRAM_META, HParams, hf_name, rope_heads, unpermute_rope,
)
from edgecc.program import Program

log = logging.getLogger(__name__)

CARRIED = ("Q8_0", "Q6_K", "Q5_0", "Q4_0")  # GGUF types kept as edgecc quantization
Q4_1 = "Q4_1"  # carried as dequantize_offset with keep_q4_1=True
FLOAT_TYPES = ("F32", "F16", "BF16")


class GgufImportError(ModelLoadError):
    """A GGUF file edgecc cannot read: corrupt, truncated, or of an unsupported kind."""


@dataclasses.dataclass
class GgufWeight:
    """One tensor of a GGUF file, in ``transformers``' layout (q / k rows un-permuted)."""

    value: np.ndarray  # float32: the values llama.cpp computes with
    kind: str  # GGUF type name ("F32", "Q8_0", "Q4_1", ...)
    codes: np.ndarray | None = None  # CARRIED types: centred int codes [rows, cols]
    scales: np.ndarray | None = None  # [rows, cols / block]; x = scales * codes
    block: int = 32  # weights per scale along a row (Q6_K: 16)
    offsets: np.ndarray | None = None  # Q4_1 (keep_q4_1): x = scales * codes + offsets


@dataclasses.dataclass
class GgufModel:
    """What ``read_gguf`` gives: a GGUF file as a ``transformers`` model plus what edgecc
    keeps of it beside the model.

    ``model``     ``LlamaForCausalLM`` / ``Qwen2ForCausalLM`` (eval mode) with the float
                  weights llama.cpp computes with (quantized tensors dequantized)
    ``weights``   transformers parameter name -> ``GgufWeight`` (the codes and scales of
                  the carried types, for ``carry_quantization``)
    ``meta``      ``{"source", "architecture", "name", "hparams", "tokenizer",
                  "dequantized"}``: what ``load_gguf`` leaves in
                  ``program.graph_module.meta[PROGRAM_META]`` and ``-t gguf`` writes back
    ``hparams``   the ``HParams`` the file declares
    """

    model: torch.nn.Module
    weights: dict[str, GgufWeight]
    meta: dict[str, Any]
    hparams: HParams

    @property
    def tied(self) -> bool:
        return bool(self.model.config.tie_word_embeddings)


def read_gguf(path: str | os.PathLike[str], *, strict: bool = False, keep_q4_1: bool = False
              ) -> GgufModel:
    """Read a Llama-family GGUF file into a ``transformers`` model (not traced). Raises
    ``GgufImportError`` (one line) for a missing, truncated or corrupt file, an unsupported
    architecture or RoPE scaling, and with ``strict`` a tensor type edgecc would dequantize.
    ``keep_q4_1``: Q4_1 tensors keep their codes (module docstring)."""
    path = os.fspath(path)
    reader = _open(path)
    arch = _string(reader, "general.architecture", path)
    if arch not in ARCHITECTURES:
        raise GgufImportError(f"'{path}': GGUF architecture '{arch}' is not supported; edgecc "
                              f"reads {', '.join(ARCHITECTURES)}")
    hp = _hparams(reader, arch, path)
    scaling = reader.fields.get(f"{arch}.rope.scaling.type")
    if scaling is not None and str(scaling.contents()) not in ("none", ""):
        raise GgufImportError(f"'{path}': RoPE scaling '{scaling.contents()}' is not supported "
                              "(plain RoPE only)")
    try:
        weights = _weights(reader, arch, hp, strict, path, keep_q4_1)
    except GgufImportError:
        raise
    except Exception as exc:  # numpy on a truncated / corrupt tensor region
        raise GgufImportError(f"'{path}': cannot read the tensors (truncated or corrupt?): "
                              f"{one_line(exc)}") from exc
    model = _build_model(weights, hp, path)
    dequantized = {n: w.kind for n, w in weights.items()
                   if w.codes is None and w.kind not in FLOAT_TYPES}
    meta = {"source": path, "architecture": arch,
            "name": str(_field(reader, "general.name", path, os.path.basename(path))),
            "hparams": dataclasses.asdict(hp), "tokenizer": _tokenizer_fields(reader),
            "dequantized": dequantized}
    return GgufModel(model, weights, meta, hp)


def load_gguf(path: str | os.PathLike[str], *, seq_len: int = 8, strict: bool = False,
              keep_q4_1: bool = False) -> Program:
    """Import a Llama-family GGUF file as a ``Program`` taking ``input_ids [1, seq]`` (``seq``
    dynamic up to the context length; ``seq_len`` is the example's) and returning logits and
    the KV cache (see the module docstring for the weights)."""
    path = os.fspath(path)
    g = read_gguf(path, strict=strict, keep_q4_1=keep_q4_1)
    import edgecc

    hp = g.hparams
    ids = torch.arange(seq_len, dtype=torch.int64).reshape(1, seq_len) % hp.n_vocab
    seq = torch.export.Dim("seq", min=1, max=hp.context_length)
    program = edgecc.trace(g.model, (ids,), dynamic_shapes=({1: seq},))
    program.source = os.path.basename(path)
    carry_quantization(program, g.weights, tied=g.tied)
    if g.meta["dequantized"]:
        kinds = sorted(set(g.meta["dequantized"].values()))
        log.warning("'%s': %d tensors of type %s imported as float32 (edgecc's quantization "
                    "holds only %s exactly%s)", path, len(g.meta["dequantized"]),
                    ", ".join(kinds), " / ".join(CARRIED),
                    "; Q4_1 with keep_q4_1=True" if Q4_1 in kinds else "")
    program.graph_module.meta[PROGRAM_META] = g.meta
    return program


# -- reading -------------------------------------------------------------------------------

def _open(path: str) -> Any:
    import gguf

    if not os.path.exists(path):
        raise GgufImportError(f"model file '{path}' does not exist")
    try:
        return gguf.GGUFReader(path)
    except Exception as exc:
        raise GgufImportError(f"'{path}' is not a readable GGUF file (truncated or corrupt?): "
                              f"{one_line(exc)}") from exc


def _field(reader: Any, key: str, path: str, default: Any = None) -> Any:
    field = reader.fields.get(key)
    if field is None:
        if default is not None:
            return default
        raise GgufImportError(f"'{path}': the GGUF metadata lacks '{key}'")
    return field.contents()


def _string(reader: Any, key: str, path: str) -> str:
    return str(_field(reader, key, path))


def _hparams(reader: Any, arch: str, path: str) -> HParams:
    def f(key: str, default: Any = None) -> Any:
        return _field(reader, f"{arch}.{key}", path, default)

    n_embd, n_head = int(f("embedding_length")), int(f("attention.head_count"))
    head_dim = int(f("attention.key_length", n_embd // n_head))
    tokens = reader.fields.get("tokenizer.ggml.tokens")
    n_vocab = int(f("vocab_size", len(tokens.data) if tokens is not None else None))
    if int(f("rope.dimension_count", head_dim)) != head_dim:
        raise GgufImportError(f"'{path}': partial RoPE (rope.dimension_count != head size) is "
                              "not supported")
    return HParams(
        n_layer=int(f("block_count")), n_embd=n_embd, n_ff=int(f("feed_forward_length")),
        n_head=n_head, n_head_kv=int(f("attention.head_count_kv", n_head)),
        head_dim=head_dim, n_vocab=n_vocab,
        rms_eps=float(f("attention.layer_norm_rms_epsilon")),
        rope_theta=float(f("rope.freq_base", 10000.0)),
        context_length=int(f("context_length", 2048)))


def _weights(reader: Any, arch: str, hp: HParams, strict: bool, path: str,
             keep_q4_1: bool = False) -> dict[str, GgufWeight]:
    from gguf.quants import dequantize

    permuted = ARCHITECTURES[arch]
    out: dict[str, GgufWeight] = {}
    for t in reader.tensors:
        base, _, suffix = t.name.rpartition(".")
        module = hf_name(base)
        if module is None or suffix not in ("weight", "bias"):
            raise GgufImportError(f"'{path}': tensor '{t.name}' is not part of a Llama-family "
                                  "decoder edgecc knows")
        kind = t.tensor_type.name
        if strict and kind not in CARRIED + FLOAT_TYPES + ((Q4_1,) if keep_q4_1 else ()):
            raise GgufImportError(f"'{path}': tensor '{t.name}' is {kind}, which edgecc would "
                                  "dequantize to float (strict)")
        shape = tuple(int(d) for d in reversed(t.shape))  # GGUF lists ne0 (columns) first
        raw = np.asarray(t.data)
        heads = rope_heads(base, hp.n_head, hp.n_head_kv) if permuted else 0
        if heads:  # a row permutation: applied to whole rows of blocks before decoding
            raw = unpermute_rope(raw.reshape(shape[0], -1), heads)
        value = dequantize(raw, t.tensor_type).astype(np.float32).reshape(shape)
        w = GgufWeight(value, kind)
        if kind == "Q8_0":
            w.codes, w.scales = blocks.unpack_q8_0(raw.reshape(shape[0], -1))
        elif kind == "Q5_0":
            q5, w.scales = blocks.unpack_q5_0(raw.reshape(shape[0], -1))
            w.codes = q5.astype(np.int8) - 16
        elif kind == "Q6_K":
            q6, d, sc = blocks.unpack_q6_k(raw.reshape(shape[0], -1))
            w.codes = q6.astype(np.int8) - 32
            w.scales = (d.astype(np.float32)[..., None] * sc).reshape(shape[0], -1)
            w.block = blocks.Q6_K_GROUP
        elif kind == "Q4_0":
            nib, w.scales = blocks.unpack_q4_0(raw.reshape(shape[0], -1))
            w.codes = nib.astype(np.int8) - 8
        elif kind == Q4_1 and keep_q4_1 and len(shape) == 2:
            nib, d, m = blocks.unpack_q4_1(raw.reshape(shape[0], -1))
            d, m = d.astype(np.float32), m.astype(np.float32)
            # exactly edgecc.dequantize_offset's float32 (q - 0) * d + m, or it stays float
            again = (nib.astype(np.float32).reshape(shape[0], -1, 32) * d[..., None]
                     + m[..., None]).reshape(shape)
            if np.array_equal(again, value):
                w.codes, w.scales, w.offsets = nib, d, m
        out[f"{module}.{suffix}"] = w
    return out


def _tokenizer_fields(reader: Any) -> list[tuple[str, Any, int, int | None]]:
    """The tokenizer keys (tokens, merges, special ids, chat template) as
    ``(key, value, value type, array element type)``."""
    out = []
    for key, field in reader.fields.items():
        if key.startswith("tokenizer."):
            types = [int(t) for t in field.types]
            out.append((key, field.contents(), types[0], types[-1] if len(types) > 1 else None))
    return out


# -- the model -----------------------------------------------------------------------------

def _build_model(weights: Mapping[str, GgufWeight], hp: HParams, path: str) -> torch.nn.Module:
    import transformers

    has = set(weights)
    tied = "lm_head.weight" not in has
    qkv_bias = "model.layers.0.self_attn.q_proj.bias" in has
    o_bias = "model.layers.0.self_attn.o_proj.bias" in has
    common = dict(vocab_size=hp.n_vocab, hidden_size=hp.n_embd, intermediate_size=hp.n_ff,
                  num_hidden_layers=hp.n_layer, num_attention_heads=hp.n_head,
                  num_key_value_heads=hp.n_head_kv, head_dim=hp.head_dim,
                  rms_norm_eps=hp.rms_eps, rope_theta=hp.rope_theta,
                  max_position_embeddings=hp.context_length, tie_word_embeddings=tied)
    if qkv_bias and not o_bias:
        common.pop("head_dim")
        if hp.head_dim * hp.n_head != hp.n_embd:
            raise GgufImportError(f"'{path}': q/k/v biases with a head size other than "
                                  "embedding / heads are not supported")
        config = transformers.Qwen2Config(**common)
        cls = transformers.Qwen2ForCausalLM
    else:
        config = transformers.LlamaConfig(attention_bias=qkv_bias, **common)
        cls = transformers.LlamaForCausalLM
    config.use_cache = True
    with torch.device("meta"):  # no random initialisation: every weight comes from the file
        model = cls(config)
    model = model.to_empty(device="cpu")
    # the RoPE frequencies are a computed buffer, not in the file: rebuilt on the CPU
    model.model.rotary_emb = type(model.model.rotary_emb)(config=config)
    state = {k: torch.from_numpy(w.value) for k, w in weights.items()}
    expected = set(model.state_dict()) - ({"lm_head.weight"} if tied else set())
    missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
    if missing or extra:
        what = f"lacks '{missing[0]}'" if missing else f"has an unexpected '{extra[0]}'"
        raise GgufImportError(f"'{path}': the file {what} for a {cls.__name__} of "
                              f"{hp.n_layer} layers")
    model.load_state_dict(state, strict=False)
    if tied:
        model.tie_weights()
    return model.eval()


# -- quantization carried ------------------------------------------------------------------

def carry_quantization(program: Program, weights: Mapping[str, GgufWeight], *,
                       tied: bool) -> int:
    """Replace (in place) each float weight of ``program`` whose ``GgufWeight`` has codes by
    ``edgecc.dequantize`` of those codes; returns how many were replaced. ``weights`` is
    keyed by the transformers parameter name (``GgufModel.weights``); ``tied``: the output
    matrix reads ``model.embed_tokens.weight``'s entry. The values do not change (the
    program was traced with ``value``, which equals ``scales * codes``)::

        before: %w = get_attr[model.layers.0.mlp.up_proj.weight]   float32 [F, H]
        after:  %q, %s, %z = get_attr[..._qweight, ..._w_scale, ..._w_zero_point]
                %w = edgecc.dequantize(%q, %s, %z, 1, 32 | 16, "int4" | "int8", float32)
    """
    from edgecc.quant import DEQUANTIZE, DEQUANTIZE_OFFSET, pack_int4

    graph = program.graph
    changed = 0
    for node in list(program.nodes("get_attr")):
        name = str(node.target)
        key = "model.embed_tokens.weight" if tied and name == "lm_head.weight" else name
        w = weights.get(key)
        if w is None or w.codes is None or not node.users:
            continue
        int4 = w.kind in ("Q4_0", Q4_1)
        codes = torch.from_numpy(np.ascontiguousarray(w.codes))
        stored = pack_int4(codes.to(torch.int16)) if int4 else codes.to(torch.int8)
        scale = torch.from_numpy(np.ascontiguousarray(w.scales))
        zero = torch.zeros(scale.shape, dtype=torch.uint8 if w.offsets is not None
                           else torch.int8)
        prefix = key.removesuffix(".weight")
        first = min(node.users, key=lambda u: list(graph.nodes).index(u))
        q = program.add_constant(f"{prefix}_qweight", stored, before=first)
        s = program.add_constant(f"{prefix}_w_scale", scale, before=first)
        z = program.add_constant(f"{prefix}_w_zero_point", zero, before=first)
        with graph.inserting_before(first):
            if w.offsets is not None:  # Q4_1: (nib - 0) * d + m
                o = program.add_constant(f"{prefix}_w_offset", torch.from_numpy(
                    np.ascontiguousarray(w.offsets)), before=first)
                dq = graph.call_function(DEQUANTIZE_OFFSET, (q, s, z, o, 1, w.block, "uint4",
                                                             torch.float32))
            else:
                dq = graph.call_function(DEQUANTIZE, (q, s, z, 1, w.block,
                                                      "int4" if int4 else "int8",
                                                      torch.float32))
        node.replace_all_uses_with(dq)
        graph.erase_node(node)
        *owner, leaf = name.split(".")
        delattr(program.graph_module.get_submodule(".".join(owner)), leaf)
        changed += 1
    if changed:
        graph.lint()
        program.graph_module.recompile()
        program.refresh_metadata()
    return changed
