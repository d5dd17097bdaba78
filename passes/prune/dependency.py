"""Dependency analysis for structured pruning: every tensor dimension that must shrink with a
pruned channel, found over the IR, and the rewrite that removes them together.

A *group* starts at a layer's output channels (a convolution's filters, a linear's neurons)
and follows that dimension through the graph in both directions until it ends in the input
dimension of other layers (their weight columns). Along the way it collects every value and
weight that carries the dimension:

* element-wise ops and broadcasting (``relu``, ``add`` of a residual, ``mul`` of a gate), so
  residual branches and SwiGLU's ``up_proj`` join the group;
* batch norm and layer norm parameters; pooling; ``mean`` over other axes;
* grouped and depthwise convolutions: input and output channels are coupled group by group,
  so a unit is a whole group (one channel for depthwise) and ``groups`` is rewritten;
* ``cat`` / ``split`` (each piece covers its own range of units), ``permute``, ``transpose``,
  ``unsqueeze``, ``expand``;
* reshapes: ``flatten`` into a linear (each channel becomes a block of ``H·W`` columns) and
  head reshapes ``[B, S, H·D] → [B, S, H, D]`` — a reshape that splits the dimension makes
  the *unit* coarser (a whole head of ``D`` channels), and ``scaled_dot_product_attention``
  couples query, key and value heads (grouped-query attention: a unit is a KV group with its
  ``Hq/Hkv`` query heads).

A group the analysis cannot follow (the dimension reaches a model output or input, a reduction
over it, channels that split a convolution group, an op it has no rule for, two layouts for one tensor) raises
:class:`Unsupported` and is skipped with the reason — never pruned blindly.

Example, a residual block (channels of ``conv_a``, ``conv_b`` and the block input are one
group), pruning unit 3 of 16::

    %a = aten.convolution(%x, @wa:[16,16,3,3], ...)      # producer: wa rows 3 removed
    %b = aten.convolution(%relu, @wb:[16,16,3,3], ...)   # sink: wb column 3 removed
    %s = aten.add(%b_out, %x)                            # coupled with %x
  →
    %a = aten.convolution(%x, @wa:[15,15,3,3], ...)
    ...  every value of the group is [N, 15, H, W]
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
import torch.fx as fx

from edgecc.program import Program, concrete_shape, op_name


class Unsupported(Exception):
    """The dimension cannot be followed here; the group is skipped with this reason."""


class Coarsen(Exception):
    """The group's unit must merge ``m`` consecutive units (e.g. channels into heads)."""

    def __init__(self, m: int):
        super().__init__(m)
        self.m = m


@dataclasses.dataclass(frozen=True)
class Slot:
    """Where units ``lo .. hi-1`` of a group live along ``axis`` of a tensor: unit ``u``
    occupies indices ``offset + (u - lo) * inner`` .. ``+ inner``."""

    axis: int
    offset: int
    inner: int
    lo: int
    hi: int

    def indices(self, units: Iterable[int]) -> list[int]:
        out = []
        for u in units:
            if self.lo <= u < self.hi:
                start = self.offset + (u - self.lo) * self.inner
                out.extend(range(start, start + self.inner))
        return out

    def at(self, axis: int) -> Slot:
        return dataclasses.replace(self, axis=axis)


@dataclasses.dataclass
class Group:
    """One set of coupled dimensions: ``units`` prunable units, each ``inner`` channels of
    the seed layer's output."""

    seed: str  # the name of the layer it started from
    units: int
    inner: int
    values: dict[fx.Node, Slot] = dataclasses.field(default_factory=dict)
    producers: list[tuple[fx.Node, fx.Node]] = dataclasses.field(default_factory=list)
    sinks: list[tuple[fx.Node, fx.Node]] = dataclasses.field(default_factory=list)
    norms: list[fx.Node] = dataclasses.field(default_factory=list)  # BN / LN scale params
    attention: int = 0  # attention ops whose heads the group prunes
    exact: bool = True  # removing a unit is exactly "zero its sink columns" (no LN stats)

    @property
    def kind(self) -> str:
        return "heads" if self.attention else "channels"

    def constants(self) -> list[tuple[fx.Node, Slot]]:
        return [(n, s) for n, s in self.values.items() if n.op == "get_attr"]

    def sink_slices(self, removed: Sequence[int]) -> list[tuple[str, int, list[int]]]:
        """(weight target, axis, indices) a dense model would zero to equal the pruned one."""
        return [(str(w.target), self.values[w].axis, self.values[w].indices(removed))
                for _, w in self.sinks]


