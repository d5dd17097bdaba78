"""Block-by-block GPTQ for decoder LLMs with bounded device memory.

The ``quantize{algorithm=gptq}`` pass calibrates the whole program in one run, so the whole
model and every layer's inputs live on ``context.device`` at once. For a decoder LLM larger
than the device, :func:`gptq_decoder_blockwise` walks the decoder blocks in order (as
GPTQ's reference code and GPTQModel / llm-compressor do) with only one block and its
calibration activations on the device::

    CPU:    embeddings ─ block 0 ─ block 1 ─ ... ─ block L-1 ─ norm ─ lm_head  (all weights)
    device:            [block i] + hidden states of the calibration tokens [batches x T x d]

    for each block i:  block → device; forward every batch with hooks on its linears
                       (Hessians 2/n Σ x xᵀ, all-reduced under torchrun); GPTQ each linear on
                       the device; the block's outputs become block i+1's inputs; block → CPU

Inputs of block i+1 (``propagate``): ``"float"`` — the outputs of the float block i, which
is exactly what the whole-model pass sees in its one calibration run, so the two give the
same weights (to float rounding of the activations; the test pins the tolerance);
``"quantized"`` — the outputs of the already quantized block i (GPTQ paper's sequential
mode: later blocks correct for earlier blocks' error; no whole-model equivalent).

Works on Hugging Face decoder models laid out as ``model.model.layers`` (Llama, Qwen2,
Mistral, SmolLM, ...). The model's linear weights are replaced by their dequantized GPTQ
values in place (float, on the CPU); the returned :class:`BlockwiseResult` holds the codes
and scales of every linear (for an exporter) and the stats: seconds per block, peak device
memory (``torch.cuda.max_memory_allocated``) overall and per block, layer output errors
``tr(ΔW H ΔWᵀ)``. AWQ block by block: :mod:`awq_blockwise`; both inside a pipeline, on a
traced program cut into the spans of its blocks: the ``quantize-blockwise`` pass
(:mod:`quantize_blockwise`).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Sequence
from typing import Any, Literal

import torch

from edgecc import distributed
from edgecc.errors import InputSpecError
from edgecc.passes.quantize import gptq
from edgecc.passes.quantize.scheme import TensorQuant
from edgecc.quant import QuantParams, qformat


@dataclasses.dataclass(frozen=True)
class BlockwiseOptions:
    """GPTQ settings as in ``quantize{scheme=w4a16,algorithm=gptq}`` (same defaults)."""

    dtype: str = "uint4"
    group_size: int = 128
    symmetric: bool = False
    block: int = 128  # GPTQ lazy-batch columns
    damp: float = 0.01
    act_order: bool = True
    propagate: Literal["float", "quantized"] = "float"
    device: str | None = None  # None: the CPU
    max_blocks: int = 0  # quantize only the first N blocks (timing a sample); 0: all

    def weights(self) -> TensorQuant:
        return TensorQuant(self.dtype, "per-group" if self.group_size else "per-channel",
                           self.symmetric, group_size=self.group_size)

    def scale_dtype(self) -> torch.dtype:  # as the quantize pass: float16 scales for 4-bit
        return torch.float16 if qformat(self.dtype).bits == 4 else torch.float32


@dataclasses.dataclass
class BlockwiseResult:
    codes: dict[str, tuple[torch.Tensor, QuantParams]]  # linear name -> (q, params), CPU
    stats: dict[str, Any]


class _Stop(Exception):
    """Raised by the hook on block 0 once its inputs are captured."""


def decoder_blocks(model: torch.nn.Module) -> torch.nn.ModuleList:
    for path in ("model.layers", "transformer.h", "layers"):
        mod: Any = model
        for part in path.split("."):
            mod = getattr(mod, part, None)
        if isinstance(mod, torch.nn.ModuleList) and len(mod):
            return mod
    raise InputSpecError(f"{type(model).__name__} has no decoder blocks at model.layers / "
                         "transformer.h / layers: block-by-block GPTQ needs a decoder LLM")


def _to(x: Any, dev: torch.device) -> Any:
    if isinstance(x, torch.Tensor):
        return x.to(dev)
    if isinstance(x, (tuple, list)):
        return type(x)(_to(v, dev) for v in x)
    if isinstance(x, dict):
        return {k: _to(v, dev) for k, v in x.items()}
    return x


def _first(out: Any) -> torch.Tensor:
    return out[0] if isinstance(out, (tuple, list)) else out


def block_inputs(model: torch.nn.Module, blocks: torch.nn.ModuleList,
                 batches: Sequence[Any]) -> list[tuple[torch.Tensor, dict[str, Any]]]:
    """(hidden states, keyword arguments) with which the model calls block 0, per batch
    (the embeddings and rotary tables computed on the CPU, where the model is)."""
    captured: list[tuple[torch.Tensor, dict[str, Any]]] = []

    def hook(module: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        hidden = args[0] if args else kwargs.pop("hidden_states")
        rest = {k: v for k, v in kwargs.items() if k != "hidden_states"}
        captured.append((hidden.detach(), rest))
        raise _Stop

    handle = blocks[0].register_forward_pre_hook(hook, with_kwargs=True)
    try:
        with torch.no_grad():
            for batch in batches:
                ids = batch[0] if isinstance(batch, (tuple, list)) else batch
                try:
                    model(input_ids=ids, use_cache=False)
                except _Stop:
                    pass
    finally:
        handle.remove()
    return captured


def gptq_decoder_blockwise(model: torch.nn.Module, batches: Sequence[Any],
                           options: BlockwiseOptions = BlockwiseOptions()) -> BlockwiseResult:
    """GPTQ of every linear in ``model``'s decoder blocks, one block on the device at a
    time (see the module docstring); ``batches`` are token-id tensors ``[batch, T]`` (or
    1-tuples of them), this rank's shard under torchrun."""
    dev = distributed.resolve_device(options.device)
    if not batches:
        raise InputSpecError("block-by-block GPTQ needs calibration batches of token ids")
    blocks = decoder_blocks(model)
    model.to("cpu")
    cuda = dev.type == "cuda"
    if cuda:
        torch.cuda.synchronize(dev)
        torch.cuda.reset_peak_memory_stats(dev)
    t_start = time.perf_counter()
    inputs = block_inputs(model, blocks, batches)
    hidden = [h.to(dev) for h, _ in inputs]
    kwargs = [_to(kw, dev) for _, kw in inputs]
    tq, scale_dtype = options.weights(), options.scale_dtype()
    codes: dict[str, tuple[torch.Tensor, QuantParams]] = {}
    per_block: list[dict[str, Any]] = []
    errors: dict[str, float] = {}
    prefix = {id(b): f"{i}" for i, b in enumerate(blocks)}
    todo = list(blocks)[:options.max_blocks] if options.max_blocks else list(blocks)
    for i, blk in enumerate(todo):
        t0 = time.perf_counter()
        if cuda:
            torch.cuda.reset_peak_memory_stats(dev)
        blk.to(dev)
        linears = {n: m for n, m in blk.named_modules() if isinstance(m, torch.nn.Linear)}
        accs = {n: gptq.HessianAccumulator() for n in linears}
        # q/k/v (gate/up) read one tensor: one Hessian for all of them, as in the pass; the
        # tensor is held so its id cannot be reused within the forward
        shared: dict[int, tuple[torch.Tensor, str]] = {}

        def recorder(name: str) -> Any:
            def hook(module: Any, args: tuple[Any, ...]) -> None:
                x = args[0]
                if id(x) in shared:  # the same input tensor: reuse its Hessian
                    accs[name] = accs[shared[id(x)][1]]
                    return
                shared[id(x)] = (x, name)
                accs[name].update(x)
            return hook

        handles = [m.register_forward_pre_hook(recorder(n)) for n, m in linears.items()]
        outs = []
        try:
            with torch.no_grad():
                for h, kw in zip(hidden, kwargs):
                    shared.clear()
                    outs.append(_first(blk(h, **kw)))
        finally:
            for hd in handles:
                hd.remove()
        for acc in {id(a): a for a in accs.values()}.values():
            distributed.reduce_hessian(acc)
        for n, m in linears.items():
            acc = accs[n]
            w = m.weight.detach()
            w_hat, params = gptq.gptq_quantize(w.to(torch.float32), acc.h, tq,
                                               block=options.block, damp=options.damp,
                                               act_order=options.act_order,
                                               scale_dtype=scale_dtype)
            params = dataclasses.replace(params, scale=params.scale.cpu(),
                                         zero_point=params.zero_point.cpu())
            q = params.quantize(w_hat.cpu())
            deq = params.dequantize(q)
            full = f"{prefix[id(blk)]}.{n}"
            errors[full] = gptq.output_error(w.cpu(), deq, acc.h.cpu())
            codes[full] = (q, params)
            with torch.no_grad():
                m.weight.copy_(deq.to(m.weight.dtype).to(dev))
        if options.propagate == "quantized":
            with torch.no_grad():
                outs = [_first(blk(h, **kw)) for h, kw in zip(hidden, kwargs)]
        hidden = outs
        blk.to("cpu")
        if cuda:
            torch.cuda.synchronize(dev)
        per_block.append({"block": i, "seconds": round(time.perf_counter() - t0, 3),
                          "peak_device_bytes": torch.cuda.max_memory_allocated(dev)
                          if cuda else None})
    peak = max((b["peak_device_bytes"] or 0) for b in per_block) if cuda else None
    stats = {
        "device": str(dev), "blocks": len(todo), "of_blocks": len(blocks),
        "linears": len(codes),
        "weights": tq.describe(), "propagate": options.propagate,
        "seconds": round(time.perf_counter() - t_start, 3),
        "seconds_per_block": [b["seconds"] for b in per_block],
        "peak_device_bytes": peak,
        "peak_device_bytes_per_block": [b["peak_device_bytes"] for b in per_block],
        "calibration_tokens": int(sum(h.shape[0] * h.shape[1] for h, _ in inputs)),
        "output_error": round(sum(errors.values()), 6),
        "layer_output_error": {k: round(v, 6) for k, v in errors.items()},
        "worst_layers_output_error": dict(sorted(errors.items(), key=lambda kv: -kv[1])[:5]),
    }
    return BlockwiseResult(codes, stats)


__all__ = ["BlockwiseOptions", "BlockwiseResult", "block_inputs", "decoder_blocks",
           "gptq_decoder_blockwise"]
