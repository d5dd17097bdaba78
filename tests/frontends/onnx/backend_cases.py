"""The ONNX backend test cases shipped inside the ``onnx`` wheel, run through edgecc.

Each case is a ``model.onnx`` with stored inputs and expected outputs; ``run_case`` imports
the model with edgecc, runs it (PyTorch eager, or an edgecc target) and compares.
"""

from __future__ import annotations

import glob
import os
from typing import Any

import numpy as np
import torch

SUITES = ("pytorch-converted", "pytorch-operator", "simple")
RTOL, ATOL = 1e-3, 1e-5


def data_root() -> str:
    import onnx

    return os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data")


def cases() -> list[tuple[str, str]]:
    out = []
    for suite in SUITES:
        for path in sorted(glob.glob(os.path.join(data_root(), suite, "*", "model.onnx"))):
            out.append((f"{suite}/{os.path.basename(os.path.dirname(path))}", path))
    return out


def _read(path: str) -> np.ndarray:
    import onnx
    from onnx import numpy_helper

    t = onnx.TensorProto()
    with open(path, "rb") as f:
        t.ParseFromString(f.read())
    return numpy_helper.to_array(t)


def run_case(model_path: str, target: str | None = None, workdir: str | None = None) -> str:
    """``"pass"`` or a one-line reason for failing."""
    import edgecc

    try:
        program = edgecc.load(model_path)
    except Exception as exc:  # noqa: BLE001 - the reason is the result
        return f"import: {str(exc).splitlines()[0][:300]}"
    runner: Any = program
    if target is not None:
        try:
            res = edgecc.compile(program, target, pipeline="", output_dir=workdir, force=True,
                                 verify=False, progress=False)
        except Exception as exc:  # noqa: BLE001
            return f"{target}: {str(exc).splitlines()[0][:300]}"
        runner = res._runner or res.target.load(res.output_dir, res.report)
    for data in sorted(glob.glob(os.path.join(os.path.dirname(model_path), "test_data_set_*"))):
        inputs = [torch.from_numpy(_read(p).copy())
                  for p in sorted(glob.glob(os.path.join(data, "input_*.pb")))]
        expected = [_read(p) for p in sorted(glob.glob(os.path.join(data, "output_*.pb")))]
        try:
            got = runner.run(*inputs)
        except Exception as exc:  # noqa: BLE001
            return f"run: {str(exc).splitlines()[0][:300]}"
        if len(got) != len(expected):
            return f"outputs: {len(got)} instead of {len(expected)}"
        for g, e in zip(got, expected):
            g = g.detach().numpy() if isinstance(g, torch.Tensor) else np.asarray(g)
            if g.shape != e.shape:
                return f"shape {g.shape} instead of {e.shape}"
            if not np.allclose(g.astype(np.float64), e.astype(np.float64), rtol=RTOL, atol=ATOL,
                               equal_nan=True):
                return f"mismatch: max-abs {np.abs(g.astype(np.float64) - e).max():.3g}"
    return "pass"
