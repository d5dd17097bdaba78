"""Perplexity of an edgecc host build: the TVM decoder library of
``edgecc.llm.build_decoder(dec, "host", out, prefill_len=ctx)``, run by ``edgecc.llm.Generator``,
on the same windows as ``program_perplexity`` (``perplexity.windows``; one window = one
prefill from an empty cache, whose logits ``[ctx, n_vocab]`` cover every position, scored
by the same ``window_nll``).

The bundle computes the same function as the program the row measures: ``host_bundle``
exports the decoder step (``edgecc.llm.export_decoder``: the prefill / decode step over a
KV cache, a different graph than the single-pass program) and moves the program's weights
into it (``transplant_weights``): each weight a linear / embedding / norm multiply of the
program reads — a float constant or the constant-only ``edgecc.dequantize`` subgraph the
quantize pass made — replaces the step's at the same module path, so the host library is
built from exactly the program's quantized codes, scales and (AWQ-folded) norms (RoPE's
frequency constant, a multiply in ``model.rotary_emb``, is moved too: equal in both)::

    program:  %w = edgecc.dequantize(@..up_proj_qweight, @.._w_scale, ..)  (GPTQ codes)
              %y = aten.linear(%x, %w)                  nn_module_stack model.layers.0.mlp.up_proj
    step:     %y = aten.linear(%x, @model.layers.0.mlp.up_proj.weight)          (float)
    after:    %w' = edgecc.dequantize(@..qweight copy, ..)  %y = aten.linear(%x, %w')

A transplant that does not reproduce the program is an error (``check_step``: the step's
logits of one prefill against the program's).
"""

from __future__ import annotations

import os
import time
from typing import Any

import torch
from torch import fx

from edgecc.errors import EdgeccError
from edgecc.llm_eval.perplexity import Perplexity, _result, window_nll
from edgecc.program import Program, op_name

# ops whose constant inputs are the model's weights (the quantize pass's layers; RMSNorm's
# weight multiply, which AWQ's folding changes)
_WEIGHT_OPS = ("aten.linear", "edgecc.linear_act", "aten.embedding", "aten.mul")
# the program's weights must reproduce within this (max |logits difference|, relative to
# max |logits|): float32 reassociation between the two graphs (measured ~1e-6); a weight
# put in the wrong place is O(1)
CHECK_RTOL = 1e-3


def host_perplexity(bundle: str, wins: list[list[int]]) -> Perplexity:
    """Perplexity of a host decoder bundle (``build_decoder(..., "host", ...)``) on
    ``wins``: each window one ``Generator.prefill`` from an empty cache (prompts longer than
    the bundle's prefill length run in its chunks), every position's logits scored."""
    from edgecc.llm import Generator

    gen = Generator(bundle)
    ctx = len(wins[0])
    if ctx > gen.max_seq_len:
        raise EdgeccError(f"windows of {ctx} tokens do not fit the bundle's KV cache of "
                          f"{gen.max_seq_len}: rebuild it with max_seq_len >= {ctx}")
    t0 = time.perf_counter()
    total = 0.0
    for w in wins:
        rows, _, _ = gen.prefill(w)
        total += window_nll(torch.from_numpy(rows), w)
    return _result(total, len(wins) * (ctx - 1), wins, t0,
                   f"edgecc host build (TVM, prefill {gen.prefill_len})")


def host_bundle(program: Program, output_dir: str, *, ctx: int, model: Any = None,
                force: bool = True) -> dict[str, Any]:
    """Build the host decoder bundle of ``program`` (a single-pass decoder program,
    ``input_ids [1, T] -> logits``, float or quantized) with a KV cache and prefill of
    ``ctx`` tokens. ``model``: what ``export_decoder`` reads (the ``transformers`` module
    or ``.gguf`` the program came from; default ``program``, when ``edgecc.load`` made it
    from a .gguf). Returns ``{"dir", "transplanted", "check_max_abs", "build_seconds"}``."""
    import edgecc.llm as llm

    t0 = time.perf_counter()
    dec = llm.export_decoder(program if model is None else model, max_seq_len=ctx)
    step = dec.program
    moved = transplant_weights(program, step)
    err = check_step(program, step, dec.config, ctx)
    built = llm.build_decoder(dec, "host", output_dir, prefill_len=ctx, force=force)
    return {"dir": built.output_dir, "transplanted": moved, "check_max_abs": err,
            "build_seconds": round(time.perf_counter() - t0, 1)}


def check_step(program: Program, step: Program, config: Any, ctx: int) -> float:
    """Max |logits| difference of one prefill of ``ctx`` random tokens from an empty cache
    (the step) against the program; ``EdgeccError`` beyond ``CHECK_RTOL``."""
    g = torch.Generator().manual_seed(0)
    ids = torch.randint(0, config.vocab_size, (1, ctx), generator=g)
    k, v = config.empty_cache()
    with torch.no_grad():
        ref = program.run(ids)[0]
        got = step.graph_module(ids, torch.zeros(1, dtype=torch.int64), k, v)[0]
    err = float((got.double() - ref.double()).abs().max())
    scale = float(ref.abs().max())
    if not err <= CHECK_RTOL * max(scale, 1e-6):
        raise EdgeccError(f"the decoder step with the program's weights differs from the "
                          f"program: max |logits difference| {err:.3g} (logits up to "
                          f"{scale:.3g}): a weight the transplant did not move")
    return err


