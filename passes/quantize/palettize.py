"""palettize: k-means weight clustering into a look-up table (Core ML's palettization).

Before::

    %y = aten.linear(%x, @fc.weight:float32[N, K], @fc.bias)

After ``palettize{bits=4}``::

    %w = edgecc.palette_dequantize(@fc_codes:uint8[N, K/2], @fc_lut:float16[1, 16], 4, 0,
                                   float32)
    %y = aten.linear(%x, %w, @fc.bias)

``group_size=G`` gives every ``G`` output channels (rows) their own table (Core ML's
``per_grouped_channel``). Centroids come from Lloyd's k-means, initialised at quantiles,
on the weight values; each weight moves to its nearest centroid, so the error of a weight
is at most half the gap between neighbouring centroids. Core ML lowers the table natively;
the other targets expand it (``lut[code]``) in a kernel. Lossy; the stats report weight
SQNR per layer and the output error.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch

from edgecc.pass_base import Pass, PassContext, PassResult
from edgecc.passes.quantize.layers import find_layers, output_error, select
from edgecc.program import Program
from edgecc.progress import progress_iter
from edgecc.quant import PALETTE_DEQUANTIZE, pack_bits, sqnr_db


@dataclasses.dataclass(frozen=True)
class PalettizeOptions:
    bits: Literal[2, 4, 8] = 4
    group_size: int = 0  # output channels per table; 0: one table per tensor
    iterations: int = 25
    lut_dtype: Literal["float16", "float32"] = "float16"
    exclude: tuple[str, ...] = ()
    include: tuple[str, ...] = ()
    embeddings: bool = True
    error_batches: int = 4

    def __post_init__(self) -> None:
        if self.group_size < 0 or self.iterations < 1:
            raise ValueError("group_size must be >= 0 and iterations >= 1")


def kmeans_1d(values: torch.Tensor, k: int, iterations: int) -> tuple[torch.Tensor,
                                                                       torch.Tensor]:
    """Centroids (sorted, ``[k]``) and the code of each value (nearest centroid)."""
    v = values.reshape(-1).to(torch.float32)
    sample = v if v.numel() <= 1 << 20 else v[torch.randint(v.numel(), (1 << 20,),
                                                          generator=torch.Generator()
                                                          .manual_seed(0))]
    centroids = torch.quantile(sample, (torch.arange(k, dtype=torch.float32) + 0.5) / k)
    for _ in range(iterations):
        centroids, _ = torch.sort(centroids)
        codes = torch.bucketize(v, (centroids[1:] + centroids[:-1]) / 2)
        sums = torch.zeros(k).index_add_(0, codes, v)
        counts = torch.zeros(k).index_add_(0, codes, torch.ones_like(v))
        centroids = torch.where(counts > 0, sums / counts.clamp_min(1), centroids)
    centroids, _ = torch.sort(centroids)
    codes = torch.bucketize(v, (centroids[1:] + centroids[:-1]) / 2)
    return centroids, codes.reshape(values.shape)


class Palettize(Pass):
    """Cluster weights into 2/4/8-bit look-up tables (lossy)."""

    name = "palettize"
    Options = PalettizeOptions
    lossless = False

    def run(self, program: Program, options: PalettizeOptions,
            context: PassContext) -> PassResult:
        layers, excluded = select(find_layers(program, embeddings=options.embeddings),
                                  options.exclude, options.include)
        reference = program.copy()
        k = 1 << options.bits
        lut_dtype = getattr(torch, options.lut_dtype)
        done: dict[str, Any] = {}
        skipped: dict[str, str] = {}
        sqnr: dict[str, float] = {}
        before = after = 0
        for layer in progress_iter(layers, "palettizing", enabled=context.progress):
            key = str(layer.weight.target)
            if key in done:
                layer.node.replace_input_with(layer.weight, done[key])
                continue
            w = program.tensor(layer.weight).detach().float()
            per = 8 // options.bits
            if w.shape[-1] % per:
                skipped[layer.name] = (f"{options.bits}-bit codes pack {per} per byte along "
                                       f"the last dimension ({w.shape[-1]})")
                continue
            rows = w.shape[0]
            g = options.group_size if 0 < options.group_size < rows else rows
            luts, codes = [], []
            for start in range(0, rows, g):
                c, idx = kmeans_1d(w[start:start + g], k, options.iterations)
                luts.append(c)
                codes.append(idx)
            lut = torch.stack(luts).to(lut_dtype)
            code = torch.cat(codes)
            w_hat = lut.float()[torch.arange(rows) // g if g < rows else
                                torch.zeros(rows, dtype=torch.long)].gather(
                1, code.reshape(rows, -1)).reshape(w.shape)
            sqnr[layer.name] = sqnr_db(w, w_hat)
            packed = pack_bits(code, options.bits)
            prefix = layer.name.replace(".", "_")
            cnode = program.add_constant(f"{prefix}_codes", packed, before=layer.node)
            lnode = program.add_constant(f"{prefix}_lut", lut, before=layer.node)
            with program.graph.inserting_before(layer.node):
                dq = program.graph.call_function(
                    PALETTE_DEQUANTIZE, (cnode, lnode, options.bits,
                                         g if g < rows else 0, torch.float32))
            old = layer.weight
            layer.node.replace_input_with(old, dq)
            if not old.users:
                program.graph.erase_node(old)
            done[key] = dq
            before += w.numel() * 4
            after += packed.numel() + lut.numel() * lut.element_size()
        program.refresh_metadata()
        program.graph_module.recompile()
        batches = list(context.calibration) if context.calibration is not None else None
        return PassResult(program, bool(done), {
            "layers": len(done), "bits": options.bits, "excluded": excluded,
            "skipped": skipped, "weight_bytes_before": before, "weight_bytes_after": after,
            "weight_compression": round(before / max(after, 1), 3),
            "worst_layers_sqnr_db": dict(sorted(sqnr.items(), key=lambda kv: kv[1])[:5]),
            "error": output_error(reference, program, batches, options.error_batches),
        })
