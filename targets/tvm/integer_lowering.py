"""Integer kernels for quantized layers: ``dq(x_q) → linear/conv ← dq(w_q)`` (and the
``quantize`` that follows) become int8 × int8 → int32 products with an integer or float
epilogue, instead of float compute.

Before (the quantized program, as the simulator runs it)::

    %xd = edgecc.dequantize(%xq, @sx, @zx, ..., 'int8')
    %wd = edgecc.dequantize(@w_q:int8[N,K], @sw[N], 0, 0, 0, 'int8', float32)
    %y  = edgecc.linear_act(%xd, %wd, @b, 'relu')              # or convolution / conv_act
    %yq = edgecc.quantize(%y, @sy, @zy, 0, 0, -128, 127, 'int8')

After (Relax)::

    acc = gemm(xq, pack(w_q))                  # int32; smmla / sdot / widening madd kernels
    acc = acc - zx · Σ_k w_q[n, k]             # when zx != 0 (convs pad with zx first)
    # the next op is a quantize and the activation is relu / relu6 / none: all integer
    B   = round(b[n] / sy · 2^s[n])            # bias in the int64 product domain
    yq  = clamp((int64(acc) · m[n] + B + 2^(s[n]-1)) >> s[n] + zy, lo, hi)  # requantize
    # otherwise: float epilogue
    y   = act(float32(acc) · (sx · sw[n]) + b)

On x86, a float-epilogue convolution also takes over what follows it up to the next
layer's int8 input — a residual ``add`` whose other operand is already lowered, the
``relu`` after it, the ``quantize`` — in its write-back (``post_chain``, ``x86_int8.Post``;
the same float32 operations, so the values are unchanged); ``add`` / ``relu`` then return
the fused value (``passthrough``).

Convolutions are im2col + the same GEMM (groups = 1), or an int8 ``conv2d`` accumulating
in int32 (depthwise). The requantize multiplier ``sx · sw[n] / sy = m[n] · 2^-s[n]`` has a
31-bit mantissa; the shift rounds half up, as AArch64's rounding shifts (``SRSHL``) do —
the simulator rounds half to even, so an output can differ by one step at exact ties: the
result is within one quantization step, never more. The bias is added in the 64-bit
product domain (``b / sy · 2^s``), not rounded to the int32 accumulator's unit first.

Supported: int8 activations (per-tensor, any zero point), symmetric int8 weights
(per-tensor or per output channel). Anything else — uint8 / 4-bit / blocked weights,
grouped (non-depthwise) or transposed convs, 1-D/3-D convs — runs in float, with a
warning naming the layer.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch.fx as fx

from edgecc.quant import is_dequantize, is_quantize
from edgecc.targets.tvm.int8_gemm import emit_gemm

X86 = "avx2"  # x86_int8.ISA (imported lazily there: it needs tvm)


def exported_constants(exported: Any) -> dict[str, np.ndarray]:
    """Placeholder name → value for the weights and constants lifted by ``torch.export``."""
    sig = exported.graph_signature
    out = {}
    for table, source in ((sig.inputs_to_parameters, exported.state_dict),
                          (sig.inputs_to_buffers, exported.state_dict),
                          (sig.inputs_to_lifted_tensor_constants, exported.constants)):
        for placeholder, key in table.items():
            if key in source:
                out[placeholder] = source[key].detach().cpu().numpy()
    return out


REQUANT_ACTIVATIONS = (None, "relu", "relu6")


class IntegerKernels:
    """Converters for ``linear`` / ``linear_act`` / ``convolution`` / ``conv_act`` and
    ``quantize`` sharing what one program's lowering learned (constants, requantized
    outputs, notes)."""

    def __init__(self, constants: dict[str, np.ndarray], isa: str, notes: list[str]):
        self.constants, self.isa, self.notes = constants, isa, notes
        # x86: the fused AVX2 kernels (x86_int8) where they apply, the generic GEMM elsewhere
        self.gemm_isa = "generic" if isa == X86 else isa
        self.uses_x86 = False
        self.requantized: dict[fx.Node, Any] = {}  # quantize node → its int8 value
        # add / relu nodes done inside a convolution's write-back (x86 Post) → their value
        self.fused_values: dict[fx.Node, Any] = {}
        # convolutions lowered ahead of their turn (x86_int8_pair.shortcut_of) → their value
        self.early: dict[fx.Node, Any] = {}
        # int8 values stored in their consumers' padded channel-quad layout (x86_int8_c4)
        self.c4_sources: list[Any] = []
        self._defaults: dict[int, dict[str, Any]] = {}  # the importer's own converters
        self.stats = {"integer_layers": 0, "requantized": 0, "float_layers": 0}

    # x86: per-tensor activation quantizes (the input's, a global mean's) as one
    # edgecc_x86_quantize call (_x86_quantize); False: TVM's kernels (A/B, bench/x86_int8_e2e)
    x86_quantize = True

    # -- analysis ---------------------------------------------------------------------
    def _const(self, n: Any) -> np.ndarray | None:
        return self.constants.get(n.name) if isinstance(n, fx.Node) else None

    def plan(self, node: fx.Node) -> tuple[dict[str, Any] | None, str]:
        """The integer operands of a quantized layer, or None and why not."""
        x, w = node.args[0], node.args[1]
        if not (is_dequantize(x) and is_dequantize(w)):
            return None, ""
        if not is_quantize(x.args[0]):
            return None, "its input is not quantized in the graph"
        sx, zx, sw, zw, wq = (self._const(a) for a in (x.args[1], x.args[2], w.args[1],
                                                         w.args[2], w.args[0]))
        if any(v is None for v in (sx, zx, sw, zw, wq)):
            return None, "scales or weights are not constants"
        if x.args[5] != "int8" or sx.size != 1:
            return None, (f"activations are {x.args[5]} "
                          f"{'per-tensor' if sx.size == 1 else 'per-axis'}")
        if w.args[5] != "int8" or w.args[4] or np.any(zw != 0) or (sw.size > 1
                                                                   and w.args[3] != 0):
            return None, (f"weights are {w.args[5]}, block {w.args[4]}, asymmetric or "
                          "per-input")
        n_out = wq.shape[0]
        return {"xq": x.args[0], "wq": wq.astype(np.int8), "sx": float(sx.reshape(-1)[0]),
                "zx": int(zx.reshape(-1)[0]),
                "sw": np.broadcast_to(sw.reshape(-1), (n_out,)).astype(np.float64)}, ""

    def requant_target(self, node: fx.Node, act: str | None) -> dict[str, Any] | None:
        """The ``quantize`` this layer's output goes to, when it can be done in integer."""
        users = list(node.users)
        if act not in REQUANT_ACTIVATIONS or len(users) != 1 or not is_quantize(users[0]):
            return None
        q = users[0]
        sy, zy = self._const(q.args[1]), self._const(q.args[2])
        if sy is None or zy is None or sy.size != 1 or q.args[4] or q.args[7] != "int8":
            return None
        return {"node": q, "sy": float(sy.reshape(-1)[0]), "zy": int(zy.reshape(-1)[0]),
                "qmin": int(q.args[5]), "qmax": int(q.args[6])}

    def quantize_params(self, q: fx.Node) -> tuple[float, float, int, int] | None:
        """(scale, zero point, qmin, qmax) of a per-tensor int8 ``quantize`` with constant
        parameters, as float32 values the Relax lowering divides / adds; None otherwise."""
        sy, zy = self._const(q.args[1]), self._const(q.args[2])
        if sy is None or zy is None or sy.size != 1 or zy.size != 1 or q.args[4] \
                or q.args[7] != "int8":
            return None
        return (float(np.float32(sy.reshape(-1)[0])), float(np.float32(zy.reshape(-1)[0])),
                int(q.args[5]), int(q.args[6]))

    def post_chain(self, node: fx.Node, importer: Any) -> dict[str, Any] | None:
        """What a float-epilogue convolution's write-back can also do (``x86_int8.Post``):
        the residual ``add`` that is its only user (the other operand already lowered, float32,
        same shape), the ``relu`` that is the add's only user, and the int8 ``quantize`` of
        the result; None when there is nothing to take over."""
        end, residual, post_relu, chain = node, None, False, []
        users = list(node.users)
        if len(users) == 1 and _aten(users[0], "add.Tensor") and len(users[0].args) == 2 \
                and not users[0].kwargs:
            add = users[0]
            a, b = add.args
            other = b if a is node else a
            if (a is node) != (b is node) and isinstance(other, fx.Node) \
                    and other in importer.env and _same_float(node, other) \
                    and _same_float(node, add):
                residual, end = other, add
                chain.append(add)
                nxt = list(add.users)
                if len(nxt) == 1 and _aten(nxt[0], "relu.default"):
                    end, post_relu = nxt[0], True
                    chain.append(end)
        quants = [u for u in end.users if is_quantize(u)]
        qnode = quants[0] if len(quants) == 1 else None
        quant = self.quantize_params(qnode) if qnode is not None else None
        if quant is None:
            qnode = None
        if residual is None and quant is None:
            return None
        return {"residual": residual, "post_relu": post_relu, "chain": chain,
                "quantize": qnode, "quant": quant,
                "float_out": any(u is not qnode for u in end.users)}

    def passthrough(self, name: str, fallback: Any) -> Any:
        """A converter for ``name`` (add / relu) returning the value a fused write-back
        already computed, else ``fallback`` (or the importer's own converter)."""
        def convert(node: fx.Node, importer: Any) -> Any:
            if node in self.fused_values:
                return self.fused_values[node]
            if fallback is not None:
                return fallback(node, importer)
            defaults = self._defaults.get(id(importer))
            if defaults is None:
                defaults = self._defaults[id(importer)] = importer.create_convert_map()
            return defaults[name](node)

        return convert

    # -- epilogues --------------------------------------------------------------------
    def requant_params(self, node: fx.Node, plan: dict[str, Any], bias: Any,
                       act: str | None) -> dict[str, Any] | None:
        """The fixed-point requantization into the ``quantize`` that follows the layer, or
        None when its output stays float (see the module docstring)."""
        target = self.requant_target(node, act)
        bias_value = self._const(bias) if isinstance(bias, fx.Node) else np.zeros(0)
        if target is None or bias_value is None:
            return None
        acc_scale = plan["sx"] * plan["sw"]  # float64 per output channel
        mantissa, shift = _fixed_point(acc_scale / target["sy"])
        if shift is None:
            return None
        # the bias joins in the 64-bit product domain, b / sy · 2^shift: rounding it to an
        # int32 accumulator unit instead (sx·sw) errs by up to half of sx·sw/sy output
        # steps — for a depthwise conv between two relu6 (sx = sy) that is sw/2, and it
        # flipped ~2% of outputs by one step
        rounding = (np.int64(1) << (shift - 1)).astype(np.float64)
        bias_q = None
        if bias_value.size:
            wide_bias = np.round(np.broadcast_to(
                bias_value.astype(np.float64).reshape(-1), shift.shape)
                / target["sy"] * np.ldexp(1.0, shift))
            if np.all(np.abs(wide_bias) < 2.0 ** 61):
                rounding = rounding + wide_bias
            else:  # too large for int64 beside the product: int32 units
                bias_q = np.round(bias_value.astype(np.float64) / acc_scale).astype(np.int32)
        lo, hi = target["qmin"] - target["zy"], target["qmax"] - target["zy"]
        if act in ("relu", "relu6"):
            lo = max(lo, 0)
        if act == "relu6":
            hi = min(hi, int(round(6.0 / target["sy"])))
        return {"target": target, "mantissa": mantissa, "shift": shift,
                "add": rounding.astype(np.int64), "bias_q": bias_q, "lo": lo, "hi": hi}

    def epilogue(self, bb: Any, importer: Any, node: fx.Node, acc: Any, plan: dict[str, Any],
                 bias: Any, act: str | None, channel_axis: int) -> Any:
        """Bias, activation and output of an int32 accumulator (``channel_axis`` indexes
        the output channel)."""
        from tvm import relax

        op = relax.op
        rank = len(acc.ty.shape)
        view = [1] * rank
        view[channel_axis] = -1
        acc_scale = plan["sx"] * plan["sw"]  # float64 per output channel
        rq = self.requant_params(node, plan, bias, act)
        if rq is not None:
            target = rq["target"]
            if rq["bias_q"] is not None:
                acc = bb.emit(op.add(acc, relax.const(rq["bias_q"].reshape(view))))
            wide = bb.emit(op.multiply(bb.emit(op.astype(acc, "int64")),
                                       relax.const(rq["mantissa"].reshape(view), "int64")))
            wide = bb.emit(op.add(wide, relax.const(rq["add"].reshape(view), "int64")))
            y = bb.emit(op.right_shift(wide, relax.const(rq["shift"].reshape(view), "int64")))
            y = bb.emit(op.clip(y, rq["lo"], rq["hi"]))
            y = bb.emit(op.add(y, relax.const(target["zy"], "int64")))
            y = bb.emit(op.astype(y, "int8"))
            return self._requantized(target, y)
        y = bb.emit(op.multiply(bb.emit(op.astype(acc, "float32")),
                                relax.const(acc_scale.astype(np.float32).reshape(view))))
        if isinstance(bias, fx.Node):
            b = bb.emit(op.astype(importer.env[bias], "float32"))
            y = bb.emit(op.add(y, bb.emit(op.reshape(b, view))))
        return self._activation(bb, y, act)

    def _requantized(self, target: dict[str, Any], y: Any) -> Any:
        self.requantized[target["node"]] = y
        self.stats["requantized"] += 1
        return y

    @staticmethod
    def _activation(bb: Any, y: Any, act: str | None) -> Any:
        if act is None:
            return y
        from edgecc.targets.tvm.converters import emit_activation

        return emit_activation(bb, y, act)

    def fused(self, node: fx.Node, plan: dict[str, Any], bias: Any, act: str | None,
              off: np.ndarray) -> tuple[Any, dict[str, Any] | None] | None:
        """The x86 kernels' write-back (``x86_int8.Epilogue``) for this layer: requantized
        into its ``quantize``, or float with a constant bias; None when neither applies
        (the generic path then runs it). ``off`` is ``-zx·Σw`` per output channel."""
        from edgecc.targets.tvm.x86_int8 import Epilogue

        rq = self.requant_params(node, plan, bias, act)
        if rq is not None:
            if rq["bias_q"] is not None:
                off = off + rq["bias_q"]
            t = rq["target"]
            return Epilogue(off=off.astype(np.int32), requant=True, mult=rq["mantissa"],
                            add=rq["add"], shift=rq["shift"], lo=rq["lo"], hi=rq["hi"],
                            zy=t["zy"]), rq
        bias_value = self._const(bias) if isinstance(bias, fx.Node) else np.zeros(1)
        if bias_value is None:
            return None
        scale = (plan["sx"] * plan["sw"]).astype(np.float32)
        return Epilogue(off=off.astype(np.int32), requant=False, scale=scale,
                        bias=bias_value.astype(np.float32)), None

    # -- converters -------------------------------------------------------------------
    def linear(self, fallback: Any) -> Any:
        def convert(node: fx.Node, importer: Any) -> Any:
            from tvm import relax

            plan, why = self.plan(node)
            if plan is None:
                return self._float(node, importer, fallback, why)
            bb, wq = importer.block_builder, plan["wq"]
            act = node.args[3] if len(node.args) > 3 and isinstance(node.args[3], str) else None
            bias = node.args[2] if len(node.args) > 2 else None
            if self.isa == X86:
                out = self._x86_linear(bb, node, plan, bias, act, importer)
                if out is not None:
                    return out
            acc = emit_gemm(bb, importer.env[plan["xq"]], wq, self.gemm_isa)
            if plan["zx"]:
                rowsum = wq.astype(np.int64).sum(axis=1).astype(np.int32) * plan["zx"]
                acc = bb.emit(relax.op.subtract(acc, relax.const(rowsum)))
            self.stats["integer_layers"] += 1
            return self.epilogue(bb, importer, node, acc, plan, bias, act, -1)

        return convert

    def convolution(self, fallback: Any) -> Any:
        def convert(node: fx.Node, importer: Any) -> Any:
            if node in self.early:
                return self.early[node]
            plan, why = self.plan(node)
            if plan is None:
                return self._float(node, importer, fallback, why)
            stride, padding, dilation, transposed, _, groups = node.args[3:9]
            wq = plan["wq"]
            if transposed or wq.ndim != 4:
                return self._float(node, importer, fallback,
                                   "transposed" if transposed else f"{wq.ndim - 2}-D")
            if groups != 1 and not (wq.shape[1] == 1):
                return self._float(node, importer, fallback,
                                   f"grouped ({groups} groups, not depthwise)")
            bb = importer.block_builder
            act = node.args[9] if len(node.args) > 9 else None
            if self.isa == X86:
                out = self._x86_conv(bb, node, plan, act, importer, list(stride),
                                     list(padding), list(dilation), groups)
                if out is not None:
                    return out
            acc = _conv_int32(bb, importer.env[plan["xq"]], wq, plan["zx"], list(stride),
                              list(padding), list(dilation), groups, self.gemm_isa)
            self.stats["integer_layers"] += 1
            return self.epilogue(bb, importer, node, acc, plan, node.args[2], act, 1)

        return convert

    def _x86_linear(self, bb: Any, node: fx.Node, plan: dict[str, Any], bias: Any,
                    act: str | None, importer: Any) -> Any | None:
        from edgecc.targets.tvm import x86_int8

        wq = plan["wq"]
        off = -wq.astype(np.int64).sum(axis=1).astype(np.int32) * np.int32(plan["zx"])
        fused = self.fused(node, plan, bias, act, off)
        if fused is None:
            return None
        epilogue, rq = fused
        out = x86_int8.emit_linear(bb, importer.env[plan["xq"]], wq, epilogue)
        return self._x86_done(bb, out, rq, act)

    def _x86_conv(self, bb: Any, node: fx.Node, plan: dict[str, Any], act: str | None,
                  importer: Any, stride: list[int], padding: list[int],
                  dilation: list[int], groups: int) -> Any | None:
        from edgecc.targets.tvm import x86_int8, x86_int8_c4

        wq = plan["wq"]
        off = -(wq.reshape(wq.shape[0], -1).astype(np.int64).sum(axis=1).astype(np.int32)
                * np.int32(plan["zx"]))
        fused = self.fused(node, plan, node.args[2], act, off)
        if fused is None:
            return None
        epilogue, rq = fused
        emit = x86_int8.emit_conv if groups == 1 else x86_int8.emit_depthwise
        chain = self.post_chain(node, importer) if rq is None and act in x86_int8.ACTS \
            else None
        # x86_int8_c4: the input read in place from its producer's c4 tensor, the int8
        # output stored as its consumers' c4 tensor (their view is the value others read)
        x, c4 = importer.env[plan["xq"]], {}
        if groups == 1:
            q = rq["target"]["node"] if rq is not None else chain["quantize"] \
                if chain is not None else None
            c4 = {"c4_in": x86_int8_c4.source(self.c4_sources, x),
                  "c4_out": x86_int8_c4.output_for(node, q, epilogue, stride, padding,
                                                   dilation, groups, self._const)}
        if chain is not None:  # the float round trip to the next layer, in the write-back
            post = x86_int8.Post(
                act=act, post_relu=chain["post_relu"], float_out=chain["float_out"],
                quant=chain["quant"],
                residual=None if chain["residual"] is None else importer.env[chain["residual"]])
            outs = emit(bb, x, wq, plan["zx"], stride, padding, dilation, epilogue, post,
                        **c4)
            if outs is not None and c4:
                outs = x86_int8_c4.emitted(bb, self.c4_sources, self.stats, outs, node, **c4)
            if outs is not None:
                outs = self._x86_block(bb, node, plan, outs)
                self._x86_done(bb, outs[0], None, None)
                value = outs[0]  # float (or, with no float user, the int8 output)
                for n in chain["chain"]:
                    self.fused_values[n] = value
                if chain["quantize"] is not None:
                    self.requantized[chain["quantize"]] = outs[-1]
                self.stats["fused_write_back"] = self.stats.get("fused_write_back", 0) + 1
                if chain["residual"] is not None:
                    self.stats["fused_residual"] = self.stats.get("fused_residual", 0) + 1
                return value
        if rq is None and act in ("relu", "relu6"):  # float out into a float op (mean):
            # the act in the write-back, not a TVM clip after it (its pool launch after a
            # run of serial kernels stalled ms under load)
            outs = emit(bb, importer.env[plan["xq"]], wq, plan["zx"], stride, padding,
                        dilation, epilogue, x86_int8.Post(act=act))
            if outs is not None:
                self._x86_done(bb, outs[0], None, None)
                self.stats["fused_act"] = self.stats.get("fused_act", 0) + 1
                return outs[0]
        c4 = {k: v for k, v in c4.items() if k == "c4_in" or rq is not None}  # int8 out only
        out = emit(bb, x, wq, plan["zx"], stride, padding, dilation, epilogue, **c4)
        if out is not None:
            out = self._x86_block(bb, node, plan, [out])[0]
            out = self._x86_pair(bb, node, plan, importer, out)
            if c4:
                out = x86_int8_c4.emitted(bb, self.c4_sources, self.stats, [out], node, **c4)[0]
        return self._x86_done(bb, out, rq, act)

    def _x86_block(self, bb: Any, node: fx.Node, plan: dict[str, Any],
                   outs: list[Any]) -> list[Any]:
        """``outs`` of a project conv as one ``x86_int8_block`` call with the expand and
        depthwise calls before it, where the int8 intermediates feed the next layer only;
        else ``outs`` as they are."""
        from edgecc.targets.tvm import x86_int8_block

        qd = plan["xq"]
        dw = qd.args[0] if is_quantize(qd) else None
        src = dw.args[0] if isinstance(dw, fx.Node) and dw.args else None
        qe = src.args[0] if is_dequantize(src) else None
        if not (_only_into(qd, node) and is_quantize(qe) and _only_into(qe, dw)):
            return outs
        fused = x86_int8_block.fuse(bb, outs)
        if fused is None:
            return outs
        self.stats["x86_blocks"] = self.stats.get("x86_blocks", 0) + 1
        return fused

    def _x86_pair(self, bb: Any, node: fx.Node, plan: dict[str, Any], importer: Any,
                  out: Any) -> Any:
        """After a stride-2 block's conv1 (``out``): its 1x1 stride-2 shortcut lowered now, as
        a plain float output (the block's residual add then goes to conv2's write-back), and
        both as one ``x86_int8_pair`` call where they pair; returns conv1's value."""
        from edgecc.targets.tvm import x86_int8_pair

        sc = x86_int8_pair.shortcut_of(node, plan["xq"], self._const)
        sc_plan = self.plan(sc)[0] if sc is not None and sc not in self.early else None
        if sc_plan is None or sc_plan["xq"] is not plan["xq"]:
            return out
        value = importer.env.get(sc)  # lowered already (before conv1 in the graph), else now
        if value is None:
            stride, padding, dilation, _, _, groups = sc.args[3:9]
            act = sc.args[9] if len(sc.args) > 9 else None
            value = self._x86_conv(bb, sc, sc_plan, act, importer, list(stride),
                                   list(padding), list(dilation), groups)
            if value is None:
                return out
            self.stats["x86_early"] = self.stats.get("x86_early", 0) + 1
        pair = x86_int8_pair.fuse(bb, out, value)
        if pair is not None:
            out, value = pair
            self.stats["x86_pairs"] = self.stats.get("x86_pairs", 0) + 1
        self.early[sc] = importer.env[sc] = value
        return out

    def _x86_done(self, bb: Any, out: Any, rq: dict[str, Any] | None, act: str | None) -> Any:
        if out is None:
            return None
        self.stats["integer_layers"] += 1
        self.stats["x86_kernels"] = self.stats.get("x86_kernels", 0) + 1
        self.uses_x86 = True
        if rq is not None:
            return self._requantized(rq["target"], out)
        return self._activation(bb, out, act)

    def quantize(self, fallback: Any) -> Any:
        def convert(node: fx.Node, importer: Any) -> Any:
            if node in self.requantized:
                return self.requantized[node]
            if self.isa == X86 and self.x86_quantize:
                out = self._x86_quantize(node, importer)
                if out is not None:
                    return out
            return fallback(node, importer)

        return convert

    def _x86_quantize(self, node: fx.Node, importer: Any) -> Any | None:
        """The per-tensor int8 ``quantize`` of the model's float32 input or of a global mean
        (through a ``view`` / ``flatten`` / ``clone``, before the classifier) as one
        ``edgecc_x86_quantize`` call (``x86_int8_quant_source``: TVM's mean and quantize,
        the same float32 operations); None where it does not apply. The mean and views the
        call reads past stay in the program unused (Relax's dead-code elimination drops
        them)."""
        from edgecc.targets.tvm import x86_int8

        quant = self.quantize_params(node)
        src, val = node.args[0], node.meta.get("val")
        if quant is None or not isinstance(src, fx.Node) or val is None \
                or src not in importer.env or not _float32(src):
            return None
        cur, cols = src, 1
        while len(cur.users) == 1 and any(_aten(cur, n) for n in _VIEWS) \
                and isinstance(cur.args[0], fx.Node):
            cur = cur.args[0]
        if _aten(cur, "mean.dim") and len(cur.users) == 1 and _float32(cur.args[0]):
            shape = tuple(cur.args[0].meta["val"].shape)
            dims = {int(d) % len(shape) for d in cur.args[1]} if len(shape) == 4 else set()
            if dims == {2, 3} and cur.args[0] in importer.env:
                src, cols = cur.args[0], shape[2] * shape[3]
        if cols == 1 and src.op != "placeholder":
            # other activations' quantizes stay TVM's, fused with the op before them (MiniLM
            # w8a8 as kernels: 2 threads 63 -> 85 ms, under load; bench/x86_int8_quant.py)
            return None
        out = x86_int8.emit_quantize(importer.block_builder, importer.env[src], quant, cols,
                                     [int(d) for d in val.shape])
        if out is not None:
            self.uses_x86 = True
            key = "x86_quantize_mean" if cols > 1 else "x86_quantize"
            self.stats[key] = self.stats.get(key, 0) + 1
        return out

    def _float(self, node: fx.Node, importer: Any, fallback: Any, why: str) -> Any:
        if why:
            self.notes.append(f"{node.name}: quantized {node.target.__name__.split('.')[0]} "
                              f"runs in float ({why})")
            self.stats["float_layers"] += 1
        return fallback(node, importer)