# -- op families -----------------------------------------------------------------------------
ELEMENTWISE = {
    "aten." + n for n in (
        "add", "sub", "mul", "div", "relu", "relu6", "gelu", "silu", "sigmoid", "tanh",
        "hardtanh", "hardswish", "hardsigmoid", "leaky_relu", "elu", "mish", "softplus",
        "clone", "contiguous", "dropout", "neg", "_to_copy", "alias", "detach", "abs",
        "exp", "log", "sqrt", "rsqrt", "reciprocal", "pow", "clamp", "clamp_min",
        "clamp_max", "erf", "sin", "cos", "where", "maximum", "minimum", "masked_fill",
        "square", "lift_fresh_copy", "native_dropout")
} | {"edgecc.masked"}
RESHAPES = {"aten.view", "aten.reshape", "aten._unsafe_view", "aten.squeeze",
            "aten.unsqueeze", "aten.flatten"}
POOLS = {"aten.max_pool2d", "aten.avg_pool2d", "aten.adaptive_avg_pool2d",
         "aten._adaptive_avg_pool2d", "aten.max_pool2d_with_indices", "aten.max_pool1d",
         "aten.avg_pool1d", "aten.adaptive_avg_pool1d", "aten.upsample_nearest2d",
         "aten.upsample_bilinear2d", "aten.max_pool3d", "aten.avg_pool3d"}
REDUCTIONS = {"aten.mean", "aten.sum", "aten.amax", "aten.amin", "aten.max", "aten.min"}
BATCH_NORMS = {"aten._native_batch_norm_legit_no_training", "aten._native_batch_norm_legit",
               "aten.batch_norm", "aten.native_batch_norm"}
LAYER_NORMS = {"aten.native_layer_norm", "aten.layer_norm"}
CONVS = {"aten.convolution", "edgecc.conv_act"}
LINEARS = {"aten.linear", "edgecc.linear_act"}
MATMULS = {"aten.matmul", "aten.bmm", "aten.mm"}
IGNORED = {"aten._assert_tensor_metadata"}


def shape(node: Any) -> tuple[int, ...]:
    val = node.meta.get("val") if isinstance(node, fx.Node) else None
    if not isinstance(val, torch.Tensor):
        raise Unsupported(f"{getattr(node, 'name', node)} has no tensor shape")
    return concrete_shape(val.shape)


def _is_tensor(node: Any) -> bool:
    return isinstance(node, fx.Node) and isinstance(node.meta.get("val"), torch.Tensor)


def outputs(node: fx.Node) -> dict[int, fx.Node]:
    """A node's tensor results: itself, or the ``getitem`` users of a tuple result."""
    if isinstance(node.meta.get("val"), (tuple, list)):
        return {int(u.args[1]): u for u in node.users
                if u.op == "call_function" and op_name(u) == "getitem"}
    return {0: node}


def _producer(value: fx.Node) -> tuple[fx.Node, int]:
    """The op computing ``value`` and which of its results it is."""
    if value.op == "call_function" and op_name(value) == "getitem":
        src = value.args[0]
        if isinstance(src, fx.Node) and isinstance(src.meta.get("val"), (tuple, list)):
            return src, int(value.args[1])
    return value, 0


def _norm(axis: int, rank: int) -> int:
    return axis + rank if axis < 0 else axis


