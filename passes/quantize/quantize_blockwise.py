"""quantize-blockwise: GPTQ / AWQ of a program's transformer blocks, one block on the
device at a time (bounded device memory for a decoder LLM larger than the device).

``quantize{algorithm=gptq|awq}`` calibrates the whole program in one run, so every weight
and every layer input is on ``context.device`` at once. This pass cuts the graph into the
spans of its blocks (the ``nn_module_stack`` path matching ``block_pattern``, e.g.
``model.layers.3``) and runs the calibration batches span by span::

    CPU:    inputs ─ embedding, rotary tables, masks (prefix) ──┐   (the rest: never run)
    device: [block 0's nodes + constants] → [block 1's] → ... → [block L-1's]
            values live across spans (hidden states, cos/sin) kept per batch; a value
            dies (freed) after its last reader; constants of one span on the device

    per block: forward every batch (recording the Hessians 2/n Σ x xᵀ, or AWQ's kept
    rows, of its linears' inputs; reduced / gathered under torchrun), then quantize the
    block's linears (GPTQ on the device; AWQ scale and clip search on the device)

Before (one block linear)::

    %y = aten.linear(%x, @m.model.layers.0.mlp.up_proj.weight)

After ``quantize-blockwise{algorithm=gptq}`` (the same IR as ``quantize{scheme=w4a16}``)::

    %wd = edgecc.dequantize(@..._qweight:uint8[N,K/2], @..._w_scale, @..._w_zero_point, ...)
    %y  = aten.linear(%x, %wd)

The next block is calibrated on the float block's outputs (computed before quantizing it),
which is what the whole-model pass sees, so the result equals
``quantize{scheme=w4a16,algorithm=gptq|awq,include=<the block linears>}``: GPTQ exactly on
one device, AWQ exactly too (``awq_blockwise.RowSampler`` replays the whole-model pass's
random row choices), tests/distributed/test_awq_blockwise.py checks both on the CPU.
Linears outside the blocks (``lm_head``) stay float. Lossy, with the whole-model pass's
bound (per-weight error <= scale / 2 after GPTQ's / AWQ's choices); the stats carry the
output SQNR / cosine against the float program on ``error_batches`` calibration batches,
seconds and peak device memory per block.
"""

from __future__ import annotations

import dataclasses
import re
import time
from collections import defaultdict
from typing import Any, Literal

import torch
import torch.fx as fx

from edgecc import distributed
from edgecc.errors import InputSpecError
from edgecc.pass_base import Pass, PassContext, PassResult
from edgecc.passes.quantize import gptq
from edgecc.passes.quantize.awq_blockwise import RowSampler
from edgecc.passes.quantize.blockwise_common import params_on_cpu
from edgecc.passes.quantize.layers import (
    Layer, check_calibration, find_layers, output_error, quantized_weight_bytes,
    replace_weight, validate_calibration,
)
from edgecc.passes.quantize.quantize import AwqSearch
from edgecc.passes.quantize.scheme import SCHEMES, TensorQuant
from edgecc.passes.quantize.weights import can_quantize, weight_params
from edgecc.program import Program
from edgecc.quant import qformat

BLOCK_PATTERN = r"(?:^|\.)(?:layers|layer|h|blocks)\.(\d+)(?:\.|$)"


