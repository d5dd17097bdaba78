"""A readable text form of a ``Program``: one line per operator, with shapes and provenance.

    program(x: float32[batch,3,32,32]) -> (output: float32[batch,10])
      %conv_act = edgecc.conv_act(%x, @stem.weight:float32[16,3,3,3], ..., 'relu') -> float32[batch,16,32,32]   # stem  [fuse]
      ...
      return (%linear,)
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx

from edgecc.program import ORIGIN, Program, describe_val, op_name


def _arg(program: Program, a: Any) -> str:
    if isinstance(a, fx.Node):
        if a.op == "get_attr":
            return f"@{a.target}:{describe_val(program.tensor(a))}"
        return f"%{a.name}"
    if isinstance(a, (list, tuple)):
        inner = ", ".join(_arg(program, x) for x in a)
        return f"[{inner}]"
    if isinstance(a, torch.dtype):
        return str(a).removeprefix("torch.")
    return repr(a)


def source_module(node: fx.Node) -> str:
    """The dotted path of the innermost source module that produced ``node``."""
    stack = node.meta.get("nn_module_stack") or {}
    stack = {k: v for k, v in stack.items() if not str(k).startswith("_empty")}
    if not stack:
        return ""
    path, _cls = list(stack.values())[-1]
    return str(path).removeprefix("L['self'].").removeprefix("L__self__.")


def format_program(program: Program) -> str:
    ins = ", ".join(s.describe() for s in program.input_specs)
    outs = ", ".join(s.describe() for s in program.output_specs)
    lines = [f"program({ins}) -> ({outs})"]
    for node in program.graph.nodes:
        if node.op == "call_function":
            args = [_arg(program, a) for a in node.args]
            args += [f"{k}={_arg(program, v)}" for k, v in node.kwargs.items()]
            text = f"  %{node.name} = {op_name(node)}({', '.join(args)})"
            text += f" -> {describe_val(node.meta.get('val'))}"
            notes = [source_module(node)]
            origin = node.meta.get(ORIGIN, "")
            if origin and origin != "frontend":
                notes.append(f"[{origin}]")
            notes = [n for n in notes if n]
            if notes:
                text += "   # " + "  ".join(notes)
            lines.append(text)
        elif node.op == "output":
            lines.append(f"  return ({', '.join(_arg(program, a) for a in node.args[0])},)")
    return "\n".join(lines)
