"""dce: remove dead operators and the weights no operator reads any more.

Before::

    %a = aten.relu(%x)
    %unused = aten.mul(%x, @scale)      # result never used
    return (%a,)                        # module also holds @old.weight, read by nothing

After::

    %a = aten.relu(%x)
    return (%a,)                        # @scale and @old.weight are gone from the module

Operators with side effects (asserts, random number generation) are kept.
"""

from __future__ import annotations

from typing import Any

from edgecc.errors import PostconditionError
from edgecc.pass_base import NoOptions, Pass, PassContext, PassResult
from edgecc.program import Program, op_name
from edgecc.rewrite import is_pure


class DeadCodeElimination(Pass):
    """Remove dead operators and unused parameters/buffers (lossless)."""

    name = "dce"
    Options = NoOptions

    def run(self, program: Program, options: Any, context: PassContext) -> PassResult:
        graph = program.graph
        removed_nodes = 0
        changed = True
        while changed:
            changed = False
            for node in reversed(list(graph.nodes)):
                if node.users or node.op in ("placeholder", "output"):
                    continue
                if node.op == "get_attr" or is_pure(node):
                    graph.erase_node(node)
                    removed_nodes += 1
                    changed = True

        module = program.graph_module
        used = {str(n.target) for n in graph.nodes if n.op == "get_attr"}
        removed_params = 0
        removed_bytes = 0
        names = [n for n, _ in module.named_parameters(remove_duplicate=False)]
        names += [n for n, _ in module.named_buffers(remove_duplicate=False)]
        for name in names:
            if name in used:
                continue
            owner_path, _, attr = name.rpartition(".")
            owner = module.get_submodule(owner_path) if owner_path else module
            tensor = getattr(owner, attr, None)
            if tensor is None:
                continue
            removed_params += 1
            removed_bytes += tensor.numel() * tensor.element_size()
            delattr(owner, attr)
        if removed_params:
            module.delete_all_unused_submodules()
            _drop_empty_submodules(module)
        return PassResult(
            program,
            modified=bool(removed_nodes or removed_params),
            stats={"removed_nodes": removed_nodes, "removed_tensors": removed_params,
                   "removed_bytes": removed_bytes},
        )


    def ensures(self, program: Program, options: Any) -> None:
        """No unused pure operator or weight read remains, and no weight nothing reads."""
        for node in program.graph.nodes:
            if not node.users and (node.op == "get_attr" or is_pure(node)):
                raise PostconditionError(
                    f"'dce' left node {node.name} ({op_name(node)}), which nothing reads")
        used = {str(n.target) for n in program.graph.nodes if n.op == "get_attr"}
        module = program.graph_module
        for name, _ in [*module.named_parameters(), *module.named_buffers()]:
            if name not in used:
                raise PostconditionError(f"'dce' left weight '{name}', which nothing reads")


def _drop_empty_submodules(module: Any) -> None:
    for name, child in list(module.named_children()):
        _drop_empty_submodules(child)
        if not any(True for _ in child.parameters()) and not any(True for _ in child.buffers()) \
                and not list(child.children()):
            delattr(module, name)
