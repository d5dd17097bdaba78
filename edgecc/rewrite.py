"""Graph rewrites on a ``Program``: node helpers, and rewrite rules as data.

A ``RewriteRule`` is a name, a ``match`` that finds a candidate without touching the IR, a
``check`` that says *why* a candidate is declined (or ``None``), and a ``replacement`` that
rewrites it; ``apply_rules`` walks the graph once, tries the rules in order on every node and
reports what each rule did (models: onnxscript's rewriter, MLIR's pattern rewriter)::

    CONV_BN = RewriteRule(
        name="conv-bn",
        anchors=(aten._native_batch_norm_legit_no_training,),
        match=lambda program, bn: {"bn": bn, "producer": bn.args[0]},
        check=lambda m: None if is_op(m.producer, aten.convolution) else "input is not a conv",
        replacement=fold_into_conv,
    )
    report = apply_rules(program, [CONV_BN], trace=True)
    report.to_json()   # {"conv-bn": {"matched": 3, "declined": {"input is not a conv": 1}}}
    report.trace       # every candidate: rule, node, outcome, reason

Used by edgecc's passes (``RewritePass``) and plugins; ``edgecc passes --explain PASS MODEL``
prints the trace.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import torch
import torch.fx as fx

from edgecc.errors import EdgeccError, PostconditionError
from edgecc.pass_base import Pass, PassContext, PassResult
from edgecc.program import Program, op_name

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


def replace_node(old: fx.Node, new: fx.Node, graph: fx.Graph, *,
                 provenance: bool = True) -> None:
    """Route every use of ``old`` to ``new`` and erase ``old``; a new node (``provenance``)
    takes over ``old``'s source-module provenance."""
    if provenance:
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


def erase_if_dead(nodes: Iterable[fx.Node], graph: fx.Graph) -> None:
    """Erase each of ``nodes`` (and then its inputs) that nothing reads any more and that
    only reads a weight or computes a pure value (what a rewrite leaves behind)."""
    work = list(nodes)
    while work:
        node = work.pop()
        if node._erased or node.users or not (node.op == "get_attr" or is_pure(node)):
            continue
        work.extend(node.all_input_nodes)
        graph.erase_node(node)


# -- rewrite rules ------------------------------------------------------------------------

class RewriteRuleError(RuntimeError):
    """A rule broke the driver's contract (a bug in the rule, not in the user's model)."""


@dataclasses.dataclass(frozen=True)
class Match:
    """A candidate that a rule's ``match`` accepted: the root node and named bindings, read
    as attributes (``m.producer``) or items (``m["producer"]``)."""

    program: Program
    root: fx.Node
    bindings: Mapping[str, Any]

    def __getitem__(self, name: str) -> Any:
        return self.bindings[name]

    def __getattr__(self, name: str) -> Any:
        bindings = self.__dict__.get("bindings", {})
        if name in bindings:
            return bindings[name]
        raise AttributeError(f"match has no binding '{name}' (bound: {', '.join(bindings)})")


def no_check(match: Match) -> str | None:
    """The default ``check``: every match is accepted."""
    return None


@dataclasses.dataclass(frozen=True)
class RewriteRule:
    """One rewrite, as data.

    ``match(program, node)`` looks at ``node`` (a ``call_function`` calling one of
    ``anchors``, when given) and its neighbours and returns the bindings the replacement
    needs (a mapping), a decline reason (a string: the node is a candidate whose structure
    does not fit), or ``None`` (not a candidate). ``check(match)`` returns why a match is
    declined, or ``None``. Neither may change the IR (the driver checks). ``replacement(match)``
    rewrites: it returns the node that replaces ``match.root`` (the driver routes the root's
    users to it and erases the root), or ``None`` when it rewired the graph itself.
    """

    name: str
    match: Callable[[Program, fx.Node], Mapping[str, Any] | str | None]
    replacement: Callable[[Match], fx.Node | None]
    check: Callable[[Match], str | None] = no_check
    anchors: tuple[Any, ...] = ()

    def candidate(self, program: Program, node: fx.Node) -> Match | str | None:
        """Match and check ``node`` without rewriting: a ``Match``, a decline reason, or
        ``None`` when ``node`` is not a candidate."""
        if node.op != "call_function" or (self.anchors and not is_op(node, *self.anchors)):
            return None
        graph = program.graph
        before = (len(graph.nodes), node.target, node.args, node.kwargs)
        found = self.match(program, node)
        if found is None or isinstance(found, str):
            result: Match | str | None = found
        else:
            match = Match(program, node, dict(found))
            result = self.check(match) or match
        after = (len(graph.nodes), node.target, node.args, node.kwargs)
        if after[0] != before[0] or any(a is not b for a, b in zip(after[1:], before[1:])):
            raise RewriteRuleError(
                f"rule '{self.name}' changed the graph while matching {node.name}: match and "
                "check must only look; rewrite in the replacement"
            )
        return result


@dataclasses.dataclass
class RuleStats:
    """What one rule did: how many candidates it rewrote, and each decline reason's count."""

    matched: int = 0
    declined: Counter[str] = dataclasses.field(default_factory=Counter)

    def to_json(self) -> dict[str, Any]:
        return {"matched": self.matched, "declined": dict(self.declined)}