def _only_into(q: Any, consumer: fx.Node) -> bool:
    """Every use of quantize ``q`` is a dequantize that only ``consumer`` uses."""
    return isinstance(q, fx.Node) and bool(q.users) and all(
        is_dequantize(d) and list(d.users) == [consumer] for d in q.users)


def _aten(node: Any, name: str) -> bool:
    return isinstance(node, fx.Node) and node.op == "call_function" \
        and getattr(node.target, "__name__", "") == name


_VIEWS = ("view.default", "reshape.default", "flatten.using_ints", "_unsafe_view.default",
          "clone.default")  # what _x86_quantize looks through to a mean


def _float32(node: Any) -> bool:
    """A float32 tensor of static shape (from the export's metadata)."""
    val = node.meta.get("val") if isinstance(node, fx.Node) else None
    return val is not None and hasattr(val, "shape") and str(val.dtype) == "torch.float32" \
        and all(isinstance(d, int) for d in val.shape)


def _same_float(a: fx.Node, b: fx.Node) -> bool:
    """Both float32 tensors of one static shape (from the export's metadata)."""
    va, vb = a.meta.get("val"), b.meta.get("val")
    return (va is not None and vb is not None and hasattr(va, "shape") and hasattr(vb, "shape")
            and str(va.dtype) == str(vb.dtype) == "torch.float32"
            and tuple(va.shape) == tuple(vb.shape))


