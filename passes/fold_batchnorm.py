"""fold-batchnorm: fold an eval-mode batch norm into the convolution or linear feeding it.

Before::

    %c  = aten.convolution(%x, @w, @b, stride, padding, dilation, transposed, out_pad, groups)
    %bn = aten._native_batch_norm_legit_no_training(%c, @gamma, @beta, @mean, @var, 0.1, eps)
    %y  = getitem(%bn, 0)

After::

    %y = aten.convolution(%x, @w_folded, @b_folded, stride, padding, ...)

with ``s = gamma / sqrt(var + eps)``, ``w_folded = w * s`` along the output-channel axis and
``b_folded = (b - mean) * s + beta``. Works for conv1d/2d/3d, grouped and transposed
convolutions, and ``linear`` whose output is ``[N, C]`` (BatchNorm1d). The folded weights are
new tensors, so a weight shared with another layer is never changed under it; the old
weights become unused and ``dce`` drops them. Lossless up to float rounding.
"""

from __future__ import annotations

from typing import Any

import torch

from edgecc.pass_base import NoOptions
from edgecc.program import Program
from edgecc.rewrite import (
    Match, RewritePass, RewriteReport, RewriteRule, aten, copy_provenance, ensure_no_match,
    is_op, only_user, replace_node,
)


def _scaled_weight(weight: torch.Tensor, scale: torch.Tensor, transposed: bool,
                   groups: int) -> torch.Tensor:
    if not transposed:  # [Cout, Cin/groups, *k]
        return weight * scale.reshape(-1, *([1] * (weight.dim() - 1)))
    # Transposed convolution weights are [Cin, Cout/groups, *k]; output channel
    # g * (Cout/groups) + j lives at weight[g-th block of Cin, j].
    cin, cout_g = weight.shape[:2]
    w = weight.reshape(groups, cin // groups, cout_g, *weight.shape[2:])
    s = scale.reshape(groups, 1, cout_g, *([1] * (weight.dim() - 2)))
    return (w * s).reshape(weight.shape)


def _why_not(m: Match) -> str | None:
    program, bn, producer = m.program, m.root, m.producer
    if not is_op(producer, aten.convolution, aten.linear):
        return "input is not a convolution or linear"
    if only_user(producer) is not bn:
        return f"{producer.name} has other users"
    if any(not (u.target.__name__ == "getitem" and u.args[1] == 0)
           for u in bn.users if callable(u.target)):
        return "batch-norm statistics outputs are used"
    if not all(p is None or program.is_constant(p) for p in bn.args[1:5]):
        return "batch-norm parameters are not constants"
    weight = producer.args[1]
    bias = producer.args[2] if len(producer.args) > 2 else None
    if not program.is_constant(weight) or not (bias is None or program.is_constant(bias)):
        return "weights are not constants"
    if is_op(producer, aten.linear):
        out = producer.meta.get("val")
        if out is None or out.dim() != 2:
            return "linear output is not [N, C] (batch norm would act on another axis)"
    return None


def _fold(m: Match) -> None:
    program, bn, producer = m.program, m.root, m.producer
    gamma_n, beta_n, mean_n, var_n = bn.args[1:5]
    eps = float(bn.args[6])
    mean = program.tensor(mean_n).double()
    var = program.tensor(var_n).double()
    gamma = program.tensor(gamma_n).double() if gamma_n is not None else torch.ones_like(var)
    beta = program.tensor(beta_n).double() if beta_n is not None else torch.zeros_like(var)
    scale = gamma / torch.sqrt(var + eps)

    weight = program.tensor(producer.args[1])
    bias_n = producer.args[2] if len(producer.args) > 2 else None
    bias = program.tensor(bias_n).double() if bias_n is not None else torch.zeros_like(mean)
    if is_op(producer, aten.convolution):
        transposed, groups = bool(producer.args[6]), int(producer.args[8])
    else:
        transposed, groups = False, 1
    new_w = _scaled_weight(weight.double(), scale, transposed, groups).to(weight.dtype)
    new_b = ((bias - mean) * scale + beta).to(weight.dtype)

    prefix = str(producer.args[1].target).rsplit(".", 1)[0]
    w_node = program.add_constant(f"{prefix}.weight_bnfolded", new_w, before=producer)
    b_node = program.add_constant(f"{prefix}.bias_bnfolded", new_b, before=producer)
    args = list(producer.args)
    args[1] = w_node
    if len(args) > 2:
        args[2] = b_node
    else:
        args.append(b_node)
    producer.args = tuple(args)
    copy_provenance(w_node, producer)
    copy_provenance(b_node, producer)
    for getitem in list(bn.users):
        replace_node(getitem, producer, program.graph)
    program.graph.erase_node(bn)


CONV_BN = RewriteRule(
    name="conv-bn",
    anchors=(aten._native_batch_norm_legit_no_training,),
    match=lambda program, bn: {"producer": bn.args[0]},
    check=_why_not,
    replacement=_fold,
)


class FoldBatchNorm(RewritePass):
    """Fold eval-mode batch norm into the preceding convolution / linear (lossless)."""

    name = "fold-batchnorm"
    Options = NoOptions

    def rules(self, options: NoOptions) -> list[RewriteRule]:
        return [CONV_BN]

    def stats(self, report: RewriteReport) -> dict[str, Any]:
        skipped = [f"{c.node}: {c.reason}" for c in report.trace or () if c.reason]
        return {"folded": report.matched("conv-bn"), **({"skipped": skipped} if skipped else {})}

    def ensures(self, program: Program, options: NoOptions) -> None:
        """No eval batch norm that feeds a foldable convolution / linear remains."""
        ensure_no_match(self.name, program, self.rules(options))
