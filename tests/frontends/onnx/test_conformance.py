"""Every ONNX backend test case in the onnx wheel (pytorch-converted, pytorch-operator,
simple): import -> host target, compared with the stored outputs.

Expected failures are listed with their reason and checked strictly: a case that starts
passing fails this test until it is removed from the list. ``bench/onnx_conformance.py``
prints the pass rate.
"""

import pytest

from tests.frontends.onnx.backend_cases import cases, run_case

_DATA_DEPENDENT = "Expand's target shape is a graph input (data-dependent shapes unsupported)"
_SEQUENCE = "ONNX sequence types are not supported"
_STRING = "string tensors are not supported"
_TRAINING = "training operators (ai.onnx.preview.training) are not supported"

EXPECTED_FAILURES = {
    **{f"simple/test_expand_shape_model{i}": _DATA_DEPENDENT for i in range(1, 5)},
    **{f"simple/test_sequence_model{i}": _SEQUENCE for i in range(1, 9)},
    "simple/test_gradient_of_add": _TRAINING,
    "simple/test_gradient_of_add_and_mul": _TRAINING,
    **{f"simple/test_strnorm_model_{n}": _STRING for n in (
        "monday_casesensintive_lower", "monday_casesensintive_nochangecase",
        "monday_casesensintive_upper", "monday_empty_output",
        "monday_insensintive_upper_twodim", "nostopwords_nochangecase")},
}

CASES = cases()


def test_expected_failures_name_real_cases():
    names = {n for n, _ in CASES}
    assert set(EXPECTED_FAILURES) <= names
    assert len(CASES) >= 140


@pytest.mark.slow
@pytest.mark.parametrize("name, path", [
    pytest.param(n, p, marks=pytest.mark.xfail(strict=True, reason=EXPECTED_FAILURES[n]))
    if n in EXPECTED_FAILURES else (n, p)
    for n, p in CASES
], ids=[n for n, _ in CASES])
def test_backend_case_through_host_target(name, path, tmp_path):
    assert run_case(path, "host", str(tmp_path / "out")) == "pass"
