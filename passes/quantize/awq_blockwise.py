"""Block-by-block AWQ for decoder LLMs with bounded device memory.

The companion of :mod:`gptq_blockwise`: the decoder blocks are walked in order with only the
current block and its calibration activations on the device::

    CPU:    embeddings ─ block 0 ─ block 1 ─ ... ─ block L-1 ─ norm ─ lm_head  (all weights)
    device:            [block i] + hidden states of the calibration tokens [batches x T x d]

    for each block i:  block → device; forward every batch with hooks on its linears (the
                       AWQ rows each input keeps; gathered under torchrun); per group of
                       linears reading one input (q/k/v, gate/up, o, down), in order:
                       search the input scale s, fold 1/s into the producer, W ← W·s,
                       search the clipping ratio; then round every linear (RTN with its
                       clip) on the device; outputs → block i+1's inputs; block → CPU

What it computes is ``quantize{scheme=w4a16,algorithm=awq,awq_fold=true}`` restricted to the
decoder blocks' linears: the same random row choices (the whole-model pass draws them from
one generator, batch by batch in graph order; :class:`RowSampler` replays that stream), the
same search, the same folds, the same rounding — so on the CPU with ``propagate="float"``
the weights are identical (tests/distributed/test_awq_blockwise.py)::

    Before (block i):  h ─ input_layernorm(w_n) ─ q/k/v(W) ... ─ up(W_u) · act(gate) ─ down
    After:             h ─ input_layernorm(w_n / s) ─ q/k/v(deq(Q(W·s, clip))) ...
                       up(deq(Q(W_u·s_gu / s_d, clip))) ─ down(deq(Q(W_d·s_d, clip)))

The scale is folded (the module has no place for a multiply): into an ``*RMSNorm`` weight
(``w * x̂``; not Gemma's ``(1 + w) * x̂``), or into ``up_proj``'s rows for ``down_proj``.
A group whose input has neither producer (``o_proj``: a reshaped attention output) keeps
``s = 1`` and is clipped only, exactly as the whole-model pass does with ``awq_fold=true``.
The model's weights are replaced in place (float, on the CPU); the result holds the codes
of every linear and the stats: seconds and peak device memory (overall and per block),
the mean α and the output-error reduction of the search, the groups that were not folded.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, Literal

import torch

from edgecc import distributed
from edgecc.errors import InputSpecError
from edgecc.passes.quantize import awq
from edgecc.passes.quantize.blockwise_common import (
    BlockWalk, BlockWeights, BlockwiseResult, params_on_cpu,
)
from edgecc.passes.quantize.weights import can_quantize, weight_params
from edgecc.quant import QuantParams


@dataclasses.dataclass(frozen=True)
class AwqBlockwiseOptions(BlockWeights):
    """AWQ settings as in ``quantize{scheme=w4a16,algorithm=awq,awq_fold=true}`` (same
    defaults: ``grid`` = awq_grid, ``clip`` = awq_clip, ``tokens`` = awq_tokens; the weight
    format's fields ``dtype``, ``group_size``, ``symmetric`` first)."""

    grid: int = 20
    clip: bool = True
    tokens: int = 512
    propagate: Literal["float", "quantized"] = "float"
    device: str | None = None  # None: the CPU
    max_blocks: int = 0  # only the first N blocks (timing a sample); 0: all


class RowSampler:
    """The whole-model AWQ pass's random choices, replayed block by block.

    The pass keeps ``randperm(rows)[:tokens]`` of every group input, batch by batch, in
    graph order (block 0's groups, block 1's, ...), from one generator seeded 0; then, per
    group in graph order, it permutes the kept rows from the same generator (re-seeded 0
    under torchrun, after the rows are gathered). ``keep(b, i, j, rows)`` is group ``j`` of
    block ``i`` on batch ``b`` (``groups[i]`` groups in block ``i``); batch ``b``'s draws
    for every block are made when block 0 first asks (batches in order, every group input
    of a batch has the same rows, as in a decoder; a group that differs gets rows of its
    own, counted in ``not_replayed``); ``search(n)`` is the next permutation of the
    search, once every batch is drawn."""

    def __init__(self, groups: Sequence[int], tokens: int) -> None:
        self._gen = torch.Generator().manual_seed(0)
        self._groups, self._tokens = list(groups), tokens
        self._keep: list[tuple[int, list[list[torch.Tensor]]]] = []
        self._searching = False
        self.not_replayed = 0

    def keep(self, batch: int, block: int, group: int, rows: int) -> torch.Tensor:
        if batch == len(self._keep) and not self._searching:
            self._keep.append((rows, [[torch.randperm(rows, generator=self._gen)[:self._tokens]
                                       for _ in range(g)] for g in self._groups]))
        if batch < len(self._keep) and self._keep[batch][0] == rows:
            return self._keep[batch][1][block][group]
        self.not_replayed += 1
        return torch.randperm(rows, generator=torch.Generator().manual_seed(
            batch * 7919 + block * 31 + group))[:self._tokens]

    def search(self, n: int) -> torch.Tensor:
        if not self._searching and distributed.is_distributed():
            self._gen.manual_seed(0)
        self._searching = True
        return torch.randperm(n, generator=self._gen)


def _rms_norm(module: torch.nn.Module) -> bool:
    """``y = weight * x̂`` with a per-channel weight and no bias (the norms AWQ folds into)."""
    name = type(module).__name__
    return (name.endswith("RMSNorm") and not name.startswith("Gemma")
            and isinstance(getattr(module, "weight", None), torch.Tensor)
            and getattr(module, "bias", None) is None)


def _fold(blk: torch.nn.Module, group: list[str], producer: str | None,
          inv: torch.Tensor) -> str | None:
    """Multiply the output of the group's producer by ``inv``; None when done, else why
    not (nothing changed). As ``awq_fold.fold_input_scale`` does it, in float32."""
    with torch.no_grad():
        if producer is not None:
            norm = blk.get_submodule(producer)
            norm.weight.copy_((norm.weight.float() * inv).to(norm.weight.dtype))
            return None
        if len(group) == 1 and group[0].rsplit(".", 1)[-1] == "down_proj":
            parent = group[0].rsplit(".", 1)[0] if "." in group[0] else ""
            up = getattr(blk.get_submodule(parent), "up_proj", None)
            if isinstance(up, torch.nn.Linear) and up.weight.shape[0] == inv.numel():
                up.weight.copy_(up.weight.float() * inv[:, None])
                if up.bias is not None:
                    up.bias.copy_(up.bias.float() * inv)
                return None
    return "not a multiply by a norm weight or by up_proj's output"


def awq_decoder_blockwise(model: torch.nn.Module, batches: Sequence[Any],
                          options: AwqBlockwiseOptions = AwqBlockwiseOptions()
                          ) -> BlockwiseResult:
    """AWQ of every linear in ``model``'s decoder blocks, one block on the device at a time
    (see the module docstring); ``batches`` are token-id tensors ``[batch, T]`` (or
    1-tuples of them), this rank's shard under torchrun."""
    walk = BlockWalk(model, batches, options.device, options.max_blocks, "AWQ")
    dev = walk.dev
    tq, scale_dtype = options.weights(), options.scale_dtype()
    sampler: RowSampler | None = None
    codes: dict[str, tuple[torch.Tensor, QuantParams]] = {}
    alphas: list[float] = []
    gains: list[float] = []
    unfolded: dict[str, str] = {}
    for i, blk in walk:
        linears = {n: m for n, m in blk.named_modules() if isinstance(m, torch.nn.Linear)}
        norms = {id(m): n for n, m in blk.named_modules() if _rms_norm(m)}
        groups: list[list[str]] = []  # linears reading one input, in the order they run
        producers: list[str | None] = []
        samples: list[list[torch.Tensor]] = []
        seen: dict[int, tuple[torch.Tensor, int]] = {}  # input tensor id -> (it, group)
        made: dict[int, tuple[torch.Tensor, str]] = {}  # norm output id -> (it, norm)
        batch = [0]

        def norm_hook(module: Any, args: Any, out: Any) -> None:
            made[id(out)] = (out, norms[id(module)])

        def recorder(name: str) -> Any:
            def hook(module: Any, args: tuple[Any, ...]) -> None:
                x = args[0]
                if id(x) in seen:
                    j = seen[id(x)][1]
                    if batch[0] == 0:
                        groups[j].append(name)
                    return
                j = len(seen)
                seen[id(x)] = (x, j)
                if batch[0] == 0:
                    groups.append([name])
                    producers.append(made[id(x)][1] if id(x) in made else None)
                    samples.append([])
                r = x.detach().reshape(-1, x.shape[-1])
                keep = sampler.keep(batch[0], i, j, r.shape[0])
                samples[j].append(r[keep.to(r.device)].float())
            return hook

        if sampler is None:  # every block has block 0's groups: count them, then draw
            sampler = _count_groups(blk, linears, walk.hidden[0], walk.kwargs[0],
                                    len(walk.blocks), options.tokens)
        handles = [m.register_forward_pre_hook(recorder(n)) for n, m in linears.items()]
        handles += [m.register_forward_hook(norm_hook) for n, m in blk.named_modules()
                    if id(m) in norms]

        def before_batch(b: int) -> None:
            batch[0] = b
            seen.clear()
            made.clear()

        outs = walk.forward(blk, handles, before_batch)
        seen.clear()
        made.clear()
        clips: dict[str, torch.Tensor] = {}
        for group, producer, rows_j in zip(groups, producers, samples):
            x = distributed.gather_rows(rows_j)[0].to(dev) if distributed.is_distributed() \
                else torch.cat(rows_j)
            x = x[sampler.search(x.shape[0])[: options.tokens * 4].to(x.device)]
            mods = [linears[n] for n in group]
            ws = [m.weight.detach().float() for m in mods]
            s, alpha, gain = awq.search_scale(ws, x, tq, grid=options.grid,
                                              scale_dtype=scale_dtype)
            if alpha > 0:
                why = _fold(blk, group, producer, 1.0 / s)
                if why:
                    unfolded[f"{i}.{group[0]}"] = why
                    s, alpha, gain = torch.ones_like(s), 0.0, 0.0
            alphas.append(alpha)
            gains.append(gain)
            if alpha > 0:
                with torch.no_grad():
                    for m, w in zip(mods, ws):
                        m.weight.copy_(w * s)
            if options.clip:
                xs = x[: options.tokens] / s
                for n, m in zip(group, mods):
                    clips[n] = awq.search_clip(m.weight.detach().float(), xs, tq,
                                               scale_dtype=scale_dtype)
        for n, m in linears.items():
            w = m.weight.detach().float()
            why = can_quantize(w, tq, 1, False, 0)
            if why:
                raise InputSpecError(f"block {i} {n}: {why}; choose a group_size that divides "
                                     "the linear's input features")
            params = weight_params(w, tq, 0, 1, clip=clips.get(n), scale_dtype=scale_dtype)
            q = params.quantize(w)
            deq = params.dequantize(q)
            codes[f"{i}.{n}"] = (q.cpu(), params_on_cpu(params))
            with torch.no_grad():
                m.weight.copy_(deq.to(m.weight.dtype))
        walk.advance(blk, outs, options.propagate)
    stats = {
        **walk.stats(len(codes), tq, options.propagate),
        "groups": len(alphas), "scaled": sum(a > 0 for a in alphas),
        "mean_alpha": round(sum(alphas) / max(len(alphas), 1), 3),
        "mean_error_reduction": round(sum(gains) / max(len(gains), 1), 4),
        "not_folded": unfolded,
        "rows_not_replayed": sampler.not_replayed if sampler is not None else 0,
    }
    return BlockwiseResult(codes, stats)


def _count_groups(blk: torch.nn.Module, linears: dict[str, torch.nn.Module],
                  h: torch.Tensor, kw: dict[str, Any], blocks: int, tokens: int) -> RowSampler:
    """Groups of block 0 (distinct linear inputs in one forward) -> the RowSampler."""
    ids: dict[int, torch.Tensor] = {}

    def hook(module: Any, args: tuple[Any, ...]) -> None:
        ids.setdefault(id(args[0]), args[0])

    handles = [m.register_forward_pre_hook(hook) for m in linears.values()]
    try:
        with torch.no_grad():
            blk(h, **kw)
    finally:
        for hd in handles:
            hd.remove()
    return RowSampler([len(ids)] * blocks, tokens)


__all__ = ["AwqBlockwiseOptions", "RowSampler", "awq_decoder_blockwise"]
