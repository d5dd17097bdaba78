"""Which programs ``-t gguf`` writes: a Llama-family decoder, recognised tensor by tensor.

A GGUF file holds no graph: llama.cpp rebuilds the ``llama`` architecture from the
tensors' names and the hyper-parameters. So instead of tagging nodes, this module finds
every parameter the program reads and names its GGUF tensor, by the module that reads it
(``nn_module_stack``: ``model.layers.3.self_attn.q_proj`` -> ``blk.3.attn_q``; parameter
names as a fallback). A parameter with no GGUF name refuses the whole program with one
line naming it. The hyper-parameters come from the GGUF the program was imported from
(``PROGRAM_META``), else from the graph itself:

* heads / KV heads / head size: the ``view`` after the q / k projections (``[.., h, d]``);
* RMSNorm epsilon: the constant in ``rsqrt(mean(x^2) + eps)``;
* RoPE base: the simplest ``theta`` whose ``theta^(-2i/d)`` reproduces the program's
  ``inv_freq`` buffer in float32 (a frequency table that is not of that form -- llama3 /
  YaRN scaling -- is refused).

``LEGALIZATION`` undoes what llama.cpp has no tensor for: fused ``linear_act``
(``decompose-composites``) and pruning masks (``apply-masks``).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch
import torch.fx as fx

from edgecc.errors import LoweringError
from edgecc.gguf_import.layout import PROGRAM_META, HParams, gguf_name, rope_heads
from edgecc.passes import ApplyMasks, DecomposeComposites
from edgecc.pipeline_text import PassStep
from edgecc.program import Program, op_name
from edgecc.quant import is_dequantize, is_dequantize_offset, is_fake_quantize, is_quantize

LEGALIZATION = (PassStep(DecomposeComposites, DecomposeComposites.Options()),
                PassStep(ApplyMasks, ApplyMasks.Options()))

_ROPE_BUFFERS = ("inv_freq", "original_inv_freq")


@dataclasses.dataclass(frozen=True)
class Tensor:
    """One GGUF tensor and the program value it is written from."""

    name: str  # GGUF name, e.g. "blk.0.attn_q.weight"
    node: fx.Node  # a get_attr (float) or a dequantize(_offset) of stored codes
    source: str  # the module path / parameter it came from (for messages)
    rope_heads: int  # > 0: rows permuted for llama.cpp's RoPE over this many heads


@dataclasses.dataclass(frozen=True)
class Decoder:
    hparams: HParams
    tensors: list[Tensor]
    tied: bool  # lm_head reads token_embd (no "output.weight" written)


def module_path(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return list(stack.values())[-1][0] if stack else ""


def _reader_path(node: fx.Node) -> str:
    """The module path of the first layer reading ``node`` (through q / dq nodes)."""
    frontier = [node]
    for _ in range(4):
        frontier = [u for n in frontier for u in n.users]
        for n in frontier:
            if op_name(n) in ("aten.linear", "aten.embedding") and module_path(n):
                return module_path(n)
    return module_path(node) or node.name


def _weight_source(program: Program, node: Any, where: str) -> fx.Node:
    if program.is_constant(node):
        return node
    if is_dequantize(node) and all(program.is_constant(a) for a in node.args[:3]):
        return node
    if is_dequantize_offset(node) and all(program.is_constant(a) for a in node.args[:4]):
        return node
    what = op_name(node) if isinstance(node, fx.Node) else type(node).__name__
    raise LoweringError(f"-t gguf: the weight of '{where}' is computed ({what}), not a stored "
                        "tensor; GGUF holds stored weights only (low-rank factors and other "
                        "computed weights have no GGUF tensor)")


def recognise(program: Program, *, context_length: int = 0) -> Decoder:
    """The program as a Llama decoder: GGUF tensors and hyper-parameters, or a one-line
    ``LoweringError`` naming the first parameter that has no GGUF place."""
    found: dict[str, Tensor] = {}
    used: set[fx.Node] = set()

    def add(base: str, suffix: str, node: fx.Node, source: str) -> None:
        name = f"{base}.{suffix}"
        prev = found.get(name)
        if prev is not None and prev.node is not node:
            raise LoweringError(f"-t gguf: '{source}' and '{prev.source}' both map to the GGUF "
                                f"tensor '{name}' with different weights")
        found[name] = Tensor(name, node, source, 0)
        used.add(node)

    views: dict[str, tuple[int, int]] = {}
    for node in program.nodes("call_function"):
        op = op_name(node)
        if is_quantize(node) or is_fake_quantize(node):
            raise LoweringError(f"-t gguf: '{node.name}' quantizes an activation (the input of "
                                f"layer '{_reader_path(node)}'); GGUF stores weights "
                                "only (llama.cpp quantizes activations itself): use a "
                                "weight-only scheme (w4a16, w8a16)")
        if op == "aten.embedding" or op == "aten.linear":
            path = module_path(node)
            weight = node.args[0] if op == "aten.embedding" else node.args[1]
            source = _weight_source(program, weight, path or node.name)
            base = gguf_name(path) if path else None
            if base is None and program.is_constant(weight):
                base = gguf_name(str(weight.target).removesuffix(".weight"))
            if base is None:
                raise LoweringError(f"-t gguf: {op} '{node.name}' (module '{path or '?'}') is not "
                                    "part of a Llama decoder that GGUF's llama architecture "
                                    "names (model.layers.N.self_attn.q_proj, mlp.up_proj, ...)")
            add(base, "weight", source, path or str(weight))
            bias = node.args[2] if op == "aten.linear" and len(node.args) > 2 else None
            if bias is not None:
                add(base, "bias", _weight_source(program, bias, path + " bias"), path + " bias")
            if base.endswith((".attn_q", ".attn_k")):
                views[base] = _heads_from_view(node)
    for node in program.nodes("get_attr"):
        if node in used or not node.users:
            continue
        target = str(node.target)
        if all(u in used for u in node.users):
            continue  # the codes, scale or zero point of a quantized weight
        if target.rsplit(".", 1)[-1] in _ROPE_BUFFERS:
            continue
        value = program.tensor(node)
        paths = {module_path(u) for u in node.users} - {""}
        path = paths.pop() if len(paths) == 1 else target.removesuffix(".weight")
        base = gguf_name(path)
        if value.dim() != 1 or base is None or not base.endswith("norm"):
            raise LoweringError(f"-t gguf: parameter '{target}' {tuple(value.shape)} (read by "
                                f"'{path}') has no tensor in GGUF's llama architecture; "
                                "edgecc writes embeddings, RMSNorm weights and the attention / "
                                "MLP projections of a Llama-family decoder")
        add(base, "weight", node, target)

    hp = _hparams(program, found, views, context_length)
    tensors = []
    for name, t in found.items():
        base = name.rsplit(".", 1)[0]
        tensors.append(dataclasses.replace(t, rope_heads=rope_heads(base, hp.n_head,
                                                                    hp.n_head_kv)))
    missing = [n for n in _required(hp.n_layer) if n not in found]
    if missing:
        raise LoweringError(f"-t gguf: the program lacks {len(missing)} tensor(s) of a Llama "
                            f"decoder, first '{missing[0]}'")
    tied = found["output.weight"].node is found["token_embd.weight"].node
    if tied:
        tensors = [t for t in tensors if t.name != "output.weight"]
    return Decoder(hp, tensors, tied)


def _required(n_layer: int) -> list[str]:
    names = ["token_embd.weight", "output_norm.weight", "output.weight"]
    for i in range(n_layer):
        names += [f"blk.{i}.{n}.weight" for n in ("attn_norm", "ffn_norm", "attn_q", "attn_k",
                                                  "attn_v", "attn_output", "ffn_gate",
                                                  "ffn_up", "ffn_down")]
    return names


def _heads_from_view(linear: fx.Node) -> tuple[int, int]:
    for user in linear.users:
        val = user.meta.get("val")
        if op_name(user) in ("aten.view", "aten.reshape") and getattr(val, "dim", lambda: 0)() == 4:
            return int(val.shape[2]), int(val.shape[3])
    return 0, 0


def _shape(program: Program, node: fx.Node) -> tuple[int, ...]:
    val = node.meta.get("val")
    if val is not None and getattr(val, "shape", None) is not None and len(val.shape):
        return tuple(int(d) for d in val.shape)
    return tuple(program.tensor(node).shape)


def _hparams(program: Program, found: dict[str, Tensor], views: dict[str, tuple[int, int]],
             context_length: int) -> HParams:
    meta = program.graph_module.meta.get(PROGRAM_META, {}).get("hparams")
    layers = {int(n.split(".")[1]) for n in found if n.startswith("blk.")}
    n_layer = max(layers) + 1 if layers else 0
    if "token_embd.weight" not in found or not n_layer:
        raise LoweringError("-t gguf: no token embedding (model.embed_tokens) or decoder "
                            "layers (model.layers.N) found: is this a Llama-family decoder?")
    n_vocab, n_embd = _shape(program, found["token_embd.weight"].node)
    n_ff = _shape(program, found["blk.0.ffn_up.weight"].node)[0] if "blk.0.ffn_up.weight" in \
        found else 0
    if meta:
        hp = HParams(**meta)
        return dataclasses.replace(hp, context_length=context_length or hp.context_length)
    (n_head, head_dim), (n_head_kv, kv_dim) = views.get("blk.0.attn_q", (0, 0)), views.get(
        "blk.0.attn_k", (0, 0))
    if not n_head or not n_head_kv or head_dim != kv_dim:
        raise LoweringError("-t gguf: cannot read the attention heads from the program (the q / "
                            "k projections of layer 0 are not followed by a [.., heads, "
                            "head_dim] view)")
    return HParams(n_layer, n_embd, n_ff, n_head, n_head_kv, head_dim, n_vocab,
                   _rms_eps(program), _rope_theta(program, head_dim),
                   context_length or 2048)


def _rms_eps(program: Program) -> float:
    eps = set()
    for node in program.nodes("call_function"):
        if op_name(node) == "aten.rsqrt" and isinstance(node.args[0], fx.Node):
            add = node.args[0]
            if op_name(add) == "aten.add" and isinstance(add.args[1], (int, float)):
                eps.add(float(add.args[1]))
    if len(eps) != 1:
        raise LoweringError(f"-t gguf: expected one RMSNorm epsilon (rsqrt(mean(x^2) + eps)), "
                            f"found {sorted(eps) or 'none'}")
    return eps.pop()


def rope_inv_freq(theta: float, head_dim: int) -> torch.Tensor:
    """transformers' default RoPE frequencies, computed as it does (float32)."""
    exponent = torch.arange(0, head_dim, 2, dtype=torch.int64).to(torch.float32) / head_dim
    return 1.0 / (theta ** exponent)


def _rope_theta(program: Program, head_dim: int) -> float:
    inv = None
    for node in program.nodes("get_attr"):
        if str(node.target).rsplit(".", 1)[-1] == "inv_freq" and node.users:
            inv = program.tensor(node).to(torch.float32)
    if inv is None or inv.numel() != head_dim // 2 or inv.numel() < 2:
        raise LoweringError("-t gguf: no RoPE frequency buffer (rotary_emb.inv_freq) covering "
                            f"the head size {head_dim} in the program")
    i = torch.arange(1, inv.numel(), dtype=torch.float64)
    theta = math.exp(float((-inv[1:].double().log() * head_dim / (2 * i)).mean()))
    for digits in range(1, 9):
        candidate = float(f"{theta:.{digits}g}")
        if torch.allclose(rope_inv_freq(candidate, head_dim), inv, rtol=3e-7, atol=0):
            return candidate
    if torch.allclose(rope_inv_freq(theta, head_dim), inv, rtol=1e-5, atol=0):
        return theta
    raise LoweringError("-t gguf: the RoPE frequencies are not theta^(-2i/d) (rope scaling such "
                        "as llama3 or YaRN), which edgecc does not write to GGUF yet")
