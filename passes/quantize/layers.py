"""The layers quantization works on, found in the IR, and how to rewrite them.

A *layer* is an operator with a constant weight: ``linear`` / ``linear_act`` (weight
``[N, K]``), ``convolution`` / ``conv_act`` (``[Cout, Cin/g, *k]``, transposed:
``[Cin, Cout/g, *k]``) and ``embedding`` (``[V, D]``, weight-only). Its name is the weight's
path without ``.weight`` (``bert.encoder.layer.0.attention.self.query``), which is what
``exclude`` patterns match.
"""

from __future__ import annotations

import dataclasses
import fnmatch
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.fx as fx

from edgecc.errors import OptionError
from edgecc.program import Program, op_name
from edgecc.progress import progress_iter
from edgecc.quant import (
    DEQUANTIZE, DEQUANTIZE_OFFSET, QRANGE, QUANTIZE, QuantParams, is_dequantize,
    is_dequantize_offset,
)

LINEAR_OPS = ("aten.linear", "edgecc.linear_act")
CONV_OPS = ("aten.convolution", "edgecc.conv_act")
EMBEDDING_OPS = ("aten.embedding",)


@dataclasses.dataclass
class Layer:
    node: fx.Node
    kind: str  # "linear" | "conv" | "embedding"
    name: str

    @property
    def weight(self) -> fx.Node:
        return self.node.args[0] if self.kind == "embedding" else self.node.args[1]

    @property
    def input(self) -> fx.Node | None:
        return None if self.kind == "embedding" else self.node.args[0]

    @property
    def out_axis(self) -> int:
        """The weight axis of output channels (per-channel quantization axis)."""
        return 1 if self.kind == "conv" and bool(self.node.args[6]) else 0

    @property
    def reduction_axis(self) -> int:
        """The weight axis a dot product runs along (per-group quantization axis)."""
        return 1 - self.out_axis if self.kind != "embedding" else 1


def find_layers(program: Program, *, embeddings: bool = True) -> list[Layer]:
    layers = []
    for node in program.nodes("call_function"):
        name = op_name(node)
        kind = ("linear" if name in LINEAR_OPS else "conv" if name in CONV_OPS
                else "embedding" if name in EMBEDDING_OPS and embeddings else None)
        if kind is None:
            continue
        layer = Layer(node, kind, "")
        if not program.is_constant(layer.weight):
            continue  # weight computed or already quantized
        layer.name = _module_path(node) or _strip_weight(str(layer.weight.target))
        layers.append(layer)
    seen: dict[str, int] = {}
    for layer in layers:  # a module that calls two layers: name them path, path#1, ...
        n = seen.get(layer.name, 0)
        seen[layer.name] = n + 1
        if n:
            layer.name = f"{layer.name}#{n}"
    return layers


