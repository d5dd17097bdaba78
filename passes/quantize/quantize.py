"""quantize: replace float weights (and layer inputs) by quantized ones.

Before::

    %y = aten.linear(%x, @fc.weight, @fc.bias)

After ``quantize{scheme=w8a8}``::

    %xq = edgecc.quantize(%x, @x_act_scale, @x_act_zero_point, 0, 0, -128, 127, 'int8')
    %xd = edgecc.dequantize(%xq, @x_act_scale, @x_act_zero_point, 0, 0, 'int8', float32)
    %wd = edgecc.dequantize(@fc_qweight:int8[N,K], @fc_w_scale:[N], @fc_w_zero_point, 0, 0,
                            'int8', float32)
    %y  = aten.linear(%xd, %wd, @fc.bias)

After ``quantize{scheme=w4a16,group_size=64}`` the weight is ``uint8[N, K/2]`` (two 4-bit
codes per byte) with ``[N, K/64]`` scales and zero points, and ``%x`` stays float.

Lossy. The error bound is the format's: each weight moves by at most half a step
(``scale / 2``) under round-to-nearest; GPTQ/AWQ trade per-weight error for lower layer
output error. The pass measures what it did — output SQNR, cosine and max-abs against the
float program on calibration batches — and reports it in its stats (and so the manifest).
"""

from __future__ import annotations

import dataclasses
import functools
import math
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Literal

import torch
import torch.fx as fx

from edgecc import distributed
from edgecc.errors import OptionError
from edgecc.pass_base import Pass, PassContext, PassResult
from edgecc.passes.quantize import awq, gptq
from edgecc.passes.quantize.addmm import addmm_to_linear
from edgecc.passes.quantize.awq_fold import fold_input_scale
from edgecc.passes.quantize.q4k_grid import q4k_reason, snap_q4_0, snap_q4k
from edgecc.passes.quantize.layers import (
    CONV_OPS, LINEAR_OPS, Layer, RunState, StopRecording, ValueRecorder, check_calibration,
    find_layers, first_in_graph, insert_dynamic_qparams, insert_qdq, last_in_graph, output_error,
    quantized_weight_bytes, record_values, replace_weight, scale_input, select, set_weight,
    validate_calibration,
)
from edgecc.passes.quantize.observers import OBSERVERS, make_observer
from edgecc.passes.quantize.scheme import SCHEMES, Scheme, TensorQuant
from edgecc.passes.quantize.weights import can_quantize, one_block_per_channel, weight_params
from edgecc.program import Program, op_name
from edgecc.progress import progress_iter
from edgecc.quant import QuantParams, params_from_scale, qformat, scale_from_range, sqnr_db
from edgecc.simulate import ConstantDequantized

SchemeName = Literal["w8a8", "dynamic-int8", "w8a16", "w4a16", "fp16", "bf16", "fp8"]
AutoScheme = Literal["w8a8", "dynamic-int8", "w8a16", "w4a16", "fp16", "bf16", "fp8", "auto"]
Observer = Literal["minmax", "moving-average", "percentile", "mse", "entropy"]
WeightFormat = Literal["int8", "uint8", "int4", "uint4", "float8_e4m3fn", "float8_e5m2",
                       "float16", "bfloat16"]


@dataclasses.dataclass(frozen=True)
class QuantizeOptions:
    scheme: AutoScheme = "w8a8"
    # scheme=auto: quantize with auto_from, keeping the most sensitive layers at
    # auto_fallback (None: float) until the output cosine drops by at most max_drop
    auto_from: SchemeName = "w8a8"
    auto_fallback: SchemeName | None = None
    max_drop: float = 0.01
    algorithm: Literal["rtn", "gptq", "awq"] = "rtn"
    observer: Observer = "minmax"
    percentile: float = 99.99
    group_size: int = 0  # per-group weights: 0 keeps the scheme's (w4a16: 128)
    weight_dtype: WeightFormat | None = None
    weight_granularity: Literal["per-tensor", "per-channel", "per-group"] | None = None
    weight_symmetric: bool | None = None
    activation_dtype: Literal["int8", "uint8", "float8_e4m3fn", "float8_e5m2", "float16",
                              "bfloat16"] | None = None
    activation_symmetric: bool | None = None
    # dynamic schemes: one range per token (row) or per tensor
    activation_granularity: Literal["per-tensor", "per-token"] | None = None
    scale_dtype: Literal["float32", "float16"] | None = None  # None: float16 for 4-bit
    exclude: tuple[str, ...] = ()
    include: tuple[str, ...] = ()  # only these layers (globs); empty: every layer
    # Weights one bit narrower (int8: [-64, 63]): onnxruntime's x86 u8s8 kernels saturate
    # 16-bit intermediate sums with full-range weights (its quantizer's reduce_range).
    reduce_range: bool = False
    bias_correction: bool = False  # add E[(W - Q(W)) x] to each bias (Nagel et al., 2019)
    lorc_rank: int = 0  # LoRC: a rank-r float branch B·A ≈ W - Q(W) beside each linear
    embeddings: bool = True  # quantize embedding tables (weight-only, per row)
    # GPTQ
    damp: float = 0.01
    act_order: bool = True
    block: int = 128
    # MiB of GPTQ Hessians alive at once (a run of consecutive layer inputs; each later run
    # re-runs the calibration batches up to its last input); 0: an eighth of the float32
    # weight bytes, at least 64; all of them (one run) when they total <= 256
    hessian_budget_mib: float = 0.0
    # AWQ
    awq_grid: int = 20
    awq_clip: bool = True
    awq_tokens: int = 512
    # fold each AWQ input scale into the operator before the group (a norm's weight, the
    # rows of the linear feeding a product) instead of a multiply in the graph; a scale
    # that cannot fold is dropped (that group is clipped only). Formats without a graph
    # (GGUF) need it
    awq_fold: bool = False
    # "q4_k": symmetric int4 g32 scales snapped onto llama.cpp's Q4_K grid (fp16 d per 256
    # weights times 6-bit codes), which -t gguf writes as Q4_K; with weight_symmetric=false
    # Q4_K's real grid (6-bit scales and mins, edgecc.dequantize_offset; q4k_grid.py);
    # rows that are not a multiple of 256 keep fp16 per-32 scales (Q4_0 / Q4_1), listed
    # "q4_0": ggml's Q4_0 scale per 32 (signed max / -8, so the extreme weight is exact)
    weight_grid: Literal["none", "q4_k", "q4_0"] = "none"
    error_batches: int = 4  # calibration batches the output error is measured on

    def __post_init__(self) -> None:
        if self.group_size < 0 or self.group_size % 2:
            raise ValueError("group_size must be a positive even number (or 0)")
        if not 50 < self.percentile <= 100:
            raise ValueError("percentile must be in (50, 100]")
        if self.hessian_budget_mib < 0:
            raise ValueError("hessian_budget_mib must be >= 0 (0: automatic)")
        if not 0 <= self.max_drop <= 1:
            raise ValueError("max_drop must be in [0, 1] (a drop in output cosine)")
        if self.observer not in OBSERVERS:
            raise ValueError(f"observer must be one of {', '.join(OBSERVERS)}")


