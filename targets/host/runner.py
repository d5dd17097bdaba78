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
        # dlopen() returns the library already loaded under the same path, so a rebuilt
        # artifact at the same path (compile --force twice in one process) would run the
        # stale code: load a private copy named by its content instead.
        self.module = tvm.runtime.load_module(_private_copy(library_path))
        self.vm = relax.VirtualMachine(self.module, self.device)

    def run(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        import tvm

        args = [tvm.runtime.tensor(np.ascontiguousarray(t.detach().cpu().numpy()), self.device)
                for t in inputs]
        out = self.vm["main"](*args)
        return tuple(torch.from_numpy(o) for o in _flatten(out))


def _private_copy(path: str) -> str:
    import hashlib
    import shutil
    import tempfile

    digest = hashlib.sha256(open(path, "rb").read()).hexdigest()[:16]
    directory = os.path.join(tempfile.gettempdir(), f"edgecc-libs-{os.getuid()}")
    os.makedirs(directory, exist_ok=True)
    target = os.path.join(directory, f"{digest}-{os.path.basename(path)}")
    if not os.path.exists(target):
        tmp = f"{target}.{os.getpid()}.tmp"
        shutil.copyfile(path, tmp)
        os.replace(tmp, target)
    return target


def _flatten(value: Any) -> list[np.ndarray]:
    if hasattr(value, "numpy"):
        return [value.numpy()]
    out: list[np.ndarray] = []
    for item in value:
        out.extend(_flatten(item))
    return out