# -- reshapes --------------------------------------------------------------------------------
def map_reshape(src: Sequence[int], dst: Sequence[int], slot: Slot) -> Slot:
    """The slot of ``slot`` (on a tensor of shape ``src``) after reshaping it to ``dst``."""
    if math.prod(src) != math.prod(dst):
        raise Unsupported(f"reshape {list(src)} -> {list(dst)} changes the element count")
    i = j = 0
    while i < len(src) or j < len(dst):  # chunks of axes with equal products
        si, sj = i, j
        ps = src[i] if i < len(src) else 1
        pd = dst[j] if j < len(dst) else 1
        i, j = i + 1, j + 1
        while ps != pd:
            if ps < pd and i < len(src):
                ps, i = ps * src[i], i + 1
            elif pd < ps and j < len(dst):
                pd, j = pd * dst[j], j + 1
            else:
                raise Unsupported(f"reshape {list(src)} -> {list(dst)} is not a split/merge")
        if si <= slot.axis < i:
            break
    else:
        raise Unsupported("reshape: pruned axis not found")
    srcs = [a for a in range(si, i) if src[a] != 1]
    dsts = [b for b in range(sj, j) if dst[b] != 1]
    k = srcs.index(slot.axis)
    if math.prod(src[a] for a in srcs[:k]) != 1:
        raise Unsupported(f"reshape {list(src)} -> {list(dst)} merges an outer dimension into "
                          "the pruned one")
    p_in = math.prod(src[a] for a in srcs[k + 1:])
    offset, inner = slot.offset * p_in, slot.inner * p_in
    block = math.prod(dst[b] for b in dsts[1:])
    if offset % block == 0 and inner % block == 0:
        return Slot(dsts[0], offset // block, inner // block, slot.lo, slot.hi)
    if offset % block == 0 and block % inner == 0:
        raise Coarsen(block // inner)
    raise Unsupported(f"reshape {list(src)} -> {list(dst)} splits pruned units unevenly")


# -- the rules: given one participant's slot, the slots of the others -----------------------
Participants = list[tuple[fx.Node, Slot]]


def _broadcast(node: fx.Node, known: fx.Node, slot: Slot) -> Participants:
    out_rank = len(shape(node))
    axis = slot.axis + out_rank - len(shape(known))
    out = []
    tensors = [a for a in _flat_args(node) if _is_tensor(a)] + [node]
    for p in tensors:
        if p is known:
            continue
        ps = shape(p)
        pa = axis - (out_rank - len(ps))
        if pa < 0 or ps[pa] == 1:
            continue
        out.append((p, slot.at(pa)))
    return out


def _flat_args(node: fx.Node) -> list[Any]:
    flat = []
    for a in list(node.args) + list(node.kwargs.values()):
        flat.extend(a if isinstance(a, (list, tuple)) else [a])
    return flat


def _layer_rule(node: fx.Node, known: fx.Node, slot: Slot, group: Group) -> Participants:
    """Convolutions and linears: the input-channel space and the output-channel space."""
    name = op_name(node)
    x, w = node.args[0], node.args[1]
    b = node.args[2] if len(node.args) > 2 and isinstance(node.args[2], fx.Node) else None
    if not (isinstance(w, fx.Node) and w.op == "get_attr"):
        raise Unsupported(f"{node.name}'s weight is computed ({w.name}: masked, quantized or "
                          "factorized); prune structurally before those passes")
    if name in CONVS:
        if bool(node.args[6]):
            raise Unsupported("transposed convolution")
        groups = int(node.args[8])
        cin, cout = shape(x)[1], shape(w)[0]
        grouped = groups > 1  # depthwise when each group holds one input channel
        in_space = [(x, 1)] + ([] if grouped else [(w, 1)])
        out_space = [(node, 1), (w, 0)] + ([(b, 0)] if b is not None else [])
    else:
        rank = len(shape(x))
        in_space = [(x, rank - 1), (w, 1)]
        out_space = [(node, rank - 1), (w, 0)] + ([(b, 0)] if b is not None else [])
        grouped, groups, cout, cin = False, 1, 0, 1
        if known is x and slot.axis != rank - 1 or known is node and slot.axis != rank - 1:
            return [(node if known is x else x, slot)]  # batch / sequence axes pass through
    where = [sp for sp, members in (("in", in_space), ("out", out_space))
             if (known, slot.axis) in members]
    if not where:
        raise Unsupported(f"{op_name(node)} pruned along a spatial axis")
    space = where[0]
    members = in_space if space == "in" else out_space
    out = [(p, slot.at(a)) for p, a in members if p is not known]
    if space == "out" and known is not w:
        group.producers.append((node, w))
    if space == "in" and not grouped:
        group.sinks.append((node, w))
    if grouped:  # whole groups go: input block j (cin/g channels) with output block j
        block_in, block_out = cin // groups, cout // groups
        here, there = (block_in, block_out) if space == "in" else (block_out, block_in)
        if slot.offset % here:
            raise Unsupported(f"grouped convolution (groups={groups}): the pruned channels "
                              "split a group")
        if slot.inner % here:
            raise Coarsen(here // math.gcd(slot.inner, here))
        s = Slot(1, slot.offset // here * there, slot.inner // here * there, slot.lo, slot.hi)
        if space == "in":
            group.producers.append((node, w))
            out += [(p, s.at(a)) for p, a in out_space]
        else:
            out.append((x, s))
    return out


def _matmul_rule(node: fx.Node, known: fx.Node, slot: Slot) -> Participants:
    a, b = node.args[0], node.args[1]
    ra, rb, r = len(shape(a)), len(shape(b)), len(shape(node))
    if ra < 2 or rb < 2:
        raise Unsupported("matmul of a vector")

    def role(p: fx.Node, axis: int) -> tuple[str, int]:
        rank = len(shape(p))
        if p is node:
            return ("m", 0) if axis == r - 2 else ("n", 0) if axis == r - 1 else ("batch",
                                                                                  axis - r)
        if p is a:
            return ("m", 0) if axis == rank - 2 else ("k", 0) if axis == rank - 1 else (
                "batch", axis - rank)
        return ("k", 0) if axis == rank - 2 else ("n", 0) if axis == rank - 1 else (
            "batch", axis - rank)

    kind, neg = role(known, slot.axis)
    targets = {"m": [(a, ra - 2), (node, r - 2)], "n": [(b, rb - 1), (node, r - 1)],
               "k": [(a, ra - 1), (b, rb - 2)],
               "batch": [(p, len(shape(p)) + neg) for p in (a, b, node)]}[kind]
    return [(p, slot.at(ax)) for p, ax in targets
            if p is not known and ax >= 0 and shape(p)[ax] != 1]


def _attention_rule(node: fx.Node, known: fx.Node, slot: Slot, group: Group) -> Participants:
    q, k, v = node.args[:3]
    mask = node.args[3] if len(node.args) > 3 else node.kwargs.get("attn_mask")
    if len(shape(q)) != 4 or slot.axis != 1:
        raise Unsupported("attention pruned along a non-head axis (head_dim or batch)")
    if isinstance(mask, fx.Node) and shape(mask)[1] != 1 and len(shape(mask)) == 4:
        raise Unsupported("per-head attention mask")
    hq, hk = shape(q)[1], shape(k)[1]
    r = hq // hk
    group.attention += 1 if known is q else 0
    if known in (q, node):
        if slot.offset % r or slot.inner % r:
            raise Coarsen(r // math.gcd(slot.inner, r))
        kv = Slot(1, slot.offset // r, slot.inner // r, slot.lo, slot.hi)
        qs = slot
    else:
        kv = slot
        qs = Slot(1, slot.offset * r, slot.inner * r, slot.lo, slot.hi)
    return [(p, s) for p, s in ((q, qs), (k, kv), (v, kv), (node, qs)) if p is not known]


def _cat_rule(node: fx.Node, known: fx.Node, slot: Slot) -> Participants:
    tensors = list(node.args[0])
    dim = _norm(int(node.args[1]) if len(node.args) > 1 else 0, len(shape(node)))
    if slot.axis != dim:
        return [(p, slot) for p in tensors + [node] if p is not known]
    starts, pos = [], 0
    for t in tensors:
        starts.append(pos)
        pos += shape(t)[dim]
    if known is not node:
        return [(node, dataclasses.replace(slot, offset=slot.offset + starts[tensors.index(
            known)]))]
    return _pieces(slot, tensors, starts, [shape(t)[dim] for t in tensors])


def _pieces(slot: Slot, parts: Sequence[fx.Node], starts: Sequence[int],
            sizes: Sequence[int]) -> Participants:
    """Units of ``slot`` falling into each of ``parts`` (a ``cat``'s inputs, a ``split``'s
    outputs), each unit entirely inside one part."""
    out = []
    for part, start, size in zip(parts, starts, sizes):
        units = [u for u in range(slot.lo, slot.hi)
                 if start <= slot.offset + (u - slot.lo) * slot.inner < start + size]
        if not units:
            continue
        first = slot.offset + (units[0] - slot.lo) * slot.inner
        if first + len(units) * slot.inner > start + size or units != list(
                range(units[0], units[-1] + 1)):
            raise Unsupported("a pruned unit straddles two pieces of a cat/split")
        out.append((part, Slot(slot.axis, first - start, slot.inner, units[0],
                               units[-1] + 1)))
    return out


def _split_rule(node: fx.Node, known: fx.Node, slot: Slot) -> Participants:
    x = node.args[0]
    dim = _norm(int(node.args[2]) if len(node.args) > 2 else 0, len(shape(x)))
    outs = outputs(node)
    if len(outs) != len(node.meta["val"]):
        raise Unsupported("split with unused pieces")
    pieces = [outs[i] for i in range(len(outs))]
    if slot.axis != dim:
        return [(p, slot) for p in [x] + pieces if p is not known]
    sizes = [shape(p)[dim] for p in pieces]
    starts = [sum(sizes[:i]) for i in range(len(sizes))]
    if known is x:
        return _pieces(slot, pieces, starts, sizes)
    i = pieces.index(known)
    return [(x, dataclasses.replace(slot, offset=slot.offset + starts[i]))]


def relate(node: fx.Node, known: fx.Node, slot: Slot, group: Group) -> Participants:
    """Participants of ``node`` (its tensor inputs and results) coupled to ``known``'s slot."""
    name = op_name(node)
    if name in IGNORED:
        return []
    if name in ELEMENTWISE:
        return _broadcast(node, known, slot)
    if name in LINEARS or name in CONVS:
        return _layer_rule(node, known, slot, group)
    if name == "aten.embedding":
        w = node.args[0]
        if known is w and slot.axis == 1 or known is node and slot.axis == len(shape(node)) - 1:
            return [(node, slot.at(len(shape(node)) - 1))] if known is w else [(w, slot.at(1))]
        raise Unsupported("embedding pruned along its vocabulary")
    if name in RESHAPES:
        x = node.args[0]
        if known is x:
            return [(node, map_reshape(shape(x), shape(node), slot))]
        return [(x, map_reshape(shape(node), shape(x), slot))]
    if name == "aten.expand":
        x = node.args[0]
        shift = len(shape(node)) - len(shape(x))
        if known is x:
            return [(node, slot.at(slot.axis + shift))]
        if slot.axis - shift < 0 or shape(x)[slot.axis - shift] == 1:
            raise Unsupported("expand broadcasts the pruned axis")
        return [(x, slot.at(slot.axis - shift))]
    if name == "aten.permute":
        dims = [_norm(int(d), len(shape(node))) for d in node.args[1]]
        return ([(node, slot.at(dims.index(slot.axis)))] if known is not node
                else [(node.args[0], slot.at(dims[slot.axis]))])
    if name in ("aten.transpose", "aten.t"):
        rank = len(shape(node))
        d0, d1 = ((0, 1) if name == "aten.t" else (_norm(int(node.args[1]), rank),
                                                   _norm(int(node.args[2]), rank)))
        axis = d1 if slot.axis == d0 else d0 if slot.axis == d1 else slot.axis
        return [(node if known is not node else node.args[0], slot.at(axis))]
    if name in BATCH_NORMS:
        x = node.args[0]
        if slot.axis != (1 if known is x or known in outputs(node).values() else 0):
            raise Unsupported("batch norm pruned along a spatial axis")
        params = [p for p in node.args[1:5] if isinstance(p, fx.Node)]
        if isinstance(node.args[1], fx.Node) and node.args[1] not in group.norms:
            group.norms.append(node.args[1])
        res = [(p, slot.at(1)) for p in [x, outputs(node).get(0)] if p is not None]
        res += [(p, slot.at(0)) for p in params]
        return [(p, s) for p, s in res if p is not known]
    if name in LAYER_NORMS:
        x, normalized = node.args[0], node.args[1]
        rank = len(shape(x))
        outs = list(outputs(node).values())
        params = [p for p in node.args[2:4] if isinstance(p, fx.Node)]
        if known in params:
            axis = rank - 1
        else:
            axis = slot.axis
        if axis < rank - len(normalized):  # a batch / sequence axis: passes through
            return [(p, slot) for p in [x] + outs if p is not known]
        if len(normalized) != 1:
            raise Unsupported("layer norm over several axes including the pruned one")
        group.exact = False
        if params and params[0] not in group.norms:
            group.norms.append(params[0])
        res = [(p, slot.at(rank - 1)) for p in [x, outputs(node).get(0)] if p is not None]
        res += [(p, slot.at(0)) for p in params]
        return [(p, s) for p, s in res if p is not known]
    if name in POOLS:
        if slot.axis > 1:
            raise Unsupported(f"{name} pools over the pruned axis")
        return [(p, slot) for p in [node.args[0], *outputs(node).values()] if p is not known]
    if name in REDUCTIONS:
        x = node.args[0]
        rank = len(shape(x))
        dims = node.args[1] if len(node.args) > 1 else None
        if dims is None or isinstance(dims, (list, tuple)) and len(dims) == 0:
            raise Unsupported(f"{name} reduces over all axes")
        dims = [_norm(int(d), rank) for d in (dims if isinstance(dims, (list, tuple))
                                               else [dims])]
        keep = bool(node.args[2]) if len(node.args) > 2 else False
        if known is x:
            if slot.axis in dims:
                raise Unsupported(f"{name} reduces over the pruned axis")
            axis = slot.axis if keep else slot.axis - sum(d < slot.axis for d in dims)
            return [(p, slot.at(axis)) for p in outputs(node).values()]
        axis = slot.axis
        if not keep:
            for d in sorted(dims):
                axis += d <= axis
        return [(x, slot.at(axis))]
    if name in ("aten.softmax", "aten._softmax", "aten.log_softmax", "aten._log_softmax"):
        if _norm(int(node.args[1]), len(shape(node))) == slot.axis:
            raise Unsupported(f"{name} normalizes over the pruned axis")
        return [(node if known is not node else node.args[0], slot)]
    if name in ("aten.slice", "aten.select"):
        x = node.args[0]
        dim = _norm(int(node.args[1]) if len(node.args) > 1 else 0, len(shape(x)))
        axis_in = slot.axis if known is x else (
            slot.axis + (name == "aten.select" and slot.axis >= dim))
        if axis_in == dim:
            raise Unsupported(f"{name} along the pruned axis")
        if known is x:
            return [(node, slot.at(axis_in - (name == "aten.select" and axis_in > dim)))]
        return [(x, slot.at(axis_in))]
    if name == "aten.cat":
        return _cat_rule(node, known, slot)
    if name in ("aten.split", "aten.split_with_sizes"):
        return _split_rule(node, known, slot)
    if name in MATMULS:
        return _matmul_rule(node, known, slot)
    if name == "aten.scaled_dot_product_attention":
        return _attention_rule(node, known, slot, group)
    raise Unsupported(f"no pruning rule for {name}")


# -- building groups -------------------------------------------------------------------------
def build_group(program: Program, seed: fx.Node, seed_name: str) -> Group:
    """The group of ``seed``'s output channels (coarsened to heads where reshapes ask)."""
    out_axis = 1 if op_name(seed) in CONVS else len(shape(seed)) - 1
    units, inner = shape(seed)[out_axis], 1
    for _ in range(8):
        try:
            return _walk(program, seed, seed_name, units, inner, out_axis)
        except Coarsen as c:
            if units % c.m:
                raise Unsupported(f"units of {inner} channels cannot merge by {c.m}") from None
            units, inner = units // c.m, inner * c.m
    raise Unsupported("no stable unit size")


def _walk(program: Program, seed: fx.Node, seed_name: str, units: int, inner: int,
          out_axis: int) -> Group:
    group = Group(seed_name, units, inner)
    outputs_ = {a for a in _flat_args(next(iter(program.graph.find_nodes(op="output"))))
                if isinstance(a, fx.Node)}
    work: list[tuple[fx.Node, Slot]] = [(seed, Slot(out_axis, 0, inner, 0, units))]
    while work:
        value, slot = work.pop()
        old = group.values.get(value)
        if old is not None:
            if old != slot:
                raise Unsupported(f"{value.name} is coupled to the group in two layouts")
            continue
        group.values[value] = slot
        if value in outputs_:
            raise Unsupported(f"the dimension reaches the model output ({value.name})")
        if value.op == "placeholder":
            raise Unsupported(f"the dimension reaches the model input {value.name}")
        if value.op == "call_function":
            src, _ = _producer(value)
            work.extend(_checked(relate(src, value, slot, group), src))
        for user in value.users:
            if user.op == "output":
                raise Unsupported(f"the dimension reaches the model output ({value.name})")
            if user.op == "call_function" and op_name(user) == "getitem" and value is _producer(
                    user)[0]:
                continue  # a tuple's results are participants of the op itself
            work.extend(_checked(relate(user, value, slot, group), user))
    if not group.producers:
        raise Unsupported("no layer output to remove")
    group.producers = list(dict.fromkeys(group.producers))
    group.sinks = list(dict.fromkeys(group.sinks))
    return group


def _checked(pairs: Participants, node: fx.Node) -> Participants:
    for p, s in pairs:
        size = shape(p)[s.axis]
        if s.offset + (s.hi - s.lo) * s.inner > size or s.offset < 0:
            raise Unsupported(f"{node.name}: slot outside {p.name}'s axis {s.axis}")
    return pairs


# -- applying --------------------------------------------------------------------------------
def remove_units(program: Program, plan: Sequence[tuple[Group, Sequence[int]]]) -> None:
    """In place: delete ``units`` of each group from every weight and shape it touches."""
    removed: dict[fx.Node, dict[int, set[int]]] = {}
    for group, units in plan:
        if not units:
            continue
        for value, slot in group.values.items():
            removed.setdefault(value, {}).setdefault(slot.axis, set()).update(
                slot.indices(units))
    gm = program.graph_module
    for node, axes in removed.items():
        old_shape = shape(node)
        if any(n - len(axes.get(a, ())) <= 0 for a, n in enumerate(old_shape)):
            raise Unsupported(f"pruning would leave {node.name} empty")
        if node.op == "get_attr":
            t = program.tensor(node)
            for axis, idx in axes.items():
                keep = torch.tensor([i for i in range(t.shape[axis]) if i not in idx])
                t = t.index_select(axis, keep)
            program.set_tensor(node, t.contiguous())
    for node in program.nodes("call_function"):
        _fix_args(node, removed)
    gm.recompile()
    program.refresh_metadata()


def _gone(removed: dict[fx.Node, dict[int, set[int]]], node: Any, axis: int) -> int:
    return len(removed.get(node, {}).get(axis, ())) if isinstance(node, fx.Node) else 0


def _fix_args(node: fx.Node, removed: dict[fx.Node, dict[int, set[int]]]) -> None:
    """Rewrite the shape-carrying arguments of ``node`` after its operands shrank."""
    name = op_name(node)
    if name in ("aten.view", "aten.reshape", "aten._unsafe_view", "aten.expand"):
        if node not in removed:
            return
        sizes = list(node.args[1])
        for a, n in enumerate(shape(node)):
            if _gone(removed, node, a) and isinstance(sizes[a], int) and sizes[a] != -1:
                sizes[a] = n - _gone(removed, node, a)
        node.args = (node.args[0], sizes, *node.args[2:])
    elif name in CONVS and int(node.args[8]) > 1:  # grouped: whole groups were removed
        x = node.args[0]
        if _gone(removed, x, 1):
            per_group = shape(x)[1] // int(node.args[8])
            node.args = (*node.args[:8], (shape(x)[1] - _gone(removed, x, 1)) // per_group,
                         *node.args[9:])
    elif name in LAYER_NORMS:
        x = node.args[0]
        if _gone(removed, x, len(shape(x)) - 1):
            node.args = (x, [shape(x)[-1] - _gone(removed, x, len(shape(x)) - 1)],
                         *node.args[2:])
    elif name in ("aten.split", "aten.split_with_sizes"):
        x = node.args[0]
        dim = _norm(int(node.args[2]) if len(node.args) > 2 else 0, len(shape(x)))
        gone = removed.get(x, {}).get(dim, set())
        if gone:
            sizes = [concrete_shape(v.shape)[dim] for v in node.meta["val"]]
            starts = [sum(sizes[:i]) for i in range(len(sizes))]
            new_sizes = [s - sum(st <= g < st + s for g in gone) for s, st in zip(sizes, starts)]
            if min(new_sizes) <= 0:
                raise Unsupported(f"pruning would leave a piece of {node.name} empty")
            node.target = torch.ops.aten.split_with_sizes.default
            node.args = (x, new_sizes, dim)
