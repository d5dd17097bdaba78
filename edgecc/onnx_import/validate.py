"""Read and check an ONNX model before any work: one clear error per problem."""

from __future__ import annotations

import os
from collections.abc import Iterable

from edgecc.errors import ModelLoadError, one_line

MIN_OPSET = 11


def max_opset() -> int:
    import onnx.defs

    return int(onnx.defs.onnx_opset_version())


def read_model(path: str):  # -> onnx.ModelProto
    import onnx
    from google.protobuf.message import DecodeError

    try:
        model = onnx.load(path, load_external_data=False)
    except (DecodeError, RuntimeError, ValueError) as exc:
        raise ModelLoadError(
            f"'{path}' is not a valid ONNX model (malformed or truncated protobuf: "
            f"{one_line(exc)}); re-export it"
        ) from exc
    except Exception as exc:
        raise ModelLoadError(f"'{path}' could not be read as ONNX: {one_line(exc)}") from exc
    if not model.graph.node and not model.graph.output:
        raise ModelLoadError(f"'{path}' holds no ONNX graph (empty or truncated file)")
    _load_external_data(model, path)
    return model


def _load_external_data(model, path: str) -> None:
    from onnx.external_data_helper import load_external_data_for_model, uses_external_data

    base = os.path.dirname(os.path.abspath(path))
    missing = []
    for tensor in model.graph.initializer:
        if uses_external_data(tensor):
            location = next((e.value for e in tensor.external_data if e.key == "location"), "")
            if not os.path.isfile(os.path.join(base, location)):
                missing.append(location)
    if missing:
        raise ModelLoadError(
            f"'{path}' keeps weights in external file(s) {sorted(set(missing))} that are "
            f"missing: put them next to the model"
        )
    try:
        load_external_data_for_model(model, base)
    except Exception as exc:
        raise ModelLoadError(f"'{path}': external data could not be read: {one_line(exc)}") from exc


def opset_of(model, path: str) -> int:
    versions = {o.domain or "ai.onnx": o.version for o in model.opset_import}
    opset = versions.get("ai.onnx")
    if opset is None:
        raise ModelLoadError(f"'{path}' declares no default-domain opset")
    if opset > max_opset():
        raise ModelLoadError(
            f"'{path}' uses opset {opset}, newer than the newest this edgecc supports "
            f"({max_opset()}, from onnx {__import__('onnx').__version__}); export with an older "
            f"opset or upgrade onnx"
        )
    return opset


UPGRADE_TO = 13


def upgrade_if_old(model, opset: int, path: str):
    """Models older than opset 11 are upgraded with onnx's version converter."""
    if opset >= MIN_OPSET:
        return model, opset
    from onnx import version_converter

    try:
        upgraded = version_converter.convert_version(model, UPGRADE_TO)
    except Exception as exc:
        raise ModelLoadError(
            f"'{path}' uses opset {opset}; edgecc imports opsets {MIN_OPSET}..{max_opset()} and "
            f"onnx's version converter could not upgrade it ({one_line(exc)}); re-export with "
            f"opset {UPGRADE_TO} or newer"
        ) from exc
    return upgraded, UPGRADE_TO


def check_structure(model, path: str) -> list:
    """Topologically ordered nodes; errors name a dangling input or a cycle."""
    graph = model.graph
    known = {i.name for i in graph.input} | {t.name for t in graph.initializer} | {""}
    producers = {}
    for node in graph.node:
        for out in node.output:
            producers[out] = node
    for node in graph.node:
        for name in node.input:
            if name not in known and name not in producers:
                raise ModelLoadError(
                    f"'{path}': node '{node.name or node.op_type}' ({node.op_type}) reads "
                    f"'{name}', which no graph input, initializer or node provides (dangling input)"
                )
    for out in graph.output:
        if out.name not in known and out.name not in producers:
            raise ModelLoadError(f"'{path}': graph output '{out.name}' is produced by no node")
    ordered, done, visiting = [], set(known), set()
    index = {id(n): n for n in graph.node}

    def visit(node, stack):
        if id(node) in done:
            return
        if id(node) in visiting:
            cycle = " -> ".join(n.name or n.op_type for n in stack)
            raise ModelLoadError(f"'{path}': the graph has a cycle ({cycle}); ONNX graphs must be acyclic")
        visiting.add(id(node))
        for name in node.input:
            if name not in done and name in producers:
                visit(producers[name], [*stack, producers[name]])
        visiting.discard(id(node))
        done.add(id(node))
        done.update(node.output)
        ordered.append(node)

    for node in graph.node:
        visit(node, [node])
    assert len(ordered) == len(index)
    return ordered


def check_supported(nodes: Iterable, opset: int, path: str) -> None:
    from edgecc.onnx_import.registry import lookup, node_key

    from onnx import helper

    def with_branches(ns):  # an If's branches may be inlined, so their operators count too
        for node in ns:
            yield node
            for a in node.attribute:
                if a.type == a.GRAPH:
                    yield from with_branches(helper.get_attribute_value(a).node)

    problems: dict[str, list[str]] = {}
    for node in with_branches(nodes):
        key = node_key(node)
        if lookup(key, opset) is None:
            problems.setdefault(key, []).append(node.name or "(unnamed)")
    if problems:
        listed = "; ".join(f"{op} (nodes: {', '.join(names[:3])}{', ...' if len(names) > 3 else ''})"
                           for op, names in sorted(problems.items()))
        raise ModelLoadError(
            f"'{path}' (opset {opset}) uses {len(problems)} unsupported operator type(s): {listed}"
        )
