"""How an arm64 artifact runs here: the bundle's own ``run_model.py`` (what a board runs)
under qemu-aarch64, with the arm64 sysroot and TVM runtime of the emulation cache
(``emulation``). Each launch costs seconds, so ``run_many`` runs several input sets in one.
"""

from __future__ import annotations

import os
import subprocess
import tempfile
from typing import Any

import numpy as np
import torch

from edgecc.errors import LoweringError
from edgecc.targets.arm.emulation import PYTHON, QEMU, default_cache, ready, why_not_ready
from edgecc.targets.arm.lower import LIBRARY, RUNNER


class EmulatedRunner:
    """Runs a bundle's ``run_model.py`` under qemu-aarch64 for each call."""

    def __init__(self, bundle: str, library: str = LIBRARY, num_threads: int = 0,
                 timeout: int = 600, cache: str = ""):
        self.cache = cache or default_cache()
        if not ready(self.cache):
            raise LoweringError(f"cannot run aarch64 code here: {why_not_ready(self.cache)}")
        self.bundle, self.library = bundle, library
        self.threads, self.timeout = num_threads, timeout

    def command(self, *args: str) -> list[str]:
        sysroot = os.path.join(self.cache, "sysroot")
        env = ["-E", f"PYTHONPATH={os.path.join(self.cache, 'site')}",
               "-E", "TVM_USE_RUNTIME_LIB=1"]
        if self.threads:  # the emulated process's own pool size (a fresh process each run)
            env += ["-E", f"TVM_NUM_THREADS={self.threads}"]
        return [QEMU, "-L", sysroot, *env, os.path.join(sysroot, PYTHON),
                os.path.join(self.bundle, RUNNER),
                os.path.join(self.bundle, self.library), *args]

    def run(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        return self.run_many([inputs])[0]

    def run_many(self, batches: list[tuple[torch.Tensor, ...]]
                 ) -> list[tuple[torch.Tensor, ...]]:
        """Run several input sets in one emulator launch (a launch costs seconds)."""
        with tempfile.TemporaryDirectory() as d:
            files = []
            for b, inputs in enumerate(batches):
                src, dst = os.path.join(d, f"in{b}.npz"), os.path.join(d, f"out{b}.npz")
                np.savez(src, **{f"arg{i}": t.detach().cpu().numpy()
                                 for i, t in enumerate(inputs)})
                files += [src, dst]
            proc = subprocess.run(self.command(*files), capture_output=True, text=True,
                                  timeout=self.timeout)
            if proc.returncode != 0:
                tail = " | ".join(proc.stderr.strip().splitlines()[-3:])
                raise LoweringError(f"the aarch64 artifact failed under {QEMU}: {tail}")
            results = []
            for dst in files[1::2]:
                out = np.load(dst)
                results.append(tuple(torch.from_numpy(out[f"out{i}"].copy())
                                     for i in range(len(out.files))))
            return results


def load_runner(output_dir: str, manifest: dict[str, Any]) -> EmulatedRunner:
    options = manifest["target"]["options"]
    return EmulatedRunner(output_dir, LIBRARY, options.get("num_threads") or 0,
                          cache=options.get("emulator_cache") or "")
