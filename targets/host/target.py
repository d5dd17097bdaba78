"""``-t host``: compile for the build machine's CPU with TVM Relax and run it here.

The folder has the shape of every target: ``presets.py`` (which CPU), ``partition.py``
(which nodes, from the shared TVM table), ``lower.py``, ``runner.py`` and the bundle's
``README.txt``; the TVM machinery itself is ``edgecc.targets.tvm``.
"""

from __future__ import annotations

import dataclasses
from typing import Any, Literal

from edgecc.program import Program
from edgecc.target import Lowered
from edgecc.targets.host import presets
from edgecc.targets.host.lower import lower_program
from edgecc.targets.host.runner import load_runner
from edgecc.targets.tvm.target_base import TvmTarget, check_common_options


@dataclasses.dataclass(frozen=True)
class HostOptions:
    preset: str = "native"  # `edgecc targets` lists them; -t host:NAME
    mcpu: str = ""  # LLVM CPU name; overrides the preset's CPU
    num_threads: int = 0  # TVM worker threads at run time; 0 = TVM's default
    # "edgecc": edgecc's default CPU schedule (parallel + vectorizable loop nests);
    # "tvm": TVM's own untuned pipeline, for comparison.
    schedule: Literal["edgecc", "tvm"] = "edgecc"
    # quantized linears as int8 x int8 -> int32 matmuls (as -t arm64 does) instead of the
    # float simulation with integer weight storage
    integer_kernels: bool = False
    # MetaSchedule trial budget (CLI --tune TRIALS); 0 = no tuning. Records are cached by
    # kernel and target (tune_cache, default ~/.cache/edgecc/tuning): a kernel tuned before
    # is not tuned again, so a second compile of the same model only reads the cache.
    tune_trials: int = 0
    tune_cache: str = ""
    tvm_log: bool = False  # show TVM's native log (hidden unless a build fails)

    def __post_init__(self) -> None:
        presets.resolve(self.preset)  # a clear error for a bad choice
        check_common_options(self)
        if self.tune_trials and self.schedule != "edgecc":
            raise ValueError("tuning needs schedule=edgecc (untuned kernels fall back to it)")


class HostTarget(TvmTarget):
    """This machine's CPU via Apache TVM Relax + LLVM; runs and verifies the artifact here."""

    name = "host"
    description = "the build machine's CPU (TVM Relax, LLVM)"
    Options = HostOptions
    can_execute = True
    preset_option = "preset"

    def listing(self) -> str:
        return "presets (-t host:NAME):\n" + presets.describe()

    def lower(self, program: Program, output_dir: str, options: HostOptions) -> Lowered:
        self.require_available()
        self.check_lowerable(program)
        return lower_program(program, output_dir, options)

    def load(self, output_dir: str, manifest: dict[str, Any]) -> Any:
        self.require_available()
        return load_runner(output_dir, manifest)
