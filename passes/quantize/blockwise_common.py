"""The block walk that block-by-block GPTQ and AWQ share (bounded device memory).

:mod:`gptq_blockwise` and :mod:`awq_blockwise` differ only in what they do with one block's
calibration activations; both walk a Hugging Face decoder (``model.model.layers``, ...)
the same way, which is this module::

    walk = BlockWalk(model, batches, options.device, options.max_blocks, "GPTQ")
    for i, blk in walk:                        # blk → device (timer, peak counter reset)
        handles = [...]                        # hooks on blk's linears
        outs = walk.forward(blk, handles)      # every batch through blk; hooks removed
        ...                                    # quantize blk's linears on the device
        walk.advance(blk, outs, propagate)     # outputs → block i+1's inputs
                                               # blk → CPU (seconds, peak recorded)
    stats = {**walk.stats(len(codes), tq, propagate), ...}

The embeddings and rotary tables run once on the CPU (:func:`block_inputs`, where the model
is); only the current block and the hidden states of the calibration tokens
``[batches x T x d]`` are on the device.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Literal

import torch

from edgecc import distributed
from edgecc.errors import InputSpecError
from edgecc.passes.quantize.scheme import TensorQuant
from edgecc.quant import QuantParams, qformat


@dataclasses.dataclass(frozen=True)
class BlockWeights:
    """The weight format both block-by-block algorithms take (the options' first fields)."""

    dtype: str = "uint4"
    group_size: int = 128
    symmetric: bool = False

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


def params_on_cpu(params: QuantParams) -> QuantParams:
    return dataclasses.replace(params, scale=params.scale.cpu(),
                               zero_point=params.zero_point.cpu())


class BlockWalk:
    """The calibration hidden states walked through ``model``'s decoder blocks, one block
    on ``device`` at a time (see the module docstring); ``what`` names the algorithm in
    the error for no batches. ``max_blocks``: only the first N blocks (0: all)."""

    def __init__(self, model: torch.nn.Module, batches: Sequence[Any],
                 device: str | torch.device | None, max_blocks: int, what: str) -> None:
        self.dev = dev = distributed.resolve_device(device)
        if not batches:
            raise InputSpecError(f"block-by-block {what} needs calibration batches of "
                                 "token ids")
        self.blocks = decoder_blocks(model)
        model.to("cpu")
        self.cuda = dev.type == "cuda"
        if self.cuda:
            torch.cuda.synchronize(dev)
            torch.cuda.reset_peak_memory_stats(dev)
        self.t_start = time.perf_counter()
        inputs = block_inputs(model, self.blocks, batches)
        self.hidden = [h.to(dev) for h, _ in inputs]
        self.kwargs = [_to(kw, dev) for _, kw in inputs]
        self.tokens = int(sum(h.shape[0] * h.shape[1] for h, _ in inputs))
        blocks = list(self.blocks)
        self.todo = blocks[:max_blocks] if max_blocks else blocks
        self.per_block: list[dict[str, Any]] = []

    def __iter__(self) -> Iterator[tuple[int, torch.nn.Module]]:
        """``(i, block i)`` on the device; after the loop body, the block back on the CPU
        and its seconds and peak device memory recorded."""
        dev = self.dev
        for i, blk in enumerate(self.todo):
            t0 = time.perf_counter()
            if self.cuda:
                torch.cuda.reset_peak_memory_stats(dev)
            blk.to(dev)
            yield i, blk
            blk.to("cpu")
            if self.cuda:
                torch.cuda.synchronize(dev)
            self.per_block.append({"seconds": round(time.perf_counter() - t0, 3),
                                   "peak_device_bytes": torch.cuda.max_memory_allocated(dev)
                                   if self.cuda else None})

    def forward(self, blk: torch.nn.Module, handles: Sequence[Any],
                before_batch: Callable[[int], None] | None = None) -> list[torch.Tensor]:
        """Every batch's hidden states through ``blk`` (``before_batch(b)`` first, e.g. to
        reset a hook's per-forward state); the hooks' ``handles`` are removed after, also
        on an error. Returns the block's outputs."""
        outs = []
        try:
            with torch.no_grad():
                for b, (h, kw) in enumerate(zip(self.hidden, self.kwargs)):
                    if before_batch is not None:
                        before_batch(b)
                    outs.append(_first(blk(h, **kw)))
        finally:
            for hd in handles:
                hd.remove()
        return outs

    def advance(self, blk: torch.nn.Module, outs: list[torch.Tensor],
                propagate: Literal["float", "quantized"]) -> None:
        """The next block's inputs: ``outs`` (the float block's outputs), or with
        ``propagate="quantized"`` the outputs of ``blk`` as it is now (quantized)."""
        if propagate == "quantized":
            with torch.no_grad():
                outs = [_first(blk(h, **kw)) for h, kw in zip(self.hidden, self.kwargs)]
        self.hidden = outs

    def stats(self, linears: int, weights: TensorQuant,
              propagate: Literal["float", "quantized"]) -> dict[str, Any]:
        """The stats both algorithms report (the walk's seconds up to now)."""
        per_block = self.per_block
        return {
            "device": str(self.dev), "blocks": len(self.todo), "of_blocks": len(self.blocks),
            "linears": linears, "weights": weights.describe(), "propagate": propagate,
            "seconds": round(time.perf_counter() - self.t_start, 3),
            "seconds_per_block": [b["seconds"] for b in per_block],
            "peak_device_bytes": max((b["peak_device_bytes"] or 0) for b in per_block)
            if self.cuda else None,
            "peak_device_bytes_per_block": [b["peak_device_bytes"] for b in per_block],
            "calibration_tokens": self.tokens,
        }


__all__ = ["BlockWalk", "BlockWeights", "BlockwiseResult", "block_inputs", "decoder_blocks",
           "params_on_cpu"]