def resolve_scheme(opts: QuantizeOptions, target: Any) -> tuple[Scheme, list[str]]:
    """The scheme with the option overrides and the target's constraints applied."""
    base = SCHEMES[opts.scheme]
    w = base.weights
    w = dataclasses.replace(
        w,
        dtype=opts.weight_dtype or w.dtype,
        granularity=opts.weight_granularity or ("per-group" if opts.group_size
                                                 else w.granularity),
        symmetric=w.symmetric if opts.weight_symmetric is None else opts.weight_symmetric,
        group_size=opts.group_size or w.group_size or 128,
        reduce_range=opts.reduce_range,
    )
    a = base.activations
    if a is not None:
        if opts.activation_granularity == "per-token" and not base.dynamic:
            raise OptionError("activation_granularity=per-token needs a dynamic scheme "
                              "(dynamic-int8): static ranges are per tensor")
        a = dataclasses.replace(
            a, dtype=opts.activation_dtype or a.dtype,
            granularity=opts.activation_granularity or a.granularity,
            symmetric=a.symmetric if opts.activation_symmetric is None
            else opts.activation_symmetric)
    notes: list[str] = []
    support = getattr(target, "quantization", None)
    if support is not None:
        tname = getattr(target, "name", "the target")
        if w.dtype not in support.weight_dtypes:
            raise OptionError(
                f"scheme '{opts.scheme}' stores weights as {w.dtype}, which target '{tname}' "
                f"cannot execute (it runs {', '.join(sorted(support.weight_dtypes))})")
        if w.granularity not in support.weight_granularities:
            raise OptionError(
                f"target '{tname}' cannot execute {w.granularity} weights "
                f"(it runs {', '.join(sorted(support.weight_granularities))})")
        if a is not None and a.dtype not in support.activation_dtypes:
            raise OptionError(
                f"scheme '{opts.scheme}' quantizes activations to {a.dtype}, which target "
                f"'{tname}' cannot execute")
        if base.dynamic and not support.dynamic_activations:
            raise OptionError(f"target '{tname}' cannot execute dynamic quantization; "
                              "use scheme=w8a8 with calibration data")
        if a is not None and support.symmetric_activations_only and not a.symmetric:
            a = dataclasses.replace(a, symmetric=True)
            notes.append(f"activations made symmetric for target '{tname}'")
        if (support.reduce_range_weights and not w.reduce_range
                and qformat(w.dtype).bits == 8 and not qformat(w.dtype).is_float):
            w = dataclasses.replace(w, reduce_range=True)
            notes.append(f"8-bit weights use a 7-bit range for target '{tname}' "
                         "(its int8 kernels saturate 16-bit sums otherwise)")
        if support.symmetric_weights_only and not w.symmetric:
            w = dataclasses.replace(w, symmetric=True)
            notes.append(f"weights made symmetric for target '{tname}'")
    if w.granularity == "per-group" and qformat(w.dtype).is_float:
        raise OptionError("per-group granularity applies to integer weight formats only")
    return dataclasses.replace(base, weights=w, activations=a), notes


