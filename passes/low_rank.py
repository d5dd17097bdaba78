"""low-rank: factorize linear and convolution weights into two smaller layers (SVD / ASVD).

Before (``low-rank{rank_ratio=0.5}``, a ``[N, K]`` linear of rank ``r = min(N, K) / 2``)::

    %y = aten.linear(%x, @fc.weight:[N,K], @fc.bias:[N])

After::

    %h = aten.linear(%x, @fc_lr_a:[r,K], None)
    %y = aten.linear(%h, @fc_lr_b:[N,r], @fc.bias:[N])

A convolution ``[Cout, Cin, kh, kw]`` becomes a ``[r, Cin, kh, kw]`` convolution (same stride,
padding, dilation) followed by a ``[Cout, r, 1, 1]`` one. With ``W ≈ U_r S_r V_rᵀ``:
``A = S_r^½ V_rᵀ``, ``B = U_r S_r^½``.

``method=asvd`` is activation-aware (SVD-LLM, Wang et al. 2024): with the calibration
inputs' second moment ``C = XᵀX / n = L Lᵀ`` (Cholesky, damped), it truncates the SVD of
``W L`` and sets ``A = S_r^½ V_rᵀ L⁻¹``, which minimises ``‖(W − BA) X‖`` — the error of the
layer's *outputs* — instead of ``‖W − BA‖``. Rank per layer: ``rank_ratio`` of the full rank,
or the smallest rank keeping ``energy`` of Σσ², or ``param_ratio`` (factorized parameters ≤
that fraction of the layer's). Layers where factorizing would not save parameters are skipped
with the reason.

``add_low_rank_correction`` is LoRC (Yao et al., ZeroQuant-V2), used by
``quantize{lorc_rank=r}``: a rank-``r`` branch ``B·A ≈ W − Q(W)`` in parallel to a quantized
linear.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

import torch
import torch.fx as fx
import torch.nn.functional as F

from edgecc.errors import OptionError
from edgecc.pass_base import Pass, PassContext, PassResult
from edgecc.passes.quantize.layers import (
    Layer, check_calibration, find_layers, output_error, record_values, select,
    validate_calibration,
)
from edgecc.program import Program
from edgecc.progress import progress_iter

aten = torch.ops.aten


@dataclasses.dataclass(frozen=True)
class LowRankOptions:
    method: Literal["svd", "asvd"] = "svd"
    rank_ratio: float = 0.0  # keep this fraction of each layer's full rank
    energy: float = 0.0  # or: the smallest rank keeping this fraction of Σσ²
    param_ratio: float = 0.0  # or: factorized parameters <= this fraction of the layer's
    damp: float = 0.01  # asvd: added to the diagonal of C, relative to its mean
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    error_batches: int = 4

    def __post_init__(self) -> None:
        given = [v for v in (self.rank_ratio, self.energy, self.param_ratio) if v]
        if len(given) != 1 or not 0 < given[0] <= 1:
            raise ValueError("give exactly one of rank_ratio, energy, param_ratio, in (0, 1]")


def _matrix(weight: torch.Tensor) -> torch.Tensor:
    return weight.detach().float().reshape(weight.shape[0], -1)


def choose_rank(s: torch.Tensor, n: int, k: int, options: LowRankOptions) -> int:
    full = min(n, k)
    if options.rank_ratio:
        return max(1, round(full * options.rank_ratio))
    if options.energy:
        cum = torch.cumsum(s.double() ** 2, 0) / (s.double() ** 2).sum().clamp_min(1e-30)
        return min(full, int((cum < options.energy - 1e-12).sum()) + 1)
    return max(1, int(options.param_ratio * n * k / (n + k)))


def factorize(w: torch.Tensor, rank: int, cov: torch.Tensor | None = None,
              damp: float = 0.01) -> tuple[torch.Tensor, torch.Tensor]:
    """(A [r, K], B [N, r]) with ``B @ A ≈ w`` (whitened by ``cov`` when given)."""
    w = w.double()
    if cov is None:
        u, s, vh = torch.linalg.svd(w, full_matrices=False)
        root = s[:rank].sqrt()
        return root[:, None] * vh[:rank], u[:, :rank] * root
    c = cov.double()
    c = c + damp * c.diagonal().mean().clamp_min(1e-12) * torch.eye(c.shape[0], dtype=c.dtype)
    chol = torch.linalg.cholesky(c)
    u, s, vh = torch.linalg.svd(w @ chol, full_matrices=False)
    root = s[:rank].sqrt()
    a = torch.linalg.solve_triangular(chol, root[:, None] * vh[:rank], upper=False,
                                      left=False)  # (S^½ Vᵀ) L⁻¹
    return a, u[:, :rank] * root


def singular_values(w: torch.Tensor, cov: torch.Tensor | None, damp: float) -> torch.Tensor:
    w = w.double()
    if cov is not None:
        c = cov.double()
        c = c + damp * c.diagonal().mean().clamp_min(1e-12) * torch.eye(c.shape[0],
                                                                        dtype=c.dtype)
        w = w @ torch.linalg.cholesky(c)
    return torch.linalg.svdvals(w)


class _Covariance:
    def __init__(self, layer: Layer):
        self.layer, self.sum, self.n = layer, None, 0

    def update(self, x: torch.Tensor) -> None:
        node = self.layer.node
        if self.layer.kind == "conv":
            w = node.args[1].meta["val"]
            x = F.unfold(x.float(), tuple(w.shape[2:]), dilation=tuple(node.args[5]),
                         padding=tuple(node.args[4]), stride=tuple(node.args[3]))
            x = x.transpose(1, 2)
        x = x.reshape(-1, x.shape[-1]).double()
        self.sum = x.T @ x if self.sum is None else self.sum + x.T @ x
        self.n += x.shape[0]

    @property
    def value(self) -> torch.Tensor:
        return self.sum / max(self.n, 1)


def replace_with_factors(program: Program, layer: Layer, a: torch.Tensor,
                         b: torch.Tensor) -> None:
    node, graph = layer.node, program.graph
    prefix = layer.name.replace(".", "_")
    w = program.tensor(layer.weight)
    if layer.kind == "conv":
        a = a.reshape(a.shape[0], *w.shape[1:])
        b = b.reshape(*b.shape, *([1] * (w.dim() - 2)))
    a_node = program.add_constant(f"{prefix}_lr_a", a.to(w.dtype), before=node)
    b_node = program.add_constant(f"{prefix}_lr_b", b.to(w.dtype), before=node)
    args = list(node.args)
    with graph.inserting_before(node):
        if layer.kind == "conv":
            nd = w.dim() - 2
            first = graph.call_function(aten.convolution.default, (
                args[0], a_node, None, *args[3:6], False, [0] * nd, 1))
            node.args = (first, b_node, args[2], [1] * nd, [0] * nd, [1] * nd, False,
                         [0] * nd, 1, *args[9:])
        else:
            first = graph.call_function(aten.linear.default, (args[0], a_node, None))
            node.args = (first, b_node, *args[2:])
    first.meta.update({k: v for k, v in node.meta.items() if k != "val"})
    old = layer.weight
    if not old.users:
        graph.erase_node(old)


def add_low_rank_correction(program: Program, layer: Layer, error: torch.Tensor,
                            rank: int) -> int:
    """LoRC: ``y = layer(x) + linear(linear(x, A), B)`` with ``B @ A ≈ error`` (linears only);
    returns the parameters added (0 when skipped)."""
    if layer.kind != "linear" or rank >= min(error.shape):
        return 0
    a, b = factorize(_matrix(error), rank)
    node, graph = layer.node, program.graph
    prefix = layer.name.replace(".", "_")
    a_node = program.add_constant(f"{prefix}_lorc_a", a.float(), before=node)
    b_node = program.add_constant(f"{prefix}_lorc_b", b.float(), before=node)
    users = list(node.users)
    with graph.inserting_after(node):
        h = graph.call_function(aten.linear.default, (node.args[0], a_node, None))
    with graph.inserting_after(h):
        c = graph.call_function(aten.linear.default, (h, b_node, None))
    with graph.inserting_after(c):
        out = graph.call_function(aten.add.Tensor, (node, c))
    for u in users:
        u.replace_input_with(node, out)
    return a.numel() + b.numel()


class LowRank(Pass):
    """Factorize linear / conv weights by (activation-aware) truncated SVD (lossy)."""

    name = "low-rank"
    Options = LowRankOptions
    lossless = False

    def validate(self, program: Program, options: LowRankOptions,
                 context: PassContext) -> None:
        if options.method == "asvd":
            validate_calibration(program, context.calibration, "low-rank{method=asvd}")

    def run(self, program: Program, options: LowRankOptions,
            context: PassContext) -> PassResult:
        layers, excluded = select(find_layers(program, embeddings=False), options.exclude,
                                  options.include)
        layers = [la for la in layers if la.kind == "linear" or (
            la.kind == "conv" and not bool(la.node.args[6]) and int(la.node.args[8]) == 1)]
        if not layers:
            raise OptionError("low-rank found no linear or (ungrouped) convolution layer")
        reference = program.copy()
        covs: dict[Any, _Covariance] = {}
        if options.method == "asvd":
            batches = check_calibration(program, context.calibration, "low-rank{method=asvd}")
            covs = {la.node: _Covariance(la) for la in layers}
            by_input: dict[fx.Node, list[_Covariance]] = {}
            for la in layers:
                by_input.setdefault(la.input, []).append(covs[la.node])
            record_values(program, batches, by_input,
                          lambda n, v: [c.update(v) for c in by_input[n]],
                          desc="collecting activations", progress=context.progress)
        done: dict[str, dict[str, Any]] = {}
        skipped: dict[str, str] = {}
        before = after = 0
        for layer in progress_iter(layers, "factorizing", enabled=context.progress):
            w = _matrix(program.tensor(layer.weight))
            n, k = w.shape
            cov = covs[layer.node].value if layer.node in covs else None
            rank = choose_rank(singular_values(w, cov, options.damp), n, k, options)
            if rank * (n + k) >= n * k:
                skipped[layer.name] = (f"rank {rank} of a {n}x{k} weight saves no parameters "
                                       f"({rank * (n + k)} >= {n * k})")
                continue
            a, b = factorize(w, rank, cov, options.damp)
            replace_with_factors(program, layer, a, b)
            done[layer.name] = {"rank": rank, "full_rank": min(n, k),
                                "parameters": [n * k, rank * (n + k)]}
            before, after = before + n * k, after + rank * (n + k)
        program.graph_module.recompile()
        program.refresh_metadata()
        cal = list(context.calibration) if context.calibration is not None else None
        return PassResult(program, bool(done), {
            "method": options.method, "layers": done, "skipped": skipped,
            "excluded": excluded, "parameters_before": before, "parameters_after": after,
            "parameter_ratio": round(after / max(before, 1), 4),
            "error": output_error(reference, program, cal, options.error_batches)})


