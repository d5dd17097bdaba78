"""How an arm64 artifact runs here: the bundle's own ``run_model.py`` (what a board runs)
under qemu-aarch64, with the arm64 sysroot and TVM runtime of the emulation cache
(``emulation``). Each launch costs seconds, so ``run_many`` runs several input sets in one.

A decoder bundle (``edgecc.llm.build_decoder`` for arm64) also carries the board-side
generator ``generate.py`` (``install_generator``); ``emulated_generate`` runs it here under
qemu, one launch for the whole generation, and yields its tokens as they come.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any

import numpy as np
import torch

from edgecc.errors import LoweringError
from edgecc.targets.arm.emulation import PYTHON, QEMU, default_cache, ready, why_not_ready
from edgecc.targets.arm.lower import LIBRARY, RUNNER

GENERATOR = "generate.py"  # the board-side generator of a decoder bundle
SAMPLING = "sampling.py"  # its sampler (edgecc/llm/sampling.py), imported from its folder


def qemu_python(cache: str, num_threads: int = 0) -> list[str]:
    """The command prefix that runs the cache's aarch64 python3 (TVM runtime on its path)."""
    sysroot = os.path.join(cache, "sysroot")
    env = ["-E", f"PYTHONPATH={os.path.join(cache, 'site')}", "-E", "TVM_USE_RUNTIME_LIB=1"]
    if num_threads:  # the emulated process's own pool size (a fresh process each run)
        env += ["-E", f"TVM_NUM_THREADS={num_threads}"]
    return [QEMU, "-L", sysroot, *env, os.path.join(sysroot, PYTHON)]


def install_generator(bundle: str) -> str:
    """Copy the board-side generator (``targets/arm/generate.py``) and its sampler
    (``edgecc/llm/sampling.py``, as ``sampling.py``) into ``bundle``."""
    from edgecc.llm import sampling  # numpy only: generate.py imports it from its folder

    dst = os.path.join(bundle, GENERATOR)
    shutil.copyfile(os.path.join(os.path.dirname(__file__), GENERATOR), dst)
    shutil.copyfile(sampling.__file__, os.path.join(bundle, SAMPLING))
    return dst


def emulated_generate(bundle: str, prompt_ids: list[int], max_new_tokens: int, *,
                      temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                      seed: int = 0, stop_at_eos: bool = True, num_threads: int = 0,
                      cache: str = "", timeout: int = 1800, stats: dict | None = None
                      ) -> Iterator[int]:
    """Run the bundle's ``generate.py`` under qemu-aarch64 (one launch) and yield its tokens
    as it prints them; ``stats`` receives its prefill / decode tokens/s (the emulator's
    speed, not the chip's)."""
    cache = cache or default_cache()
    if not ready(cache):
        raise LoweringError(f"cannot run aarch64 code here: {why_not_ready(cache)}")
    script = os.path.join(bundle, GENERATOR)
    if not os.path.exists(script):
        raise LoweringError(f"'{bundle}' has no {GENERATOR} (built by an older edgecc): "
                            "rebuild it with edgecc.llm.build_decoder")
    cmd = [*qemu_python(cache, num_threads), script, bundle, "--prompt-ids",
           ",".join(str(int(i)) for i in prompt_ids), "-n", str(max_new_tokens),
           "--temperature", repr(float(temperature)), "--top-k", str(top_k),
           "--top-p", repr(float(top_p)), "--seed", str(seed), "--jsonl"]
    if not stop_at_eos:
        cmd.append("--ignore-eos")
    with tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=err, text=True)
        try:
            assert proc.stdout is not None
            for line in proc.stdout:
                item = json.loads(line)
                if "token" in item:
                    yield int(item["token"])
                elif stats is not None:
                    stats.update(item.get("stats", {}))
            code = proc.wait(timeout)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        if code != 0:
            err.seek(0)
            tail = " | ".join(err.read().strip().splitlines()[-3:])
            raise LoweringError(f"the arm64 generator failed under {QEMU}: {tail}")


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
        return [*qemu_python(self.cache, self.threads), os.path.join(self.bundle, RUNNER),
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