class Quantize(Pass):
    """Quantize weights (and activations) by scheme, observer and algorithm (lossy)."""

    name = "quantize"
    Options = QuantizeOptions
    lossless = False

    def validate(self, program: Program, options: QuantizeOptions,
                 context: PassContext) -> None:
        """The scheme against the target and the algorithm, and calibration data where
        it is needed; ``run`` relies on these (``Pass.__call__`` or the pipeline ran it)."""
        opts = (dataclasses.replace(options, scheme=options.auto_from)
                if options.scheme == "auto" else options)
        scheme, _ = resolve_scheme(opts, context.target)
        if options.algorithm == "awq" and not scheme.weight_only:
            raise OptionError("algorithm=awq applies to weight-only schemes (w4a16, w8a16); "
                              "for w8a8 run smooth-quant before quantize")
        needs = (options.scheme == "auto" or options.algorithm != "rtn"
                 or options.bias_correction
                 or (scheme.needs_calibration and not _is_16bit(scheme.activations)))
        if needs or isinstance(context.calibration, (list, tuple)):
            validate_calibration(program, context.calibration,
                                 f"quantize{{scheme={options.scheme}}}")

    def requires(self, program: Program, options: QuantizeOptions) -> None:
        """No layer reads its weight through a pruning mask: quantize stores the weight it
        finds as a constant, and a masked weight is not one (it was skipped, silently)."""
        from edgecc.errors import PreconditionError
        from edgecc.sparsity import is_masked

        masked = [n.name for n in program.nodes("call_function")
                  if op_name(n) in (*LINEAR_OPS, *CONV_OPS) and len(n.args) > 1
                  and is_masked(n.args[1])]
        if masked:
            listed = ", ".join(masked[:5]) + (" ..." if len(masked) > 5 else "")
            raise PreconditionError(
                f"{len(masked)} layer(s) read pruning-masked weights ({listed}); run "
                "apply-masks before quantize (e.g. prune{...},apply-masks,quantize{...}) so "
                "the pruned zeros are stored in the quantized weights")

    def run(self, program: Program, options: QuantizeOptions,
            context: PassContext) -> PassResult:
        t0 = time.perf_counter()
        if options.scheme == "auto":
            return self._run_auto(program, options, context, t0)
        scheme, notes = resolve_scheme(options, context.target)  # validate checked it
        addmm_to_linear(program)  # GPT-2 Conv1D: addmm(b, x, W[in, out]) is a linear layer
        layers, excluded = select(find_layers(program, embeddings=options.embeddings),
                                  options.exclude, options.include)
        needs_data = (scheme.needs_calibration and not _is_16bit(scheme.activations)
                      ) or options.algorithm != "rtn" or options.bias_correction
        batches = (check_calibration(program, context.calibration,
                                     f"quantize{{scheme={options.scheme},"
                                     f"algorithm={options.algorithm}}}")
                   if needs_data or context.calibration is not None else None)
        if not layers:
            return PassResult(program, False, {"layers": 0, "excluded": excluded})
        reference = program.copy(share_weights=True)  # weights are replaced, not changed
        wq = scheme.weights
        scale_dtype = (torch.float16 if (options.scale_dtype or "") == "float16" or (
            options.scale_dtype is None and qformat(wq.dtype).bits == 4) else torch.float32)

        stats: dict[str, Any] = {"scheme": options.scheme, "algorithm": options.algorithm,
                                 "weights": wq.describe()}
        if scheme.activations is not None:
            stats["activations"] = scheme.activations.describe() + (
                " dynamic" if scheme.dynamic else f" {options.observer}")
        if notes:
            stats["target_constraints"] = notes

        clips: dict[str, torch.Tensor] = {}
        clock = _Stages()  # stats["stages_seconds"]: where the pass's time went
        if options.algorithm == "awq":
            clips, awq_stats = _apply_awq(program, layers, batches, wq, options, scale_dtype,
                                          context.progress, context.device)
            stats["awq"] = awq_stats
            clock.lap("awq")

        # one calibration run: activation observers and the first run of GPTQ Hessians;
        # the later Hessians are accumulated when their layers come (bounded memory)
        linear_inputs = _inputs_of(layers)
        observers: dict[fx.Node, Any] = {}
        if scheme.needs_calibration and not _is_16bit(scheme.activations):
            observers = {v: make_observer(options.observer, percentile=options.percentile,
                                          seed=context.seed) for v in linear_inputs}
        hessians = _Hessians(program, reference, layers, batches, options, context) \
            if options.algorithm == "gptq" else None
        first = hessians.next_chunk() if hessians is not None else {}
        reference_outputs: list[tuple[torch.Tensor, ...]] | None = None
        clock.lap("setup")
        if observers or first:
            def on_value(node: fx.Node, value: torch.Tensor) -> None:
                if node in observers:
                    observers[node].update(value)
                if node in first:
                    first[node].update(value)

            # the program is still the float one here (AWQ aside): the first batches run
            # to the end give the output error's reference outputs
            if options.algorithm != "awq" and torch.device(
                    context.device or "cpu").type == "cpu" and batches:
                reference_outputs = []
            states = _record(program, batches, set(observers) | set(first), on_value,
                             desc="calibrating", progress=context.progress,
                             device=context.device,
                             keep=(hessians.last_input(program.graph, first)
                                   if hessians else None),
                             keep_bytes=hessians.budget if hessians else 0,
                             outputs=reference_outputs, n_outputs=options.error_batches)
            # under torchrun: every rank's statistics become those of all ranks' data
            for obs in observers.values():
                distributed.reduce_observer(obs)
            for acc in first.values():
                distributed.reduce_hessian(acc)
            if reference_outputs and sum(t.numel() * t.element_size() for o in
                                         reference_outputs for t in o
                                         if isinstance(t, torch.Tensor)) > _KEPT_OUTPUT_BYTES:
                reference_outputs = None  # an LLM's logits: not held through the weights
            if hessians is not None:
                hessians.add(first, states)
                first.clear()  # only the pass's Hessians hold them: freed when done
            clock.lap("calibration")

        # weights
        skipped: dict[str, str] = {}
        done: dict[str, fx.Node] = {}
        before_bytes = 0
        weight_error: dict[str, tuple[Layer, torch.Tensor]] = {}
        layer_sqnr: dict[str, float] = {}
        lorc: list[tuple[Layer, torch.Tensor]] = []
        grid_fallback: dict[str, str] = {}
        axis_packing = getattr(getattr(context.target, "quantization", None),
                               "int4_block_axis_packing", False)
        stacked: dict[str, tuple[torch.Tensor, QuantParams]] = {}  # GPTQ'd with a neighbour
        for index, layer in enumerate(progress_iter(layers, "quantizing weights",
                                                    enabled=context.progress)):
            key = str(layer.weight.target)
            if key in done:  # a shared (tied) weight, already quantized
                layer.node.replace_input_with(layer.weight, done[key])
                continue
            w = program.tensor(layer.weight)
            tq = _layer_quant(layer, w, wq, axis_packing)
            why = can_quantize(w, tq, layer.reduction_axis, axis_packing, layer.out_axis)
            if why:
                skipped[layer.name] = why
                continue
            if layer.kind == "embedding" and tq.granularity == "per-channel":
                out_axis = 0  # one scale per row (token)
            else:
                out_axis = layer.out_axis
            h = hessians.get(layer) if hessians is not None and layer.kind == "linear" \
                else None
            snap = None
            if options.weight_grid == "q4_0" and layer.kind == "linear":
                if snap_q4_0(weight_params(w, tq, out_axis, layer.reduction_axis), w) is None:
                    grid_fallback[layer.name] = "q4_0 needs symmetric int4 in groups of 32"
                else:
                    snap = functools.partial(snap_q4_0, w=w)
            if options.weight_grid == "q4_k" and layer.kind == "linear":
                why = q4k_reason(weight_params(w, tq, out_axis, layer.reduction_axis),
                                 w.shape[1])
                if why:
                    grid_fallback[layer.name] = why
                else:
                    snap = functools.partial(snap_q4k, cols=w.shape[1], w=w)
            if layer.name in stacked:  # GPTQ'd with the layer before it (same Hessian)
                w_hat, params = stacked.pop(layer.name)
                q = _quantize_rows(params, w_hat)
                h = w_hat = None
            elif h is not None and h.h is not None:
                # GPTQ runs where the Hessian was accumulated (context.device); a storage
                # grid (snap) is applied on the CPU
                dev = h.h.device if snap is None else torch.device("cpu")
                # a storage grid is decided layer by layer (its fallbacks): never stacked
                group = [] if options.weight_grid != "none" else _same_hessian_rows(
                    program, layers, index, tq, wq, axis_packing, done)
                ws = [w, *(program.tensor(g.weight) for g in group)]
                w_hat, params = gptq.gptq_quantize(
                    torch.cat(ws).to(dev) if group else w.to(dev), h.h.to(dev), tq,
                    block=options.block, damp=options.damp, act_order=options.act_order,
                    scale_dtype=scale_dtype, snap=snap, row_splits=[x.shape[0] for x in ws])
                if dev.type != "cpu":
                    w_hat = w_hat.cpu()
                    params = dataclasses.replace(params, scale=params.scale.cpu(),
                                                 zero_point=params.zero_point.cpu())
                if group:  # each layer's rows: the weights and params of its own call
                    parts = _split_rows(w_hat, params, [x.shape[0] for x in ws])
                    stacked.update({g.name: part for g, part in zip(group, parts[1:])})
                    w_hat, params = parts[0]
                    ws = parts = None
                q = _quantize_rows(params, w_hat)
                h = w_hat = None  # the next layer's Hessians may be accumulated without it
            else:
                params = weight_params(w, tq, out_axis, layer.reduction_axis,
                                       clip=clips.get(layer.name), scale_dtype=scale_dtype)
                params = snap(params) if snap is not None else params
                q = _quantize_rows(params, w)
            layer_sqnr[layer.name] = _weight_sqnr_db(w, q, params)
            if (options.bias_correction and layer.kind != "embedding") or (
                    options.lorc_rank and layer.kind == "linear"):
                w_hat = params.dequantize(q)
            if options.bias_correction and layer.kind != "embedding":
                weight_error[layer.name] = (layer, (w - w_hat).float())
            if options.lorc_rank and layer.kind == "linear":
                lorc.append((layer, (w - w_hat).float()))
            before_bytes += w.numel() * w.element_size()
            done[key] = replace_weight(program, layer, q, params)
        # the last layer's float temporaries (an LLM's output layer: the largest) are not
        # kept through the output-error runs below
        w = w_hat = q = None
        if hessians is not None:
            clock.add("gptq hessians", hessians.seconds)
        clock.lap("weights", minus=hessians.seconds if hessians is not None else 0.0)
        if hessians is not None:
            stats["gptq_hessians"] = {"runs": hessians.runs, "resumed": hessians.resumed,
                                      "peak_mib": round(hessians.peak_bytes / 2 ** 20, 1)}
            hessians.drop()

        # activations
        if scheme.activations is not None:
            _quantize_activations(program, scheme, linear_inputs, observers, skipped)

        if lorc:
            from edgecc.passes.low_rank import add_low_rank_correction

            stats["lorc_parameters"] = sum(add_low_rank_correction(program, la, e,
                                                                   options.lorc_rank)
                                           for la, e in lorc)
        program.refresh_metadata()
        if weight_error:
            stats["bias_corrected"] = _correct_biases(program, weight_error, batches,
                                                      context.progress)
            program.refresh_metadata()
        program.graph.lint()
        program.graph_module.recompile()
        after_bytes = quantized_weight_bytes(program)
        stats.update({
            "layers": len(done),
            "excluded": excluded,
            "skipped": skipped,
            "weight_bytes_before": before_bytes,
            "weight_bytes_after": after_bytes,
            "weight_compression": round(before_bytes / max(after_bytes, 1), 3),
            "worst_layers_sqnr_db": dict(sorted(layer_sqnr.items(), key=lambda kv: kv[1])[:5]),
            # every layer, in graph order (the report charts it)
            "layer_sqnr_db": {k: round(v, 2) for k, v in layer_sqnr.items()},
        })
        if options.weight_grid != "none":
            stats["weight_grid"] = {"grid": options.weight_grid,
                                    "fallback_q4_0": grid_fallback}
        clock.lap("rewrite")
        # no dequantized-weight cache here: the pass's peak memory stays the weights'
        stats["error"] = output_error(reference, _RowwiseDequantized(program, cache_bytes=0),
                                      batches, options.error_batches, refs=reference_outputs)
        clock.lap("output error")
        stats["stages_seconds"] = clock.parts
        stats["seconds"] = round(time.perf_counter() - t0, 3)
        return PassResult(program, True, stats)


    def _run_auto(self, program: Program, options: QuantizeOptions, context: PassContext,
                  t0: float) -> PassResult:
        from edgecc.passes.quantize.sensitivity import mixed_precision

        batches = check_calibration(program, context.calibration, "quantize{scheme=auto}")
        reference = program.copy()
        result, stats = mixed_precision(program, options, context, batches)
        program.graph_module = result.graph_module
        program.refresh_metadata()
        program.graph_module.recompile()
        stats["error"] = output_error(reference, program, batches, options.error_batches)
        stats["weight_bytes_after"] = quantized_weight_bytes(program)
        stats["seconds"] = round(time.perf_counter() - t0, 3)
        return PassResult(program, True, stats)


