"""Run a host artifact (TVM Relax VM over the exported library) on this machine."""

from __future__ import annotations

import os
from typing import Any

import numpy as np
import torch



class HostRunner:
    """Loads ``model.so`` once; ``run(*inputs)`` returns a tuple of torch tensors."""

    def __init__(self, library_path: str, num_threads: int | None = None):
        if num_threads:
            # Read by TVM's thread pool when it starts, so it must be set before first use.
            os.environ.setdefault("TVM_NUM_THREADS", str(num_threads))
        import tvm
        from tvm import relax

        self.device = tvm.cpu()
        self.module = tvm.runtime.load_module(library_path)
        self.vm = relax.VirtualMachine(self.module, self.device)

    def run(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        import tvm

        args = [tvm.runtime.tensor(np.ascontiguousarray(t.detach().cpu().numpy()), self.device)
                for t in inputs]
        out = self.vm["main"](*args)
        return tuple(torch.from_numpy(o) for o in _flatten(out))


def _flatten(value: Any) -> list[np.ndarray]:
    if hasattr(value, "numpy"):
        return [value.numpy()]
    out: list[np.ndarray] = []
    for item in value:
        out.extend(_flatten(item))
    return out
