"""x86 kernels for the float parts of a transformer that TVM would run as loop nests:
attention, layer norm and GELU become one call each to the hand-written kernels of
``x86_attention_source`` (AVX-512 or AVX2 + FMA, picked at run time), in the fp32 build and
in the w8a8 integer build (whose linears are already int8 kernels; these parts stay float).

Attention — before (Relax, as ``converters._attention`` writes scaled-dot-product attention;
BERT / GPT-2 / MiniLM through transformers' sdpa path)::

    q = permute_dims(reshape(xq, [B, S, H, D]), [0, 2, 1, 3])          # same for k, v
    s = matmul(q, permute_dims(k, [0, 1, 3, 2])); s = multiply(s, scale)
    s = add(s, mask)                                 # optional, broadcast [B|1, H|1, Sq, Sk]
    o = matmul(softmax(s, axis=-1), v)
    o = where(keep, o, 0)                            # optional, keep [B|1, H|1, Sq, 1]
    y = permute_dims(o, [0, 2, 1, 3])                # optional

After::

    y = call_dps_packed("edgecc_x86_attention", xq', xk', xv', mask, keep, meta, [scale])

(``xq'``: the tensor before the head transpose, read through strides — or, when q, k, v are
``split(qkv, axis=-1)`` of one projection (GPT-2's ``c_attn``), ``qkv`` itself at q's / k's /
v's element offset, so the split's copy does not run either; ``y`` written in the layout the
graph asked for, so neither transpose runs.)

Layer norm over the last axis, with the residual ``add`` before it folded in (its sum also
written when something else reads it), and GELU — ``gelu(x)`` (erf form) or GPT-2's
``0.5·x·(1 + tanh((x + 0.044715·x·x·x)·0.79788))`` written out — become
``edgecc_x86_layernorm`` / ``edgecc_x86_gelu``. When the result feeds the w8a8 build's
activation quantize ``astype(clip(round(y / s) + zp, lo, hi), int8)``, that quantize is
written by the same kernel (a second output, or the only one when nothing else reads ``y``).

When to rewrite an attention (the cost rule): always, for every shape the kernel covers — it
was measured faster than TVM's path (two batched matmuls, the transposes, the softmax) on
every shape tried, so no shape is kept on TVM for speed. Measured on this machine (AVX-512,
2026-11-30, load 6-7, so as CPU time of one thread: bench/x86_attention.py --parts
--threads 1 --clock cpu, and an attention-only model): whole model with the attention
kernel / with attention on TVM (layer norm and GELU on the kernels in both) BERT
(1 x 4 heads x 128 x 64) 0.89x, GPT-2 (causal) 0.86x, MiniLM (16 x 12 heads x 64 x 32) 0.94x;
attention alone, 4 heads of 64: 1 x 256 keys 0.34x, 4 x 256 0.35x, 16 x 256 0.40x,
128 x 128 0.50x. Two threads, attention alone (``bench/x86_attention.py --alone --threads
2``: the fused kernel / TVM's batched matmuls + softmax of the same q, k, v, at 587d398 (one
pool: TVM's loops on the kernels' pool); wall clock, per call, interleaved, load ~4;
bench/results/x86_attention_alone.json; 10th percentiles in brackets): BERT 1 x 4 x 128 x 64
0.46x (0.45x), GPT-2 causal 0.32x (0.26x), MiniLM 16 x 12 x 64 x 32 0.17x (0.18x),
1 x 12 x 384 x 64 0.31x, 8 heads 256 x 128 causal 0.15x, 1 head 1024 keys 0.52x, and the
small ones where the kernel has 1-2 tasks for 2 threads (1 head of 16 / 32 / 128 queries,
4 x 2 heads of 16): 0.56-0.72x (0.41-0.64x); a run before 587d398 read the same within
0.05 but for 1 head of 1024 keys (median 0.29x there). One thread, CPU time: 0.33-0.78x (x86_attention_alone_1t.json). So no shape is kept on
TVM at 2 threads either. Whole models at 2 threads by the wall clock are not measurable on
this loaded machine (each build 4-5x its quiet time at load 4-5; fused / attention on TVM,
median (p10): before 587d398 BERT 0.95x (0.92x), GPT-2 0.93x (0.99x); after it BERT 0.95x
(1.46x), GPT-2 1.11x (0.95x), MiniLM 0.86x (0.70x): x86_attention_2t_*_loaded.json).
``rewrite(module, parts)`` keeps any of ``PARTS`` on TVM's kernels (the bench's per-part A/B).

Path counters (``PATH_QUERY``, asserted by the tests): attention calls that read V in place
(Dv a multiple of the vector) or through a padded copy, and the key vectors skipped because
every row of a group of 6 has them masked to -inf (exact: exp gives 0 there; a NaN or inf in
V at such a key is not propagated, as it would be by TVM's 0 · v).

Numerics: exp / erf / tanh as accurate as TVM's polynomial ones (``fast_math``: <= 1e-5),
asserted with the kernels' sums against TVM's build in tests/targets/tvm/
test_x86_attention.py (1e-5 relative); a row whose every key is masked gives NaN as
softmax does (then zeros where the ``where`` is fused). What the kernels do not cover stays as
it was, with the reason in ``RewriteStats.left``: other dtypes, symbolic shapes, a mask that
broadcasts along the keys, normalization over other axes, non-constant gamma / beta.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from edgecc.targets.tvm.relax_analysis import (
    dataflow_users,
    static_shape,
    with_rewritten_functions,
)
from edgecc.targets.tvm.x86_attention_source import (
    EXPORTED,
    LANES_QUERY,
    PATH_QUERY,
    SOURCE,
    SYMBOLS,
)

ATTENTION, LAYERNORM, GELU = SYMBOLS
PARTS = ("attention", "layer_norm", "gelu")
CACHE = "x86_attention"
__all__ = ["ATTENTION", "GELU", "LANES_QUERY", "LAYERNORM", "PARTS", "PATH_QUERY",
           "RewriteStats", "apply", "external_module", "rewrite", "supported"]


def supported(target: Any) -> bool:
    """Whether ``target`` is an x86 CPU with AVX2 and FMA (the kernels' floor)."""
    from edgecc.targets.tvm.x86_fp32 import supported as has_fma

    return has_fma(target)


def external_module() -> Any:
    """The kernels as a module TVM links into the exported library (compiled once into
    ``~/.cache/edgecc/x86_attention`` through ``x86_int8``'s machinery)."""
    from edgecc.targets.tvm import x86_int8

    return x86_int8.external_module(SOURCE, EXPORTED, CACHE)


@dataclass(frozen=True)
class RewriteStats:
    attention: int = 0
    layer_norm: int = 0
    gelu: int = 0
    quantize_fused: int = 0  # activation quantizes written by one of these kernels
    residual_fused: int = 0  # adds folded into a layer norm
    split_views: int = 0  # q / k / v read in place from the tensor a split cut them from
    left: tuple[str, ...] = ()  # candidates kept on TVM's kernels, and why
    linear: int = 0  # SGEMM calls moved to edgecc_x86_linear (x86_linear)
    linear_gelu: int = 0  # GELUs applied in a linear's write-back
    qkv_merged: int = 0  # attentions whose q / k / v linears became one call (x86_linear_qkv)
    deduped: int = 0  # bindings removed as copies of an earlier one (each layer's mask ops)

    def as_dict(self) -> dict[str, Any]:
        return {"x86_attention": self.attention, "x86_layer_norm": self.layer_norm,
                "x86_gelu": self.gelu, "quantize_fused": self.quantize_fused,
                "residual_fused": self.residual_fused, "split_views": self.split_views,
                "x86_linear": self.linear, "linear_gelu_fused": self.linear_gelu,
                "qkv_merged": self.qkv_merged, "deduped": self.deduped,
                "left_on_tvm": list(self.left)}


@dataclass
class _Quant:
    """``astype(clip(round(y / scale) + zp, lo, hi), int8)`` after a float ``y``."""

    scale: float
    zp: float
    lo: float
    hi: float
    last: Any  # the int8 var
    vars: list[Any]
    shape: list[int] | None = None  # the int8 var's (a reshape of y's)


@dataclass
class _Plan:
    symbol: str
    inputs: list[Any]  # Relax expressions (vars of the function)
    consts: list[np.ndarray]
    outputs: list[tuple[Any, list[int], str]]  # (var remapped, shape, dtype)
    vars: list[Any] = field(default_factory=list)  # every binding the call replaces
    quant: bool = False
    residual: bool = False
    split_views: int = 0




def tvm_int_types() -> tuple[type, ...]:
    """TVM's integer immediates (a split's ``indices_or_sections`` when it is a count)."""
    from tvm import tirx

    return (tirx.IntImm,)


def _dtype(expr: Any) -> str:
    return str(getattr(getattr(expr, "ty", None), "dtype", ""))


def _strides(shape: list[int], full: list[int]) -> list[int]:
    """Element strides of a contiguous ``shape`` broadcast to ``full`` (same rank): 0 along
    the axes it broadcasts."""
    out, step = [0] * len(shape), 1
    for i in range(len(shape) - 1, -1, -1):
        out[i] = 0 if shape[i] == 1 and full[i] != 1 else step
        step *= shape[i]
    return out


class _Analysis:
    """Finds the attention / layer-norm / GELU regions of one Relax function."""

    def __init__(self, func: Any, parts: tuple[str, ...] = ()):
        from tvm import relax

        self.parts = parts or PARTS

        self.var2val = relax.analysis.get_var2val(func)
        self.users = dataflow_users(func)
        self.order: dict[Any, int] = {}
        for block in func.body.blocks:
            for binding in block.bindings:
                self.order[binding.var] = len(self.order)
        self.outputs = set()  # vars read outside the dataflow block (their values must stay)
        self.plans: list[_Plan] = []
        self.left: list[str] = []
        self.taken: set[Any] = set()
        for block in func.body.blocks:
            if not isinstance(block, relax.DataflowBlock):
                continue
            for binding in block.bindings:
                if binding.var in self.taken:
                    continue
                plan = self._consider(binding.var, binding.value)
                if plan is not None and not (set(plan.vars) & self.taken) \
                        and self._ordered(plan):
                    self.plans.append(plan)
                    self.taken.update(plan.vars)

    # ---- helpers ---------------------------------------------------------------------------
    def call(self, var: Any, *names: str) -> Any | None:
        """The call bound to ``var`` when its operator is one of ``names``."""
        from tvm import relax

        value = self.var2val.get(var) if isinstance(var, relax.Var) else None
        if isinstance(value, relax.Call) and getattr(value.op, "name", None) in names:
            return value
        return None

    def single_user(self, var: Any) -> Any | None:
        from tvm import relax

        users = self.users.get(var, [])
        if not isinstance(var, relax.DataflowVar) or len(users) != 1:
            return None
        return users[0]

    def scalar(self, expr: Any) -> float | None:
        """The value of a one-element constant (or an ``astype`` of one)."""
        from tvm import relax
        from tvm.ir.expr import GenericConst

        if isinstance(expr, GenericConst):
            value = expr.value.numpy()
            return float(value.reshape(-1)[0]) if value.size == 1 else None
        call = self.call(expr, "relax.astype")
        if call is not None and isinstance(call.args[0], GenericConst):
            return self.scalar(call.args[0])
        if isinstance(expr, relax.Var) and isinstance(self.var2val.get(expr), GenericConst):
            return self.scalar(self.var2val[expr])
        return None

    def const(self, expr: Any) -> np.ndarray | None:
        from tvm import relax
        from tvm.ir.expr import GenericConst

        if isinstance(expr, relax.Var):
            expr = self.var2val.get(expr, expr)
        return expr.value.numpy() if isinstance(expr, GenericConst) else None

    def before_reshapes(self, expr: Any) -> Any:
        """The tensor ``expr`` reshapes (row-major: the same bytes), through any chain of
        static reshapes; TVM would otherwise copy it into ``expr``'s own buffer."""
        while True:
            call = self.call(expr, "relax.reshape")
            if call is None or static_shape(call.args[0].ty) is None:
                return expr
            expr = call.args[0]

    def _ordered(self, plan: _Plan) -> bool:
        """The call goes where the plan's last binding was: every other reader of an output
        must come after it."""
        at = max(self.order[v] for v in plan.vars)
        replaced = set(plan.vars)
        for var, _, _ in plan.outputs:
            for user in self.users.get(var, []):
                if user not in replaced and self.order.get(user, at + 1) <= at:
                    self.left.append(f"{plan.symbol} {var.name}: read before the fused "
                                     "region ends")
                    return False
        return True

    def quant_after(self, var: Any) -> _Quant | None:
        """The activation quantize chain reading ``var`` (one of its users), if any."""
        for user in self.users.get(var, []):
            chain = []
            cur = user
            for op in ("relax.reshape", "relax.astype"):  # a flattening, a no-op cast
                call = self.call(cur, op)
                if call is None or (op == "relax.astype"
                                    and str(call.attrs.dtype) != "float32"):
                    continue
                if self.single_user(cur) is None or static_shape(cur.ty) is None:
                    break
                chain.append(cur)
                cur = self.single_user(cur)
            div = self.call(cur, "relax.divide")
            if div is None or not div.args[0].same_as(chain[-1] if chain else var):
                continue
            scale = self.scalar(div.args[1])
            chain.append(cur)
            rnd = self.single_user(cur)
            if scale is None or self.call(rnd, "relax.round") is None:
                continue
            chain.append(rnd)
            add = self.single_user(rnd)
            add_call = self.call(add, "relax.add")
            if add_call is None:
                continue
            zp = self.scalar(add_call.args[1] if add_call.args[0].same_as(rnd)
                             else add_call.args[0])
            chain.append(add)
            clip = self.single_user(add)
            clip_call = self.call(clip, "relax.clip")
            if zp is None or clip_call is None or len(clip_call.args) != 3:
                continue
            try:
                lo, hi = (_number(clip_call.args[1]), _number(clip_call.args[2]))
            except Exception:  # noqa: BLE001 - symbolic bounds
                continue
            chain.append(clip)
            cast = self.single_user(clip)
            cast_call = self.call(cast, "relax.astype")
            if cast_call is None or str(cast_call.attrs.dtype) != "int8" \
                    or not (-128 <= lo <= hi <= 127) or any(
                        self.single_user(v) is None for v in chain[:-1]):
                continue
            chain.append(cast)
            return _Quant(scale, zp, lo, hi, cast, chain, static_shape(cast.ty))
        return None

    def outputs_of(self, var: Any, plan_vars: list[Any], shape: list[int],
                   plan: _Plan) -> tuple[list[np.ndarray], bool]:
        """Float and / or int8 outputs for the kernel's result ``var``: the quantize params
        (float32 [scale, zp, lo, hi]) and whether float readers remain."""
        quant = self.quant_after(var)
        readers = [u for u in self.users.get(var, []) if quant is None or u != quant.vars[0]]
        keep_float = bool(readers) or not self.users.get(var)
        from tvm import relax

        if not isinstance(var, relax.DataflowVar):
            keep_float = True
        if keep_float:
            plan.outputs.append((var, shape, "float32"))
        if quant is not None:
            plan.outputs.append((quant.last, quant.shape, "int8"))
            plan.vars.extend(quant.vars)
            plan.quant = True
        params = [quant.scale, quant.zp, quant.lo, quant.hi] if quant else [1.0, 0.0, 0.0, 0.0]
        return params, keep_float

    # ---- patterns --------------------------------------------------------------------------
    def _consider(self, var: Any, value: Any) -> _Plan | None:
        from tvm import relax

        if not isinstance(value, relax.Call) or not hasattr(value.op, "name"):
            return None
        name = value.op.name
        if _dtype(var) != "float32" or not isinstance(var, relax.DataflowVar):
            return None
        if name == "relax.nn.softmax" and "attention" in self.parts:
            return self._attention(var, value)
        if name == "relax.nn.layer_norm" and "layer_norm" in self.parts:
            return self._layer_norm(var, value)
        if "gelu" not in self.parts:
            return None
        if name in ("relax.nn.gelu", "relax.nn.gelu_tanh"):
            return self._gelu(var, value, erf=name == "relax.nn.gelu")
        if name == "relax.tanh":
            return self._gelu_tanh_chain(var, value)
        return None

    def _attention(self, p: Any, call: Any) -> _Plan | None:
        why = None
        shape = static_shape(p.ty)
        axis = int(call.attrs.axis)
        if shape is None or len(shape) != 4 or axis not in (-1, 3):
            return None  # a softmax of something else
        chain = [p]
        s = call.args[0]
        mask = None
        add = self.call(s, "relax.add")
        if add is not None:
            a, b = add.args
            scaled = a if self.call(a, "relax.multiply") is not None else b
            mask = b if scaled is a else a
            if self.single_user(s) is None:
                return None
            chain.append(s)
            s = scaled
        mul = self.call(s, "relax.multiply")
        if mul is None or self.single_user(s) is None:
            return None
        scale = self.scalar(mul.args[1])
        raw = mul.args[0]
        mm = self.call(raw, "relax.matmul")
        if scale is None or mm is None or self.single_user(raw) is None:
            return None
        chain += [s, raw]
        q, kt = mm.args
        tr = self.call(kt, "relax.permute_dims")
        if tr is None or [int(x) for x in tr.attrs.axes] != [0, 1, 3, 2]:
            return None
        k = tr.args[0]
        pv_var = self.single_user(p)
        pv = self.call(pv_var, "relax.matmul")
        if pv is None or not pv.args[0].same_as(p):
            return None
        v = pv.args[1]
        qs, ks, vs = static_shape(q.ty), static_shape(k.ty), static_shape(v.ty)
        if any(t is None or len(t) != 4 for t in (qs, ks, vs)) or any(
                _dtype(t) != "float32" for t in (q, k, v)):
            why = "not a 4-D float32 attention"
        B, H, Sq, D = qs
        Sk, Dv = (ks[2], vs[3]) if why is None else (0, 0)
        if why is None and (ks[3] != D or vs[2] != Sk or any(
                t[i] not in (1, qs[i]) for t in (ks, vs) for i in (0, 1))):
            why = f"shapes q {qs} k {ks} v {vs}"
        mask_strides = [0, 0, 0]
        if why is None and mask is not None:
            ms = static_shape(mask.ty)
            if _dtype(mask) != "float32" or ms is None or len(ms) > 4:
                why = "mask not a static float32 tensor"
            else:
                ms = [1] * (4 - len(ms)) + ms
                full = [B, H, Sq, Sk]
                if ms[3] != Sk or any(ms[i] not in (1, full[i]) for i in range(3)):
                    why = f"mask shape {ms}"
                else:
                    mask_strides = _strides(ms, full)[:3]
        if why is not None:
            self.left.append(f"attention {p.name}: {why}")
            return None
        chain.append(pv_var)
        out, out_shape = pv_var, [B, H, Sq, Dv]
        out_strides = [H * Sq * Dv, Sq * Dv, Dv]
        keep, keep_strides = None, [0, 0, 0]
        user = self.single_user(out)
        where = self.call(user, "relax.where")
        if where is not None and where.args[1].same_as(out) and \
                self.scalar(where.args[2]) == 0.0 and _dtype(where.args[0]) == "bool":
            cs = static_shape(where.args[0].ty)
            if cs is not None and len(cs) <= 4:
                cs = [1] * (4 - len(cs)) + cs
                full = [B, H, Sq, 1]
                if cs[3] == 1 and all(cs[i] in (1, full[i]) for i in range(3)):
                    keep, keep_strides = where.args[0], _strides(cs, full)[:3]
                    out = user
                    chain.append(user)
        user = self.single_user(out)
        perm = self.call(user, "relax.permute_dims")
        if perm is not None and [int(x) for x in perm.attrs.axes] == [0, 2, 1, 3]:
            out, out_shape = user, [B, Sq, H, Dv]
            out_strides = [Sq * H * Dv, Dv, H * Dv]
            chain.append(user)
        while True:  # flattening reshapes after it: the same bytes, written directly
            user = self.single_user(out)
            if self.call(user, "relax.reshape") is None or static_shape(user.ty) is None:
                break
            out, out_shape = user, static_shape(user.ty)
            chain.append(user)
        srcs, strides, offsets, views = [], [], [], 0
        for t, ts in ((q, qs), (k, ks), (v, vs)):
            src, st, offset = t, _strides(ts, [B, H, ts[2], ts[3]])[:3], 0
            tp = self.call(t, "relax.permute_dims")
            if tp is not None and [int(x) for x in tp.attrs.axes] == [0, 2, 1, 3] and \
                    static_shape(tp.args[0].ty) is not None:
                rs = static_shape(tp.args[0].ty)  # [B|1, S, H|1, D]
                c = _strides(rs, [B, ts[2], H, ts[3]])
                src, st = tp.args[0], [c[0], c[2], c[1]]
                view = self.split_view(self.before_reshapes(src), rs)
                if view is not None:
                    src, st, offset = view
                    views += 1
            srcs.append(self.before_reshapes(src))
            strides += st
            offsets.append(offset)
        plan = _Plan(ATTENTION, [*srcs, mask if mask is not None else np.zeros(1, np.float32),
                                 keep if keep is not None else np.zeros(1, np.uint8)],
                     [], [], chain)
        params, keep_float = self.outputs_of(out, plan.vars, out_shape, plan)
        meta = [B, H, Sq, Sk, D, Dv, int(mask is not None), int(keep is not None), *strides,
                *out_strides, *mask_strides, *keep_strides, int(keep_float), int(plan.quant),
                *offsets]
        plan.consts = [np.array(meta, np.int64), np.array([scale, *params], np.float32)]
        plan.split_views = views
        return plan

    def split_view(self, part: Any, rs: list[int]) -> tuple[Any, list[int], int] | None:
        """``part`` = ``split(x, axis=-1)[i]`` of a static ``x`` [B, S, N] whose slice the
        graph reshapes to ``rs`` = [B, S, H, D] (GPT-2's fused q / k / v projection): x, the
        (batch, head, row) element strides of the slice inside x and its element offset, so
        the kernel reads q, k, v in place and the split's copy (TVM's ``reshape_split``
        kernel: 3 x 128 x 256 floats copied per layer) is not run; None otherwise."""
        from tvm import relax

        item = self.var2val.get(part) if isinstance(part, relax.Var) else None
        if not isinstance(item, relax.TupleGetItem):
            return None
        split = self.call(item.tuple_value, "relax.split")
        xs = static_shape(split.args[0].ty) if split is not None else None
        if xs is None or len(xs) != 3 or int(split.attrs.axis) not in (-1, 2) or \
                _dtype(split.args[0]) != "float32":
            return None
        sections = split.attrs.indices_or_sections
        n = xs[2]
        if isinstance(sections, (int, tvm_int_types())):
            width = n // int(sections)
            bounds = [i * width for i in range(int(sections) + 1)]
        else:
            bounds = [0, *(int(b) for b in sections), n]
        i = int(item.index)
        if i + 1 >= len(bounds):
            return None
        start, stop = bounds[i], min(bounds[i + 1], n)
        if len(rs) != 4 or rs[:2] != xs[:2] or rs[2] * rs[3] != stop - start:
            return None
        return split.args[0], [xs[1] * n, rs[3], n], start

    def _layer_norm(self, y: Any, call: Any) -> _Plan | None:
        a = call.attrs
        x, gamma, beta = call.args
        shape = static_shape(y.ty)
        g, b = self.const(gamma), self.const(beta)
        axes = [int(i) for i in a.axes]
        why = None
        if shape is None or _dtype(x) != "float32":
            why = "symbolic shape or not float32"
        elif axes not in ([-1], [len(shape) - 1]):
            why = f"axes {axes}"
        elif g is None or b is None or g.dtype != np.float32 or b.dtype != np.float32 \
                or g.size != shape[-1] or b.size != shape[-1]:
            why = "gamma / beta not float32 constants of the last axis"
        elif not (bool(a.center) and bool(a.scale)):
            why = "without center / scale"
        if why:
            self.left.append(f"layer_norm {y.name}: {why}")
            return None
        n = shape[-1]
        rows = int(np.prod(shape[:-1]))
        plan = _Plan(LAYERNORM, [], [], [], [y])
        res = self.call(x, "relax.add")
        sum_out = False
        inputs = [x, np.zeros(1, np.float32)]
        if res is not None and all(static_shape(t.ty) == shape and _dtype(t) == "float32"
                                   for t in res.args) and self._plain(x):
            inputs = list(res.args)
            plan.vars.append(x)
            plan.residual = True
            readers = [u for u in self.users.get(x, []) if u is not y]
            if readers:
                sum_out = True
                plan.outputs.append((x, shape, "float32"))
        params, keep_float = self.outputs_of(y, plan.vars, shape, plan)
        meta = [rows, n, int(plan.residual), int(sum_out), int(keep_float), int(plan.quant)]
        plan.inputs = [*inputs, np.ascontiguousarray(g.reshape(n)),
                       np.ascontiguousarray(b.reshape(n))]
        plan.consts = [np.array(meta, np.int64),
                       np.array([float(a.epsilon), *params], np.float32)]
        return plan

    def _plain(self, var: Any) -> bool:
        from tvm import relax

        return isinstance(var, relax.DataflowVar) and var not in self.taken

    def _gelu(self, y: Any, call: Any, erf: bool) -> _Plan | None:
        x = call.args[0]
        shape = static_shape(y.ty)
        if shape is None or _dtype(x) != "float32":
            self.left.append(f"gelu {y.name}: symbolic shape or not float32")
            return None
        c1, c2 = (0.5 ** 0.5, 0.0) if erf else (float(np.sqrt(2 / np.pi)), 0.044715)
        return self._gelu_plan(y, x, shape, 0 if erf else 1, c1, c2, [y])

    def _gelu_plan(self, y: Any, x: Any, shape: list[int], mode: int, c1: float, c2: float,
                   vars_: list[Any]) -> _Plan:
        plan = _Plan(GELU, [x], [], [], list(vars_))
        params, keep_float = self.outputs_of(y, plan.vars, shape, plan)
        plan.consts = [np.array([int(np.prod(shape)), mode, int(keep_float), int(plan.quant)],
                                np.int64), np.array([c1, c2, *params], np.float32)]
        return plan

    def _gelu_tanh_chain(self, t: Any, call: Any) -> _Plan | None:
        """(x·0.5)·(1 + tanh((x + x·x·x·c2)·c1)), as GPT-2's ``NewGELUActivation`` traces
        (after ``x86_fp32`` wrote its ``power(x, 3)`` as products)."""
        d = call.args[0]
        dm = self.call(d, "relax.multiply")
        if dm is None:
            return None
        c1 = self.scalar(dm.args[1])
        c = dm.args[0]
        ca = self.call(c, "relax.add")
        if c1 is None or ca is None:
            return None
        for x, bvar in (ca.args, ca.args[::-1]):
            bm = self.call(bvar, "relax.multiply")
            if bm is None:
                continue
            c2 = self.scalar(bm.args[1])
            x3 = bm.args[0]
            x3m = self.call(x3, "relax.multiply")
            if c2 is None or x3m is None:
                continue
            x2 = x3m.args[0] if x3m.args[1].same_as(x) else x3m.args[1]
            x2m = self.call(x2, "relax.multiply")
            if not (x3m.args[0].same_as(x) or x3m.args[1].same_as(x)) or x2m is None or \
                    not (x2m.args[0].same_as(x) and x2m.args[1].same_as(x)):
                continue
            e = self.single_user(t)
            ea = self.call(e, "relax.add")
            if ea is None or self.scalar(ea.args[1]) != 1.0:
                return None
            y = self.single_user(e)
            ym = self.call(y, "relax.multiply")
            if ym is None:
                return None
            a = ym.args[0] if ym.args[1].same_as(e) else ym.args[1]
            am = self.call(a, "relax.multiply")
            if am is None or not am.args[0].same_as(x) or self.scalar(am.args[1]) != 0.5:
                return None
            inner = [x2, x3, bvar, c, d, t, e, a]
            if any(self.single_user(v) is None for v in inner):
                return None
            shape = static_shape(y.ty)
            if shape is None or _dtype(x) != "float32" or static_shape(x.ty) != shape:
                self.left.append(f"gelu (tanh) {y.name}: shape / dtype")
                return None
            return self._gelu_plan(y, x, shape, 1, c1, c2, [*inner, y])
        return None


def _number(arg: Any) -> float:
    value = arg.value
    return float(getattr(value, "value", value))


def rewrite(module: Any, parts: tuple[str, ...] = PARTS) -> tuple[Any, RewriteStats]:
    """Every attention / layer norm / GELU of ``module`` the kernels cover, as a call to
    them (module docstring); the module gets the kernels as an external module when any was
    used. ``parts``: which of ``PARTS`` to rewrite (the others stay on TVM's kernels; the
    per-part A/B of bench/x86_attention.py)."""
    from tvm import relax

    counts = {ATTENTION: 0, LAYERNORM: 0, GELU: 0, "quant": 0, "res": 0, "views": 0}
    left: list[str] = []
    updates = {}
    for gvar, func in module.functions.items():
        if not isinstance(func, relax.Function):
            continue
        analysis = _Analysis(func, parts)
        left.extend(analysis.left)
        if not analysis.plans:
            continue
        for plan in analysis.plans:
            counts[plan.symbol] += 1
            counts["quant"] += plan.quant
            counts["res"] += plan.residual
            counts["views"] += plan.split_views
        updates[gvar] = _mutate(module, func, analysis)
    stats = RewriteStats(counts[ATTENTION], counts[LAYERNORM], counts[GELU], counts["quant"],
                         counts["res"], counts["views"], tuple(left))
    if not updates:
        return module, stats
    return with_rewritten_functions(module, updates, external_module()), stats


def _mutate(module: Any, func: Any, analysis: _Analysis) -> Any:
    from tvm import relax

    at = {}
    for plan in analysis.plans:
        at[max(plan.vars, key=lambda v: analysis.order[v])] = plan
    skipped = {v for plan in analysis.plans for v in plan.vars}

    def arg(self: Any, value: Any) -> Any:
        if isinstance(value, np.ndarray):
            return relax.const(value, str(value.dtype))
        return self.visit_expr(value)

    @relax.expr_functor.mutator
    class Rewriter(relax.PyExprMutator):
        def visit_var_binding_(self, binding: Any) -> None:
            var = binding.var
            plan = at.get(var)
            if plan is not None:
                args = [arg(self, v) for v in plan.inputs] + \
                    [relax.const(c, str(c.dtype)) for c in plan.consts]
                types = [relax.TensorType(s, d) for _, s, d in plan.outputs]
                call = relax.call_dps_packed(relax.ExternFunc(plan.symbol), args,
                                             types[0] if len(types) == 1 else types)
                new = self.builder_.emit(call)
                if len(types) == 1:
                    self.set_var_remap(plan.outputs[0][0], new)
                else:
                    for i, (old, _, _) in enumerate(plan.outputs):
                        self.set_var_remap(old, self.builder_.emit(relax.TupleGetItem(new, i)))
                return
            if var in skipped:
                return
            super().visit_var_binding_(binding)

    return Rewriter(module).visit_expr(func)


# ``apply`` removes bindings that repeat an earlier one (TVM's EliminateCommonSubexpr) once
# the kernels are in: each attention's mask ops — ``where(keep, 0, -inf)`` and the ``where``'s
# keep rows ``astype(max(astype(keep, int8), -1), bool)``, written per attention by
# ``converters._attention`` from the one boolean mask — run once instead of once per layer
# (GPT-2 / BERT 4 layers: 9 of 12 small TVM kernel calls gone, MiniLM 15 of 18). Off by
# default: the whole-model A/B did not show a win (1 thread, CPU time, interleaved, load 2:
# GPT-2 1.021x (p10 0.973x), BERT 1.005x, A/A 1.002x / 1.003x; the calls it removes took
# 0.035 ms of GPT-2's 2-thread run, per-call minima; 2 threads not measurable at load 2-4).
# bench/transformer_qkv.py --option dedupe.
DEDUPE = False


def _binding_count(module: Any) -> int:
    from tvm import relax

    return sum(len(block.bindings) for func in module.functions.values()
               if isinstance(func, relax.Function) and isinstance(func.body, relax.SeqExpr)
               for block in func.body.blocks)


def apply(module: Any, target: Any) -> tuple[Any, RewriteStats | None]:
    """``rewrite`` when ``target`` is an x86 CPU with AVX2 + FMA, then ``x86_linear`` (the
    SGEMM calls with enough rows onto this library's linear kernel, a GELU that reads one in
    its write-back: counted in the stats' ``linear`` / ``linear_gelu``), then the repeated
    bindings removed (``DEDUPE``); else ``module`` as is."""
    if not supported(target):
        return module, None
    from tvm import relax

    from edgecc.targets.tvm import x86_linear

    rewritten, stats = rewrite(module)
    # x86_attention's kernels are in the module once its rewrite changed it
    module, linear = x86_linear.apply(rewritten, library=rewritten is module)
    deduped = 0
    if DEDUPE and stats.attention:
        before = _binding_count(module)
        module = relax.transform.EliminateCommonSubexpr()(module)
        module = relax.transform.DeadCodeElimination()(module)
        deduped = before - _binding_count(module)
    return module, replace(stats, linear=linear.linears, linear_gelu=linear.gelu_fused,
                           qkv_merged=linear.qkv_merged, deduped=deduped)