def _record(program: Program, batches: Any, nodes: set[fx.Node],
            on_value: Any, *, desc: str, progress: bool | None, device: Any = None,
            keep: fx.Node | None = None, resume: list[RunState | None] | None = None,
            keep_bytes: int = 0, outputs: list[tuple[Any, ...]] | None = None,
            n_outputs: int = 0) -> list[RunState] | None:
    """``record_values`` that stops each batch after the last watched node (in graph
    order): the rest of the model is not run for nothing, except for the first
    ``n_outputs`` batches when ``outputs`` is a list: those run to the end and their
    outputs (flat tuples, as ``Program.run``'s) are appended to it. ``keep``: each batch's state
    after that node is returned (``RunState``) while together they stay within
    ``keep_bytes`` (else None: none is held past the batch that went over), and
    ``resume`` (one per batch, each released once its batch has run) starts each batch
    from such a state instead of from the inputs."""
    from edgecc.distributed import move_module

    last = max((i for i, n in enumerate(program.graph.nodes) if n in nodes), default=-1)
    last_node = list(program.graph.nodes)[last] if last >= 0 else None
    gm = program.graph_module
    dev = torch.device(device) if device is not None else torch.device("cpu")
    kept: list[RunState] = []
    held = 0
    if dev.type != "cpu":
        move_module(gm, dev)
    try:
        with torch.no_grad():
            for i, batch in enumerate(progress_iter(batches, desc, enabled=progress)):
                to_end = outputs is not None and i < n_outputs and resume is None
                recorder = ValueRecorder(gm, nodes, on_value, None if to_end else last_node,
                                         keep)
                args = [b.to(dev) if isinstance(b, torch.Tensor) else b for b in batch]
                try:
                    if resume is not None:
                        state, resume[i] = resume[i], None
                        recorder.resume(state, *args)
                        del state
                    else:
                        out = recorder.run(*args)
                        if to_end:
                            outputs.append(tuple(out) if isinstance(out, (tuple, list))
                                           else (out,))
                        del out
                except StopRecording:
                    pass
                if recorder.kept is not None:
                    if kept:
                        recorder.kept.share_constants(kept[0])
                    kept.append(recorder.kept)
                    held += recorder.kept.bytes()
                    if held > keep_bytes:  # over the budget: run on from the inputs later
                        kept, keep = [], None
    finally:
        if dev.type != "cpu":
            move_module(gm, "cpu")
    return kept if keep is not None and len(kept) == len(batches) else None


