"""``load_onnx``: validate, fold constant subgraphs, build a module, trace it into a Program."""

from __future__ import annotations

import keyword
import re
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from edgecc.errors import InputSpecError, ModelLoadError, one_line
from edgecc.onnx_import.converter import ONNX_DTYPES, Ctx, ShapeValue, numpy_to_torch
from edgecc.onnx_import.ops.quantized import output_format
from edgecc.onnx_import.registry import lookup, node_key
from edgecc.onnx_import.validate import (
    UPGRADE_TO,
    check_structure,
    check_supported,
    opset_of,
    read_model,
    upgrade_if_old,
)
from edgecc.program import Program

if TYPE_CHECKING:
    from edgecc.onnx_import.self_check import ImportCheckOptions

FOLD_LIMIT_BYTES = 64 << 20  # constant results larger than this stay runtime operators
DYNAMIC_EXAMPLE = 2  # example size for a symbolic dimension (0 and 1 would be specialized)


def _identifier(name: str, taken: set[str]) -> str:
    base = re.sub(r"\W", "_", name) or "t"
    if base[0].isdigit() or keyword.iskeyword(base):
        base = f"t_{base}"
    out, i = base, 0
    while out in taken:
        i += 1
        out = f"{base}_{i}"
    taken.add(out)
    return out


class OnnxModule(torch.nn.Module):
    """Runs ONNX nodes with the converters; constants are this module's parameters/buffers."""

    def __init__(self, nodes: Sequence[Any], opset: int, static: Mapping[str, torch.Tensor],
                 formats: Mapping[str, str], inputs: Sequence[str], outputs: Sequence[str]):
        super().__init__()
        self.nodes = list(nodes)
        self.opset = opset
        # Import-time values as numpy: torch.export fakes the module's tensors while tracing,
        # and converters need the real numbers (shapes, axes, pads).
        self.static_values = {k: v.detach().numpy() for k, v in static.items()
                              if v.dtype not in _NOT_NUMPY}
        self.formats = dict(formats)
        self.input_names = list(inputs)
        self.output_names = list(outputs)
        self.record: dict[str, Any] | None = None
        taken: set[str] = set()
        self.attr_of: dict[str, str] = {}
        needed = {n for node in nodes for n in node.input if n in static}
        needed |= {o for o in outputs if o in static}
        for name in sorted(needed):
            attr = _identifier(f"w_{name}", taken)
            value = static[name]
            if value.is_floating_point():
                self.register_parameter(attr, torch.nn.Parameter(value, requires_grad=False))
            else:
                self.register_buffer(attr, value)
            self.attr_of[name] = attr

    def run(self, *args: torch.Tensor) -> tuple[torch.Tensor, ...]:
        env: dict[str, Any] = dict(zip(self.input_names, args))
        for name, attr in self.attr_of.items():
            env[name] = getattr(self, attr)
        queue = list(reversed(self.nodes))
        while queue:
            node = queue.pop()
            if node.op_type == "Constant":  # inside an inlined If branch
                env[node.output[0]] = _constant_value(node)
                continue
            cond = env.get(node.input[0]) if node.op_type == "If" else None
            if isinstance(cond, ShapeValue) and all(isinstance(v, (bool, int)) for v in cond.values):
                queue.extend(reversed(_inline_if(node, bool(cond.values[0]))))
                continue
            fn = lookup(node_key(node), self.opset)
            ctx = Ctx(node, self.opset, self.static_values, self.formats)
            ins = [env.get(n) if n else None for n in node.input]
            try:
                out = fn(ctx, *ins)
            except Exception as exc:
                raise ModelLoadError(
                    f"ONNX node '{node.name or node.op_type}' ({node.op_type}, opset "
                    f"{self.opset}) could not be converted: {one_line(exc)}"
                ) from exc
            outs = out if isinstance(out, tuple) else (out,)
            for name, value in zip(node.output, outs):
                if name:
                    env[name] = value
        if self.record is not None:  # the import check compares every tensor
            self.record.update(env)
        result = []
        for name in self.output_names:
            value = env[name]
            result.append(value.tensor() if isinstance(value, ShapeValue) else value)
        return tuple(result)


