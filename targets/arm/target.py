"""``-t arm64``: an aarch64 shared library for 64-bit Arm CPUs, cross-compiled with TVM Relax
+ LLVM for a core preset (or a triple and a feature list), verified by running it under
qemu-aarch64 when the emulation cache is set up (``scripts/setup_arm.sh``).

The folder has the shape of every target: ``presets.py`` (cores and boards),
``partition.py`` (which nodes, from the shared TVM table), ``lower.py``, ``runner.py`` (the
bundle under qemu; ``emulation.py`` sets it up) and the bundle's ``README.txt`` next to its
deploy runner ``run_model.py``; the TVM machinery itself is ``edgecc.targets.tvm``.
"""

from __future__ import annotations

import dataclasses
import shutil
from typing import Any

from edgecc.program import Program
from edgecc.target import Availability, Lowered
from edgecc.targets.arm import emulation
from edgecc.targets.arm.lower import lower_program, tracker_address
from edgecc.targets.arm.presets import describe, resolve
from edgecc.targets.arm.runner import emulated_generate, install_generator, load_runner
from edgecc.targets.tvm.target_base import TvmTarget, check_common_options


@dataclasses.dataclass(frozen=True)
class ArmOptions:
    preset: str = "generic"  # a core or board: `edgecc targets` lists them; -t arm64:NAME
    features: tuple[str, ...] = ()  # extra AArch64 features, e.g. (+i8mm,)
    mtriple: str = "aarch64-linux-gnu"
    num_threads: int = 0  # TVM worker threads at run time; 0 = TVM's default
    cc: str = "aarch64-linux-gnu-g++"  # the cross compiler that links model.so
    # MetaSchedule tuning (CLI --tune TRIALS) measures kernels on the device: tune_on is
    # HOST:PORT:KEY, a TVM RPC tracker the board is registered with under KEY, or "qemu"
    # (an emulated board here: exercises the whole path, but the timings are the
    # emulator's, so the schedules are not tuned for the chip). Records are cached per
    # kernel, target and device (tune_cache, default ~/.cache/edgecc/tuning).
    tune_trials: int = 0
    tune_on: str = ""
    tune_cache: str = ""
    # the qemu sysroot + aarch64 TVM runtime that verification runs with (default
    # ~/.cache/edgecc/arm64; scripts/setup_arm.sh fills it)
    emulator_cache: str = ""
    tvm_log: bool = False  # show TVM's native log (hidden unless a build fails)

    def __post_init__(self) -> None:
        resolve(self.preset, self.features, self.mtriple)  # a clear error for a bad choice
        check_common_options(self)
        if self.tune_trials and not self.tune_on:
            raise ValueError("tuning for arm64 measures kernels on the device: give "
                             "tune_on=HOST:PORT:KEY (a TVM RPC tracker your board is "
                             "registered with) or tune_on=qemu (emulated here; its timings "
                             "are not the chip's)")
        if self.tune_on and self.tune_on != "qemu":
            tracker_address(self.tune_on)


class ArmTarget(TvmTarget):
    """64-bit Arm CPUs via TVM Relax + LLVM cross-compilation; verified under qemu-aarch64."""

    name = "arm64"
    description = "64-bit Arm CPUs (TVM Relax, LLVM, aarch64 cross-compiled)"
    Options = ArmOptions
    can_execute = True  # under emulation, when set up (see executes())
    preset_option = "preset"

    def availability(self) -> Availability:
        tvm = super().availability()
        if not tvm.available:
            return tvm
        if shutil.which(ArmOptions.cc) is None:
            return Availability(False, f"no cross compiler {ArmOptions.cc}: apt-get install "
                                       "g++-aarch64-linux-gnu (or run scripts/setup_arm.sh)")
        emu = "qemu-aarch64 verification ready" if emulation.ready() else (
            "no verification here: " + emulation.why_not_ready())
        return Availability(True, f"{tvm.detail}, {ArmOptions.cc}; {emu}")

    def executes(self, options: ArmOptions) -> bool:
        return emulation.ready(options.emulator_cache)

    def listing(self) -> str:
        return "presets (-t arm64:NAME):\n" + describe()

    def not_verified(self, options: ArmOptions) -> list[str]:
        if emulation.ready(options.emulator_cache):
            return ["speed on real hardware (qemu checks the numbers, not the timing)"]
        return ["artifact execution: " + emulation.why_not_ready(options.emulator_cache)]

    def lower(self, program: Program, output_dir: str, options: ArmOptions) -> Lowered:
        self.require_available()
        self.check_lowerable(program)
        return lower_program(program, output_dir, options)

    def load(self, output_dir: str, manifest: dict[str, Any]) -> Any:
        return load_runner(output_dir, manifest)

    # -- decoder bundles (edgecc.llm.build_decoder for arm64) ---------------------------

    def install_generator(self, bundle: str) -> str:
        """Put the board-side generator ``generate.py`` (numpy + TVM runtime) in ``bundle``."""
        return install_generator(bundle)

    def generate(self, bundle: str, prompt_ids: list[int], max_new_tokens: int,
                 **options: Any) -> Any:
        """The bundle's ``generate.py`` under qemu-aarch64 here (one launch), its tokens
        yielded as they come (``runner.emulated_generate``; options: temperature, top_k,
        top_p, seed, stop_at_eos, num_threads, stats)."""
        return emulated_generate(bundle, prompt_ids, max_new_tokens, **options)