# -- moving the program's weights into the step -------------------------------------------

def _module_path(node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    return str(list(stack.values())[-1][0]) if stack else ""


def _constant_only(program: Program, node: Any, memo: dict[fx.Node, bool]) -> bool:
    """Whether ``node`` is computed from constants alone (a weight, or its dequantize)."""
    if not isinstance(node, fx.Node):
        return False
    if node not in memo:
        if node.op == "get_attr":
            memo[node] = True
        elif node.op == "call_function":
            inputs = node.all_input_nodes
            memo[node] = bool(inputs) and all(_constant_only(program, i, memo)
                                              for i in inputs)
        else:
            memo[node] = False
    return memo[node]


def _weight_args(program: Program) -> dict[tuple[str, str, int, int], fx.Node]:
    """``(module path, op, occurrence, arg position) -> constant-only argument`` of the
    weight-reading ops that sit in a module."""
    memo: dict[fx.Node, bool] = {}
    seen: dict[tuple[str, str], int] = {}
    out: dict[tuple[str, str, int, int], fx.Node] = {}
    for node in program.nodes("call_function"):
        name = op_name(node)
        path = _module_path(node)
        if name not in _WEIGHT_OPS or not path:
            continue
        n = seen.get((path, name), 0)
        seen[(path, name)] = n + 1
        for i, arg in enumerate(node.args):
            if _constant_only(program, arg, memo):
                out[(path, name, n, i)] = arg
    return out


def transplant_weights(source: Program, step: Program) -> int:
    """Make ``step`` read ``source``'s weights (see the module docstring), in place; shared
    weights (a tied embedding / output matrix) stay shared. Returns how many arguments were
    replaced. ``EdgeccError`` when a weight of ``source`` has no place in ``step``."""
    src = _weight_args(source)
    dst = _weight_args(step)
    missing = sorted(k for k in src if k not in dst)
    if missing:
        path, name, n, i = missing[0]
        raise EdgeccError(f"the decoder step has no {name} #{n} in '{path}' for the "
                          f"program's weight: the program is not this decoder's")
    for key, node in dst.items():
        if key in src and _shape(source, src[key]) != _shape(step, node):
            raise EdgeccError(f"the program's weight for {key[1]} #{key[2]} in '{key[0]}' "
                              f"has shape {_shape(source, src[key])}, the decoder step's "
                              f"{_shape(step, node)}: the program is not this decoder's")
    copies: dict[fx.Node, fx.Node] = {}
    graph = step.graph
    first_user = {node: i for i, node in enumerate(graph.nodes)}
    replaced = 0
    old_nodes: set[fx.Node] = set()

    def copy(node: fx.Node, before: fx.Node) -> fx.Node:
        if node in copies:
            return copies[node]
        if node.op == "get_attr":
            new = step.add_constant(str(node.target), source.tensor(node), before=before)
        else:
            args = fx.node.map_arg(node.args, lambda a: copy(a, before))
            kwargs = fx.node.map_arg(node.kwargs, lambda a: copy(a, before))
            with graph.inserting_before(before):
                new = graph.call_function(node.target, args, kwargs)
            new.meta.update({k: v for k, v in node.meta.items() if k != "val"})
        copies[node] = new
        return new

    # every copy goes before the step's first node that reads any weight: shared copies
    # then precede all their users
    targets = [(key, node) for key, node in dst.items() if key in src]
    if not targets:
        return 0
    users = [u for _, n in targets for u in n.users]
    before = min(users, key=lambda u: first_user[u])
    for key, old in targets:
        new = copy(src[key], before)
        path, name, n, i = key
        for user in list(old.users):
            if op_name(user) == name and _module_path(user) == path:
                idx = [j for j, a in enumerate(user.args) if a is old]
                if i in idx:
                    user.update_arg(i, new)
                    replaced += 1
        old_nodes.add(old)
    _erase_unused(step, old_nodes)
    graph.lint()
    step.graph_module.recompile()
    step.refresh_metadata()
    return replaced


def _shape(program: Program, node: fx.Node) -> tuple[int, ...] | None:
    if node.op == "get_attr":
        return tuple(program.tensor(node).shape)
    val = node.meta.get("val")
    return tuple(val.shape) if isinstance(val, torch.Tensor) else None


def _erase_unused(program: Program, nodes: set[fx.Node]) -> None:
    """Erase the nodes (and the constant subgraphs under them) that nothing reads now."""
    graph = program.graph
    pending = list(nodes)
    while pending:
        node = pending.pop()
        if node.users or node.graph is not graph or node.op not in ("get_attr",
                                                                   "call_function"):
            continue
        inputs = node.all_input_nodes
        target = str(node.target) if node.op == "get_attr" else None
        graph.erase_node(node)
        if target and not any(n.op == "get_attr" and str(n.target) == target
                              for n in graph.nodes):
            *owner, leaf = target.split(".")
            parent = program.graph_module.get_submodule(".".join(owner))
            if hasattr(parent, leaf):
                delattr(parent, leaf)
        pending.extend(inputs)


def bundle_bytes(bundle: str) -> int:
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(bundle)
               for f in fs if f.endswith(".so"))


__all__ = ["host_bundle", "host_perplexity", "transplant_weights"]
