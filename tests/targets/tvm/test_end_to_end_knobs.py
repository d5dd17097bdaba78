"""``end_to_end.KNOBS`` names real kernel globals: every knob's symbol is defined with its
declared C type in the kernels' C source (a misspelt or retyped symbol would be skipped by
--tune as "missing" without a word), and a literal default is one of the values it lists
(the tuner does not measure the default again, so a default outside the list is never
compared)."""

from __future__ import annotations

import glob
import os
import re

from edgecc.targets.tvm import end_to_end

SOURCES = os.path.dirname(end_to_end.__file__)


def _kernel_source() -> str:
    texts = []
    for path in sorted(glob.glob(os.path.join(SOURCES, "*.py"))):
        if os.path.basename(path).startswith("end_to_end"):
            continue
        with open(path) as handle:
            texts.append(handle.read())
    return "\n".join(texts)


def test_every_knob_is_a_defined_global_of_its_type_with_its_default_listed():
    source = _kernel_source()
    assert len({k.symbol for k in end_to_end.KNOBS}) == len(end_to_end.KNOBS)
    for knob in end_to_end.KNOBS:
        found = re.findall(rf"\b(int64_t|int32_t|int)\s+{knob.symbol}\s*=\s*([^;]+);", source)
        assert found, f"{knob.symbol}: no definition in targets/tvm/*.py"
        types = {t for t, _ in found}
        assert types == {knob.ctype}, (knob.symbol, types, knob.ctype)
        for _, default in found:
            if re.fullmatch(r"-?\d+", default.strip()):
                assert int(default) in knob.values, (knob.symbol, default, knob.values)
