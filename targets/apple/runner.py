"""How an ``-t apple`` package runs here: Core ML's ``predict`` on macOS; elsewhere edgecc's
numpy MIL interpreter (``edgecc.targets.apple.mil``) stands in for the device.
"""

from __future__ import annotations

import functools
import os
import platform
from typing import Any

import numpy as np
import torch

from edgecc.targets.apple.lower import MODEL


@functools.lru_cache(maxsize=1)
def predict_works() -> bool:
    """Whether Core ML can run a model on this machine (macOS with coremltools' native
    library)."""
    if platform.system() != "Darwin":
        return False
    try:
        from coremltools.libcoremlpython import _MLModelProxy  # noqa: F401
    except Exception:
        return False
    return True


class CoreMLRunner:
    """Core ML ``predict`` (macOS)."""

    def __init__(self, path: str, manifest: dict[str, Any]):
        import coremltools as ct

        units = manifest.get("target", {}).get("options", {}).get("compute_units", "all")
        self.model = ct.models.MLModel(path, compute_units=getattr(ct.ComputeUnit,
                                                                   units.upper()))
        self.inputs = [i["name"] for i in manifest["inputs"]]
        self.outputs = [o["name"] for o in manifest["outputs"]]

    def run(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feed = {n: _feed(t) for n, t in zip(self.inputs, inputs)}
        out = self.model.predict(feed)
        return tuple(torch.from_numpy(np.asarray(out[n], dtype=np.float32))
                     for n in self.outputs)


class InterpreterRunner:
    """The package run by edgecc's numpy MIL interpreter (not Core ML)."""

    def __init__(self, path: str, inputs: list[str], outputs: list[str]):
        from edgecc.targets.apple.mil.interpreter import run_mlpackage

        self._run = run_mlpackage
        self.path, self.inputs, self.outputs = path, inputs, outputs

    def run(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feed = {n: _feed(t) for n, t in zip(self.inputs, inputs)}
        out = self._run(self.path, feed)
        return tuple(torch.from_numpy(np.asarray(out[n], dtype=np.float32))
                     for n in self.outputs)


def _feed(t: torch.Tensor) -> np.ndarray:
    a = t.detach().cpu().numpy()
    return a.astype(np.float32) if a.dtype.kind == "f" else a.astype(np.int32)


def load_runner(output_dir: str, manifest: dict[str, Any]) -> Any:
    path = os.path.join(output_dir, MODEL)
    if predict_works():
        return CoreMLRunner(path, manifest)
    return InterpreterRunner(path, [i["name"] for i in manifest["inputs"]],
                             [o["name"] for o in manifest["outputs"]])