def _module_path(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    if not stack:
        return ""
    path = list(stack.values())[-1][0]
    return str(path) if path else ""


def _strip_weight(target: str) -> str:
    return target[: -len(".weight")] if target.endswith(".weight") else target


def _matches(layer: Layer, pattern: str) -> bool:
    return (fnmatch.fnmatchcase(layer.name, pattern)
            or fnmatch.fnmatchcase(layer.node.name, pattern))


def select(layers: list[Layer], exclude: Sequence[str], include: Sequence[str] = ()
           ) -> tuple[list[Layer], list[str]]:
    """Layers matched by an ``include`` glob (all when none) and by no ``exclude`` glob.

    A pattern that matches no layer is an error: it is almost always a typo.
    """
    for kind, patterns in (("exclude", exclude), ("include", include)):
        for pattern in patterns:
            if not any(_matches(layer, pattern) for layer in layers):
                names = ", ".join(layer.name for layer in layers[:4])
                raise OptionError(
                    f"{kind} pattern '{pattern}' matches no quantizable layer "
                    f"(layers are named like {names}, ...)"
                )
    kept, skipped = [], []
    for layer in layers:
        if include and not any(_matches(layer, p) for p in include):
            continue
        if any(_matches(layer, p) for p in exclude):
            skipped.append(layer.name)
        else:
            kept.append(layer)
    return kept, skipped


# -- calibration --------------------------------------------------------------------------

def check_calibration(program: Program, calibration: Iterable[Sequence[Any]] | None,
                      why: str) -> list[tuple[Any, ...]]:
    """The calibration batches as a list, each checked against the program's inputs."""
    from edgecc.errors import InputSpecError

    if calibration is None:
        raise InputSpecError(
            f"{why} needs calibration data: pass calibration=[batch, ...] to compile() "
            "or --calib data.npz on the command line"
        )
    batches = [tuple(b) if isinstance(b, (tuple, list)) else (b,) for b in calibration]
    if not batches:
        raise InputSpecError(f"{why}: the calibration set is empty")
    for i, batch in enumerate(batches):
        try:
            program.check_inputs(batch)
        except InputSpecError as exc:
            raise InputSpecError(f"calibration batch {i}: {exc}") from None
    return batches


def validate_calibration(program: Program, calibration: Iterable[Sequence[Any]] | None,
                         why: str) -> None:
    """A pass's ``validate`` check of its calibration data: present, and each batch right
    when it is a list or tuple (an iterator is checked by ``run``, which reads it once)."""
    if calibration is None or isinstance(calibration, (list, tuple)):
        check_calibration(program, calibration, why)


class StopRecording(Exception):
    """Ends one calibration batch once every watched value of it was seen."""


class ValueRecorder(fx.Interpreter):
    """Runs a graph module, calling ``on_value(node, value)`` for the watched nodes and
    stopping (``StopRecording``) after ``last`` when one is given. A module-level class on
    purpose: a class defined per call closes over ``on_value`` and, a class being a
    reference cycle, keeps it — and whatever ``on_value`` fills (GPTQ Hessian
    accumulators, AWQ activation samples) — alive after the run until Python's next full
    garbage collection, which a large program's many long-lived objects make rare (each
    GPTQ run's Hessians, ~340 MiB a layer at the TinyLlama shape, stayed resident run after
    run: ~1x the fp32 weights at the 1.1B shape)."""

    def __init__(self, gm: fx.GraphModule, watch: set[fx.Node],
                 on_value: Callable[[fx.Node, torch.Tensor], None],
                 last: fx.Node | None = None, keep: fx.Node | None = None) -> None:
        super().__init__(gm)
        self.watch, self.on_value, self.last, self.keep = watch, on_value, last, keep
        self.kept: RunState | None = None  # the run's state after ``keep``

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        if n in self.watch:
            self.on_value(n, out)
        if n is self.keep:
            self.kept = self._state_after(n, out)
        if n is self.last:
            raise StopRecording
        return out

    def resume(self, state: RunState, *args: Any) -> Any:
        """Run on from ``state`` (a run of the same graph, or of a copy with the same node
        names, kept after one of its nodes): the nodes up to that one are not run again."""
        env: dict[fx.Node, Any] = {}
        for node in self.graph.nodes:
            if node.name in state.values:
                env[node] = state.values[node.name]
            elif node.name in state.done:
                env[node] = None  # run and no longer read: skipped, never read
        return self.run(*args, initial_env=env)

    def _state_after(self, n: fx.Node, out: Any) -> RunState:
        # the environment the interpreter has after ``n``: every value a later node reads;
        # not the weights (``get_attr``: fetched again on resuming, nothing to hold)
        live = {**self.env, n: out}
        for dead in self.user_to_last_uses.get(n, []):
            live.pop(dead, None)
        done: set[str] = set()  # every node run so far but the weights
        from_inputs: set[fx.Node] = set()  # nodes a graph input reaches
        for node in self.graph.nodes:
            if node.op != "get_attr":
                done.add(node.name)
            if node.op == "placeholder" or any(a in from_inputs for a in node.all_input_nodes):
                from_inputs.add(node)
            if node is n:
                break
        held = {k: v for k, v in live.items() if k.op != "get_attr"}
        return RunState({k.name: v for k, v in held.items()}, frozenset(done),
                        frozenset(k.name for k in held if k not in from_inputs))


@dataclasses.dataclass(frozen=True)
class RunState:
    """A calibration run stopped after a node: the values later nodes still read (by node
    name) and the names of every node run so far (``ValueRecorder.resume``).
    ``constants``: the values computed from the weights alone (no graph input reaches
    them, e.g. a tied embedding dequantized once for the output layer): the same in every
    batch's run, held once (``share_constants``) and not counted in ``bytes``: a run holds
    them anyway."""

    values: dict[str, Any]
    done: frozenset[str]
    constants: frozenset[str] = frozenset()

    def bytes(self) -> int:
        """Bytes of the values that depend on the batch."""
        def size(v: Any) -> int:
            if isinstance(v, torch.Tensor):
                return v.numel() * v.element_size()
            return sum(size(x) for x in v) if isinstance(v, (tuple, list)) else 0

        return sum(size(v) for k, v in self.values.items() if k not in self.constants)

    def share_constants(self, first: RunState) -> None:
        """Hold ``first``'s copies of the weight-only values (another batch's run of the
        same graph: the same values) instead of this run's."""
        for k in self.constants & first.constants:
            self.values[k] = first.values[k]


def record_values(program: Program, batches: Sequence[Sequence[Any]], nodes: Iterable[fx.Node],
                  on_value: Callable[[fx.Node, torch.Tensor], None], *,
                  desc: str = "calibrating", progress: bool | None = None,
                  device: Any = None) -> None:
    """Run ``batches`` through the program, calling ``on_value(node, value)`` for ``nodes``.
    ``device`` (e.g. ``cuda:0``): the forward passes run there (the program's weights move
    there for the run and back to the CPU after); ``on_value`` sees tensors on it."""
    from edgecc.distributed import move_module

    watch = set(nodes)
    gm = program.graph_module
    dev = torch.device(device) if device is not None else torch.device("cpu")
    if dev.type != "cpu":  # with export's lifted constants, which Module.to leaves behind
        move_module(gm, dev)
    try:
        with torch.no_grad():
            for batch in progress_iter(batches, desc, enabled=progress):
                ValueRecorder(gm, watch, on_value).run(
                    *[b.to(dev) if isinstance(b, torch.Tensor) else b for b in batch])
    finally:
        if dev.type != "cpu":
            move_module(gm, "cpu")


# -- rewriting ------------------------------------------------------------------------------

def add_params(program: Program, prefix: str, params: QuantParams, before: fx.Node
               ) -> tuple[fx.Node, fx.Node]:
    s = program.add_constant(f"{prefix}_scale", params.scale, before=before)
    z = program.add_constant(f"{prefix}_zero_point", params.zero_point, before=before)
    return s, z


def replace_weight(program: Program, layer: Layer, q: torch.Tensor, params: QuantParams,
                   out_dtype: torch.dtype = torch.float32) -> fx.Node:
    """Make ``layer`` read ``dequantize(q)`` (stored quantized) instead of its float weight."""
    weight = layer.weight
    prefix = layer.name.replace(".", "_")
    qnode = program.add_constant(f"{prefix}_qweight", q, before=layer.node)
    s, z = add_params(program, prefix + "_w", params, layer.node)
    graph = program.graph
    if params.offset is not None:  # a float offset (asymmetric Q4_K grid): its own op
        o = program.add_constant(prefix + "_w_offset", params.offset.to(torch.float32),
                                 before=layer.node)
        with graph.inserting_before(layer.node):
            dq = graph.call_function(DEQUANTIZE_OFFSET, (qnode, s, z, o, params.axis,
                                                         params.block_size, params.dtype,
                                                         out_dtype))
    else:
        with graph.inserting_before(layer.node):
            dq = graph.call_function(DEQUANTIZE, (qnode, s, z, params.axis,
                                                  params.block_size, params.dtype, out_dtype))
    dq.meta["val"] = torch.empty(0)  # refreshed by the caller (refresh_metadata)
    dq.meta[QRANGE] = params.range  # dequantize carries no range; QAT keeps it from here
    layer.node.replace_input_with(weight, dq)
    if not weight.users:
        graph.erase_node(weight)
    return dq


def insert_qdq(program: Program, value: fx.Node, consumers: Sequence[fx.Node],
               params: QuantParams, *, scale: fx.Node | None = None,
               zero_point: fx.Node | None = None) -> fx.Node:
    """``value → quantize → dequantize → consumers`` (other users keep the float value).

    ``scale`` / ``zero_point`` nodes (computed in the graph: dynamic quantization) replace
    the constant ones in ``params``.
    """
    graph = program.graph
    first = first_in_graph(graph, consumers)
    if scale is None:
        scale, zero_point = add_params(program, f"{value.name}_act", params, first)
    lo, hi = params.range
    with graph.inserting_before(first):
        q = graph.call_function(QUANTIZE, (value, scale, zero_point, params.axis,
                                           params.block_size, lo, hi, params.dtype))
        dq = graph.call_function(DEQUANTIZE, (q, scale, zero_point, params.axis,
                                              params.block_size, params.dtype,
                                              torch.float32))
    for c in consumers:
        c.replace_input_with(value, dq)
    return dq


def insert_dynamic_qparams(program: Program, value: fx.Node, before: fx.Node, qmin: int,
                           qmax: int, *, per_token: bool = False, symmetric: bool = False
                           ) -> tuple[fx.Node, fx.Node]:
    """Scale and zero point of ``value``'s own range, computed at run time::

        lo = min(min(x), 0); hi = max(max(x), 0)          (per token: over the last dim)
        asymmetric: scale = max((hi - lo) / (qmax - qmin), 1e-12)
                    zero_point = clamp(qmin - round(lo / scale), qmin, qmax)
        symmetric:  scale = max(max(|lo|, hi) / ((qmax - qmin) / 2), 1e-12), zero_point = 0

    Per token, ``scale`` / ``zero_point`` are ``[..., 1]``: a block of the whole last
    dimension (``axis=-1, block_size=K`` in ``edgecc.quantize``).
    """
    import operator

    aten = torch.ops.aten
    graph = program.graph
    with graph.inserting_before(before):
        if per_token:
            top = graph.call_function(aten.max.dim, (value, -1, True))
            hi = graph.call_function(operator.getitem, (top, 0))
            neg = graph.call_function(aten.neg.default, (value,))
            bottom = graph.call_function(aten.max.dim, (neg, -1, True))
            lo = graph.call_function(aten.neg.default,
                                     (graph.call_function(operator.getitem, (bottom, 0)),))
        else:
            lo = graph.call_function(aten.min.default, (value,))
            hi = graph.call_function(aten.max.default, (value,))
        lo = graph.call_function(aten.clamp_max.default, (lo, 0.0))
        hi = graph.call_function(aten.clamp_min.default, (hi, 0.0))
        if symmetric:
            amax = graph.call_function(aten.maximum.default,
                                       (graph.call_function(aten.neg.default, (lo,)), hi))
            scale = graph.call_function(aten.clamp_min.default, (
                graph.call_function(aten.div.Scalar, (amax, (qmax - qmin) / 2)), 1e-12))
            zp = graph.call_function(aten.mul.Scalar, (scale, 0.0))
            return scale, zp
        rng = graph.call_function(aten.sub.Tensor, (hi, lo))
        scale = graph.call_function(
            aten.clamp_min.default,
            (graph.call_function(aten.div.Scalar, (rng, float(qmax - qmin))), 1e-12))
        zp = graph.call_function(aten.round.default, (
            graph.call_function(aten.rsub.Scalar, (
                graph.call_function(aten.div.Tensor, (lo, scale)), float(qmin))),))
        zp = graph.call_function(aten.clamp.default, (zp, float(qmin), float(qmax)))
    return scale, zp


def _position(graph: fx.Graph) -> Callable[[fx.Node], int]:
    order = {n: i for i, n in enumerate(graph.nodes)}
    return lambda n: order[n]


def first_in_graph(graph: fx.Graph, nodes: Sequence[fx.Node]) -> fx.Node:
    """The node of ``nodes`` that comes first in ``graph`` (where shared inputs go)."""
    return min(nodes, key=_position(graph))


def last_in_graph(graph: fx.Graph, nodes: Iterable[fx.Node]) -> fx.Node:
    """The node of ``nodes`` that comes last in ``graph``."""
    return max(nodes, key=_position(graph))


def quantized_weight_bytes(program: Program) -> int:
    """Bytes of the weights that ``dequantize`` / ``dequantize_offset`` nodes read (data +
    scales + zero points + offsets)."""
    total = 0
    for node in program.nodes("call_function"):
        if is_dequantize(node) or is_dequantize_offset(node):
            for arg in node.args[:4 if is_dequantize_offset(node) else 3]:
                if program.is_constant(arg):
                    t = program.tensor(arg)
                    total += t.numel() * t.element_size()
    return total


def scale_input(program: Program, value: fx.Node, consumers: Sequence[fx.Node],
                factor: torch.Tensor, name: str) -> fx.Node:
    """``consumers`` read ``value * factor`` (per last-dim channel) instead of ``value``."""
    graph = program.graph
    first = first_in_graph(graph, consumers)
    const = program.add_constant(name, factor.to(torch.float32), before=first)
    with graph.inserting_before(first):
        mul = graph.call_function(torch.ops.aten.mul.Tensor, (value, const))
    for c in consumers:
        c.replace_input_with(value, mul)
    return mul


def set_weight(program: Program, layer: Layer, value: torch.Tensor) -> None:
    """Give ``layer`` a new (float) weight tensor of its own."""
    old = layer.weight
    node = program.add_constant(layer.name.replace(".", "_") + "_weight", value,
                                before=layer.node)
    layer.node.replace_input_with(old, node)
    if not old.users:
        program.graph.erase_node(old)


def output_error(reference: Program, program: Program, batches: Any,
                 n: int, refs: list[tuple[Any, ...]] | None = None) -> dict[str, Any] | None:
    """SQNR / cosine / max-abs of ``program`` against ``reference`` on up to ``n``
    calibration batches (two fresh random inputs when there are none); None when n <= 0.
    ``refs``: ``reference``'s outputs on those batches when the caller has them already
    (used when there is one per batch)."""
    from edgecc.inputs import fresh_inputs
    from edgecc.metrics import compare_outputs

    if n <= 0:
        return None
    inputs = list(batches[:n]) if batches else [fresh_inputs(reference, seed=11 + i)
                                                  for i in range(2)]
    if refs is None or len(refs) != len(inputs):
        refs = [reference.run(*b) for b in inputs]
    outs = [program.run(*b) for b in inputs]
    m = compare_outputs(refs, outs, atol=0.0, rtol=0.0)
    return {"on": "calibration batches" if batches else "random inputs",
            "samples": len(inputs), "sqnr_db": round(m["sqnr_db"], 2),
            "cosine": round(m["cosine"], 6), "max_abs": m["max_abs"]}
