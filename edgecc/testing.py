"""Helpers for testing passes (edgecc's own tests and third-party passes).

    result = FoldBatchNorm()(program.copy())
    assert op_counts(result.program)["aten._native_batch_norm_legit_no_training"] == 0
    assert_close(program, result.program, samples=4)        # fresh random inputs

    w, b = torch.empty(6, 3, 3, 3), torch.empty(6)         # stand for the folded weights
    def expected(x):                                        # Before/Expected, as TVM Relax
        return torch.conv2d(x, w, b)
    assert_structural_equal(result.program, expected)
"""

from __future__ import annotations

import difflib
from collections import Counter
from collections.abc import Callable
from typing import Any

import torch
import torch.fx as fx

from edgecc.inputs import fresh_inputs
from edgecc.metrics import compare_outputs
from edgecc.program import Program, dtype_name


def op_counts(program: Program) -> Counter[str]:
    return program.op_counts()


def assert_close(expected: Program, actual: Program, *, samples: int = 4, atol: float = 1e-5,
                 rtol: float = 1e-5, seed: int = 1234) -> dict:
    """Run both programs on ``samples`` fresh random inputs and assert allclose."""
    refs, outs = [], []
    for i in range(samples):
        x = fresh_inputs(expected, seed=seed + i)
        refs.append(expected.run(*x))
        outs.append(actual.run(*x))
    metrics = compare_outputs(refs, outs, atol=atol, rtol=rtol)
    assert metrics["passed"], (
        f"outputs differ: max-abs {metrics['max_abs']:.3g}, max-rel {metrics['max_rel']:.3g} "
        f"(atol={atol}, rtol={rtol})"
    )
    return metrics


# -- structural equality ------------------------------------------------------------------

class _Function(torch.nn.Module):
    """A plain function as a module, so ``torch.export`` can trace it."""

    def __init__(self, fn: Callable[..., Any]):
        super().__init__()
        self.fn = fn

    def forward(self, *inputs: Any) -> Any:
        return self.fn(*inputs)


def trace_function(fn: Callable[..., Any], example_inputs: tuple[Any, ...]) -> Program:
    """Trace a plain function of tensors into a ``Program``; tensors it closes over become
    constants (weights)."""
    from edgecc.frontend import trace

    return trace(_Function(fn), example_inputs)


def structural_listing(program: Program) -> tuple[list[str], list[torch.Tensor]]:
    """``program`` as canonical text lines, plus its constants in the same order.

    Nodes are numbered in post-order from the outputs (arguments left to right), so two
    programs computing the same operators in the same dataflow list the same lines whatever
    their node names and order; nodes no output reads follow under a marker. Constants show
    their dtype and shape, computed nodes their dtype, floats 6 significant digits.
    """
    names: dict[fx.Node, str] = {}
    lines: list[str] = []
    constants: list[torch.Tensor] = []
    inputs = program.nodes("placeholder")
    for i, node in enumerate(inputs):
        names[node] = f"%in{i}"
    lines.append("inputs(" + ", ".join(_dtype(n) for n in inputs) + ")")

    def emit(node: fx.Node) -> None:
        name = names[node] = f"%{len(names) - len(inputs)}"
        if node.op == "get_attr":
            value = program.tensor(node)
            constants.append(value)
            shape = ", ".join(str(d) for d in value.shape)
            lines.append(f"{name} = constant {dtype_name(value.dtype)}[{shape}]")
            return
        args = [a if k is None else f"{k}={a}" for k, a in _arguments(node, names)]
        lines.append(f"{name} = {_target(node)}({', '.join(args)}) -> {_dtype(node)}")

    def visit(root: fx.Node) -> None:
        stack = [(root, False)]
        while stack:
            node, ready = stack.pop()
            if node in names:
                continue
            if ready:
                emit(node)
                continue
            stack.append((node, True))
            stack.extend((a, False) for a in reversed(node.all_input_nodes) if a not in names)

    output = program.graph.output_node()
    for arg in output.all_input_nodes:
        visit(arg)
    lines.append(f"return {_format(output.args[0], names)}")
    dead = [n for n in program.graph.nodes if n.op == "call_function" and n not in names]
    if dead:
        lines.append("# not read by any output:")
        for node in dead:
            visit(node)
    return lines, constants


def assert_structural_equal(program: Program, expected: Program | Callable[..., Any], *,
                            values: bool = False, atol: float = 1e-6,
                            rtol: float = 1e-6) -> None:
    """Assert that ``program`` computes the same operators in the same dataflow structure
    as ``expected`` (node names and order ignored).

    ``expected`` is a ``Program``, or a plain function of the program's inputs, traced on
    the program's example inputs (write the expected program in PyTorch; tensors it closes
    over stand for the program's weights). Weights are compared by dtype and shape, and by
    value too with ``values=True`` (``atol`` / ``rtol``). A program with symbolic shapes
    lists its size computations: compare it with a ``Program``. On failure the message is a
    unified diff of the two canonical listings (``structural_listing``).
    """
    if not isinstance(expected, Program):
        expected = trace_function(expected, tuple(program.example_inputs))
    want, want_constants = structural_listing(expected)
    got, got_constants = structural_listing(program)
    if want != got:
        diff = "\n".join(difflib.unified_diff(want, got, "expected", "actual", lineterm=""))
        raise AssertionError(f"programs differ in structure (- expected, + actual):\n{diff}")
    if values:
        for i, (w, g) in enumerate(zip(want_constants, got_constants)):
            torch.testing.assert_close(g, w, atol=atol, rtol=rtol,
                                       msg=lambda m, i=i: f"constant #{i + 1} differs: {m}")


def _target(node: fx.Node) -> str:
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        return f"{target.namespace}.{target._schema.name.split('::')[-1]}.{target._overloadname}"
    return getattr(target, "__name__", str(target))


def _arguments(node: fx.Node, names: dict[fx.Node, str]) -> list[tuple[str | None, str]]:
    """``(keyword or None, text)`` of each argument; an ATen operator's are completed with
    its schema's defaults, so ``sdpa(q, k, v, m)`` and ``sdpa(q, k, v, m, 0.0, False)`` list
    the same."""
    target = node.target
    if not isinstance(target, torch._ops.OpOverload):
        return ([(None, _format(a, names)) for a in node.args] +
                [(k, _format(v, names)) for k, v in node.kwargs.items()])
    out = []
    for i, arg in enumerate(target._schema.arguments):
        if i < len(node.args):
            value = node.args[i]
        elif arg.name in node.kwargs:
            value = node.kwargs[arg.name]
        else:
            value = arg.default_value if arg.has_default_value() else None
        out.append((arg.name if arg.kwarg_only else None, _format(value, names)))
    return out


def _dtype(node: fx.Node) -> str:
    def one(v: Any) -> str:
        if isinstance(v, torch.Tensor):
            return dtype_name(v.dtype)
        if isinstance(v, (tuple, list)):
            return "(" + ", ".join(one(x) for x in v) + ")"
        return type(v).__name__ if v is not None else "?"

    return one(node.meta.get("val"))


def _format(value: Any, names: dict[fx.Node, str]) -> str:
    if isinstance(value, fx.Node):
        return names[value]
    if isinstance(value, (list, tuple)):
        return "[" + ", ".join(_format(v, names) for v in value) + "]"
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {_format(v, names)}" for k, v in value.items()) + "}"
    if isinstance(value, bool) or value is None:
        return str(value)
    if isinstance(value, float):
        return repr(float(f"{value:.6g}"))
    if isinstance(value, str):
        return repr(value)
    return str(value)
