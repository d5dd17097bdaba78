"""An ``ExportedProgram`` lifted straight from a ``Program``'s graph, without tracing it again.

``Program.export`` runs ``torch.export`` on the program's graph module: a whole non-strict
trace with fake tensors (all-MiniLM-L6-v2's 300-node graph: 0.7 s, its GPTQ build's 1.2 s, in
every host / arm64 / NPU lowering). The graph is already ATen with ``val`` metadata on every
node, so for a static program the lifted form is only a rewrite of its weights:

    before (Program: unlifted)              after (ExportedProgram: lifted)
    %x = placeholder[x]                     %p_fc_weight = placeholder[p_fc_weight]
    %w = get_attr[fc.weight]                %x = placeholder[x]
    %y = aten.linear(%x, %w)                %y = aten.linear(%x, %p_fc_weight)
    return (%y,)                            return (%y,)
                                            signature: p_fc_weight <- PARAMETER fc.weight

Kinds as ``torch.export`` gives them: an ``nn.Parameter`` is a PARAMETER, a registered buffer
a BUFFER (a non-persistent one's tensor in ``ep.constants``), any other tensor attribute a
CONSTANT_TENSOR (``ep.constants``). Placeholder names
follow its ``p_`` / ``b_`` / ``c_`` prefixes. The weights are the program's tensors (shared,
not copied).

Not lifted (``lift`` returns None; the caller re-traces with ``Program.export``): a program
with symbolic dimensions (its range constraints come from a trace), a ``get_attr`` that is not
a tensor, an output that is not a node, or a form ``ExportedProgram``'s verifier refuses.
``tests/test_lift.py`` checks the TVM Relax module imported from each form is structurally
equal.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.fx as fx
from torch.export.exported_program import ExportedProgram, ModuleCallEntry, ModuleCallSignature
from torch.export.graph_signature import (ExportGraphSignature, InputKind, InputSpec, OutputKind,
                                          OutputSpec, TensorArgument)
from torch.utils import _pytree as pytree

from edgecc.program import _get_attr


def _kind(module: torch.nn.Module, target: str, value: Any
          ) -> tuple[InputKind, bool | None] | None:
    """The input kind ``torch.export`` gives the attribute, with a buffer's persistence."""
    if isinstance(value, torch.nn.Parameter):
        return InputKind.PARAMETER, None
    if not isinstance(value, torch.Tensor):
        return None
    owner_name, _, leaf = target.rpartition(".")
    owner = module.get_submodule(owner_name) if owner_name else module
    if leaf in owner._buffers:
        return InputKind.BUFFER, leaf not in owner._non_persistent_buffers_set
    return InputKind.CONSTANT_TENSOR, None


_PREFIX = {InputKind.PARAMETER: "p_", InputKind.BUFFER: "b_", InputKind.CONSTANT_TENSOR: "c_"}


def lift(program: Any) -> ExportedProgram | None:
    """``program`` (an ``edgecc.program.Program``) as an ``ExportedProgram`` with its weights
    lifted to inputs, or None where only a trace gives one (symbolic shapes, see above)."""
    if any(isinstance(d, str) for spec in program.input_specs for d in spec.shape):
        return None
    gm: fx.GraphModule = program.graph_module
    old = gm.graph
    weights: dict[str, tuple[tuple[InputKind, bool | None], torch.Tensor]] = {}
    for node in old.nodes:
        if node.op == "get_attr" and node.target not in weights:
            try:
                value = _get_attr(gm, node.target)
            except AttributeError:
                return None
            kind = _kind(gm, node.target, value)
            if kind is None:
                return None
            weights[node.target] = (kind, value)
        elif node.op not in ("placeholder", "get_attr", "call_function", "output"):
            return None
    outputs = old.output_node().args[0]
    if not isinstance(outputs, (tuple, list)) or not all(
            isinstance(o, fx.Node) for o in outputs):
        return None

    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    input_specs: list[InputSpec] = []
    lifted: dict[str, fx.Node] = {}
    mode = program.fake_mode()
    for target, ((kind, persistent), value) in weights.items():
        p = graph.placeholder(_PREFIX[kind] + target.replace(".", "_"))
        p.meta["val"] = mode.from_tensor(value, static_shapes=True)
        lifted[target] = p
        input_specs.append(InputSpec(kind, TensorArgument(p.name), target,
                                     persistent=persistent))
    user_inputs = []
    for node in old.nodes:
        if node.op == "placeholder":
            env[node] = graph.node_copy(node)
            user_inputs.append(env[node])
            input_specs.append(InputSpec(InputKind.USER_INPUT, TensorArgument(env[node].name),
                                         None))
    for node in old.nodes:
        if node.op == "get_attr":
            env[node] = lifted[node.target]
        elif node.op == "call_function":
            env[node] = graph.node_copy(node, lambda n: env[n])
    out = tuple(env[o] for o in outputs)
    graph.output(out)
    output_specs = [OutputSpec(OutputKind.USER_OUTPUT, TensorArgument(o.name), None)
                    for o in out]

    # as torch.export keeps them: parameters and persistent buffers in the state dict,
    # non-persistent buffers and constant tensors in ``constants``
    state_dict = {t: v for t, ((k, persistent), v) in weights.items()
                  if k is InputKind.PARAMETER or persistent}
    constants = {t: v for t, (_, v) in weights.items() if t not in state_dict}
    example = tuple(program.example_inputs)
    in_spec = pytree.tree_flatten((example, {}))[1]
    out_spec = pytree.tree_flatten(tuple(range(len(out))))[1]
    call_graph = [ModuleCallEntry("", ModuleCallSignature(
        inputs=[TensorArgument(n.name) for n in user_inputs],
        outputs=[TensorArgument(o.name) for o in out], in_spec=in_spec, out_spec=out_spec))]
    try:  # torch.export's own checks (the verifier): a form they refuse is traced instead
        return ExportedProgram(torch.nn.Module(), graph,
                               ExportGraphSignature(input_specs, output_specs), state_dict, {},
                               call_graph, (example, {}), constants)
    except Exception:  # noqa: BLE001
        return None


__all__ = ["lift"]
