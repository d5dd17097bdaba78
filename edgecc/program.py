"""``Program``: edgecc's one IR, a torch.export ATen graph with its weights attached.

A ``Program`` wraps the *unlifted* ``torch.fx.GraphModule`` that ``torch.export`` produces
(``ExportedProgram.module()``), in the same form PT2E quantization works on: weights are
``get_attr`` nodes, so a pass reads and replaces them directly. The graph takes flat tensor
inputs (one placeholder per input) and returns a flat tuple of tensors.

Per-node metadata lives in ``node.meta``:

* ``val`` -- a FakeTensor giving shape (possibly symbolic) and dtype, refreshed by
  :meth:`Program.refresh_metadata` after every pass;
* ``nn_module_stack`` / ``stack_trace`` -- the source module and line (from torch.export);
* ``edgecc_origin`` -- which stage made the node: ``"frontend"`` or the name of a pass.

Before lowering, :meth:`Program.exported` gives the graph as an ``ExportedProgram``
(parameters lifted again) that backends such as TVM Relax consume: lifted directly where the
shapes are static (``edgecc.lift``), else re-exported by :meth:`Program.export`.
"""

from __future__ import annotations

import copy
import dataclasses
from collections import Counter
from collections.abc import Sequence
from typing import Any

import torch
import torch.fx as fx
from torch.fx.passes.fake_tensor_prop import FakeTensorProp

from edgecc import ops as _ops  # noqa: F401  (registers edgecc:: composite ops with torch)
from edgecc import quant as _quant  # noqa: F401  (registers edgecc:: quantization ops)
from edgecc import sparsity as _sparsity  # noqa: F401  (registers edgecc::masked)
from edgecc.errors import InputSpecError, ProgramVerificationError, one_line

ORIGIN = "edgecc_origin"

# Ops kept whole instead of decomposed to core ATen: targets have good kernels for them and
# passes want to see them as one node (attention especially must stay recognizable).
KEEP_UNDECOMPOSED = (
    torch.ops.aten.linear.default,
    torch.ops.aten.scaled_dot_product_attention.default,
    torch.ops.aten.matmul.default,
    torch.ops.aten.gelu.default,
    torch.ops.aten.silu.default,
    torch.ops.aten.hardswish.default,
    torch.ops.aten.hardsigmoid.default,
)


def decomposition_table() -> Any:
    """Core-ATen decompositions minus the ops in ``KEEP_UNDECOMPOSED``."""
    table = torch.export.default_decompositions()
    for op in KEEP_UNDECOMPOSED:
        if op in table:
            del table[op]
    return table