_NOT_NUMPY = (torch.bfloat16, torch.float8_e4m3fn, torch.float8_e5m2)


def _load_initializer(init: Any, dq_inputs: set[str], formats: dict[str, str]) -> torch.Tensor:
    """An initializer as a torch tensor; 4-bit ones packed (as edgecc stores them) when a
    DequantizeLinear reads them (their format recorded in ``formats``), float8 ones in
    torch's float8 dtypes."""
    from onnx import TensorProto, numpy_helper

    array = numpy_helper.to_array(init)
    if init.data_type in (TensorProto.INT4, TensorProto.UINT4):
        fmt = "int4" if init.data_type == TensorProto.INT4 else "uint4"
        values = torch.from_numpy(array.astype(np.int8 if fmt == "int4" else np.uint8))
        formats[init.name] = fmt
        if init.name in dq_inputs and values.dim() and values.shape[-1] % 2 == 0:
            from edgecc.quant import pack_int4

            return pack_int4(values)
        return values
    if init.data_type in (TensorProto.FLOAT8E4M3FN, TensorProto.FLOAT8E5M2):
        dtype = (torch.float8_e4m3fn if init.data_type == TensorProto.FLOAT8E4M3FN
                 else torch.float8_e5m2)
        return torch.from_numpy(array.astype(np.float32)).to(dtype)
    return numpy_to_torch(array)


def _module_class(input_names: Sequence[str]) -> type[OnnxModule]:
    """A subclass whose ``forward`` takes the graph inputs by name (for torch.export)."""
    params = ", ".join(input_names)
    namespace: dict[str, Any] = {}
    exec(f"def forward(self, {params}):\n    return self.run({params})\n", namespace)  # noqa: S102
    return type("OnnxModel", (OnnxModule,), {"forward": namespace["forward"]})


def _fold_constants(nodes: Sequence[Any], opset: int, static: dict[str, torch.Tensor],
                    formats: dict[str, str], shapes: dict[str, list[int | None]]) -> list[Any]:
    """Evaluate nodes whose inputs are all known (adding them to ``static``, and the formats
    of folded quantize outputs to ``formats``); return the nodes left for run time."""
    remaining = []
    queue = list(reversed(nodes))
    while queue:
        node = queue.pop()
        if node.op_type == "If" and node.input[0] in static:
            queue.extend(reversed(_inline_if(node, bool(static[node.input[0]].reshape(-1)[0]))))
            continue
        if node.op_type == "Constant":
            static[node.output[0]] = _constant_value(node)
            continue
        if node.op_type == "Shape" and node.input[0] not in static:
            dims = shapes.get(node.input[0])
            if dims is not None and all(isinstance(d, int) for d in dims) and not any(
                    a.name in ("start", "end") for a in node.attribute):
                static[node.output[0]] = torch.tensor(dims, dtype=torch.int64)
                continue
        inputs = [n for n in node.input if n]
        if not inputs or not all(n in static for n in inputs):
            remaining.append(node)
            continue
        if node.op_type == "DequantizeLinear" and static[node.input[0]].dtype != torch.int32:
            remaining.append(node)  # keep quantized weights stored as integers
            continue
        try:
            with torch.no_grad():
                out = lookup(node_key(node), opset)(Ctx(node, opset, static, formats),
                                                  *[static.get(n) if n else None for n in node.input])
        except Exception:
            remaining.append(node)  # evaluated at run time instead; errors surface there
            continue
        outs = out if isinstance(out, tuple) else (out,)
        values = [o.tensor() if isinstance(o, ShapeValue) else o for o in outs]
        if any(not isinstance(v, torch.Tensor) for v in values) or \
                sum(v.numel() * v.element_size() for v in values) > FOLD_LIMIT_BYTES:
            remaining.append(node)
            continue
        for name, value in zip(node.output, values):
            if name:
                static[name] = value.detach().contiguous()
        if node.op_type == "QuantizeLinear":
            zp = static.get(node.input[2]) if len(node.input) > 2 and node.input[2] else None
            formats[node.output[0]] = output_format(Ctx(node, opset, static, formats), zp)
    return remaining


