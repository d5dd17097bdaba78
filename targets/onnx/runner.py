"""How an ``-t onnx`` artifact runs here: onnxruntime's CPU provider, in this process."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch

from edgecc.targets.onnx.lower import MODEL


class OnnxRuntimeRunner:
    def __init__(self, path: str):
        import onnxruntime as ort

        self.session = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def run(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feed = {n: np.ascontiguousarray(t.detach().cpu().numpy())
                for n, t in zip(self.names, inputs)}
        return tuple(torch.from_numpy(np.asarray(o)) for o in self.session.run(None, feed))


def load_runner(output_dir: str, manifest: dict[str, Any]) -> OnnxRuntimeRunner:
    return OnnxRuntimeRunner(os.path.join(output_dir, MODEL))
