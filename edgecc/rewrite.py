"""Helpers for writing graph rewrites on a ``Program`` (used by edgecc's passes and plugins)."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
import torch.fx as fx

from edgecc.program import ORIGIN

aten = torch.ops.aten

PROVENANCE_KEYS = ("nn_module_stack", "stack_trace", "source_fn_stack", "from_node")


def is_op(node: Any, *ops: Any) -> bool:
    """True if ``node`` calls one of ``ops`` (OpOverloads, or OpOverloadPackets)."""
    if not isinstance(node, fx.Node) or node.op != "call_function":
        return False
    target = node.target
    packet = getattr(target, "overloadpacket", None)
    return any(target is op or packet is op for op in ops)


def copy_provenance(new: fx.Node, old: fx.Node) -> None:
    """Give ``new`` the source-module provenance of the node it replaces."""
    for key in PROVENANCE_KEYS:
        if key in old.meta and key not in new.meta:
            new.meta[key] = old.meta[key]


def replace_node(old: fx.Node, new: fx.Node, graph: fx.Graph) -> None:
    """Route every use of ``old`` to ``new`` and erase ``old``."""
    copy_provenance(new, old)
    old.replace_all_uses_with(new)
    graph.erase_node(old)


def user_count(node: fx.Node) -> int:
    return len(node.users)


def only_user(node: fx.Node) -> fx.Node | None:
    users = list(node.users)
    return users[0] if len(users) == 1 else None


def val(node: Any) -> Any:
    return node.meta.get("val") if isinstance(node, fx.Node) else None


def same_shape(a: Any, b: Any) -> bool:
    """Static or symbolic shape equality of two nodes' values (no guessing)."""
    va, vb = val(a), val(b)
    if not (isinstance(va, torch.Tensor) and isinstance(vb, torch.Tensor)):
        return False
    if len(va.shape) != len(vb.shape):
        return False
    for x, y in zip(va.shape, vb.shape):
        if isinstance(x, int) and isinstance(y, int):
            if x != y:
                return False
        elif str(x) != str(y):
            return False
    return True


def mark_created_by(nodes: Iterable[fx.Node], pass_name: str) -> None:
    for n in nodes:
        n.meta[ORIGIN] = pass_name


# Operators that are not pure functions of their inputs: never fold, merge or drop them.
_IMPURE_PREFIXES = ("rand", "bernoulli", "normal", "uniform", "native_dropout", "empty",
                    "multinomial", "exponential", "poisson", "_assert", "sym_constrain",
                    "print", "_print")


def is_pure(node: fx.Node) -> bool:
    if node.op != "call_function":
        return False
    target = node.target
    if isinstance(target, torch._ops.OpOverload):
        base = target._schema.name.split("::")[-1]
        if base.startswith(_IMPURE_PREFIXES) or target._schema.is_mutable:
            return False
        if base == "dropout" and len(node.args) > 2 and node.args[2]:
            return False
        return True
    name = getattr(target, "__name__", "")
    return name == "getitem"