@dataclasses.dataclass(frozen=True)
class QuantizeBlockwiseOptions:
    algorithm: Literal["gptq", "awq"] = "gptq"
    scheme: Literal["w4a16", "w8a16"] = "w4a16"
    group_size: int = 0  # 0: the scheme's (w4a16: 128)
    # GPTQ (as quantize)
    damp: float = 0.01
    act_order: bool = True
    block: int = 128
    # AWQ (as quantize)
    awq_grid: int = 20
    awq_clip: bool = True
    awq_tokens: int = 512
    awq_fold: bool = False
    # the module path of a block (its number is group 1)
    block_pattern: str = BLOCK_PATTERN
    error_batches: int = 4  # calibration batches the output error is measured on (0: none)

    def __post_init__(self) -> None:
        if self.group_size < 0 or self.group_size % 2:
            raise ValueError("group_size must be a positive even number (or 0)")
        try:
            if re.compile(self.block_pattern).groups < 1:
                raise ValueError("block_pattern needs a group for the block number")
        except re.error as exc:
            raise ValueError(f"block_pattern is not a regular expression: {exc}") from None

    def weights(self) -> TensorQuant:
        w = SCHEMES[self.scheme].weights
        if self.group_size:
            w = dataclasses.replace(w, granularity="per-group", group_size=self.group_size)
        return w


def block_spans(program: Program, pattern: str) -> list[tuple[int, int, int]]:
    """``(block number, first, last)`` graph positions of each block's nodes, in order;
    an error when blocks interleave (the graph is not a chain of blocks)."""
    rx = re.compile(pattern)
    spans: dict[int, list[int]] = {}
    for k, node in enumerate(program.graph.nodes):
        stack = node.meta.get("nn_module_stack") or {} if node.op == "call_function" else {}
        for path, _ in stack.values():
            m = rx.search(str(path))
            if m:
                spans.setdefault(int(m.group(1)), [k, k])[1] = k
                break
    out = sorted((lo, hi, b) for b, (lo, hi) in spans.items())
    for (lo0, hi0, b0), (lo1, _, b1) in zip(out, out[1:]):
        if lo1 <= hi0:
            raise InputSpecError(f"blocks {b0} and {b1} interleave in the graph: "
                                 "quantize-blockwise needs blocks that run one after another")
    return [(b, lo, hi) for lo, hi, b in out]


class _Runner:
    """The calibration batches' values, computed span by span (see the module docstring)."""

    def __init__(self, program: Program, batches: list[tuple[Any, ...]], dev: torch.device):
        self.program, self.dev = program, dev
        self.order = list(program.graph.nodes)
        pos = {n: k for k, n in enumerate(self.order)}
        self.last = {n: max((pos[u] for u in n.users), default=k) for k, n in
                     enumerate(self.order)}
        self.envs: list[dict[fx.Node, Any]] = []
        inputs = [n for n in self.order if n.op == "placeholder"]
        for batch in batches:
            self.envs.append(dict(zip(inputs, batch)))
        self.done = len(inputs)  # nodes before this position have run (placeholders first)

    def run_to(self, end: int, dev: torch.device, watch: set[fx.Node],
               on_value: Any) -> None:
        """Run nodes ``done .. end`` (inclusive) for every batch on ``dev``."""
        nodes = [n for n in self.order[self.done:end + 1] if n.op in ("call_function",
                                                                       "get_attr")]
        consts: dict[fx.Node, torch.Tensor] = {}
        inside = set(nodes)
        before = [n for n in self.order if n in watch and n not in inside]
        for b, env in enumerate(self.envs):
            moved: dict[fx.Node, Any] = {}

            def fetch(n: fx.Node) -> Any:
                if n.op == "get_attr":
                    if n not in consts:
                        consts[n] = self.program.tensor(n).to(dev)
                    return consts[n]
                v = env[n]
                if isinstance(v, torch.Tensor) and v.device != dev:
                    if n not in moved:
                        moved[n] = v.to(dev)
                    return moved[n]
                return v

            with torch.no_grad():
                for n in before:  # watched values computed earlier (an input, a residual)
                    on_value(b, n, fetch(n))
                for n in nodes:
                    if n.op == "get_attr":
                        continue
                    args = fx.node.map_arg(n.args, fetch)
                    kwargs = fx.node.map_arg(n.kwargs, fetch)
                    if isinstance(kwargs.get("device"), torch.device):
                        kwargs = {**kwargs, "device": dev}  # factory ops traced on the CPU
                    target = n.target
                    if dev.type != "cpu" and target is torch.ops.aten.view.default:
                        target = torch.ops.aten.reshape.default  # distributed.portable_views
                    out = target(*args, **kwargs)
                    env[n] = out
                    if n in watch:
                        on_value(b, n, out)
            for n in list(env):  # free what no later node reads
                if n.op != "placeholder" and self.last[n] <= end:
                    del env[n]
        self.done = end + 1


