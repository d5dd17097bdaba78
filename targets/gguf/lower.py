"""Lower a program for ``-t gguf``: one GGUF v3 file (``llama`` architecture) for llama.cpp.

Weights are written as the program holds them, never re-quantized
(``carry_quantization=false``: every weight as float, quantized ones dequantized exactly):

====================================================  =========  ==============================
edgecc weight (``edgecc.dequantize`` of stored codes)  GGUF type  exactness
====================================================  =========  ==============================
float                                                  F32        exact (F16 by option: rounded)
4-bit, ``q - zero_point`` in [-8, 7] (symmetric int4)  Q4_0       bit-exact (nib = q - z + 8)
4-bit, any other zero point (asymmetric)               Q4_1       m = fp16(-d·z): 1 fp16 rounding
8-bit, ``q - zero_point`` in [-16, 15] (5-bit codes)  Q5_0       bit-exact (q = q - z + 16)
8-bit, ``q - zero_point`` in [-128, 127]               Q8_0       bit-exact
symmetric int4 g32 with scales on Q4_K's grid          Q4_K       bit-exact (``q4k``)
4-bit + float offset (``edgecc.dequantize_offset``),   Q4_K       bit-exact (``q4k``)
  scales and offsets on Q4_K's grid (6-bit sc, m)
4-bit + float offset, fp16 scales and offsets          Q4_1       bit-exact (x = d·q + m)
8-bit, [-32, 31], groups of 16, scales on Q6_K's grid  Q6_K       bit-exact (``blocks``)
====================================================  =========  ==============================

Blocks are 32 weights along a row (the input dimension), so a per-group weight needs a
group size that is a multiple of 32 along that axis (per-channel and per-tensor scales are
repeated into every block), and its scales must be fp16 values (GGUF stores fp16 ``d``:
quantize with ``scale_dtype=float16``; 4-bit schemes default to it). Anything else -- a
float8 weight, a scaled float16 weight, a group of 16, float32 scales -- stops the lowering
with one line naming the layer and why. The q / k rows are permuted for llama.cpp's RoPE
(``edgecc.gguf_import.layout``), which commutes with row-wise blocks.

A program quantized by ``edgecc.llm.quantize_gguf_mix`` (llama.cpp's per-tensor types,
e.g. Q4_K_M) records in ``graph_module.meta["gguf"]["types"]`` the type each tensor was
meant to get; the report's ``fallback`` lists those written as another type and why
(``{"blk.0.attn_q.weight": {"wanted": "Q4_K", "written": "Q5_0", "reason": ...}}``).
"""

from __future__ import annotations

import dataclasses
import os
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from edgecc.errors import LoweringError
from edgecc.gguf_import import blocks
from edgecc.gguf_import.layout import PROGRAM_META, permute_rope
from edgecc.program import Program
from edgecc.quant import broadcast_param, node_params, unpack_int4
from edgecc.target import Artifact, Lowered
from edgecc.targets.gguf import q4k
from edgecc.targets.gguf.partition import Decoder, Tensor, recognise

if TYPE_CHECKING:
    from edgecc.targets.gguf.target import GgufOptions

MODEL = "model.gguf"
README = "README.txt"
ARCH = "llama"


@dataclasses.dataclass(frozen=True)
class Encoded:
    data: np.ndarray  # float32 / float16 values, or packed block bytes [rows, bytes]
    ggml_type: str  # "F32", "F16", "Q4_0", "Q4_1", "Q5_0", "Q8_0", "Q4_K", "Q6_K"
    max_rounding: float = 0.0  # largest change of a dequantized weight (Q4_1's fp16 min)


def lower_program(program: Program, output_dir: str, options: GgufOptions) -> Lowered:
    import gguf

    decoder = recognise(program, context_length=options.context_length)
    encoded = {t.name: _encode(program, t, options) for t in decoder.tensors}
    path = os.path.join(output_dir, MODEL)
    try:
        _write(path, program, decoder, encoded, options)
    except OSError as exc:
        raise LoweringError(f"-t gguf: could not write '{path}': {exc}") from exc
    counts: dict[str, int] = {}
    for e in encoded.values():
        counts[e.ggml_type] = counts.get(e.ggml_type, 0) + 1
    types = ", ".join(f"{n} {k}" for k, n in sorted(counts.items()))
    desc = (f"GGUF v3, {ARCH} architecture, {decoder.hparams.n_layer} layers, "
            f"{len(encoded)} tensors ({types}){', tied embeddings' if decoder.tied else ''}")
    report = {
        "architecture": ARCH,
        "hparams": dataclasses.asdict(decoder.hparams),
        "tensor_types": counts,
        "tied_embeddings": decoder.tied,
        "max_q4_1_min_rounding": max((e.max_rounding for e in encoded.values()), default=0.0),
        "gguf_version": gguf.GGUF_VERSION,
    }
    planned = program.graph_module.meta.get(PROGRAM_META, {}).get("types")
    if planned:
        report["fallback"] = _fallback(planned, encoded)
    _write_readme(output_dir, desc)
    return Lowered([Artifact(MODEL, "model", desc), Artifact(README, "docs", "how to run it")],
                   report)