def dtype_name(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")


def dtype_from_name(name: str) -> torch.dtype:
    dtype = getattr(torch, name, None)
    if not isinstance(dtype, torch.dtype):
        raise InputSpecError(f"unknown dtype '{name}': use a torch dtype name such as float32")
    return dtype


def concrete_dim(dim: Any) -> int:
    """An int for a static dim; the example (hint) value for a symbolic one."""
    if isinstance(dim, int):
        return dim
    hint = getattr(getattr(dim, "node", None), "hint", None)
    if hint is not None:
        return int(hint)
    return int(dim)


def concrete_shape(shape: Sequence[Any]) -> tuple[int, ...]:
    return tuple(concrete_dim(d) for d in shape)


@dataclasses.dataclass(frozen=True)
class TensorSpec:
    """Name, shape and dtype of one program input or output.

    A symbolic dimension is a string (its name); ``ranges`` gives its inclusive bounds.
    """

    name: str
    shape: tuple[int | str, ...]
    dtype: str
    ranges: tuple[tuple[str, int, int | None], ...] = ()

    def describe(self) -> str:
        dims = ",".join(str(d) for d in self.shape)
        return f"{self.name}: {self.dtype}[{dims}]"

    def to_json(self) -> dict[str, Any]:
        data: dict[str, Any] = {"name": self.name, "shape": list(self.shape), "dtype": self.dtype}
        if self.ranges:
            data["dynamic"] = {sym: {"min": lo, "max": hi} for sym, lo, hi in self.ranges}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TensorSpec:
        dynamic = data.get("dynamic", {})
        ranges = tuple((k, v["min"], v["max"]) for k, v in dynamic.items())
        return cls(data["name"], tuple(data["shape"]), data["dtype"], ranges)

    def check(self, value: Any, position: int) -> None:
        """Raise ``InputSpecError`` unless ``value`` is a tensor this spec accepts."""
        where = f"input {position} ('{self.name}')"
        if not isinstance(value, torch.Tensor):
            raise InputSpecError(f"{where} must be a tensor, got {type(value).__name__}")
        if dtype_name(value.dtype) != self.dtype:
            raise InputSpecError(
                f"{where} has dtype {dtype_name(value.dtype)}, expected {self.dtype}"
            )
        shape = tuple(value.shape)
        bounds = {sym: (lo, hi) for sym, lo, hi in self.ranges}
        ok = len(shape) == len(self.shape)
        seen: dict[str, int] = {}
        for got, want in zip(shape, self.shape) if ok else ():
            if isinstance(want, int):
                ok = ok and got == want
            else:
                lo, hi = bounds.get(want, (0, None))
                ok = ok and got >= lo and (hi is None or got <= hi)
                ok = ok and seen.setdefault(want, got) == got
        if not ok:
            want_text = "[" + ",".join(str(d) for d in self.shape) + "]"
            raise InputSpecError(
                f"{where} has shape {list(shape)}, expected {want_text}"
                + (f" with {', '.join(f'{s} in [{lo}, {hi}]' for s, lo, hi in self.ranges)}"
                   if self.ranges else "")
            )


def _spec_of(name: str, val: Any, ranges: dict[str, tuple[int, int | None]]) -> TensorSpec:
    if not isinstance(val, torch.Tensor):
        return TensorSpec(name, (), type(val).__name__)
    shape: list[int | str] = []
    used: list[tuple[str, int, int | None]] = []
    for d in val.shape:
        if isinstance(d, int):
            shape.append(d)
        else:
            sym = str(d)
            shape.append(sym)
            if sym in ranges and all(u[0] != sym for u in used):
                used.append((sym, *ranges[sym]))
    return TensorSpec(name, tuple(shape), dtype_name(val.dtype), tuple(used))


def _finite_int(value: Any) -> int | None:
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError, AttributeError):
        return None
    return number if abs(number) < 2**62 else None


def _symbol_ranges(exported: torch.export.ExportedProgram) -> dict[str, tuple[int, int | None]]:
    ranges: dict[str, tuple[int, int | None]] = {}
    for sym, vr in exported.range_constraints.items():
        ranges[str(sym)] = (_finite_int(vr.lower) or 0, _finite_int(vr.upper))
    return ranges


