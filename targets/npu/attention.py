"""Legalization for NPUs with a quantized batch matmul (``ops.matmul``): attention as two
int8 batch matmuls the NPU runs, with the softmax (and the additive mask) between them.

``scaled_dot_product_attention`` is one node the NPU cannot take whole; its two matrix
products are most of a transformer's non-linear MACs. This pass writes it as the products
of two int8 activations (TFLite ``BATCH_MATMUL`` semantics: 3-D ``(batch*heads, M, K) x
(batch*heads, K, N)``, int32 accumulation, per-tensor requantization), each between a
dequantize and a quantize so the partitioner offloads it; the scale folds into the query
and the key is transposed in float on the CPU (so the region is a plain batch matmul).

Before::

    %o = scaled_dot_product_attention(%q, %k, %v, %mask, scale=s)   # (B, H, S, D), float

After::

    %q3 = dq(q(reshape(mul(%q, s), (B*H, S, D))))
    %k3 = dq(q(reshape(transpose(%k, -2, -1), (B*H, D, S))))
    %s3 = dq(q(matmul(%q3, %k3)))                                     # NPU: Q . K^T
    %p  = softmax(add(reshape(%s3, (B, H, S, S)), %mask), -1)         # CPU (float)
    %p3 = dq(q(reshape(%p, (B*H, S, S))))
    %v3 = dq(q(reshape(%v, (B*H, S, D))))
    %o  = reshape(dq(q(matmul(%p3, %v3))), (B, H, S, D))              # NPU: P . V
    %out = transpose(clone(transpose(%o, 1, 2)), 1, 2)   # SDPA's (B, S, H, D) memory layout

With ``softmax`` (the NPU has an int8 SOFTMAX) the softmax runs on the 3-D logits between
int8 values, so the NPU takes it too::

    %s3 = dq(q(matmul(%q3, %k3)))
    %l3 = dq(q(reshape(add(reshape(%s3, (B, H, S, S)), %mask), (B*H, S, S))))  # with a mask
    %p3 = dq(q(softmax(%l3 or %s3, -1)))          # NPU: scale 1/256, zero point -128
    %o  = reshape(dq(q(matmul(%p3, %v3))), (B, H, S, D))

The masked logits' range is the calibrated one widened to at least 12 below its maximum, so
a masked position clamps to a logit >= 12 below the largest (weight <= e^-12 of it).

Lossy: six new int8 quantizations (per tensor, min/max on the calibration batches; the
softmax output's is [0, 1] with zero point -128), each within half a step of its input
(``quant.scale / 2``) except where the calibration range clips. Causal / dropout / grouped
attention stays whole (CPU).
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.fx as fx

from edgecc.pass_base import Pass, PassContext, PassResult
from edgecc.program import Program
from edgecc.quant import is_dequantize, scale_from_range

aten = torch.ops.aten
SDPA = aten.scaled_dot_product_attention.default


@dataclasses.dataclass(frozen=True)
class DecomposeAttentionOptions:
    symmetric: bool = False  # zero points 0 (an NPU whose description forbids them)
    # the NPU has an int8 softmax (``ops.softmax``): it reads int8 (B*H, S, Sk) logits and
    # writes TFLite's fixed output quantization (scale 1/256, zero point -128)
    softmax: bool = False


def _shape(node: fx.Node) -> tuple[int, ...]:
    val = node.meta.get("val")
    return tuple(int(d) for d in val.shape) if val is not None else ()


def _decomposable(node: fx.Node) -> bool:
    args, kw = node.args, node.kwargs
    q, k, v = args[:3]
    mask = args[3] if len(args) > 3 else kw.get("attn_mask")
    dropout = args[4] if len(args) > 4 else kw.get("dropout_p", 0.0)
    causal = args[5] if len(args) > 5 else kw.get("is_causal", False)
    gqa = kw.get("enable_gqa", False)
    shapes = [_shape(x) for x in (q, k, v)]
    if dropout or causal or gqa or any(len(s) != 4 for s in shapes):
        return False
    (b, h, _, d), (bk, hk, sk, dk), (bv, hv, sv, _) = shapes
    if (b, h, d) != (bk, hk, dk) or (b, h, sk) != (bv, hv, sv):
        return False
    return mask is None or isinstance(mask, fx.Node)


def _reads_quantized(node: fx.Node) -> bool:
    """The attention reads quantized projections (a dequantize upstream, through views)."""
    seen, todo = set(), [node]
    while todo:
        n = todo.pop()
        if n in seen or not isinstance(n, fx.Node):
            continue
        seen.add(n)
        if is_dequantize(n):
            return True
        if n.op == "call_function" and len(seen) < 16:
            todo.extend(a for a in n.args if isinstance(a, fx.Node))
    return False


class DecomposeAttention(Pass):
    """``scaled_dot_product_attention`` as two int8 batch matmuls with a float softmax
    between them (see the module docstring)."""

    name = "npu-decompose-attention"
    Options = DecomposeAttentionOptions
    lossless = False

    def run(self, program: Program, options: DecomposeAttentionOptions,
            context: PassContext) -> PassResult:
        graph = program.graph
        nodes = [n for n in program.nodes("call_function") if n.target is SDPA
                 and _decomposable(n) and all(_reads_quantized(a) for a in n.args[:3])]
        if not nodes:
            return PassResult(program, False, {"decomposed": 0})
        batches = list(context.calibration or [])
        if not batches:
            from edgecc.errors import PreconditionError

            raise PreconditionError(
                f"{self.name}: {len(nodes)} attention(s) go to the NPU as int8 batch matmuls, "
                "whose inputs and outputs need calibration data (--calib)")
        # (float node, its consumer, kind) to quantize; the softmax output gets [0, 1]
        points: list[tuple[fx.Node, fx.Node, str]] = []
        for node in nodes:
            points += self._rewrite(graph, node, options.softmax)
        program.graph_module.recompile()  # shapes are the attention's: no re-propagation yet
        self._calibrate(program, points, batches, options.symmetric)
        graph.lint()
        program.graph_module.recompile()
        program.refresh_metadata()
        return PassResult(program, True, {"decomposed": len(nodes),
                                          "quantized_values": len(points)})

    @staticmethod
    def _rewrite(graph: fx.Graph, node: fx.Node, npu_softmax: bool = False
                 ) -> list[tuple[fx.Node, fx.Node, str]]:
        args, kw = node.args, node.kwargs
        q, k, v = args[:3]
        mask = args[3] if len(args) > 3 else kw.get("attn_mask")
        b, h, s, d = _shape(q)
        sk = _shape(k)[2]
        dv = _shape(v)[3]
        scale = kw.get("scale") or (args[6] if len(args) > 6 else None) or 1.0 / math.sqrt(d)
        call = graph.call_function
        with graph.inserting_before(node):
            q3 = call(aten.reshape.default, (call(aten.mul.Tensor, (q, float(scale))),
                                             [b * h, s, d]))
            k3 = call(aten.reshape.default, (call(aten.transpose.int, (k, -2, -1)),
                                             [b * h, d, sk]))
            s3 = call(aten.matmul.default, (q3, k3))
            masked = None
            if npu_softmax:  # the softmax on the 3-D int8 logits (the NPU's SOFTMAX)
                logits = s3
                if mask is not None:
                    s4r = call(aten.reshape.default, (s3, [b, h, s, sk]))
                    masked = logits = call(aten.reshape.default, (
                        call(aten.add.Tensor, (s4r, mask)), [b * h, s, sk]))
                p3 = call(aten.softmax.int, (logits, -1))
            else:
                s4r = s4 = call(aten.reshape.default, (s3, [b, h, s, sk]))
                if mask is not None:
                    s4 = call(aten.add.Tensor, (s4r, mask))
                p = call(aten.softmax.int, (s4, -1))
                p3 = call(aten.reshape.default, (p, [b * h, s, sk]))
            v3 = call(aten.reshape.default, (v, [b * h, sk, dv]))
            o3 = call(aten.matmul.default, (p3, v3))
            o = call(aten.reshape.default, (o3, [b, h, s, dv]))
            # the (B, S, H, D) memory layout SDPA returns, which the head merge views
            t = call(aten.clone.default, (call(aten.transpose.int, (o, 1, 2)),),
                     {"memory_format": torch.contiguous_format})
            out = call(aten.transpose.int, (t, 1, 2))
        node.replace_all_uses_with(out)
        graph.erase_node(node)
        if npu_softmax:
            points = [(q3, s3, ""), (k3, s3, ""),
                      (s3, s4r if masked is not None else p3, ""), (p3, o3, "softmax"),
                      (v3, o3, ""), (o3, o, "")]
            return points + ([(masked, p3, "masked")] if masked is not None else [])
        return [(q3, s3, ""), (k3, s3, ""), (s3, s4r, ""), (p3, o3, "probability"),
                (v3, o3, ""), (o3, o, "")]

    @staticmethod
    def _calibrate(program: Program, points, batches, symmetric: bool) -> None:
        from edgecc.targets.npu.calibrate import QdqPoint, insert_int8_qdq

        qdq = []
        for value, consumer, kind in points:
            fixed = None
            if kind == "softmax":  # TFLite's int8 SOFTMAX output: 1/256, zero point -128
                fixed = (1.0 / 256, -128)
            elif kind == "probability" and not symmetric:  # [0, 1] over the int8 range
                s, z = scale_from_range(torch.tensor(0.0), torch.tensor(1.0), "int8",
                                        symmetric=False)
                fixed = (float(s), int(z))
            # a masked logit clamps >= 12 below the maximum (module docstring)
            qdq.append(QdqPoint(value, (consumer,), fixed, 12.0 if kind == "masked" else 0.0))
        insert_int8_qdq(program, qdq, batches, symmetric, desc="calibrating attention")
