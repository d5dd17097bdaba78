"""x86 float32 kernels for the default host build: float32 linears (a matmul whose right
operand is a constant), convolutions (groups 1) and depthwise convolutions become one call
each to the hand-written kernels of ``x86_fp32_source`` (FMA SGEMM, AVX2 or AVX-512 chosen
at run time, weights packed at compile time, bias and ReLU / ReLU6 / clip fused).

Before (Relax, as the importer builds a ``nn.Linear`` + ReLU; TVM then runs it as three
kernels or one fused loop nest)::

    wt = permute_dims(W)                     # W a constant
    y = matmul(x, wt); y = add(y, b); y = relu(y)

After::

    y = call_dps_packed("edgecc_x86_sgemm", reshape(x, [M, K]), pack(Wᵀ), b, [M, K, N],
                        [0, inf])            # then reshaped back to x's leading dims

A residual ``add`` of a tensor of the output's shape after the bias (ResNet's shortcut, a
transformer's skip connection), and the clamp after it, fold into the same call: the tensor
is passed before the output (the kernels' 7-argument form) and the call is emitted where the
add was (the shortcut may be computed after the layer)::

    y = conv2d(x, W); y = add(y, b); y = add(y, s); y = relu(y)
    ->  y = call_dps_packed("edgecc_x86_sconv", x, W, b, meta, [0, inf], s)

The counts (layers per kernel, fused bias / residual / clamp, layers left and why) are the
manifest's ``lowering.x86_fp32`` (``RewriteStats.as_dict``).

Same-size 3x3 convolutions that Winograd F(2x2, 3x3) can run (``x86_fp32_winograd.eligible``;
F(4x4, 3x3) on maps 16 or 32 wide, ``x86_fp32_winograd4``, chosen by the kernel at run time)
carry ``meta[15] = 2``: W is a constant of the build, so the kernel (AVX-512, the default
``edgecc_x86_fp32_winograd`` = 1) packs its Winograd weights once per library at the first
call and reads them from there after (``x86_fp32_winograd``'s docstring: the cache, why it is
keyed by the tensor object). The artifact carries W alone, which the direct and AVX2 paths
read. A module marked ``with_winograd_weights`` packs them at build time after W instead
(``meta[15] = 1``; 16/9 of those weights more in the artifact, ResNet-20 +1.74 MB on 1.1 MB:
no build does this by default; bench/x86_fp32_winograd compares the two). Outputs of those
convolutions differ from the direct path within 1e-5 relative (measured <= 7.2e-7 for F(2x2),
<= 6.1e-6 for F(4x4), at most 64 input channels).

An expand 1x1 convolution whose only user is a depthwise 3x3 on a large map (MobileNetV2-224's
inverted residual blocks at 224) becomes one call with it, ``edgecc_x86_sexpdw``
(``x86_fp32_expand_dw``: the pair on row bands, the expand's output never through memory;
the same outputs bit for bit; ``FUSE_EXPAND_DW``); when the depthwise's only user is the
block's project 1x1 (+ residual), that joins the call too (``x86_fp32_block``: the whole block
on row bands, neither intermediate through memory, bit for bit; ``FUSE_BLOCK``; the manifest's
``fused_block``).

A layer the kernels do not cover stays as it was (TVM's kernel with edgecc's default
schedule): one-row products (an LLM's decode step: ``gemv_schedule``), symbolic shapes,
asymmetric padding, grouped (not depthwise) or non-NCHW convolutions, other dtypes.
Only x86 targets with AVX2 are rewritten (``supported``); others are left untouched.
Float32 ``power(x, 2 or 3)`` (GPT-2's tanh GELU) becomes ``x·x(·x)`` on the way: TVM calls
libm's ``powf`` per element for it (13% of GPT-2's time); the product differs by ~1 ulp.

The library picks the AVX-512 micro-kernel when the CPU and OS support it (cpuid, xgetbv)
and AVX2 otherwise; ``EDGECC_X86_FP32_NO_AVX512=1`` in the environment of the process that
loads the library forces the AVX2 one (a diagnostic: the tests run both paths here).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from edgecc.targets.tvm.relax_analysis import (
    dataflow_users,
    static_shape,
    with_rewritten_functions,
)
from edgecc.targets.tvm import x86_fp32_block, x86_fp32_expand_dw, x86_fp32_winograd
from edgecc.targets.tvm.x86_fp32_source import SOURCE, SYMBOLS

SGEMM, SCONV, SDWCONV = SYMBOLS[:3]
CACHE = "x86_fp32"
WINOGRAD_WEIGHTS_ATTR = "edgecc_fp32_winograd_weights"
# meta[15] of a Winograd-eligible convolution (the kernel's flag): its weights' U follows W in
# the constant (a module marked by with_winograd_weights), or W is a constant of the build
PACKED_IN_BUILD, CONSTANT_WEIGHTS = 1, 2
# an expand 1x1 conv whose only user is a depthwise 3x3 becomes one call with it
# (x86_fp32_expand_dw.eligible); False: two calls (the bench's A/B of the rewrite)
FUSE_EXPAND_DW = True
# such a pair whose depthwise's only user is a project 1x1 (+ residual) becomes one call with it
# too (x86_fp32_block: the whole block on row bands); False: the pair, then the project
FUSE_BLOCK = True


def with_winograd_weights(module: Any) -> Any:
    """``module`` whose build packs the Winograd weights of the eligible convolutions after W
    (module docstring): no first-call packing, a larger artifact; not the default."""
    return module.with_attr(WINOGRAD_WEIGHTS_ATTR, 1)


def wants_winograd_weights(module: Any) -> bool:
    """Whether ``module`` was marked by ``with_winograd_weights``."""
    return int((module.attrs or {}).get(WINOGRAD_WEIGHTS_ATTR, 0) or 0) == 1


def supported(target: Any) -> bool:
    """Whether ``target`` is an x86 CPU with AVX2 and FMA (the kernels' floor)."""
    from edgecc.targets.tvm.x86_int8 import supported as has_avx2
    from tvm.target import codegen

    try:
        return has_avx2(target) and bool(codegen.target_has_features("fma", target))
    except Exception:  # noqa: BLE001 - an LLVM that cannot say: no
        return False


def external_module() -> Any:
    """The kernels as a module TVM links into the exported library (the object file compiled
    once into ``~/.cache/edgecc/x86_fp32`` through ``x86_int8``'s machinery, or the C++ source
    when no compiler runs here: ``export_library`` then compiles it)."""
    from edgecc.targets.tvm import x86_int8

    return x86_int8.external_module(SOURCE, SYMBOLS, CACHE)


def pack_panels(w: np.ndarray) -> np.ndarray:
    """``W[K, N]`` float32 -> panels ``[ceil(N/16), K, 16]``, zero-padded columns."""
    k, n = w.shape
    n16 = -(-n // 16) * 16
    padded = np.zeros((k, n16), np.float32)
    padded[:, :n] = w
    return np.ascontiguousarray(padded.reshape(k, n16 // 16, 16).transpose(1, 0, 2))


# ---- the rewrite --------------------------------------------------------------------------

@dataclass
class _Plan:
    kind: str  # SGEMM / SCONV / SDWCONV
    x: Any
    weight: np.ndarray
    channels: int
    attrs: dict[str, Any]
    bias: np.ndarray | None = None
    lo: float = -np.inf
    hi: float = np.inf
    last: Any = None
    fused: list[Any] = field(default_factory=list)  # bindings folded into the call
    residual: Any = None  # a tensor of the output's shape added before the clamp


@dataclass(frozen=True)
class RewriteStats:
    sgemm: int
    conv: int
    depthwise: int
    fused_bias: int
    fused_clamp: int
    left: tuple[str, ...]  # layers with a constant weight kept on TVM's kernels, and why
    powers: int = 0  # power(x, 2 | 3) written as products
    fused_residual: int = 0  # residual adds folded into the write-back
    fused_expand_dw: int = 0  # expand 1x1 + depthwise pairs run as one call (x86_fp32_expand_dw)
    fused_block: int = 0  # of those, the pairs whose project 1x1 joined the call (x86_fp32_block)

    def as_dict(self) -> dict[str, Any]:
        return {"x86_fp32_gemm": self.sgemm, "x86_fp32_conv": self.conv,
                "x86_fp32_depthwise": self.depthwise, "fused_bias": self.fused_bias,
                "fused_residual": self.fused_residual, "fused_clamp": self.fused_clamp,
                "left_on_tvm": list(self.left), "powers_as_products": self.powers,
                "fused_expand_dw": self.fused_expand_dw, "fused_block": self.fused_block}




class _Analysis:
    """Finds the layers to rewrite in one Relax function and what each fuses."""

    def __init__(self, func: Any):
        from tvm import relax

        self.var2val = relax.analysis.get_var2val(func)
        self.users = dataflow_users(func)
        self.bindings: dict[Any, Any] = {}
        self.plans: dict[Any, _Plan] = {}
        self.claimed: set[Any] = set()  # bindings a plan folded (one plan each)
        self.powers: dict[Any, int] = {}  # x ** 2 / x ** 3 (GPT-2's GELU): products
        self.left: list[str] = []
        self._const_cache: dict[Any, np.ndarray | None] = {}
        for block in func.body.blocks:
            for binding in block.bindings:
                self._consider(binding)

    def const(self, expr: Any) -> np.ndarray | None:
        """The value of ``expr`` when it is a constant, or a reshape / transpose of one."""
        from tvm import relax
        from tvm.ir.expr import GenericConst

        if isinstance(expr, GenericConst):
            return expr.value.numpy()
        if not isinstance(expr, relax.Var) or expr not in self.var2val:
            return None
        if expr in self._const_cache:
            return self._const_cache[expr]
        value, out = self.var2val[expr], None
        if isinstance(value, GenericConst):
            out = value.value.numpy()
        elif isinstance(value, relax.Call) and hasattr(value.op, "name"):
            name = value.op.name
            inner = self.const(value.args[0])
            if inner is not None and name == "relax.reshape":
                shape = static_shape(value.ty)
                out = inner.reshape(shape) if shape is not None else None
            elif inner is not None and name == "relax.permute_dims":
                axes = value.attrs.axes
                out = np.transpose(inner, None if axes is None else [int(a) for a in axes])
        self._const_cache[expr] = out
        return out

    def _consider(self, binding: Any) -> None:
        from tvm import relax

        value = binding.value
        if not isinstance(value, relax.Call) or not hasattr(value.op, "name"):
            return
        name = value.op.name
        if name == "relax.power" and isinstance(binding.var, relax.DataflowVar):
            e = self.const(value.args[1])
            if e is not None and e.size == 1 and float(e.reshape(-1)[0]) in (2.0, 3.0) \
                    and str(value.args[0].ty.dtype) == "float32":
                self.powers[binding.var] = int(e.reshape(-1)[0])
            return
        if name == "relax.matmul":
            plan = self._matmul(binding.var, value)
        elif name == "relax.nn.conv2d":
            plan = self._conv(binding.var, value)
        else:
            return
        if plan is not None and not isinstance(binding.var, relax.DataflowVar):
            self.left.append(f"{name} {binding.var.name}: outside a dataflow block")
            plan = None
        if plan is not None:
            self._fuse(binding.var, plan)
            self.claimed.update(plan.fused)
            self.plans[binding.var] = plan

    def _matmul(self, var: Any, call: Any) -> _Plan | None:
        w = self.const(call.args[1])
        if w is None:
            return None
        xs, ys = static_shape(call.args[0].ty), static_shape(var.ty)
        why = None
        if str(call.args[0].ty.dtype) != "float32" or w.dtype != np.float32 \
                or str(var.ty.dtype) != "float32":
            why = "not float32"
        elif w.ndim != 2 or xs is None or ys is None or len(xs) < 2:
            why = "batched weight or symbolic shape"
        elif int(np.prod(xs[:-1])) < 2:
            why = "one row (GEMV: gemv_schedule)"
        if why:
            self.left.append(f"matmul {var.name}: {why}")
            return None
        return _Plan(SGEMM, call.args[0], np.ascontiguousarray(w), int(w.shape[1]),
                     {"m": int(np.prod(xs[:-1])), "k": int(w.shape[0]), "shape": ys})

    def _conv(self, var: Any, call: Any) -> _Plan | None:
        w = self.const(call.args[1])
        if w is None:
            return None
        a = call.attrs
        xs, ys = static_shape(call.args[0].ty), static_shape(var.ty)
        pad = [int(p) for p in a.padding]
        groups = int(a.groups)
        why = None
        if str(call.args[0].ty.dtype) != "float32" or w.dtype != np.float32 \
                or str(var.ty.dtype) != "float32":
            why = "not float32"
        elif (a.data_layout, a.kernel_layout, a.out_layout) != ("NCHW", "OIHW", "NCHW"):
            why = "layout"
        elif xs is None or ys is None:
            why = "symbolic shape"
        elif len(pad) != 4 or pad[0] != pad[2] or pad[1] != pad[3]:
            why = f"asymmetric padding {pad}"
        elif groups != 1 and not (groups == xs[1] == w.shape[0] and w.shape[1] == 1):
            why = f"grouped ({groups} groups, not depthwise)"
        if why:
            self.left.append(f"conv2d {var.name}: {why}")
            return None
        attrs = {"x": xs, "y": ys, "stride": [int(s) for s in a.strides],
                 "pad": pad[:2], "dilation": [int(d) for d in a.dilation]}
        kind = SCONV if groups == 1 else SDWCONV
        return _Plan(kind, call.args[0], np.ascontiguousarray(w), int(w.shape[0]), attrs)

    def _only_user(self, var: Any) -> Any | None:
        from tvm import relax

        users = self.users.get(var, [])
        if not isinstance(var, relax.DataflowVar) or len(users) != 1 or users[0] in self.claimed:
            return None
        user = users[0]
        value = self.var2val.get(user)
        return (user, value) if isinstance(value, relax.Call) and hasattr(value.op, "name") \
            else None

    def _fuse(self, var: Any, plan: _Plan) -> None:
        """Fold what follows the layer into its write-back, each step optional, in this
        order: the ``add`` of a per-channel constant (bias), the ``add`` of a tensor of the
        output's shape (a residual; not for depthwise), one clamp (ReLU / ReLU6 / clip)."""
        plan.last = var
        shape = static_shape(var.ty)
        nxt = self._only_user(var)
        if nxt is not None and nxt[1].op.name == "relax.add":
            user, call = nxt
            other = call.args[1] if call.args[0].same_as(plan.last) else call.args[0]
            b = self.const(other)
            bias = self._bias(b, plan) if b is not None else None
            if bias is not None and static_shape(user.ty) == shape:
                plan.bias, plan.last = bias, user
                plan.fused.append(user)
                nxt = self._only_user(user)
        if nxt is not None and nxt[1].op.name == "relax.add" and plan.kind != SDWCONV:
            user, call = nxt
            first = call.args[0].same_as(plan.last)
            other = call.args[1] if first else call.args[0]
            if (first or call.args[1].same_as(plan.last)) and not other.same_as(plan.last) \
                    and self.const(other) is None and static_shape(user.ty) == shape \
                    and static_shape(getattr(other, "ty", None)) == shape \
                    and str(other.ty.dtype) == "float32":
                plan.residual, plan.last = other, user
                plan.fused.append(user)
                nxt = self._only_user(user)
        if nxt is not None:
            user, call = nxt
            bounds = None
            if call.op.name == "relax.nn.relu":
                bounds = (0.0, np.inf)
            elif call.op.name == "relax.clip" and len(call.args) == 3:
                try:
                    bounds = (_number(call.args[1]), _number(call.args[2]))
                except Exception:  # noqa: BLE001 - symbolic bounds: not fused
                    bounds = None
            if bounds is not None:
                plan.lo, plan.hi = bounds
                plan.last = user
                plan.fused.append(user)

    @staticmethod
    def _bias(b: np.ndarray, plan: _Plan) -> np.ndarray | None:
        if b.dtype != np.float32:
            return None
        n = plan.channels
        if plan.kind == SGEMM:
            ok = b.ndim >= 1 and b.shape[-1] == n and b.size == n
        else:  # NCHW: [1, C, 1, 1] or [C, 1, 1]
            ok = b.size == n and b.ndim in (3, 4) and b.shape[-3] == n
        return np.ascontiguousarray(b.reshape(n)) if ok else None


def _number(arg: Any) -> float:
    value = arg.value
    return float(getattr(value, "value", value))


def _conv_consts(plan: _Plan, winograd: bool = False) -> list[np.ndarray]:
    """A convolution's constant arguments: weights [OC][C·KH·KW] (with ``winograd``, an
    eligible one's Winograd weights after them), bias, meta, clamp bounds."""
    bias = plan.bias if plan.bias is not None else np.zeros(plan.channels, np.float32)
    bounds = np.array([plan.lo, plan.hi], np.float32)
    a = plan.attrs
    nb, c, h, w = a["x"]
    _, oc, oh, ow = a["y"]
    kh, kw = plan.weight.shape[2:]
    geometry = [kh, kw, *a["stride"], *a["pad"], *a["dilation"], oh, ow]
    weight = np.ascontiguousarray(plan.weight.reshape(oc, -1))
    if plan.kind == SCONV:
        meta = [nb, c, h, w, oc, *geometry]
        if x86_fp32_winograd.eligible(c, h, w, (kh, kw), a["stride"], a["pad"],
                                      a["dilation"], (oh, ow)):
            # meta[15]: 2, W is a constant of the build (the kernel packs its Winograd
            # weights once into the library's cache); 1, they follow W in the constant
            meta.append(PACKED_IN_BUILD if winograd else CONSTANT_WEIGHTS)
            if winograd:
                weight = np.concatenate([weight.reshape(-1),
                                         x86_fp32_winograd.weights(plan.weight).reshape(-1)])
    else:
        meta = [nb, c, h, w, *geometry]
    return [weight, bias, np.array(meta, np.int64), bounds]


def _emit_expand_dw(bb: Any, expand: _Plan, dw: _Plan, x: Any) -> Any:
    """One ``edgecc_x86_sexpdw`` call for ``expand`` (1x1) and the depthwise ``dw`` after it
    (``x86_fp32_expand_dw``), on input ``x``."""
    from tvm import relax

    consts = _conv_consts(expand) + _conv_consts(dw)
    args = [x, *(relax.const(c, str(c.dtype)) for c in consts)]
    return bb.emit(relax.call_dps_packed(relax.ExternFunc(x86_fp32_expand_dw.SYMBOL), args,
                                         relax.TensorType(dw.attrs["y"], "float32")))


def _emit_block(bb: Any, expand: _Plan, dw: _Plan, project: _Plan, x: Any,
                residual: Any) -> Any:
    """One ``edgecc_x86_sexpdw`` call for a whole block: ``expand`` (1x1), the depthwise
    ``dw``, the ``project`` 1x1 (and its ``residual``, visited) (``x86_fp32_block``)."""
    from tvm import relax

    consts = _conv_consts(expand) + _conv_consts(dw) + _conv_consts(project)
    args = [x, *(relax.const(c, str(c.dtype)) for c in consts)]
    if residual is not None:
        args.append(residual)
    return bb.emit(relax.call_dps_packed(relax.ExternFunc(x86_fp32_expand_dw.SYMBOL), args,
                                         relax.TensorType(project.attrs["y"], "float32")))


def _blocks(analysis: "_Analysis", pairs: dict[Any, _Plan]) -> dict[Any, tuple[_Plan, _Plan]]:
    """project plan's last var -> (expand, depthwise) of a pair (``_expand_dw_pairs``) whose
    depthwise output's only user is that 1x1 stride-1 unpadded project plan (the pairs:
    ``_expand_dw_pairs`` by ``x86_fp32_block.eligible``: a stem 3x3 may be the expand)."""
    from tvm import relax

    if not FUSE_BLOCK:
        return {}
    by_x = {}
    for plan in analysis.plans.values():
        if plan.kind == SCONV and isinstance(plan.x, relax.DataflowVar):
            by_x.setdefault(plan.x, []).append(plan)
    dws = {dw.last: dw for dw in analysis.plans.values() if dw.kind == SDWCONV}
    blocks = {}
    for last, expand in pairs.items():
        dw = dws[last]
        users = analysis.users.get(last, [])
        projects = by_x.get(last, [])
        if len(users) != 1 or len(projects) != 1:
            continue
        project = projects[0]
        a = project.attrs
        if (project.weight.shape[2:] == (1, 1) and a["stride"] == [1, 1]
                and a["pad"] == [0, 0] and a["x"] == dw.attrs["y"]
                and a["y"][2:] == dw.attrs["y"][2:]):
            blocks[project.last] = (expand, dw)
    return blocks


def _expand_dw_pairs(analysis: "_Analysis", rule: Any = None) -> dict[Any, _Plan]:
    """depthwise plan's last var -> the expand plan fused into its call: a 1x1 conv plan (no
    residual) whose output's only user is an eligible depthwise 3x3 plan's input (an expand
    ``rule(expand weight shape, attrs, dw weight shape, attrs)``, by default
    ``x86_fp32_expand_dw.eligible``)."""
    from tvm import relax

    if not FUSE_EXPAND_DW:
        return {}
    by_last = {plan.last: plan for plan in analysis.plans.values()}
    pairs = {}
    for var, dw in analysis.plans.items():
        if dw.kind != SDWCONV or not isinstance(dw.x, relax.DataflowVar):
            continue
        expand = by_last.get(dw.x)
        if expand is None or expand.kind != SCONV or expand.residual is not None:
            continue
        users = analysis.users.get(expand.last, [])
        if len(users) != 1 or not users[0].same_as(var):
            continue
        if (rule or x86_fp32_expand_dw.eligible)(expand.weight.shape, expand.attrs,
                                                 dw.weight.shape, dw.attrs):
            pairs[dw.last] = expand
    return pairs


def _emit(bb: Any, plan: _Plan, x: Any, residual: Any = None, winograd: bool = False) -> Any:
    """The kernel call for ``plan`` on input ``x`` (and ``residual``, the visited
    ``plan.residual``, passed before the output: the kernels' 7-argument form); with
    ``winograd``, an eligible convolution's constant carries the Winograd weights too."""
    from tvm import relax

    bias = plan.bias if plan.bias is not None else np.zeros(plan.channels, np.float32)
    bounds = np.array([plan.lo, plan.hi], np.float32)
    a = plan.attrs
    if plan.kind == SGEMM:
        m, k, n = a["m"], a["k"], plan.channels
        flat = x if len(a["shape"]) == 2 else bb.emit(relax.op.reshape(x, [m, k]))
        consts = [pack_panels(plan.weight), bias, np.array([m, k, n], np.int64), bounds]
        out_shape = [m, n]
        if residual is not None and len(a["shape"]) != 2:
            residual = bb.emit(relax.op.reshape(residual, [m, n]))
    else:
        flat, consts, out_shape = x, _conv_consts(plan, winograd), a["y"]
    args = [flat, *(relax.const(c, str(c.dtype)) for c in consts)]
    if residual is not None:
        args.append(residual)
    out = bb.emit(relax.call_dps_packed(relax.ExternFunc(plan.kind), args,
                                        relax.TensorType(out_shape, "float32")))
    if plan.kind == SGEMM and len(a["shape"]) != 2:
        out = bb.emit(relax.op.reshape(out, a["shape"]))
    return out


def rewrite(module: Any) -> tuple[Any, RewriteStats]:
    """Every float32 layer of ``module`` the kernels cover, as a call to them (module
    docstring); the module gets the kernels as an external module when any was used."""
    from tvm import relax

    counts = {SGEMM: 0, SCONV: 0, SDWCONV: 0, "bias": 0, "clamp": 0, "residual": 0,
              "expand_dw": 0, "block": 0}
    left: list[str] = []
    updates = {}
    for gvar, func in module.functions.items():
        if not isinstance(func, relax.Function):
            continue
        analysis = _Analysis(func)
        left.extend(analysis.left)
        if not analysis.plans and not analysis.powers:
            continue
        counts["powers"] = counts.get("powers", 0) + len(analysis.powers)
        for plan in analysis.plans.values():
            counts[plan.kind] += 1
            counts["bias"] += plan.bias is not None
            counts["residual"] += plan.residual is not None
            counts["clamp"] += bool(np.isfinite(plan.lo) or np.isfinite(plan.hi))
        # the pairs a block may take (its own size floor), then those left that are pairs
        blocks = _blocks(analysis, _expand_dw_pairs(analysis, x86_fp32_block.eligible))
        pairs = _expand_dw_pairs(analysis)
        pairs.update({dw.last: expand for expand, dw in blocks.values()})
        counts["expand_dw"] += len(pairs)
        counts["block"] += len(blocks)
        updates[gvar] = _mutate(module, func, analysis, pairs, blocks,
                                wants_winograd_weights(module))
    stats = RewriteStats(counts[SGEMM], counts[SCONV], counts[SDWCONV], counts["bias"],
                         counts["clamp"], tuple(left), counts.get("powers", 0),
                         counts["residual"], counts["expand_dw"], counts["block"])
    if not updates:
        return module, stats
    return with_rewritten_functions(module, updates, external_module()), stats


def _mutate(module: Any, func: Any, analysis: _Analysis, pairs: dict[Any, _Plan],
            blocks: dict[Any, tuple[_Plan, _Plan]], winograd: bool) -> Any:
    from tvm import relax

    # a plan's call is emitted where its last fused binding was (a residual may be computed
    # after the layer itself); the layer and the other fused bindings are dropped
    plans = {plan.last: plan for plan in analysis.plans.values()}
    skipped = {v for plan in analysis.plans.values() for v in (plan.fused[:-1] if plan.fused
                                                                 else [])}
    skipped |= {v for v, plan in analysis.plans.items() if not plan.last.same_as(v)}
    # ``pairs`` (``_expand_dw_pairs``): an expand's call is the depthwise's (one call)
    skipped |= {expand.last for expand in pairs.values()}
    # ``blocks`` (``_blocks``): the pair's call is the project's (one call)
    skipped |= {dw.last for _, dw in blocks.values()}

    @relax.expr_functor.mutator
    class Rewriter(relax.PyExprMutator):
        def visit_var_binding_(self, binding: Any) -> None:
            var = binding.var
            if var in skipped:
                return
            if var in analysis.powers:  # libm's powf per element -> one or two products
                x = self.visit_expr(binding.value.args[0])
                y = self.builder_.emit(relax.op.multiply(x, x))
                if analysis.powers[var] == 3:
                    y = self.builder_.emit(relax.op.multiply(y, x))
                self.set_var_remap(var, y)
                return
            plan = plans.get(var)
            if plan is None:
                super().visit_var_binding_(binding)
                return
            if var in blocks:
                expand, dw = blocks[var]
                residual = None if plan.residual is None else self.visit_expr(plan.residual)
                new = _emit_block(self.builder_, expand, dw, plan, self.visit_expr(expand.x),
                                  residual)
                self.set_var_remap(plan.last, new)
                return
            if var in pairs:
                expand = pairs[var]
                new = _emit_expand_dw(self.builder_, expand, plan, self.visit_expr(expand.x))
                self.set_var_remap(plan.last, new)
                return
            residual = None if plan.residual is None else self.visit_expr(plan.residual)
            new = _emit(self.builder_, plan, self.visit_expr(plan.x), residual, winograd)
            self.set_var_remap(plan.last, new)

    return Rewriter(module).visit_expr(func)


def apply(module: Any, target: Any) -> tuple[Any, RewriteStats | None]:
    """``rewrite`` when ``target`` is an x86 CPU with AVX2 + FMA; else ``module`` as is."""
    if not supported(target):
        return module, None
    return rewrite(module)