class Program:
    """A model in edgecc's IR: an ATen-level ``GraphModule`` plus what passes learn about it."""

    def __init__(
        self,
        graph_module: fx.GraphModule,
        input_specs: Sequence[TensorSpec],
        output_specs: Sequence[TensorSpec],
        example_inputs: Sequence[torch.Tensor],
        *,
        source: str = "<module>",
    ):
        self.graph_module = graph_module
        self.input_specs = tuple(input_specs)
        self.output_specs = tuple(output_specs)
        self.example_inputs = tuple(example_inputs)
        self.source = source

    # -- construction ---------------------------------------------------------------------
    @classmethod
    def from_exported(
        cls, exported: torch.export.ExportedProgram, *, source: str = "<module>"
    ) -> Program:
        """Build a ``Program`` from an ``ExportedProgram`` (decomposed to edgecc's ATen set)."""
        exported = exported.run_decompositions(decomposition_table())
        ranges = _symbol_ranges(exported)
        gm = exported.module()
        graph = gm.graph
        # The unlifted module checks input shapes with a guard submodule and (un)flattens
        # pytrees; edgecc checks inputs against its own specs and uses flat signatures.
        for node in list(graph.nodes):
            if node.op == "call_module" and not node.users:
                graph.erase_node(node)
        graph._codegen = fx.graph.CodeGen()
        for name in [n for n, _ in gm.named_children() if n == "_guards_fn"]:
            delattr(gm, name)
        for node in graph.nodes:
            node.meta.setdefault(ORIGIN, "frontend")
        gm.recompile()

        placeholders = [n for n in graph.nodes if n.op == "placeholder"]
        inputs = [_spec_of(str(n.target), n.meta.get("val"), ranges) for n in placeholders]
        out_node = graph.output_node()
        outputs = [
            _spec_of(f"output{i}" if len(out_node.args[0]) > 1 else "output",
                     a.meta.get("val") if isinstance(a, fx.Node) else a, ranges)
            for i, a in enumerate(out_node.args[0])
        ]
        example = _example_inputs(exported, placeholders)
        program = cls(gm, inputs, outputs, example, source=source)
        program.refresh_metadata()
        return program

    def rename_dims(self, names: dict[str, str]) -> None:
        """Give symbolic dimensions readable names in the input/output specs."""
        if not names:
            return

        def rename(spec: TensorSpec) -> TensorSpec:
            shape = tuple(names.get(d, d) if isinstance(d, str) else d for d in spec.shape)
            ranges = tuple((names.get(s, s), lo, hi) for s, lo, hi in spec.ranges)
            return dataclasses.replace(spec, shape=shape, ranges=ranges)

        self.input_specs = tuple(rename(s) for s in self.input_specs)
        self.output_specs = tuple(rename(s) for s in self.output_specs)

    # -- basic properties -----------------------------------------------------------------
    @property
    def graph(self) -> fx.Graph:
        return self.graph_module.graph

    def copy(self, *, share_weights: bool = False) -> Program:
        """A deep copy (graph and weights) that passes may mutate freely.

        ``share_weights=True``: the graph is copied but the weight tensors are the same
        objects (no weight memory). A pass may then *replace* a weight (``set_tensor``,
        ``add_constant``: the other program keeps its own), never change one in place;
        :meth:`shared_weights_changed` tells whether one was, :meth:`own_weights` clones
        them first (before a pass that trains).
        """
        shared = _weights(self.graph_module) if share_weights else {}
        memo: dict[int, Any] = {id(t): t for t in shared.values()}
        result = Program(
            copy.deepcopy(self.graph_module, memo),
            self.input_specs,
            self.output_specs,
            tuple(t.clone() for t in self.example_inputs),
            source=self.source,
        )
        result._shared = {id(t): (t, t._version) for t in shared.values()}
        # same code, layouts and metadata: what was propagated here holds in the copy
        result._verified = self._verified
        result._propagated = _carried_record(self, result)
        return result

    _shared: dict[int, tuple[torch.Tensor, int]] = {}  # id -> (tensor, version when shared)

    def shared_weights_changed(self) -> list[str]:
        """Names of weights shared with another program (``copy(share_weights=True)``)
        that were changed in place since (both programs see the change)."""
        return [name for name, t in _weights(self.graph_module).items()
                if id(t) in self._shared and self._shared[id(t)][0] is t
                and t._version != self._shared[id(t)][1]]

    def own_weights(self) -> int:
        """Clone every weight still shared with another program, so that it may be changed
        in place (ties kept); returns how many were cloned."""
        clones: dict[int, torch.Tensor] = {}
        for name, t in [*self.graph_module.named_parameters(remove_duplicate=False),
                        *self.graph_module.named_buffers(remove_duplicate=False)]:
            if t is None or id(t) not in self._shared or self._shared[id(t)][0] is not t:
                continue
            if id(t) not in clones:
                clones[id(t)] = (torch.nn.Parameter(t.detach().clone(),
                                                    requires_grad=t.requires_grad)
                                 if isinstance(t, torch.nn.Parameter) else t.clone())
            *path, leaf = name.split(".")
            owner = self.graph_module.get_submodule(".".join(path))
            if isinstance(t, torch.nn.Parameter):
                setattr(owner, leaf, clones[id(t)])
            else:
                owner.register_buffer(leaf, clones[id(t)])
        count = len(clones)
        self._shared = {}
        return count

    def nodes(self, op: str | None = None) -> list[fx.Node]:
        return [n for n in self.graph.nodes if op is None or n.op == op]

    def op_counts(self) -> Counter[str]:
        """How many times each operator is called, keyed like ``"aten.convolution"``."""
        return Counter(op_name(n) for n in self.graph.nodes if n.op == "call_function")

    # -- weights --------------------------------------------------------------------------
    def tensor(self, node: fx.Node) -> torch.Tensor:
        """The tensor a ``get_attr`` node refers to."""
        if node.op != "get_attr":
            raise ValueError(f"node {node.name} is a {node.op}, not a get_attr")
        return _get_attr(self.graph_module, str(node.target))

    def set_tensor(self, node: fx.Node, value: torch.Tensor) -> None:
        """Replace the tensor a ``get_attr`` node refers to, keeping its name (and whether
        it is a parameter or a buffer); every node reading it sees the new value."""
        *path, leaf = str(node.target).split(".")
        owner = self.graph_module.get_submodule(".".join(path)) if path else self.graph_module
        if isinstance(getattr(owner, leaf), torch.nn.Parameter):
            setattr(owner, leaf, torch.nn.Parameter(value, requires_grad=False))
        else:
            owner.register_buffer(leaf, value)

    def is_constant(self, node: Any) -> bool:
        return isinstance(node, fx.Node) and node.op == "get_attr"

    def add_constant(self, name_hint: str, value: torch.Tensor, *, before: fx.Node) -> fx.Node:
        """Attach ``value`` to the module under a fresh name; return a ``get_attr`` for it."""
        base = "".join(c if c.isalnum() else "_" for c in name_hint).strip("_") or "const"
        name, i = base, 0
        while hasattr(self.graph_module, name):
            i += 1
            name = f"{base}_{i}"
        value = value.detach()
        if value.is_floating_point():
            self.graph_module.register_parameter(
                name, torch.nn.Parameter(value, requires_grad=False)
            )
        else:
            self.graph_module.register_buffer(name, value)
        with self.graph.inserting_before(before):
            node = self.graph.get_attr(name)
        node.meta["val"] = _fake_like(self, value)
        return node

    # -- execution ------------------------------------------------------------------------
    def check_inputs(self, inputs: Sequence[Any]) -> None:
        if len(inputs) != len(self.input_specs):
            names = ", ".join(s.name for s in self.input_specs)
            raise InputSpecError(
                f"program takes {len(self.input_specs)} input(s) ({names}), got {len(inputs)}"
            )
        for i, (spec, value) in enumerate(zip(self.input_specs, inputs)):
            spec.check(value, i)

    def run(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Execute in PyTorch (eager) after checking the inputs; returns a flat tuple."""
        self.check_inputs(inputs)
        with torch.no_grad():
            out = self.graph_module(*inputs)
        return tuple(out) if isinstance(out, (tuple, list)) else (out,)

    __call__ = run

    # -- metadata and verification --------------------------------------------------------
    def fake_mode(self) -> Any:
        from torch._guards import detect_fake_mode

        vals = [n.meta.get("val") for n in self.nodes("placeholder")]
        mode = detect_fake_mode([v for v in vals if isinstance(v, torch.Tensor)])
        if mode is None:
            from torch._subclasses.fake_tensor import FakeTensorMode

            mode = FakeTensorMode()
        return mode

    def refresh_metadata(self) -> None:
        """Recompute every node's ``meta["val"]`` by fake-tensor propagation.

        Incremental after the first: a node whose op, arguments, weight layout and stored
        ``val`` are those of the last propagation, and none of whose inputs changed layout,
        keeps its ``val`` (it would compute the same one); every other node is propagated
        again. A pass that rewrote a few nodes re-propagates those and whatever their new
        layouts reach, not the whole graph."""
        mode = self.fake_mode()
        placeholders = self.nodes("placeholder")
        fakes = []
        for node in placeholders:
            val = node.meta.get("val")
            if not isinstance(val, torch.Tensor):
                val = mode.from_tensor(self.example_inputs[len(fakes)])
            fakes.append(val)
        previous = mode.allow_non_fake_inputs
        mode.allow_non_fake_inputs = True
        prop = _IncrementalFakeProp(self.graph_module, mode, self._propagated)
        try:
            # as run() executes: under autograd, a parameter-derived attention mask
            # (T5's, Swin's position bias) sends SDPA to another kernel with another
            # output layout, and the export's view of that output no longer fits
            with torch.no_grad():
                prop.propagate_dont_convert_inputs(*fakes)
        except Exception as exc:  # an op the pass built with wrong arguments
            self._propagated = {}
            raise ProgramVerificationError(
                f"shape propagation failed: {one_line(exc)}"
            ) from exc
        finally:
            mode.allow_non_fake_inputs = previous
        self._propagated = prop.record()
        self.propagated_nodes = prop.propagated
        # the metadata is now the propagated one of this graph: a verify right after (the
        # pass driver's, after a pass that refreshed) need not propagate again
        self._verified = self._metadata_fingerprint()

    # node -> (signature, val, layout) as the last refresh_metadata left them
    _propagated: dict[fx.Node, tuple[Any, Any, Any]] = {}
    propagated_nodes = 0  # operator and weight nodes the last refresh_metadata propagated

    # _metadata_fingerprint() after a verify or a refresh_metadata
    _verified: tuple[Any, ...] | None = None

    def _metadata_fingerprint(self) -> tuple[Any, ...]:
        """What shape propagation reads and writes: the graph's code, every weight's
        layout and every node's ``meta["val"]`` layout (not weight values)."""
        layout = _layout
        attrs = tuple(layout(_get_attr(self.graph_module, str(n.target)))
                      for n in self.graph.nodes if n.op == "get_attr")
        vals = tuple(layout(n.meta.get("val")) for n in self.graph.nodes)
        inputs = tuple(layout(t) for t in self.example_inputs)
        return self.graph.python_code("self").src, attrs, vals, inputs

    def verify(self) -> None:
        """Check the IR: graph lint, node kinds, weights present, signature unchanged."""
        try:
            self.graph.lint()
        except Exception as exc:
            raise ProgramVerificationError(f"graph lint failed: {one_line(exc)}") from exc
        for node in self.graph.nodes:
            if node.op in ("call_module", "call_method"):
                raise ProgramVerificationError(
                    f"node {node.name} is a {node.op}; edgecc IR allows only call_function"
                )
            if node.op == "get_attr":
                try:
                    _get_attr(self.graph_module, str(node.target))
                except AttributeError as exc:
                    raise ProgramVerificationError(
                        f"node {node.name} reads missing weight '{node.target}'"
                    ) from exc
        placeholders = self.nodes("placeholder")
        if len(placeholders) != len(self.input_specs):
            raise ProgramVerificationError(
                f"program has {len(placeholders)} inputs but its signature has "
                f"{len(self.input_specs)}"
            )
        # shape propagation again only where the graph, a weight's layout or a node's
        # metadata moved since the last verify or refresh_metadata (the same inputs give
        # the same metadata)
        fingerprint = self._metadata_fingerprint()
        if fingerprint != self._verified:
            stored = {n: n.meta.get("val") for n in self.graph.nodes
                      if n.op == "call_function"}
            self.refresh_metadata()
            for node, before in stored.items():
                after = node.meta.get("val")
                if isinstance(before, torch.Tensor) and isinstance(after, torch.Tensor):
                    if before.dtype != after.dtype or len(before.shape) != len(after.shape):
                        raise ProgramVerificationError(
                            f"node {node.name} metadata says {describe_val(before)} but it "
                            f"computes {describe_val(after)}"
                        )
            self._verified = self._metadata_fingerprint()
        outs = self.graph.output_node().args[0]
        if len(outs) != len(self.output_specs):
            raise ProgramVerificationError(
                f"program returns {len(outs)} outputs but its signature has "
                f"{len(self.output_specs)}"
            )
        for i, (arg, spec) in enumerate(zip(outs, self.output_specs)):
            val = arg.meta.get("val") if isinstance(arg, fx.Node) else arg
            if isinstance(val, torch.Tensor):
                if dtype_name(val.dtype) != spec.dtype or len(val.shape) != len(spec.shape):
                    raise ProgramVerificationError(
                        f"output {i} is now {describe_val(val)}, expected "
                        f"{spec.dtype}[{','.join(map(str, spec.shape))}]"
                    )

    # -- export ---------------------------------------------------------------------------
    def export(self) -> torch.export.ExportedProgram:
        """Re-export to an ``ExportedProgram`` (parameters lifted) for backends."""
        named: dict[str, Any] = {}
        for spec in self.input_specs:
            for sym, lo, hi in spec.ranges:
                bounds = {"min": max(lo, 0)} | ({"max": hi} if hi is not None else {})
                named[sym] = torch.export.Dim(_identifier(sym), **bounds)

        def spec_dims(pick: Any) -> tuple[Any, ...] | None:
            dynamic = [
                {i: pick(d) for i, d in enumerate(spec.shape) if isinstance(d, str)} or None
                for spec in self.input_specs
            ]
            return tuple(dynamic) if any(dynamic) else None

        args = tuple(self.example_inputs)
        with torch.no_grad():
            try:
                return torch.export.export(
                    self.graph_module, args,
                    dynamic_shapes=spec_dims(lambda d: named.get(d, torch.export.Dim.AUTO)))
            except Exception:
                # A pass may have made a declared range unprovable; let export infer it.
                return torch.export.export(
                    self.graph_module, args,
                    dynamic_shapes=spec_dims(lambda d: torch.export.Dim.AUTO))

    def exported(self) -> torch.export.ExportedProgram:
        """An ``ExportedProgram`` for a backend: the graph with its weights lifted directly
        (``edgecc.lift``, no trace) where the shapes are static, else :meth:`export`."""
        from edgecc.lift import lift

        return lift(self) or self.export()

    def save(self, path: str) -> None:
        torch.export.save(self.export(), path)

    # -- printing -------------------------------------------------------------------------
    def __str__(self) -> str:
        from edgecc.printer import format_program

        return format_program(self)

    def __repr__(self) -> str:
        ins = ", ".join(s.describe() for s in self.input_specs)
        return f"<Program {self.source} ({ins}) {sum(self.op_counts().values())} ops>"


def op_name(node: fx.Node) -> str:
    """A readable operator name: ``aten.convolution``, ``edgecc.conv_act``, ``getitem``."""
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        return f"{target.namespace}.{target._schema.name.split('::')[-1]}"
    if isinstance(target, torch._ops.OpOverloadPacket):
        return f"{target._qualified_op_name.replace('::', '.')}"
    return getattr(target, "__name__", str(target))


def _identifier(name: str) -> str:
    text = "".join(c if c.isalnum() else "_" for c in name)
    return text if text[:1].isalpha() else f"d_{text}"


def describe_val(val: Any) -> str:
    if isinstance(val, torch.Tensor):
        return f"{dtype_name(val.dtype)}[{','.join(str(d) for d in val.shape)}]"
    if isinstance(val, (tuple, list)):
        return "(" + ", ".join(describe_val(v) for v in val) + ")"
    return type(val).__name__


def _weights(module: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter and buffer by qualified name (a tied tensor once, first name)."""
    out: dict[str, torch.Tensor] = {}
    seen: set[int] = set()
    for name, t in [*module.named_parameters(remove_duplicate=False),
                    *module.named_buffers(remove_duplicate=False)]:
        if t is not None and id(t) not in seen:
            seen.add(id(t))
            out[name] = t
    return out


def _get_attr(module: torch.nn.Module, target: str) -> torch.Tensor:
    obj: Any = module
    for part in target.split("."):
        obj = getattr(obj, part)
    return obj


def _layout(v: Any) -> Any:
    """What shape propagation sees of a value: shape, dtype, strides, device."""
    if isinstance(v, torch.Tensor):
        # str: a symbolic size compared by == would add a guard, not say equal
        return (str(tuple(v.shape)), v.dtype, str(v.stride()), v.device.type)
    if isinstance(v, (list, tuple)):
        return tuple(_layout(x) for x in v)
    return type(v).__name__ if v is not None else None


def _frozen(arg: Any) -> Any:
    """A node's argument as a comparable value (nodes by identity)."""
    if isinstance(arg, (list, tuple)):
        return (type(arg).__name__, *(_frozen(a) for a in arg))
    if isinstance(arg, dict):
        return ("dict", *((k, _frozen(v)) for k, v in arg.items()))
    if isinstance(arg, slice):
        return ("slice", _frozen(arg.start), _frozen(arg.stop), _frozen(arg.step))
    return arg


def _signature(module: fx.GraphModule, n: fx.Node) -> Any:
    """What a node's propagated ``val`` depends on besides its inputs' values."""
    sig = (n.op, n.target, _frozen(n.args), _frozen(n.kwargs))
    if n.op == "get_attr":
        value = _get_attr(module, str(n.target))
        # a submodule (a subgraph) may have changed inside: never kept
        sig = (*sig, _layout(value) if isinstance(value, torch.Tensor) else object())
    return sig


def _carried_record(source: Program, copied: Program) -> dict[fx.Node, tuple[Any, Any, Any]]:
    """``source``'s propagation record moved onto ``copied``'s nodes (matched by name),
    for the nodes whose record still holds in ``source``."""
    if not source._propagated:
        return {}
    by_name = {n.name: n for n in copied.graph.nodes}
    live = {n.name: n for n in source.graph.nodes}  # not a node erased since (a name reused)
    out = {}
    for node, (sig, val, lay) in source._propagated.items():
        new = by_name.get(node.name)
        if (new is None or live.get(node.name) is not node or node.meta.get("val") is not val
                or new.meta.get("val") is None):
            continue
        try:
            holds = sig == _signature(source.graph_module, node)
        except Exception:  # noqa: BLE001  (an argument without a plain ==)
            holds = False
        if holds and _layout(new.meta["val"]) == lay:
            out[new] = (_signature(copied.graph_module, new), new.meta["val"], lay)
    return out


class _IncrementalFakeProp(FakeTensorProp):
    """``FakeTensorProp`` that keeps a node's ``val`` where nothing it depends on moved
    since ``last`` (``node -> (signature, val, layout)``, a previous run's ``record()``):
    same op and arguments, the same ``val`` object still stored, every input node's layout
    unchanged and, for a weight, the same tensor layout. Everything else is propagated;
    a node whose new layout differs from its old one makes its users propagate too."""

    def __init__(self, module: fx.GraphModule, mode: Any,
                 last: dict[fx.Node, tuple[Any, Any, Any]]) -> None:
        super().__init__(module, mode=mode)
        self.last = last
        self.changed: set[fx.Node] = set()
        self.propagated = 0
        self.seen: dict[fx.Node, tuple[Any, Any]] = {}  # node -> (signature, layout) now

    def run_node(self, n: fx.Node) -> Any:
        old = self.last.get(n)
        sig = _signature(self.module, n)
        if (old is not None and n.op not in ("placeholder", "output")
                and n.meta.get("val") is old[1] and old[1] is not None
                and not any(i in self.changed for i in n.all_input_nodes)):
            try:
                same = old[0] == sig
            except Exception:  # noqa: BLE001  (an argument without a plain ==)
                same = False
            if same:
                self.seen[n] = (sig, old[2])
                return old[1]
        self.propagated += n.op not in ("placeholder", "output")
        result = super().run_node(n)
        layout = _layout(n.meta.get("val"))
        if old is None or layout != old[2]:
            self.changed.add(n)
        self.seen[n] = (sig, layout)
        return result

    def record(self) -> dict[fx.Node, tuple[Any, Any, Any]]:
        """``node -> (signature, val, layout)`` of this run (every node was run)."""
        return {n: (sig, n.meta.get("val"), layout) for n, (sig, layout) in self.seen.items()}


def _fake_like(program: Program, value: torch.Tensor) -> Any:
    mode = program.fake_mode()
    previous = mode.allow_non_fake_inputs
    mode.allow_non_fake_inputs = True
    try:
        return mode.from_tensor(value, static_shapes=True)
    finally:
        mode.allow_non_fake_inputs = previous


def _example_inputs(
    exported: torch.export.ExportedProgram, placeholders: Sequence[fx.Node]
) -> tuple[torch.Tensor, ...]:
    stored = getattr(exported, "example_inputs", None)
    if stored is not None:
        args, kwargs = stored
        flat = list(args) + list(kwargs.values())
        if len(flat) == len(placeholders) and all(isinstance(t, torch.Tensor) for t in flat):
            return tuple(t.detach().clone() for t in flat)
    from edgecc.inputs import random_like

    return tuple(random_like(n.meta["val"]) for n in placeholders)