def _fixed_point(multiplier: np.ndarray) -> tuple[np.ndarray, np.ndarray | None]:
    """``multiplier = mantissa · 2^-shift`` with a 31-bit mantissa in [2^30, 2^31), per
    channel (int64 arrays); shift None when a channel cannot be represented (>= 1 or 0)."""
    mantissas, shifts = [], []
    for value in multiplier.reshape(-1):
        if not 0 < value < 1:
            return np.zeros(0), None
        frac, exp = math.frexp(float(value))  # value = frac · 2^exp, frac in [0.5, 1)
        mant = int(round(frac * (1 << 31)))
        shift = 31 - exp
        if mant == 1 << 31:
            mant, shift = mant // 2, shift - 1
        if shift > 62:
            return np.zeros(0), None
        mantissas.append(mant)
        shifts.append(shift)
    return np.array(mantissas, np.int64), np.array(shifts, np.int64)


def _conv_int32(bb: Any, xq: Any, wq: np.ndarray, zx: int, stride: list[int],
                padding: list[int], dilation: list[int], groups: int, isa: str) -> Any:
    """int32 ``conv2d(xq - zx, wq)`` (NCHW / OIHW): padding with ``zx`` (the quantized
    zero), then im2col + GEMM, or ``conv2d`` with int32 accumulation for depthwise."""
    from tvm import relax

    op = relax.op
    n, c, h, w = (int(d) for d in xq.ty.shape)
    oc, cg, kh, kw = wq.shape
    ph, pw = padding
    if ph or pw:
        xq = bb.emit(op.nn.pad(xq, [0, 0, 0, 0, ph, ph, pw, pw], pad_value=float(zx)))
    hp, wp = h + 2 * ph, w + 2 * pw
    oh = (hp - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (wp - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    wsum = wq.reshape(oc, -1).astype(np.int64).sum(axis=1).astype(np.int32) * zx
    if groups != 1:  # depthwise
        acc = bb.emit(op.nn.conv2d(xq, relax.const(wq), strides=stride, dilation=dilation,
                                   groups=groups, out_dtype="int32"))
    else:
        if kh == kw == 1 and stride == [1, 1]:  # pointwise: the pixels are the rows
            patches = bb.emit(op.reshape(xq, [n, c, oh * ow]))
        else:
            cols = []
            for i in range(kh):
                for j in range(kw):
                    top, left = i * dilation[0], j * dilation[1]
                    cols.append(bb.emit(op.strided_slice(
                        xq, axes=[2, 3], begin=[top, left],
                        end=[top + (oh - 1) * stride[0] + 1, left + (ow - 1) * stride[1] + 1],
                        strides=stride)))
            patches = bb.emit(op.stack(cols, axis=2))           # [N, C, KH·KW, OH, OW]
            patches = bb.emit(op.reshape(patches, [n, c * kh * kw, oh * ow]))
        patches = bb.emit(op.permute_dims(patches, [0, 2, 1]))  # [N, OH·OW, C·KH·KW]
        acc = emit_gemm(bb, patches, wq.reshape(oc, -1), isa)   # [N, OH·OW, OC]
        acc = bb.emit(op.permute_dims(acc, [0, 2, 1]))
        acc = bb.emit(op.reshape(acc, [n, oc, oh, ow]))
    if zx:
        acc = bb.emit(op.subtract(acc, relax.const(wsum.reshape(1, oc, 1, 1))))
    return acc


def integer_converters(converters: dict[str, Any], constants: dict[str, np.ndarray],
                       isa: str, notes: list[str]) -> IntegerKernels:
    """Replace the layer and quantize converters in ``converters`` (in place)."""
    kernels = IntegerKernels(constants, isa, notes)
    for name in ("linear.default", "linear_act.default"):
        converters[name] = kernels.linear(converters[name])
    for name in ("convolution.default", "conv_act.default"):
        converters[name] = kernels.convolution(converters[name])
    converters["quantize.default"] = kernels.quantize(converters["quantize.default"])
    if isa == X86:  # what the x86 convolutions' fused write-back may take over
        for name in ("add.Tensor", "relu.default"):
            converters[name] = kernels.passthrough(name, converters.get(name))
    return kernels
