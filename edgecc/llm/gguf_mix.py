"""llama.cpp's per-tensor type mix (``Q4_K_M``) on an edgecc program, for ``-t gguf``.

llama.cpp's ``llama_tensor_get_type`` gives each 2-D weight its own GGUF type (restated in
``edgecc.llm_eval.llamacpp_quant.tensor_type``): under Q4_K_M the output matrix Q6_K,
``attn_v`` / ``ffn_down`` of the layers ``use_more_bits`` picks Q6_K, the rest Q4_K; and a
K-quant on rows that are not a multiple of 256 falls back (``llama-quant.cpp``:
Q4_K -> Q5_0, Q5_K -> Q5_1, Q6_K -> Q8_0). ``quantize_gguf_mix`` quantizes a program the
same way, so that ``-t gguf`` writes each tensor as that type, bit-exactly:

=========  ===========================================================================
type       how edgecc quantizes it
=========  ===========================================================================
Q4_K       the quantize pass (``algorithm``: GPTQ by default, calibrated) onto Q4_K's
           real grid (``weight_grid=q4_k``, asymmetric: 6-bit scales and mins per 32, as
           llama.cpp's own Q4_K; ``edgecc.dequantize_offset``); option ``q4_k=symmetric``:
           symmetric int4 with scales on the grid (mins fixed at 8 steps)
Q5_0       ggml's Q5_0 grid (``d = signed max / -16`` per 32), held as int8 codes
           -16..15 with fp16 scales (``gguf_import``'s Q5_0): rounded by GPTQ when
           ``algorithm=gptq`` (option ``q5_0``: auto | gptq | ggml), else by ggml's
           reference quantizer (round to nearest: llama.cpp's own bytes)
Q8_0       ggml's reference quantizer, int8 codes with fp16 scales per 32
Q6_K       ggml's quantizer (``ggml_quantize_chunk`` through xllamacpp, as llama.cpp's
           own file), held as int8 codes -32..31 with scales ``d * sc`` per 16; option
           ``q6_k``: Q8_0 (more bits) or Q5_0 (fewer) instead, said so
=========  ===========================================================================

An untied ``token_embd`` that the rule gives Q4_K is Q5_0 (the quantize pass snaps linear
layers only onto the Q4_K grid), said so.

Weights already quantized (the tied embedding a GGUF import carries as Q8_0) are kept.
The plan (``{gguf tensor: {"wanted", "chosen", "reason"}}``) is left in
``graph_module.meta["gguf"]["types"]``; the ``-t gguf`` lowering's report lists under
``fallback`` every tensor written as another type than llama.cpp's rule gives, and why.

    mixed, report = quantize_gguf_mix(edgecc.load("m.gguf"), calibration=batches)
    edgecc.compile(mixed, target="gguf", output_dir="out/")

From the command line the ``-t gguf`` option ``mix`` runs the ``GgufMix`` pass (this module)
after the pipeline, as ``llama-quantize model.gguf out.gguf Q4_K_M`` would::

    edgecc compile model.gguf -t gguf --target-option mix=Q4_K_M [--calib data.npz] -o out/

``mix_algorithm=auto`` (the default) is GPTQ with calibration data and round-to-nearest
without (llama.cpp's quantizer without an importance matrix).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from typing import Any, Literal

import numpy as np
import torch

from edgecc.errors import OptionError
from edgecc.pass_base import Pass, PassContext, PassResult
from edgecc.gguf_import import PROGRAM_META, GgufWeight, carry_quantization
from edgecc.gguf_import.layout import gguf_name
from edgecc.program import Program

FTYPES = ("Q4_K_M",)
ALGORITHMS = ("gptq", "awq", "rtn")
Q4_K_GRIDS = ("asymmetric", "symmetric")
Q5_0_ROUNDING = ("auto", "gptq", "ggml")
SUPER = 256
_RTN = ("Q5_0", "Q8_0", "Q6_K")  # types quantized here by ggml's reference quantizers
_QWEIGHT = re.compile(r"^(.*)_qweight$")


def plan_types(program: Program, ftype: str = "Q4_K_M", *, q6_k: str = "Q6_K"
               ) -> dict[str, dict[str, Any]]:
    """``{gguf name: {"module", "cols", "wanted", "chosen", "reason", "quantized"}}`` for
    every 2-D weight: ``wanted`` is llama.cpp's type for a row length that K-quants take,
    ``chosen`` the type edgecc gives it (llama.cpp's fallback for this row length, then
    ``q6_k`` for Q6_K), ``reason`` why they differ ("" when they do not)."""
    from edgecc.llm_eval.llamacpp_quant import tensor_type

    if ftype not in FTYPES:
        raise OptionError(f"ftype={ftype}: the GGUF mixes edgecc quantizes are "
                          f"{', '.join(FTYPES)}")
    if q6_k not in _RTN:
        raise OptionError(f"q6_k={q6_k}: llama.cpp's Q6_K tensors are written as Q6_K, "
                          "Q8_0 or Q5_0")
    weights = _weights(program)
    n_layer = 1 + max((int(m.group(1)) for n in weights
                       if (m := re.match(r"blk\.(\d+)\.", n))), default=-1)
    has_output = "output.weight" in weights
    plan: dict[str, dict[str, Any]] = {}
    for name, (module, cols, quantized) in weights.items():
        wanted = tensor_type(name, SUPER, ftype, n_layer, has_output)
        chosen = tensor_type(name, cols, ftype, n_layer, has_output)
        reason = ""
        if chosen != wanted:
            reason = (f"rows of {cols} weights are not a multiple of {SUPER} (llama.cpp's "
                      f"{wanted} -> {chosen} fallback)")
        if chosen == "Q6_K" and q6_k != "Q6_K":
            chosen = q6_k
            reason = f"option q6_k={q6_k}"
        if chosen == "Q4_K" and name == "token_embd.weight":
            chosen = "Q5_0"
            reason = "the quantize pass puts linear layers only on the Q4_K grid: Q5_0"
        plan[name] = {"module": module, "cols": cols, "wanted": wanted, "chosen": chosen,
                      "reason": reason, "quantized": quantized}
    return plan


def quantize_gguf_mix(program: Program, ftype: str = "Q4_K_M", *,
                      calibration: Sequence[tuple[torch.Tensor, ...]] | None = None,
                      algorithm: str = "gptq", q6_k: str = "Q6_K",
                      q4_k: str = "asymmetric", q5_0: str = "auto",
                      options: dict[str, Any] | None = None) -> tuple[Program, dict[str, Any]]:
    """A copy of ``program`` quantized as llama.cpp's ``ftype`` mix (module docstring), and
    a report: ``{"types": plan, "counts": {type: n}, "quantize": the pass's stats}``.
    ``calibration``: batches for GPTQ / AWQ (``algorithm``); ``q4_k``: ``asymmetric``
    (Q4_K's own grid) or ``symmetric``; ``q5_0``: ``gptq`` / ``ggml`` (``auto``: GPTQ when
    ``algorithm`` is); ``options``: more quantize pass options for the Q4_K tensors."""
    if algorithm not in ALGORITHMS:
        raise OptionError(f"algorithm={algorithm}: the Q4_K tensors are quantized by "
                          f"{', '.join(ALGORITHMS)}")
    if q4_k not in Q4_K_GRIDS:
        raise OptionError(f"q4_k={q4_k}: the Q4_K grid is {' or '.join(Q4_K_GRIDS)}")
    if q5_0 not in Q5_0_ROUNDING:
        raise OptionError(f"q5_0={q5_0}: the Q5_0 tensors are rounded by "
                          f"{', '.join(Q5_0_ROUNDING)}")
    plan = plan_types(program, ftype, q6_k=q6_k)
    program = program.copy()
    stats = _quantize_mix(program, plan, calibration, algorithm, q4_k, options, q5_0)
    counts: dict[str, int] = {}
    for p in plan.values():
        counts[p["chosen"]] = counts.get(p["chosen"], 0) + 1
    return program, {"types": plan, "counts": counts, "quantize": stats}


def _quantize_mix(program: Program, plan: dict[str, dict[str, Any]],
                  calibration: Sequence[tuple[torch.Tensor, ...]] | None, algorithm: str,
                  q4_k: str, options: dict[str, Any] | None, q5_0: str = "auto"
                  ) -> dict[str, Any]:
    """``plan`` applied to ``program`` in place; the quantize pass's stats."""
    from edgecc.registry import default_pass_registry

    q4k = [p["module"] for p in plan.values() if p["chosen"] == "Q4_K" and not p["quantized"]]
    stats: dict[str, Any] = {}
    if q4k:
        if algorithm != "rtn" and not calibration:
            raise OptionError(f"algorithm={algorithm} needs calibration batches")
        Quantize = default_pass_registry().get("quantize")  # noqa: N806 - the pass class
        opts = dict(scheme="w4a16", group_size=32, weight_dtype="int4",
                    weight_symmetric=q4_k == "symmetric",
                    algorithm=algorithm, weight_grid="q4_k", include=tuple(q4k),
                    error_batches=1, **(options or {}))
        context = PassContext(calibration=list(calibration)) if calibration else None
        result = Quantize()(program, Quantize.Options(**opts), context=context)
        program = result.program
        stats = {k: result.stats[k] for k in ("layers", "weight_grid", "error", "seconds")
                 if k in result.stats}
    if (q5_0 == "gptq" or (q5_0 == "auto" and algorithm == "gptq")) and calibration:
        stats["q5_0_gptq"] = _gptq_q5_0(program, plan, calibration)
    _round_to_nearest(program, plan)
    meta = dict(program.graph_module.meta.get(PROGRAM_META, {}))
    meta["types"] = {n: {k: p[k] for k in ("wanted", "chosen", "reason")}
                     for n, p in plan.items()}
    program.graph_module.meta[PROGRAM_META] = meta
    return stats


@dataclasses.dataclass(frozen=True)
class GgufMixOptions:
    ftype: Literal["Q4_K_M"] = "Q4_K_M"
    # auto: GPTQ with calibration data, round-to-nearest without (llama.cpp, no imatrix)
    algorithm: Literal["auto", "gptq", "awq", "rtn"] = "auto"
    q4_k: Literal["asymmetric", "symmetric"] = "asymmetric"  # Q4_K's own grid, or sym. int4
    q6_k: Literal["Q6_K", "Q8_0", "Q5_0"] = "Q6_K"  # what llama.cpp's Q6_K tensors become
    q5_0: Literal["auto", "gptq", "ggml"] = "auto"  # auto: GPTQ when algorithm is gptq


class GgufMix(Pass):
    """Quantize as llama.cpp's per-tensor GGUF type mix (Q4_K_M) for -t gguf (lossy).

    Before: ``%w = get_attr[model.layers.0.mlp.down_proj.weight]`` (float, every layer)
    After:  Q4_K tensors ``edgecc.dequantize_offset(@codes:int4, @d·sc, -8, @-dmin·m, ...)``;
            Q5_0 / Q8_0 / Q6_K ones ``edgecc.dequantize(@codes:int8, @scale, 0, ...)``;
            ``graph_module.meta["gguf"]["types"]`` the plan (module docstring).
    """

    name = "gguf-mix"
    Options = GgufMixOptions
    lossless = False

    @staticmethod
    def _algorithm(options: GgufMixOptions, context: PassContext) -> str:
        if options.algorithm != "auto":
            return options.algorithm
        return "gptq" if context.calibration is not None else "rtn"

    def validate(self, program: Program, options: GgufMixOptions,
                 context: PassContext) -> None:
        algorithm = self._algorithm(options, context)
        if algorithm != "rtn" and context.calibration is None:
            raise OptionError(f"gguf-mix: algorithm={algorithm} needs calibration data "
                              "(--calib), or use algorithm=rtn")

    def run(self, program: Program, options: GgufMixOptions,
            context: PassContext) -> PassResult:
        algorithm = self._algorithm(options, context)
        plan = plan_types(program, options.ftype, q6_k=options.q6_k)
        calibration = list(context.calibration) if context.calibration is not None else None
        extra = {"awq_fold": True} if algorithm == "awq" else {}
        stats = _quantize_mix(program, plan, calibration, algorithm, options.q4_k, extra,
                              options.q5_0)
        counts: dict[str, int] = {}
        for p in plan.values():
            counts[p["chosen"]] = counts.get(p["chosen"], 0) + 1
        return PassResult(program, bool(plan), {"ftype": options.ftype,
                                                "algorithm": algorithm, "counts": counts,
                                                "quantize": stats})


def _weights(program: Program) -> dict[str, tuple[str, int, bool]]:
    """``{gguf name: (module path, row length, already quantized)}`` of the 2-D weights."""
    out: dict[str, tuple[str, int, bool]] = {}
    for node in program.nodes("get_attr"):
        target = str(node.target)
        m = _QWEIGHT.match(target)
        module = m.group(1) if m else target.removesuffix(".weight")
        if not m and not target.endswith(".weight"):
            continue
        base = gguf_name(module)
        if base is None or base.endswith("_norm") or (m is None and not node.users):
            continue
        if m:
            cols = int(node.users and next(iter(node.users)).meta["val"].shape[-1] or 0)
        else:
            t = program.tensor(node)
            if t.dim() != 2:
                continue
            cols = int(t.shape[1])
        out[f"{base}.weight"] = (module, cols, bool(m))
    if "token_embd.weight" not in out and "output.weight" in out:  # tied: one matrix,
        out["token_embd.weight"] = out.pop("output.weight")  # written as token_embd
    return out


def _gptq_q5_0(program: Program, plan: dict[str, dict[str, Any]],
               calibration: Sequence[tuple[torch.Tensor, ...]]) -> dict[str, Any]:
    """The Q5_0 linear layers by GPTQ on ggml's Q5_0 grid (``q4k_grid.snap_q5_0``), with the
    Hessians of their inputs from one calibration run of the program as it is now (the
    Q4_K layers already quantized); in place. Returns ``{"layers", "seconds"}``."""
    import functools
    import time

    from edgecc.passes.quantize import gptq
    from edgecc.passes.quantize.layers import find_layers, record_values, replace_weight
    from edgecc.passes.quantize.q4k_grid import snap_q5_0
    from edgecc.passes.quantize.scheme import TensorQuant

    t0 = time.perf_counter()
    wanted = {_plain(p["module"] + ".weight") for p in plan.values()
              if p["chosen"] == "Q5_0" and not p["quantized"]}
    layers = [la for la in find_layers(program, embeddings=False)
              if la.kind == "linear" and program.is_constant(la.weight)
              and _plain(str(la.weight.target)) in wanted
              and program.tensor(la.weight).dim() == 2
              and program.tensor(la.weight).shape[1] % 32 == 0]
    hessians = {la.input: gptq.HessianAccumulator() for la in layers}
    if not layers:
        return {"layers": 0}
    record_values(program, list(calibration), set(hessians),
                  lambda node, value: hessians[node].update(value), desc="Q5_0 Hessians")
    tq = TensorQuant("int8", "per-group", symmetric=True, group_size=32)
    for la in layers:
        w = program.tensor(la.weight).detach().to(torch.float32)
        w_hat, params = gptq.gptq_quantize(w, hessians[la.input].h, tq,
                                           snap=functools.partial(snap_q5_0, w=w))
        replace_weight(program, la, params.quantize(w_hat), params)
    program.refresh_metadata()
    program.graph.lint()
    program.graph_module.recompile()
    return {"layers": len(layers), "seconds": round(time.perf_counter() - t0, 3)}


def _round_to_nearest(program: Program, plan: dict[str, dict[str, Any]]) -> None:
    """Q5_0 / Q8_0 / Q6_K tensors: ggml's reference quantizers (``gguf.quants``, bit-exact
    to ggml; Q6_K: ggml's own through xllamacpp), put into the program as int8 codes and
    their scales."""
    import gguf
    from gguf.quants import quantize

    from edgecc.gguf_import import blocks

    # a weight a pass replaced (AWQ's folded input scales) is a new constant named after
    # the old node: "model_layers_0_mlp_up_proj_weight_awq_folded"
    floats = {_plain(str(n.target)): n for n in program.nodes("get_attr")}
    weights: dict[str, GgufWeight] = {}
    for p in plan.values():
        node = floats.get(_plain(p["module"] + ".weight"))
        if p["chosen"] not in _RTN or p["quantized"] or node is None:
            continue
        key = str(node.target)
        w = program.tensor(node).detach().to(torch.float32).numpy()
        block = blocks.BLOCK
        if p["chosen"] == "Q6_K":
            from edgecc.llm_eval.llamacpp_quant import quantize_rows

            q6, d, sc = blocks.unpack_q6_k(quantize_rows(w, "Q6_K"))
            codes = q6.astype(np.int8) - 32
            scales = (d.astype(np.float32)[..., None] * sc).reshape(w.shape[0], -1)
            block = blocks.Q6_K_GROUP
        else:
            raw = quantize(np.ascontiguousarray(w), gguf.GGMLQuantizationType[p["chosen"]])
            if p["chosen"] == "Q8_0":
                codes, scales = blocks.unpack_q8_0(raw)
            else:
                q5, scales = blocks.unpack_q5_0(raw)
                codes = q5.astype(np.int8) - 16
        weights[key] = GgufWeight(w, p["chosen"], codes, scales, block)
    if weights:
        carry_quantization(program, weights, tied=False)


def _plain(target: str) -> str:
    """A weight's constant name without dots or the suffixes passes add when they replace it."""
    t = target.replace(".", "_")
    while t.endswith("_awq_folded"):
        t = t.removesuffix("_awq_folded")
    return t
