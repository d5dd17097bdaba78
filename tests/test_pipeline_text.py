import dataclasses
from typing import Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from edgecc.errors import PipelineSyntaxError
from edgecc.pass_base import Pass, PassResult
from edgecc.pipeline_text import (
    FixpointStep,
    PassStep,
    format_pipeline,
    parse_pipeline,
    step,
)
from edgecc.passes import FoldBatchNorm, Fuse
from edgecc.registry import Registry


@dataclasses.dataclass(frozen=True)
class DemoOptions:
    ratio: float = 0.5
    bits: int = 8
    enabled: bool = True
    method: Literal["l1", "l2", "taylor"] = "l1"
    layers: tuple[str, ...] = ()
    note: str = "plain"


class Demo(Pass):
    """A pass with every option type, for parser tests."""

    name = "demo"
    Options = DemoOptions

    def run(self, program, options, context):
        return PassResult(program, False)


def registry():
    r = Registry("pass")
    for cls in (Demo, FoldBatchNorm, Fuse):
        r.register(cls)
    return r


@pytest.mark.parametrize("text", [
    "",
    "fold-batchnorm",
    "fold-batchnorm,fuse,demo",
    "demo{ratio=0.25}",
    "demo{bits=4,ratio=0.125,enabled=false}",
    "demo{method=taylor,layers=[fc1,fc2]}",
    'demo{note="has, comma and {braces}"}',
    "fuse{activations=[relu,relu6]}",
    "fixpoint(demo,fold-batchnorm)",
    "fixpoint{max_iterations=3}(demo{bits=2},fixpoint(fuse))",
    "demo{layers=[]}",
])
def test_canonical_text_round_trips(text):
    steps = parse_pipeline(text, registry())
    assert format_pipeline(steps) == text


def test_text_parses_into_typed_options():
    (s,) = parse_pipeline("demo{bits=4,ratio=1,layers=[a.b,c]}", registry())
    assert isinstance(s, PassStep)
    assert s.options == DemoOptions(bits=4, ratio=1.0, layers=("a.b", "c"))
    assert isinstance(s.options.ratio, float)


def test_whitespace_is_allowed_and_normalised():
    steps = parse_pipeline(" demo { bits = 4 } , fuse ", registry())
    assert format_pipeline(steps) == "demo{bits=4},fuse"


def test_options_set_in_code_print_when_not_default():
    assert format_pipeline([step(Demo, bits=3)]) == "demo{bits=3}"
    s = PassStep(Demo, DemoOptions(ratio=0.75))
    assert format_pipeline([s]) == "demo{ratio=0.75}"


@pytest.mark.parametrize("text, position, words", [
    ("fold-batchnrm", 1, "did you mean 'fold-batchnorm'"),
    ("demo{bits=4", 12, "expected ',' or '}'"),
    ("demo{bits}", 10, "expected '='"),
    ("demo{bits=x}", 6, "must be an integer"),
    ("demo{method=l3}", 6, "one of 'l1', 'l2', 'taylor'"),
    ("demo{colour=1}", 6, "unknown option"),
    ("demo,,fuse", 6, "expected a pass name"),
    ("fixpoint(demo", 14, "expected ')'"),
    ('demo{note="open}', 11, "unterminated string"),
    ("demo{bits=1,bits=2}", 13, "given twice"),
])
def test_errors_point_at_the_character(text, position, words):
    with pytest.raises(PipelineSyntaxError) as info:
        parse_pipeline(text, registry())
    message = str(info.value)
    assert f"at character {position}:" in message
    assert words in message
    assert "\n" not in message


_words = st.from_regex(r"[a-z][a-z0-9_]{0,6}", fullmatch=True).filter(
    lambda w: w not in ("true", "false", "none", "inf", "nan"))
_demo_options = st.builds(
    DemoOptions,
    ratio=st.floats(allow_nan=False, allow_infinity=False, width=32),
    bits=st.integers(-(2**31), 2**31),
    enabled=st.booleans(),
    method=st.sampled_from(["l1", "l2", "taylor"]),
    layers=st.lists(_words, max_size=3).map(tuple),
    note=st.text(st.characters(codec="ascii", exclude_categories=("Cc",)), max_size=8),
)
_leaf = st.one_of(
    _demo_options.map(lambda o: PassStep(Demo, o)),
    st.just(PassStep(FoldBatchNorm, FoldBatchNorm.Options())),
)
_steps = st.recursive(
    st.lists(_leaf, max_size=4),
    lambda inner: st.lists(
        st.one_of(_leaf, st.builds(lambda s, k: FixpointStep(tuple(s), k), inner,
                                   st.integers(1, 20))),
        max_size=4),
    max_leaves=8,
)


def _semantic(steps):
    return [(type(s).__name__, s.options if isinstance(s, PassStep) else
             (s.max_iterations, _semantic(s.steps))) for s in steps]


@settings(max_examples=settings.default.max_examples * 10, deadline=None)
@given(_steps)
def test_print_then_parse_is_identity(steps):
    text = format_pipeline(steps)
    parsed = parse_pipeline(text, registry())
    assert _semantic(parsed) == _semantic(steps)
    assert format_pipeline(parsed) == text