def _constant_value(node: Any) -> torch.Tensor:
    from onnx import helper, numpy_helper

    attr = {a.name: a for a in node.attribute}
    if "value" in attr:
        return numpy_to_torch(numpy_helper.to_array(attr["value"].t))
    (a,) = node.attribute
    return torch.tensor(helper.get_attribute_value(a))


def _inline_if(node: Any, condition: bool) -> list[Any]:
    """The nodes of the branch an ``If`` with an import-time condition takes, its outputs
    renamed to the ``If``'s (torch.onnx's opset-11 exports guard on input ranks this way:
    ``LocalResponseNorm`` is ``If(Equal(rank, 3))``)."""
    from onnx import helper

    branch = next(helper.get_attribute_value(a) for a in node.attribute
                  if a.name == ("then_branch" if condition else "else_branch"))
    nodes = list(branch.node)
    for inner, outer in zip(branch.output, node.output):
        if outer:
            nodes.append(helper.make_node("Identity", [inner.name], [outer],
                                          name=f"{node.name}/{inner.name}"))
    return nodes


def _inferred_shapes(model: Any) -> dict[str, list[int | None]]:
    import onnx

    try:
        inferred = onnx.shape_inference.infer_shapes(model, strict_mode=False)
    except Exception:
        return {}
    shapes: dict[str, list[int | None]] = {}
    for vi in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        t = vi.type.tensor_type
        if t.HasField("shape"):
            shapes[vi.name] = [d.dim_value if d.HasField("dim_value") else None for d in t.shape.dim]
    return shapes


def _index_range(nodes: Sequence[Any], name: str, static: dict[str, torch.Tensor]) -> int:
    """Upper bound for an integer input: the size of the table it gathers from, else 2."""
    sizes = []
    for node in nodes:
        if node.op_type == "Gather" and len(node.input) > 1 and node.input[1] == name \
                and node.input[0] in static:
            axis = next((a.i for a in node.attribute if a.name == "axis"), 0)
            sizes.append(int(static[node.input[0]].shape[axis]))
    return max(min(sizes), 1) if sizes else 2


def load_onnx(path: str, *, input_shapes: Mapping[str, Sequence[int]] | None = None,
              check: ImportCheckOptions | None = None) -> Program:
    """Import an ONNX file. ``input_shapes`` fixes the shapes of named inputs (overriding
    their symbolic dimensions); other symbolic dimensions stay dynamic.

    The import checks itself (``self_check.py``): the original file runs in onnxruntime and
    the program in PyTorch on fresh random inputs, and an import that disagrees is refused,
    naming the first node that diverges. ``check=ImportCheckOptions(enabled=False)`` skips it.
    """
    from edgecc.onnx_import.self_check import ImportCheckOptions, check_import

    program, module = import_onnx(path, input_shapes=input_shapes)
    options = check if check is not None else ImportCheckOptions()
    record = check_import(path, program, module, options)
    program.graph_module.meta[IMPORT_CHECK_KEY] = record
    return program


IMPORT_CHECK_KEY = "edgecc.import_check"  # graph_module.meta key of the check's record