# -- weights -------------------------------------------------------------------------------

def _encode(program: Program, t: Tensor, options: GgufOptions) -> Encoded:
    if program.is_constant(t.node) or not options.carry_quantization:
        if program.is_constant(t.node):
            value = program.tensor(t.node).detach().to(torch.float32).numpy()
        else:
            params = node_params(t.node, program.tensor)
            value = params.dequantize(program.tensor(t.node.args[0])).numpy()
        float16 = options.float_type == "F16" and value.ndim == 2
        out = Encoded(value.astype(np.float16) if float16 else value,
                      "F16" if float16 else "F32")
    else:
        out = _encode_quantized(program, t)
    if t.rope_heads:
        out = dataclasses.replace(out, data=permute_rope(out.data, t.rope_heads))
    return out


def _encode_quantized(program: Program, t: Tensor) -> Encoded:
    where = f"-t gguf: layer '{t.source}'"
    params = node_params(t.node, program.tensor)
    fmt = params.format
    stored = program.tensor(t.node.args[0])
    if fmt.is_float or fmt.bits not in (4, 8):
        raise LoweringError(f"{where} is quantized to {params.describe()}; GGUF carries "
                            "integer 4-bit (Q4_0 / Q4_1) and 8-bit (Q8_0) blocks only")
    codes = (unpack_int4(stored, fmt.signed) if fmt.packed else stored).to(torch.int32)
    if codes.dim() != 2:
        raise LoweringError(f"{where}: a {codes.dim()}-D quantized weight; GGUF blocks are rows "
                            "of a 2-D matrix")
    rows, cols = codes.shape
    axis = params.axis % 2
    if (fmt.bits == 8 and params.granularity == "per-block" and axis == 1
            and params.block_size == blocks.Q6_K_GROUP):
        packed = _q6_k(codes.numpy(), params, rows, cols)
        if packed is not None:  # a Q6_K weight (6-bit codes, scales d * sc per 16)
            return Encoded(packed, "Q6_K")
    if params.granularity == "per-block" and (axis != 1 or params.block_size % blocks.BLOCK):
        raise LoweringError(f"{where} has groups of {params.block_size} along axis {axis}; GGUF "
                            f"blocks are {blocks.BLOCK} weights along a row (axis 1): quantize "
                            "with a group size that is a multiple of 32")
    if params.granularity == "per-axis" and axis != 0:
        raise LoweringError(f"{where} has one scale per column; GGUF blocks need scales per "
                            "row (axis 0) or per group of 32 along a row")
    if cols % blocks.BLOCK:
        raise LoweringError(f"{where}: rows of {cols} weights are not whole blocks of "
                            f"{blocks.BLOCK}")

    def per_block(p: torch.Tensor) -> np.ndarray:
        full = broadcast_param(p.to(torch.float32), (rows, cols), axis, params.block_size)
        full = torch.broadcast_to(full, (rows, cols))
        return full.reshape(rows, cols // blocks.BLOCK, blocks.BLOCK)[..., 0].numpy()

    d = per_block(params.scale)
    z = per_block(params.zero_point)
    centered = codes.numpy() - np.repeat(z, blocks.BLOCK, axis=1).astype(np.int32)
    if params.offset is not None:
        return _encode_offset(centered, d, per_block(params.offset), fmt.bits, where)
    if not np.array_equal(d.astype(np.float16).astype(np.float32), d):
        packed = q4k.encode_int4(centered, d) if fmt.bits == 4 else None
        if packed is not None:  # symmetric int4 on Q4_K's grid (quantize{weight_grid=q4_k})
            return Encoded(packed, "Q4_K")
        raise LoweringError(f"{where} has float32 scales; GGUF blocks hold fp16 scales, so "
                            "carrying them would re-quantize: quantize with "
                            "scale_dtype=float16 (or weight_grid=q4_k for Q4_K, rows of a "
                            "multiple of 256)")
    d16 = d.astype(np.float16)
    lo, hi = int(centered.min()), int(centered.max())
    if fmt.bits == 8:
        if lo < -128 or hi > 127:
            raise LoweringError(f"{where} is asymmetric 8-bit (q - zero_point spans {lo}..{hi}); "
                                "GGUF's 8-bit weight type Q8_0 has no offset: use symmetric "
                                "int8 weights")
        if lo >= -16 and hi <= 15:  # 5-bit codes (a Q5_0 weight): the same values, 5.5 bpw
            return Encoded(blocks.pack_q5_0((centered + 16).astype(np.uint8), d16), "Q5_0")
        return Encoded(blocks.pack_q8_0(centered.astype(np.int8), d16), "Q8_0")
    if lo >= -8 and hi <= 7:
        return Encoded(blocks.pack_q4_0((centered + 8).astype(np.uint8), d16), "Q4_0")
    # x = d * (q - z) = d * (q - qmin) + d * (qmin - z): nibble q - qmin, min d * (qmin - z)
    m = d * (fmt.qmin - z)
    m16 = m.astype(np.float16)
    nib = codes.numpy() - fmt.qmin
    rounding = float(np.abs(m16.astype(np.float32) - m).max())
    return Encoded(blocks.pack_q4_1(nib.astype(np.uint8), d16, m16), "Q4_1", rounding)


def _encode_offset(nib: np.ndarray, d: np.ndarray, offset: np.ndarray, bits: int, where: str
                   ) -> Encoded:
    """``(q - zero_point)·scale + offset`` (``edgecc.dequantize_offset``) per 32 weights:
    Q4_K when the scales and offsets are on its grid, else Q4_1 when both are fp16 values
    (``x = d·nib + m``); bit-exact either way."""
    lo, hi = int(nib.min()), int(nib.max())
    if bits != 4 or lo < 0 or hi > 15:
        raise LoweringError(f"{where} has a float offset with {bits}-bit values "
                            f"q - zero_point in {lo}..{hi}; GGUF's types with a min (Q4_K, "
                            "Q4_1) hold 4-bit values 0..15")
    packed = q4k.encode_offset(nib, d, offset)
    if packed is not None:  # quantize{weight_grid=q4_k, weight_symmetric=false}
        return Encoded(packed, "Q4_K")
    d16, m16 = d.astype(np.float16), offset.astype(np.float16)
    if (np.array_equal(d16.astype(np.float32), d)
            and np.array_equal(m16.astype(np.float32), offset)):
        return Encoded(blocks.pack_q4_1(nib.astype(np.uint8), d16, m16), "Q4_1")
    raise LoweringError(f"{where} has float offsets that are neither on Q4_K's grid (fp16 d / "
                        "dmin per 256 times 6-bit codes, rows of a multiple of 256) nor fp16 "
                        "values (Q4_1): quantize with weight_grid=q4_k")


def _q6_k(codes: np.ndarray, params: Any, rows: int, cols: int) -> np.ndarray | None:
    """Q6_K bytes of int8 codes in groups of 16 whose centred values are 6-bit and whose
    scales are ``d * sc`` (fp16 ``d`` per 256, int8 ``sc``); None otherwise."""
    if cols % blocks.Q6_K_SUPER:
        return None
    g = blocks.Q6_K_GROUP
    scale = params.scale.to(torch.float32).reshape(rows, cols // g).numpy()
    zero = params.zero_point.to(torch.int32).reshape(rows, cols // g).numpy()
    centered = codes.astype(np.int32) - np.repeat(zero, g, axis=1)
    if centered.min() < -32 or centered.max() > 31:
        return None
    grid = blocks.q6_k_grid(scale)
    if grid is None:
        return None
    return blocks.pack_q6_k((centered + 32).astype(np.uint8), *grid)


def _fallback(planned: dict[str, dict[str, str]], encoded: dict[str, Encoded]
              ) -> dict[str, dict[str, str]]:
    """The tensors written as another type than llama.cpp's rule gives them, and why."""
    out = {}
    for name, plan in planned.items():
        e = encoded.get(name)
        if e is None:
            continue
        if e.ggml_type != plan["wanted"]:
            reason = plan.get("reason") or f"the program holds it as {e.ggml_type}"
            if plan.get("chosen") and plan["chosen"] != e.ggml_type:
                reason += f" (planned {plan['chosen']}, the program holds {e.ggml_type})"
            out[name] = {"wanted": plan["wanted"], "written": e.ggml_type, "reason": reason}
    return out


# -- the file ------------------------------------------------------------------------------

def _write(path: str, program: Program, decoder: Decoder, encoded: dict[str, Encoded],
           options: GgufOptions) -> None:
    import gguf

    hp = decoder.hparams
    w = gguf.GGUFWriter(path, arch=ARCH)
    try:
        source = program.graph_module.meta.get(PROGRAM_META, {})
        w.add_name(options.name or source.get("name") or program.source)
        w.add_block_count(hp.n_layer)
        w.add_context_length(hp.context_length)
        w.add_embedding_length(hp.n_embd)
        w.add_feed_forward_length(hp.n_ff)
        w.add_head_count(hp.n_head)
        w.add_head_count_kv(hp.n_head_kv)
        w.add_key_length(hp.head_dim)
        w.add_value_length(hp.head_dim)
        w.add_rope_dimension_count(hp.head_dim)
        w.add_layer_norm_rms_eps(hp.rms_eps)
        w.add_rope_freq_base(hp.rope_theta)
        w.add_vocab_size(hp.n_vocab)
        w.add_file_type(_file_type(encoded))
        _write_tokenizer(w, program, hp.n_vocab)
        for name, e in encoded.items():
            if e.ggml_type in ("F32", "F16"):
                w.add_tensor(name, np.ascontiguousarray(e.data))
            else:
                w.add_tensor(name, np.ascontiguousarray(e.data),
                             raw_dtype=gguf.GGMLQuantizationType[e.ggml_type])
        w.write_header_to_file()
        w.write_kv_data_to_file()
        w.write_tensors_to_file()
    finally:
        w.close()


def _file_type(encoded: dict[str, Encoded]) -> int:
    """llama.cpp's ``general.file_type`` (``LLAMA_FTYPE_*``): the type of most 2-D weights."""
    ftypes = {"F32": 0, "F16": 1, "Q4_0": 2, "Q4_1": 3, "Q8_0": 7, "Q5_0": 8, "Q4_K": 14,
              "Q6_K": 18}
    counts: dict[str, int] = {}
    for e in encoded.values():
        if e.data.ndim == 2:
            counts[e.ggml_type] = counts.get(e.ggml_type, 0) + 1
    return ftypes[max(counts, key=lambda k: counts[k])] if counts else 0


def _write_tokenizer(w: Any, program: Program, n_vocab: int) -> None:
    """The tokenizer of the GGUF the program came from, or else a minimal SentencePiece-style
    vocabulary (``<unk>``, ``<s>``, ``</s>``, then placeholder tokens) so that llama.cpp's
    vocabulary calls work; token ids are what edgecc's program reads."""
    import gguf

    fields = program.graph_module.meta.get(PROGRAM_META, {}).get("tokenizer")
    if fields:
        for key, value, vtype, subtype in fields:
            w.add_key_value(key, value, gguf.GGUFValueType(vtype),
                            sub_type=gguf.GGUFValueType(subtype) if subtype is not None else None)
        return
    specials = ["<unk>", "<s>", "</s>"][:n_vocab]
    tokens = specials + [f"<t{i}>" for i in range(len(specials), n_vocab)]
    normal, unknown, control = (gguf.TokenType.NORMAL, gguf.TokenType.UNKNOWN,
                                gguf.TokenType.CONTROL)
    w.add_tokenizer_model("llama")
    w.add_token_list(tokens)
    w.add_token_scores([0.0] * n_vocab)
    w.add_token_types([unknown, control, control][:n_vocab] + [normal] * (n_vocab - 3))
    w.add_unk_token_id(0)
    w.add_bos_token_id(min(1, n_vocab - 1))
    w.add_eos_token_id(min(2, n_vocab - 1))
    w.add_add_bos_token(False)


def _write_readme(output_dir: str, description: str) -> None:
    with open(os.path.join(os.path.dirname(__file__), README)) as f:
        template = f.read()
    with open(os.path.join(output_dir, README), "w") as f:
        f.write(template.format(description=description, model=MODEL))
