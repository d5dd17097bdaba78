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
(:mod:`quantize_blockwise`). The walk over the blocks both use: :mod:`blockwise_common`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

import torch

from edgecc import distributed
from edgecc.passes.quantize import gptq
from edgecc.passes.quantize.blockwise_common import (
    BlockWalk, BlockWeights, BlockwiseResult, block_inputs, decoder_blocks, params_on_cpu,
)
from edgecc.quant import QuantParams


@dataclasses.dataclass(frozen=True)
class BlockwiseOptions(BlockWeights):
    """GPTQ settings as in ``quantize{scheme=w4a16,algorithm=gptq}`` (same defaults; the
    weight format's fields ``dtype``, ``group_size``, ``symmetric`` first)."""

    block: int = 128  # GPTQ lazy-batch columns
    damp: float = 0.01
    act_order: bool = True
    propagate: Literal["float", "quantized"] = "float"
    device: str | None = None  # None: the CPU
    max_blocks: int = 0  # quantize only the first N blocks (timing a sample); 0: all


def gptq_decoder_blockwise(model: torch.nn.Module, batches: Sequence[Any],
                           options: BlockwiseOptions = BlockwiseOptions()) -> BlockwiseResult:
    """GPTQ of every linear in ``model``'s decoder blocks, one block on the device at a
    time (see the module docstring); ``batches`` are token-id tensors ``[batch, T]`` (or
    1-tuples of them), this rank's shard under torchrun."""
    walk = BlockWalk(model, batches, options.device, options.max_blocks, "GPTQ")
    tq, scale_dtype = options.weights(), options.scale_dtype()
    codes: dict[str, tuple[torch.Tensor, QuantParams]] = {}
    errors: dict[str, float] = {}
    for i, blk in walk:
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
        outs = walk.forward(blk, handles, lambda b: shared.clear())
        for acc in {id(a): a for a in accs.values()}.values():
            distributed.reduce_hessian(acc)
        for n, m in linears.items():
            acc = accs[n]
            w = m.weight.detach()
            w_hat, params = gptq.gptq_quantize(w.to(torch.float32), acc.h, tq,
                                               block=options.block, damp=options.damp,
                                               act_order=options.act_order,
                                               scale_dtype=scale_dtype)
            params = params_on_cpu(params)
            q = params.quantize(w_hat.cpu())
            deq = params.dequantize(q)
            full = f"{i}.{n}"
            errors[full] = gptq.output_error(w.cpu(), deq, acc.h.cpu())
            codes[full] = (q, params)
            with torch.no_grad():
                m.weight.copy_(deq.to(m.weight.dtype).to(walk.dev))
        walk.advance(blk, outs, options.propagate)
    stats = {
        **walk.stats(len(codes), tq, options.propagate),
        "output_error": round(sum(errors.values()), 6),
        "layer_output_error": {k: round(v, 6) for k, v in errors.items()},
        "worst_layers_output_error": dict(sorted(errors.items(), key=lambda kv: -kv[1])[:5]),
    }
    return BlockwiseResult(codes, stats)


__all__ = ["BlockwiseOptions", "BlockwiseResult", "block_inputs", "decoder_blocks",
           "gptq_decoder_blockwise"]