def import_onnx(path: str, *, input_shapes: Mapping[str, Sequence[int]] | None = None
                ) -> tuple[Program, OnnxModule]:
    """The imported program, and the module of converters it was traced from (what the
    import check runs node by node to find where an import diverges)."""
    import edgecc
    from edgecc.passes import ConstantFold, DeadCodeElimination

    module, examples, dynamic = build_module(path, input_shapes=input_shapes)
    try:
        program = edgecc.trace(module, tuple(examples),
                               dynamic_shapes=tuple(dynamic) if any(dynamic) else None)
    except ModelLoadError as exc:
        raise ModelLoadError(f"'{path}': {exc}") from exc
    program.source = path.rsplit("/", 1)[-1]
    # Weights computed inside the graph (Cast/Transpose of initializers, ...) become real
    # parameters that compression passes can see.
    ConstantFold()(program)
    DeadCodeElimination()(program)
    return program, module


def build_module(path: str, *, input_shapes: Mapping[str, Sequence[int]] | None = None
                 ) -> tuple[OnnxModule, list[torch.Tensor], list[Any]]:
    """The converters' module for ``path`` (callable eagerly: the converter property tests
    run it without tracing), its example inputs and their dynamic dimensions."""
    model = read_model(path)
    opset = opset_of(model, path)
    nodes = check_structure(model, path)
    model, opset = upgrade_if_old(model, opset, path)
    nodes = check_structure(model, path) if opset == UPGRADE_TO else nodes
    check_supported(nodes, opset, path)


    static: dict[str, torch.Tensor] = {}
    formats: dict[str, str] = {}
    dq_inputs = {n.input[0] for n in nodes if n.op_type == "DequantizeLinear"}
    for init in model.graph.initializer:
        try:
            static[init.name] = _load_initializer(init, dq_inputs, formats)
        except Exception as exc:
            raise ModelLoadError(f"'{path}': initializer '{init.name}': {one_line(exc)}") from exc
    graph_inputs = [i for i in model.graph.input if i.name not in static]
    overrides = dict(input_shapes or {})
    unknown = set(overrides) - {i.name for i in graph_inputs}
    if unknown:
        raise InputSpecError(
            f"--input-shape names {sorted(unknown)}, but the model's inputs are "
            f"{[i.name for i in graph_inputs]}"
        )

    examples, dynamic, dims_by_param = [], [], {}
    taken: set[str] = set()
    names = []
    for inp in graph_inputs:
        names.append(_identifier(inp.name, taken))
        t = inp.type.tensor_type
        dtype = ONNX_DTYPES.get(t.elem_type)
        if dtype is None:
            raise ModelLoadError(f"'{path}': input '{inp.name}' has unsupported element type {t.elem_type}")
        if inp.name in overrides:
            shape = [int(d) for d in overrides[inp.name]]
            spec = None
        else:
            shape, spec = [], {}
            for axis, d in enumerate(t.shape.dim):
                if d.HasField("dim_value"):
                    shape.append(d.dim_value)
                else:
                    param = d.dim_param or f"{inp.name}_dim{axis}"
                    dims_by_param.setdefault(param, torch.export.Dim(_identifier(param, set())))
                    spec[axis] = dims_by_param[param]
                    shape.append(DYNAMIC_EXAMPLE)
        if dtype.is_floating_point:
            examples.append(torch.randn(shape).to(dtype))
        elif dtype == torch.bool:
            examples.append(torch.ones(shape, dtype=dtype))
        else:  # ids index a table: draw from its valid range so examples are realistic
            high = _index_range(model.graph.node, inp.name, static)
            examples.append(torch.randint(0, high, shape, dtype=dtype,
                                          generator=torch.Generator().manual_seed(0)))
        dynamic.append(spec or None)

    shapes = _inferred_shapes(model)
    for inp, ex in zip(graph_inputs, examples):
        shapes[inp.name] = list(ex.shape) if inp.name in overrides else shapes.get(inp.name, [])
    remaining = _fold_constants(nodes, opset, static, formats, shapes)
    outputs = [o.name for o in model.graph.output]
    module = _module_class(names)(remaining, opset, static, formats,
                                  [i.name for i in graph_inputs], outputs)
    return module, examples, dynamic