class QuantizeBlockwise(Pass):
    """GPTQ / AWQ of the transformer blocks' linears, one block on the device at a time."""

    name = "quantize-blockwise"
    Options = QuantizeBlockwiseOptions
    lossless = False

    def validate(self, program: Program, options: QuantizeBlockwiseOptions,
                 context: PassContext) -> None:
        validate_calibration(program, context.calibration,
                             f"quantize-blockwise{{algorithm={options.algorithm}}}")

    def run(self, program: Program, options: QuantizeBlockwiseOptions,
            context: PassContext) -> PassResult:
        t_start = time.perf_counter()
        batches = check_calibration(program, context.calibration,
                                    f"quantize-blockwise{{algorithm={options.algorithm}}}")
        spans = block_spans(program, options.block_pattern)
        if not spans:
            raise InputSpecError(
                f"no node of the program belongs to a block matching "
                f"'{options.block_pattern}' (module paths like model.layers.0): give "
                "block_pattern, or use quantize{algorithm=...} for a model without blocks")
        pos = {n: k for k, n in enumerate(program.graph.nodes)}
        per_block: dict[int, list[Layer]] = defaultdict(list)
        for la in find_layers(program, embeddings=False):
            if la.kind != "linear":
                continue
            for b, lo, hi in spans:
                if lo <= pos[la.node] <= hi:
                    per_block[b].append(la)
        dev = distributed.resolve_device(context.device)
        cuda = dev.type == "cuda"
        tq = options.weights()
        scale_dtype = torch.float16 if qformat(tq.dtype).bits == 4 else torch.float32
        reference = program.copy(share_weights=True) if options.error_batches else None
        runner = _Runner(program, batches, dev)
        sampler = RowSampler([len(_groups(per_block[b])) for b, _, _ in spans],
                             options.awq_tokens) if options.algorithm == "awq" else None
        if cuda:
            torch.cuda.synchronize(dev)
        stats_blocks: list[dict[str, Any]] = []
        skipped: dict[str, str] = {}
        search = AwqSearch(tq, options, scale_dtype) if options.algorithm == "awq" else None
        n_layers = 0
        before_bytes = 0
        for i, (b, lo, hi) in enumerate(spans):
            runner.run_to(lo - 1, torch.device("cpu"), set(), None)  # prefix / between
            t0 = time.perf_counter()
            if cuda:
                torch.cuda.reset_peak_memory_stats(dev)
            layers = per_block[b]
            for la in layers:
                before_bytes += program.tensor(la.weight).numel() * 4
            if options.algorithm == "gptq":
                skipped |= self._gptq_block(program, runner, hi, dev, layers, tq, scale_dtype,
                                            options)
            else:
                assert sampler is not None and search is not None
                skipped |= self._awq_block(program, runner, hi, dev, i, layers, options,
                                           sampler, search)
            n_layers += len(layers)
            if cuda:
                torch.cuda.synchronize(dev)
            stats_blocks.append({"seconds": round(time.perf_counter() - t0, 3),
                                 "peak_device_bytes": torch.cuda.max_memory_allocated(dev)
                                 if cuda else None})
        runner.envs.clear()
        program.refresh_metadata()
        program.graph.lint()
        program.graph_module.recompile()
        stats: dict[str, Any] = {
            "algorithm": options.algorithm, "scheme": options.scheme,
            "weights": tq.describe(), "device": str(dev), "blocks": len(spans),
            "layers": n_layers - len(skipped), "skipped": skipped,
            "seconds_per_block": [s["seconds"] for s in stats_blocks],
            "peak_device_bytes": max((s["peak_device_bytes"] or 0) for s in stats_blocks)
            if cuda else None,
            "peak_device_bytes_per_block": [s["peak_device_bytes"] for s in stats_blocks],
            "weight_bytes_before": before_bytes,
            "weight_bytes_after": quantized_weight_bytes(program),
        }
        if options.algorithm == "awq":
            assert sampler is not None and search is not None
            stats["awq"] = {**search.stats(), "rows_not_replayed": sampler.not_replayed}
        if reference is not None:
            stats["error"] = output_error(reference, program, batches, options.error_batches)
        stats["seconds"] = round(time.perf_counter() - t_start, 3)
        return PassResult(program, True, stats)

    @staticmethod
    def _gptq_block(program: Program, runner: _Runner, hi: int, dev: torch.device,
                    layers: list[Layer], tq: TensorQuant, scale_dtype: torch.dtype,
                    options: QuantizeBlockwiseOptions) -> dict[str, str]:
        accs = {la.input: gptq.HessianAccumulator() for la in layers}
        runner.run_to(hi, dev, set(accs), lambda b, n, v: accs[n].update(v))
        for acc in accs.values():
            distributed.reduce_hessian(acc)
        skipped = {}
        for la in layers:
            w = program.tensor(la.weight)
            why = can_quantize(w, tq, 1, False, 0)
            h = accs[la.input].h
            if why or h is None:
                skipped[la.name] = why or "no calibration rows"
                continue
            w_hat, params = gptq.gptq_quantize(w.to(dev), h, tq, block=options.block,
                                               damp=options.damp,
                                               act_order=options.act_order,
                                               scale_dtype=scale_dtype)
            params = params_on_cpu(params)
            replace_weight(program, la, params.quantize(w_hat.cpu()), params)
        return skipped

    @staticmethod
    def _awq_block(program: Program, runner: _Runner, hi: int, dev: torch.device, i: int,
                   layers: list[Layer], options: QuantizeBlockwiseOptions, sampler: RowSampler,
                   search: AwqSearch) -> dict[str, str]:
        groups = _groups(layers)
        # recording order: the values in graph order (as the whole-model pass sees them)
        pos = {n: k for k, n in enumerate(program.graph.nodes)}
        index = {v: j for j, v in enumerate(sorted(groups, key=pos.__getitem__))}
        samples: dict[fx.Node, list[torch.Tensor]] = defaultdict(list)

        def on_value(b: int, node: fx.Node, value: torch.Tensor) -> None:
            r = value.detach().reshape(-1, value.shape[-1])
            keep = sampler.keep(b, i, index[node], r.shape[0])
            samples[node].append(r[keep.to(r.device)].float())

        runner.run_to(hi, dev, set(groups), on_value)
        for value, group in groups.items():  # search order: the layers' order
            x = torch.cat(distributed.gather_rows(samples[value])).to(dev) \
                if distributed.is_distributed() else torch.cat(samples[value])
            x = x[sampler.search(x.shape[0])[: options.awq_tokens * 4].to(x.device)]
            search.group(program, value, group, x)
        skipped = {}
        for la in layers:
            w = program.tensor(la.weight)
            why = can_quantize(w, search.wq, 1, False, 0)
            if why:
                skipped[la.name] = why
                continue
            params = weight_params(w, search.wq, 0, 1, clip=search.clips.get(la.name),
                                   scale_dtype=search.scale_dtype)
            replace_weight(program, la, params.quantize(w), params)
        return skipped


def _groups(layers: list[Layer]) -> dict[fx.Node, list[Layer]]:
    """Linears by the value they read, in the layers' order."""
    groups: dict[fx.Node, list[Layer]] = {}
    for la in layers:
        groups.setdefault(la.input, []).append(la)
    return groups


__all__ = ["BLOCK_PATTERN", "QuantizeBlockwise", "QuantizeBlockwiseOptions", "block_spans"]