_KEPT_OUTPUT_BYTES = 64 << 20  # reference outputs held from calibration to the error runs
_ONE_RUN_HESSIAN_BYTES = 256 << 20  # automatic budget: Hessians this small in one run


class _Hessians:
    """GPTQ Hessians of the linear layers' inputs, a run of consecutive inputs at a time
    (``gptq.hessian_chunks``): only the Hessians of the layers being quantized are alive.

    Budget: ``hessian_budget_mib``, or (0) an eighth of the float32 bytes of the layers'
    weights, at least 64 MiB; and when every Hessian together is at most
    ``_ONE_RUN_HESSIAN_BYTES`` (256 MiB: a small model such as all-MiniLM-L6-v2, 134 MB),
    all of them in one run (compile time: MiniLM took 3 runs, each later one re-running
    the calibration batches up to its inputs). The first run is taken
    with the activation observers on the program; each later one on ``reference`` (the
    float program the pass started from, sharing its weights), up to its last input only,
    so every Hessian is the one the float program gives: the same weights as one run.

    A later run resumes where the previous one stopped (``RunState``: the values the rest
    of the graph reads, per batch) instead of re-running the calibration batches from the
    inputs, while those states together fit in the budget as well (SmolLM2-135M, 4 x 64
    tokens: 15 runs took 24.7 s from the inputs, as much as one whole run resumed).
    """

    def __init__(self, program: Program, reference: Program, layers: list[Layer],
                 batches: Any, options: QuantizeOptions, context: PassContext) -> None:
        self.reference, self.batches, self.context = reference, batches, context
        columns: dict[fx.Node, int] = {}
        self.last: dict[fx.Node, int] = {}  # input -> position of the last layer reading it
        self.position: dict[fx.Node, int] = {}
        weight_bytes = 0
        for i, la in enumerate(layers):
            self.position[la.node] = i
            if la.kind != "linear" or la.input is None:
                continue
            w = program.tensor(la.weight)
            weight_bytes += w.numel() * 4
            columns.setdefault(la.input, int(w.shape[-1]))
            self.last[la.input] = i
        self.inputs = list(columns)
        sizes = [gptq.hessian_bytes(columns[v]) for v in self.inputs]
        budget = (int(options.hessian_budget_mib * 2 ** 20) if options.hessian_budget_mib
                  else max(64 << 20, weight_bytes // 8,
                           sum(sizes) if sum(sizes) <= _ONE_RUN_HESSIAN_BYTES else 0))
        self.budget = budget
        self.chunks = [[self.inputs[i] for i in c]
                       for c in gptq.hessian_chunks(sizes, budget)]
        self.chunk_of = {v: k for k, c in enumerate(self.chunks) for v in c}
        self.live: dict[fx.Node, gptq.HessianAccumulator] = {}
        self.runs = 0
        self.resumed = 0  # runs that started from the previous run's state
        self.states: list[RunState] | None = None  # where the previous run stopped
        self.peak_bytes = 0
        self.seconds = 0.0  # in the later runs (the first is the pass's calibration run)

    def next_chunk(self) -> dict[fx.Node, gptq.HessianAccumulator]:
        """Fresh accumulators for the first run (the caller records them)."""
        return {v: gptq.HessianAccumulator() for v in self.chunks[0]} if self.chunks else {}

    def last_input(self, graph: fx.Graph, accs: dict[fx.Node, gptq.HessianAccumulator]
                   ) -> fx.Node | None:
        """The node of ``graph`` after which a run recording ``accs`` keeps its state:
        their last (None when only one run is needed)."""
        return last_in_graph(graph, accs) if len(self.chunks) > 1 and accs else None

    def add(self, accs: dict[fx.Node, gptq.HessianAccumulator],
            states: list[RunState] | None = None) -> None:
        # a run's states are kept for the next run while they fit in the budget (_record
        # drops them as soon as they do not)
        self.states = states
        self.live.update(accs)
        self.runs += 1
        self.peak_bytes = max(self.peak_bytes, sum(
            a.h.numel() * a.h.element_size() for a in self.live.values() if a.h is not None))

    def get(self, layer: Layer) -> gptq.HessianAccumulator | None:
        v = layer.input
        if v not in self.chunk_of:
            return None
        if v not in self.live:
            here = self.position[layer.node]
            for done in [u for u in self.live if self.last[u] < here]:
                self.drop(done)  # every layer reading it is quantized
            self._accumulate(self.chunks[self.chunk_of[v]])
        return self.live[v]

    def drop(self, value: fx.Node | None = None) -> None:
        """Free ``value``'s Hessian (None: every live one) now: its tensor is released
        even where something still refers to the accumulator (a closure of a finished
        calibration run waiting for the garbage collector)."""
        for v in list(self.live) if value is None else [value]:
            self.live.pop(v).h = None

    def _accumulate(self, inputs: list[fx.Node]) -> None:
        by_name = {n.name: n for n in self.reference.graph.nodes}
        accs = {by_name[v.name]: gptq.HessianAccumulator() for v in inputs}

        def on_value(node: fx.Node, value: torch.Tensor) -> None:
            accs[node].update(value)

        k = self.chunk_of[inputs[0]] + 1
        t0 = time.perf_counter()
        resume = self.states if self.states is not None and not any(
            v.name in self.states[0].done for v in inputs) else None
        self.states = None  # the previous run's values are freed as this run goes on
        states = _record(self.reference, self.batches, set(accs), on_value,
                         desc=f"GPTQ Hessians {k}/{len(self.chunks)}",
                         progress=self.context.progress, device=self.context.device,
                         keep=(self.last_input(self.reference.graph, accs)
                               if k < len(self.chunks) else None),
                         resume=resume, keep_bytes=self.budget)
        self.resumed += resume is not None
        for acc in accs.values():
            distributed.reduce_hessian(acc)
        self.add({v: accs[by_name[v.name]] for v in inputs}, states)
        self.seconds += time.perf_counter() - t0


