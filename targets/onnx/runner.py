"""Run an exported ``.onnx`` with onnxruntime (CPU)."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch

from edgecc.program import TensorSpec


class OnnxRuntimeRunner:
    def __init__(self, path: str, input_specs: Sequence[TensorSpec], num_threads: int = 0):
        import onnxruntime as ort

        opts = ort.SessionOptions()
        if num_threads:
            opts.intra_op_num_threads = num_threads
        self.session = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def run(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feed = {n: np.ascontiguousarray(t.detach().cpu().numpy())
                for n, t in zip(self.names, inputs)}
        return tuple(torch.from_numpy(np.asarray(o)) for o in self.session.run(None, feed))
