"""Helpers for testing passes (edgecc's own tests and third-party passes).

    result = FoldBatchNorm()(program.copy())
    assert op_counts(result.program)["aten._native_batch_norm_legit_no_training"] == 0
    assert_close(program, result.program, samples=4)        # fresh random inputs
"""

from __future__ import annotations

from collections import Counter

from edgecc.inputs import fresh_inputs
from edgecc.metrics import compare_outputs
from edgecc.program import Program


def op_counts(program: Program) -> Counter[str]:
    return program.op_counts()


def assert_close(expected: Program, actual: Program, *, samples: int = 4, atol: float = 1e-5,
                 rtol: float = 1e-5, seed: int = 1234) -> dict:
    """Run both programs on ``samples`` fresh random inputs and assert allclose."""
    refs, outs = [], []
    for i in range(samples):
        x = fresh_inputs(expected, seed=seed + i)
        refs.append(expected.run(*x))
        outs.append(actual.run(*x))
    metrics = compare_outputs(refs, outs, atol=atol, rtol=rtol)
    assert metrics["passed"], (
        f"outputs differ: max-abs {metrics['max_abs']:.3g}, max-rel {metrics['max_rel']:.3g} "
        f"(atol={atol}, rtol={rtol})"
    )
    return metrics