class _Stages:
    """Seconds per stage of the pass (``lap(name)``: since the previous lap)."""

    def __init__(self) -> None:
        self.parts: dict[str, float] = {}
        self.t = time.perf_counter()

    def add(self, name: str, seconds: float) -> None:
        self.parts[name] = round(self.parts.get(name, 0.0) + seconds, 3)

    def lap(self, name: str, minus: float = 0.0) -> None:
        now = time.perf_counter()
        self.add(name, now - self.t - minus)
        self.t = now


_ROW_BLOCK_BYTES = 1 << 24  # float32 bytes of a weight's rows quantized at a time


def _layer_quant(layer: Layer, w: torch.Tensor, wq: TensorQuant, axis_packing: bool
                 ) -> TensorQuant:
    """The weight quantization of ``layer``: the scheme's (an embedding's per row where the
    scheme is per tensor; per channel where int4 axis packing has one block a channel)."""
    tq = wq if layer.kind != "embedding" else dataclasses.replace(
        wq, granularity="per-channel" if wq.granularity == "per-tensor" else wq.granularity)
    if axis_packing and one_block_per_channel(w, tq, layer.reduction_axis):
        tq = dataclasses.replace(tq, granularity="per-channel")
    return tq


def _same_hessian_rows(program: Program, layers: list[Layer], index: int, tq: TensorQuant,
                       wq: TensorQuant, axis_packing: bool, done: dict[str, fx.Node]
                       ) -> list[Layer]:
    """The layers right after ``layers[index]`` that read the same input (a transformer's
    q / k / v projections) and quantize their rows alike: GPTQ takes their weights stacked
    as one ``[N1 + N2 + ..., K]`` weight, one Hessian preparation (damping, permutation,
    Cholesky of the inverse) and one column loop instead of one per layer. GPTQ treats rows
    independently (per-row or per-row-and-group scales; the trailing update a product per
    layer's rows: ``row_splits``), so each layer's weights are bit for bit its own call's
    (``tests/passes/quantize/test_gptq_stacked_rows.py``). all-MiniLM-L6-v2: 36 calls -> 24."""
    first = layers[index]
    w = program.tensor(first.weight)
    if (first.kind != "linear" or tq.granularity not in ("per-channel", "per-group")
            or w.dim() != 2 or first.out_axis != 0):
        return []
    group: list[Layer] = []
    seen = {str(first.weight.target)}
    for la in layers[index + 1:]:
        key = str(la.weight.target)
        if la.kind != "linear" or la.input is not first.input or key in seen or key in done:
            break
        v = program.tensor(la.weight)
        if (v.dim() != 2 or v.shape[1] != w.shape[1] or v.dtype != w.dtype
                or _layer_quant(la, v, wq, axis_packing) != tq
                or can_quantize(v, tq, la.reduction_axis, axis_packing, la.out_axis)):
            break
        seen.add(key)
        group.append(la)
    return group


def _split_rows(w: torch.Tensor, params: QuantParams, sizes: list[int]
                ) -> list[tuple[torch.Tensor, QuantParams]]:
    """Stacked GPTQ weights and params back into each layer's rows (own storage)."""
    part = _row_params(params, w)
    assert part is not None and params.scale.dim() > 0, "per-row params expected"
    out, start = [], 0
    for n in sizes:
        p = part(start, start + n)
        out.append((w[start:start + n].clone(), dataclasses.replace(
            p, scale=p.scale.clone(), zero_point=p.zero_point.clone())))
        start += n
    return out


def _row_params(params: QuantParams, w: torch.Tensor
                ) -> Callable[[int, int], QuantParams] | None:
    """The params of rows ``[i, j)`` of a 2-D weight, or None when its scales are not one
    per row (or per row and group) or there is an offset: then the weight goes whole."""
    s, z = params.scale, params.zero_point
    if w.dim() != 2 or getattr(params, "offset", None) is not None:
        return None
    if s.dim() == 0:
        return lambda i, j: params
    per_row = ((params.block_size == 0 and params.axis % 2 == 0 and s.dim() == 1)
               or (params.block_size > 0 and params.axis % 2 == 1 and s.dim() == 2))
    if not per_row or s.shape[0] != w.shape[0] or z.shape not in (s.shape, torch.Size()):
        return None
    return lambda i, j: dataclasses.replace(params, scale=s[i:j],
                                            zero_point=z[i:j] if z.dim() else z)