@dataclasses.dataclass(frozen=True)
class Candidate:
    """One traced candidate: the rule, the root node's name and operator, and the reason it
    was declined (``None``: rewritten)."""

    rule: str
    node: str
    op: str
    reason: str | None

    def to_json(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass
class RewriteReport:
    """What ``apply_rules`` did, per rule; ``trace`` lists every candidate when asked for."""

    rules: dict[str, RuleStats]
    trace: list[Candidate] | None = None

    @property
    def modified(self) -> bool:
        return any(s.matched for s in self.rules.values())

    def matched(self, *rules: str) -> int:
        return sum(self.rules[r].matched for r in rules)

    def to_json(self) -> dict[str, dict[str, Any]]:
        """``{"conv-bn": {"matched": 3, "declined": {"batch norm in training mode": 1}}}``"""
        return {name: s.to_json() for name, s in self.rules.items()}


def apply_rules(program: Program, rules: Sequence[RewriteRule], *,
                trace: bool = False) -> RewriteReport:
    """Walk ``program``'s graph once, in order, trying each rule on each node (a rewritten
    root that stays in the graph is offered to the next rules), then lint and recompile.

    Inputs a rewrite leaves unread (pure operators, weight reads) are erased at once, so a
    later rule sees the users that really remain. ``trace=True`` records every candidate.
    """
    names = [r.name for r in rules]
    if len(set(names)) != len(names):
        raise ValueError(f"rule names must be unique, got {names}")
    report = RewriteReport({r.name: RuleStats() for r in rules}, [] if trace else None)
    graph = program.graph
    for node in list(graph.nodes):
        for rule in rules:
            if node._erased:
                break
            found = rule.candidate(program, node)
            if found is None:
                continue
            stats = report.rules[rule.name]
            name, op = node.name, op_name(node)
            if isinstance(found, str):
                stats.declined[found] += 1
            else:
                inputs = node.all_input_nodes
                new = rule.replacement(found)
                if new is not None and new is not node:
                    replace_node(node, new, graph)
                erase_if_dead(inputs, graph)
                stats.matched += 1
            if report.trace is not None:
                report.trace.append(Candidate(rule.name, name, op,
                                              found if isinstance(found, str) else None))
    if report.modified:
        graph.lint()
        program.graph_module.recompile()
    return report


def ensure_no_match(pass_name: str, program: Program, rules: Sequence[RewriteRule]) -> None:
    """Raise ``PostconditionError`` if one of ``rules`` still matches a node of ``program``
    (a pass's ``ensures``: everything it could rewrite was rewritten)."""
    for node in program.graph.nodes:
        for rule in rules:
            if isinstance(rule.candidate(program, node), Match):
                raise PostconditionError(
                    f"'{pass_name}' left a match of its rule '{rule.name}' at node {node.name} "
                    f"({op_name(node)}); run 'edgecc passes --explain {pass_name} MODEL' to see "
                    "what the rule did"
                )


class RewritePass(Pass):
    """A pass made of rewrite rules: ``run`` applies ``rules(options)`` with ``apply_rules``
    (traced, so ``stats`` can name declined nodes) and reports the pass's own counts
    (``stats``) plus each rule's under ``"rules"``; ``edgecc passes --explain`` shows the
    same trace."""

    def rules(self, options: Any) -> Sequence[RewriteRule]:
        raise NotImplementedError

    def stats(self, report: RewriteReport) -> dict[str, Any]:
        """The pass's own stats keys, computed from the per-rule report."""
        return {}

    def run(self, program: Program, options: Any, context: PassContext) -> PassResult:
        report = apply_rules(program, self.rules(options), trace=True)
        return PassResult(program, modified=report.modified,
                          stats={**self.stats(report), "rules": report.to_json()})


def rule_based(pass_: Pass) -> RewritePass:
    """``pass_`` if it is made of rewrite rules, else an ``EdgeccError`` saying so."""
    if not isinstance(pass_, RewritePass):
        raise EdgeccError(
            f"pass '{pass_.name}' is not rule-based, so it has no rules to explain "
            "(rule-based passes subclass edgecc.rewrite.RewritePass)"
        )
    return pass_


def explain(pass_: Pass, program: Program, options: Any = None) -> dict[str, Any]:
    """Apply a rule-based pass's rules to ``program`` with tracing: per-rule counts and
    every declined candidate (node, operator, reason). ``program`` is rewritten."""
    pass_ = rule_based(pass_)
    options = pass_.default_options() if options is None else options
    report = apply_rules(program, pass_.rules(options), trace=True)
    return {"pass": pass_.name, "rules": report.to_json(),
            "declined": [c.to_json() for c in report.trace or [] if c.reason is not None]}


def format_explanation(data: Mapping[str, Any]) -> str:
    """``explain``'s data as text: one line per rule, then its declined candidates."""
    lines = []
    for rule, stats in data["rules"].items():
        declined = sum(stats["declined"].values())
        lines.append(f"{rule}: {stats['matched']} matched, {declined} declined")
        for c in data["declined"]:
            if c["rule"] == rule:
                lines.append(f"  {c['node']} ({c['op']}): {c['reason']}")
    return "\n".join(lines)