def _quantize_rows(params: QuantParams, w: torch.Tensor) -> torch.Tensor:
    """``params.quantize(w)`` a block of rows at a time (the same codes): the quantize
    op's float temporaries (several times the tensor for per-group scales) are a block's,
    not an LLM output layer's."""
    rows = max(1, _ROW_BLOCK_BYTES // (4 * max(1, w.shape[-1])))
    part = _row_params(params, w)
    if part is None or w.shape[0] <= rows:
        return params.quantize(w)
    out: torch.Tensor | None = None
    for i in range(0, w.shape[0], rows):
        qi = part(i, i + rows).quantize(w[i:i + rows])
        if out is None:
            out = torch.empty((w.shape[0], *qi.shape[1:]), dtype=qi.dtype)
        out[i:i + qi.shape[0]] = qi
    assert out is not None
    return out


class _RowwiseDequantized(ConstantDequantized):
    """``program.run`` (same values) with each constant weight dequantized once for all
    runs (``edgecc.simulate``, when all fit in ``cache_bytes``), else each weight
    dequantized a block of rows at a time into its float tensor on each run: the dequantize
    op's whole-tensor temporaries (the codes as float, minus the zero point, times the
    scale; full-size scales with per-group) of an LLM's output layer were the largest
    transient of the output-error runs."""

    def dequantize_uncached(self, target: Any, args: Any, kwargs: Any) -> torch.Tensor:
        from edgecc.quant import DEQUANTIZE

        if target is DEQUANTIZE and not kwargs and len(args) == 7:
            out = _dequantize_rows(*args)
            if out is not None:
                return out
        return target(*args, **kwargs)


def _dequantize_rows(q: Any, scale: Any, zero_point: Any, axis: Any, block_size: Any,
                     dtype: Any, out_dtype: Any) -> torch.Tensor | None:
    """``dequantize(...)`` of a 2-D weight into one preallocated tensor, a block of rows
    at a time; None where the rows cannot be split (then the op runs whole)."""
    if not (isinstance(q, torch.Tensor) and isinstance(scale, torch.Tensor)
            and isinstance(zero_point, torch.Tensor) and q.dim() == 2):
        return None
    params = QuantParams(dtype, scale, zero_point, axis, block_size)
    part = _row_params(params, q)
    cols = q.shape[1] * (2 if qformat(dtype).packed else 1)
    rows = max(1, _ROW_BLOCK_BYTES // (4 * max(1, cols)))
    if part is None or q.shape[0] <= rows:
        return None
    out: torch.Tensor | None = None
    for i in range(0, q.shape[0], rows):
        block = part(i, i + rows).dequantize(q[i:i + rows], out_dtype)
        if out is None:
            out = torch.empty((q.shape[0], *block.shape[1:]), dtype=block.dtype)
        out[i:i + block.shape[0]] = block
    return out


def _weight_sqnr_db(w: torch.Tensor, q: torch.Tensor, params: QuantParams,
                    rows: int = 256) -> float:
    """``sqnr_db(w, params.dequantize(q))`` accumulated over blocks of rows in float64,
    dequantizing a block at a time: the whole-tensor float64 temporaries were the quantize
    pass's largest transient (an LLM's output layer at 8x its float32 size), and the whole
    dequantized weight the next (several times it with per-group scales)."""
    part = _row_params(params, w) if w.shape[0] > rows else None
    if part is None:
        w_hat = params.dequantize(q)
        if w.dim() < 2 or w.shape[0] <= rows:
            return sqnr_db(w, w_hat)
    signal = noise = 0.0
    for i in range(0, w.shape[0], rows):
        ref = w[i:i + rows].detach().double()
        got = (part(i, i + rows).dequantize(q[i:i + rows]) if part is not None
               else w_hat[i:i + rows])
        noise += (ref - got.detach().double()).pow(2).sum().item()
        signal += ref.pow(2).sum().item()
    if noise == 0:
        return math.inf
    return 10 * math.log10(max(signal, 1e-300) / noise)


def _is_16bit(tq: TensorQuant | None) -> bool:
    return tq is not None and qformat(tq.dtype).is_float and qformat(tq.dtype).bits == 16


def _inputs_of(layers: list[Layer]) -> dict[fx.Node, list[Layer]]:
    by_input: dict[fx.Node, list[Layer]] = defaultdict(list)
    for layer in layers:
        if layer.input is not None:
            by_input[layer.input].append(layer)
    return dict(by_input)


def _quantize_activations(program: Program, scheme: Scheme,
                          inputs: dict[fx.Node, list[Layer]], observers: dict[fx.Node, Any],
                          skipped: dict[str, str]) -> None:
    a = scheme.activations
    assert a is not None
    qmin, qmax = a.range()
    for value, layers in inputs.items():
        consumers = [la.node for la in layers if la.name not in skipped]
        if not consumers:
            continue
        if _is_16bit(a):
            insert_qdq(program, value, consumers, params_from_scale(a.dtype, torch.tensor(1.0)))
        elif scheme.dynamic:
            shape = value.meta["val"].shape
            # per token: rows of linear-layer inputs (a convolution's last dim is width)
            per_token = (a.granularity == "per-token" and len(shape) >= 2
                         and isinstance(shape[-1], int)
                         and all(la.kind == "linear" for la in layers))
            scale, zp = insert_dynamic_qparams(
                program, value, first_in_graph(program.graph, consumers), qmin, qmax,
                per_token=per_token, symmetric=a.symmetric)
            params = params_from_scale(a.dtype, torch.tensor(1.0), qmin=qmin, qmax=qmax,
                                       axis=len(shape) - 1 if per_token else 0,
                                       block_size=int(shape[-1]) if per_token else 0)
            insert_qdq(program, value, consumers, params, scale=scale, zero_point=zp)
        else:
            lo, hi = observers[value].range(a)
            scale, zp = scale_from_range(lo, hi, a.dtype, symmetric=a.symmetric, qmin=qmin,
                                         qmax=qmax)
            insert_qdq(program, value, consumers,
                       params_from_scale(a.dtype, scale, zp, qmin=qmin, qmax=qmax))


@dataclasses.dataclass
class AwqSearch:
    """AWQ's search, one group of linears reading one value at a time (quantize-blockwise
    runs it block by block), and what it found. ``options``: this pass's or
    quantize-blockwise's (their ``awq_grid``, ``awq_fold``, ``awq_clip``, ``awq_tokens``)."""

    wq: TensorQuant
    options: Any
    scale_dtype: torch.dtype
    clips: dict[str, torch.Tensor] = dataclasses.field(default_factory=dict)  # by layer
    alphas: list[float] = dataclasses.field(default_factory=list)
    gains: list[float] = dataclasses.field(default_factory=list)
    unfolded: dict[str, str] = dataclasses.field(default_factory=dict)

    def group(self, program: Program, value: fx.Node, group: list[Layer],
              x: torch.Tensor) -> None:
        """The linears ``group`` reading ``value``, on its kept rows ``x``: search the input
        scale s; fold 1/s into value's producer (``awq_fold``; s = 1 where it cannot) or
        multiply ``value`` by 1/s in the graph; W <- W*s; with ``awq_clip``, each linear's
        clipping ratios on ``x[:awq_tokens] / s``. The searches run where ``x`` is; the
        program stays on the CPU."""
        opt, dev, wq, scale_dtype = self.options, x.device, self.wq, self.scale_dtype
        ws = [program.tensor(la.weight).float() for la in group]
        s, alpha, gain = awq.search_scale([w.to(dev) for w in ws], x, wq, grid=opt.awq_grid,
                                          scale_dtype=scale_dtype)
        s = s.cpu()
        if alpha > 0 and opt.awq_fold:
            why = fold_input_scale(program, value, [la.node for la in group], 1.0 / s)
            if why:
                self.unfolded[group[0].name] = why
                s, alpha, gain = torch.ones_like(s), 0.0, 0.0
        elif alpha > 0:
            scale_input(program, value, [la.node for la in group], 1.0 / s,
                        f"{group[0].name}_awq_inv_scale")
        self.alphas.append(alpha)
        self.gains.append(gain)
        if alpha > 0:
            for la, w in zip(group, ws):
                set_weight(program, la, w * s)
        if opt.awq_clip:
            xs = x[: opt.awq_tokens] / s.to(dev)
            for la in group:
                self.clips[la.name] = awq.search_clip(
                    program.tensor(la.weight).float().to(dev), xs, wq,
                    scale_dtype=scale_dtype).cpu()

    def stats(self) -> dict[str, Any]:
        alphas, gains = self.alphas, self.gains
        return {"groups": len(alphas), "scaled": sum(a > 0 for a in alphas),
                "mean_alpha": round(sum(alphas) / max(len(alphas), 1), 3),
                "mean_error_reduction": round(sum(gains) / max(len(gains), 1), 4),
                **({"not_folded": self.unfolded} if self.unfolded else {})}


def _apply_awq(program: Program, layers: list[Layer], batches: Any, wq: TensorQuant,
               options: QuantizeOptions, scale_dtype: torch.dtype, progress: bool | None,
               device: Any = None) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    groups = {v: [la for la in ls if la.kind == "linear"]
              for v, ls in _inputs_of(layers).items()}
    groups = {v: ls for v, ls in groups.items() if ls}
    samples: dict[fx.Node, list[torch.Tensor]] = defaultdict(list)
    gen = torch.Generator().manual_seed(0)

    def on_value(node: fx.Node, value: torch.Tensor) -> None:
        rows = value.detach().reshape(-1, value.shape[-1])
        keep = torch.randperm(rows.shape[0], generator=gen)[: options.awq_tokens]
        samples[node].append(rows[keep].float())

    record_values(program, batches, groups, on_value, desc="AWQ activations",
                  progress=progress, device=device)
    # under torchrun: every rank searches on the rows all ranks kept (same order, same seed)
    samples = defaultdict(list, {v: distributed.gather_rows(s) for v, s in samples.items()})
    if distributed.is_distributed():
        gen.manual_seed(0)
    search = AwqSearch(wq, options, scale_dtype)
    for value, group in progress_iter(list(groups.items()), "AWQ search", enabled=progress):
        x = torch.cat(samples[value])
        x = x[torch.randperm(x.shape[0], generator=gen)[: options.awq_tokens * 4]]
        search.group(program, value, group, x)
    # no shape propagation here: until the pass's own at its end, nothing reads the new
    # nodes' metadata (find_layers goes by module paths and weights; the calibration runs
    # execute the graph) — on SmolLM2-135M each propagation is ~5 s
    # the graph changed under the layers: find them again (same names)
    fresh = {la.name: la for la in find_layers(program)}
    for i, la in enumerate(layers):
        if la.name in fresh:
            layers[i] = fresh[la.name]
    return search.clips, search.stats()


def _correct_biases(program: Program, errors: dict[str, tuple[Layer, torch.Tensor]],
                    batches: Any, progress: bool | None) -> int:
    """``b += (W - Q(W)) · E[x]``: remove the mean output shift weight rounding causes.

    ``E[x]`` is the per-channel mean of each layer's input in the *quantized* program (what
    the layer really sees), over the calibration batches. For a convolution it is the
    spatial mean per input channel (exact away from the zero-padded border). One
    calibration pass: each layer corrects its own rounding, not shifts from upstream.
    """
    sums: dict[fx.Node, torch.Tensor] = {}
    counts: dict[fx.Node, int] = defaultdict(int)
    inputs = {la.node.args[0]: la for la, _ in errors.values()}

    def on_value(node: fx.Node, value: torch.Tensor) -> None:
        la = inputs[node]
        v = value.detach().float()
        if la.kind == "conv":
            m = v.transpose(0, 1).reshape(v.shape[1], -1).mean(1)
        else:
            m = v.reshape(-1, v.shape[-1]).mean(0)
        sums[node] = m if node not in sums else sums[node] + m
        counts[node] += 1

    record_values(program, batches, inputs, on_value, desc="bias correction",
                  progress=progress)
    corrected = 0
    for layer, err in errors.values():
        x = layer.node.args[0]
        if x not in sums or layer.out_axis != 0:
            continue
        mean = sums[x] / counts[x]
        if layer.kind == "conv":
            groups = int(layer.node.args[8])
            cin = err.shape[1]
            per_group = err.sum(dim=tuple(range(2, err.dim())))  # [Cout, Cin/g]
            cout_g = err.shape[0] // groups
            delta = torch.stack([per_group[o] @ mean[(o // cout_g) * cin:(o // cout_g + 1) * cin]
                                 for o in range(err.shape[0])])
        else:
            delta = err @ mean
        bias = layer.node.args[2]
        value = delta if bias is None else program.tensor(bias).float() + delta
        node = program.add_constant(f"{layer.name}_bias_corrected", value, before=layer.node)
        layer.node.update_arg(2, node)
        if bias is not None and not bias.users:
            program.graph.erase_node(bias)
        corrected += 1
    return corrected


class QuantSensitivity(Pass):
    """Report per-layer quantization sensitivity (most sensitive first); changes nothing."""

    name = "quant-sensitivity"
    Options = QuantizeOptions

    def validate(self, program: Program, options: QuantizeOptions,
                 context: PassContext) -> None:
        resolve_scheme(options, context.target)
        validate_calibration(program, context.calibration, "quant-sensitivity")

    def run(self, program: Program, options: QuantizeOptions,
            context: PassContext) -> PassResult:
        from edgecc.passes.quantize.sensitivity import layer_sensitivity

        batches = check_calibration(program, context.calibration, "quant-sensitivity")
        report = layer_sensitivity(program, batches, options, context=context)
        return PassResult(program, False, {
            "scheme": options.scheme, "layers": len(report),
            "report": [{k: (round(v, 6) if isinstance(v, float) else v) for k, v in e.items()}
                       for e in report]})
