"""``-t apple``: a Core ML ``.mlpackage`` (ML Program) that keeps edgecc's compression
exactly, written with coremltools.

The folder has the shape of every target: ``presets.py`` (deployment targets and what each
can hold), ``partition.py`` (legalization, what a deployment target refuses), ``lower.py``
(with ``carry.py``: edgecc's compression as ``constexpr_*`` MIL ops), ``runner.py`` (Core ML
on macOS; the MIL interpreter elsewhere) and the bundle's ``README.txt``; ``check.py``
verifies the saved package.

Core ML does not execute off Apple OSes, so on Linux ``compile()``'s generic verification
does not run; the lowering checks the package itself (``check``): structure, every
compressed weight bit-exact, and the package run by edgecc's numpy MIL interpreter against
the program (fp32: max-abs <= 1e-4 relative to the output scale; fp16: cosine >= 0.999). On
macOS, where ``predict`` works, compile() runs the package and compares.
"""

from __future__ import annotations

import dataclasses
import functools
import platform
from typing import Any, Literal

from edgecc.errors import OptionError
from edgecc.pipeline_text import PassStep
from edgecc.program import Program
from edgecc.target import Availability, Lowered, Target
from edgecc.targets.apple import check, partition, presets
from edgecc.targets.apple.lower import lower_program
from edgecc.targets.apple.runner import load_runner, predict_works


@dataclasses.dataclass(frozen=True)
class AppleOptions:
    deployment: str = presets.DEFAULT_DEPLOYMENT
    compute_precision: Literal["fp16", "fp32"] = "fp16"
    compute_units: Literal["all", "cpu_and_ne", "cpu_only", "cpu_and_gpu"] = "all"
    # a compression the deployment target cannot hold: refuse, or store it as float
    fallback: Literal["error", "dequantize"] = "error"
    check: bool = True  # verify the saved package here (structure, weights, interpreter)
    check_samples: int = 2  # fresh random inputs the MIL interpreter runs (0: none)

    def __post_init__(self) -> None:
        if self.deployment not in presets.DEPLOYMENTS:
            raise ValueError(f"unknown deployment '{self.deployment}': expected one of "
                             f"{', '.join(presets.DEPLOYMENTS)}")
        if self.compute_precision not in presets.COMPUTE_PRECISIONS:
            raise ValueError("compute_precision must be fp16 or fp32")
        if self.compute_units not in presets.COMPUTE_UNITS:
            raise ValueError(f"compute_units must be one of {', '.join(presets.COMPUTE_UNITS)}")
        if self.check_samples < 0:
            raise ValueError("check_samples must be >= 0")
        if self.fallback not in presets.FALLBACKS:
            raise ValueError("fallback must be error or dequantize")


@functools.lru_cache(maxsize=1)
def _coremltools_version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("coremltools")
    except PackageNotFoundError:
        return None


def version_problem(found: str | None) -> str | None:
    """Why ``found`` (a coremltools version) cannot be used, or None."""
    if found is None:
        return "missing coremltools: pip install -c constraints.txt coremltools"
    lo, hi = presets.COREMLTOOLS_TESTED
    try:
        major_minor = tuple(int(p) for p in found.split(".")[:2])
    except ValueError:
        major_minor = (-1, -1)
    if not lo <= major_minor < hi:
        return (f"coremltools {found} is outside the tested range "
                f">={lo[0]}.{lo[1]},<{hi[0]}.{hi[1]}: pip install -c constraints.txt "
                "coremltools==9.0")
    return None


class AppleTarget(Target):
    """Core ML ML Program (.mlpackage) with edgecc's compression carried over exactly."""

    name = "apple"
    description = ("a Core ML .mlpackage for iOS/macOS (compression carried over exactly; "
                   "checked by edgecc's MIL interpreter off macOS)")
    Options = AppleOptions
    preset_option = "deployment"
    can_execute = False  # on macOS, executes() says whether predict works

    def availability(self) -> Availability:
        found = _coremltools_version()
        problem = version_problem(found)
        if problem:
            return Availability(False, problem)
        return Availability(True, f"coremltools {found}")

    def legalization(self, options: AppleOptions) -> tuple[PassStep, ...]:
        # Quantization the deployment target cannot hold is refused by the quantize pass
        # itself, before it runs (its validate reads the target's QuantSupport).
        self.quantization = presets.quantization(presets.DEPLOYMENTS[options.deployment],
                                                 options.fallback)
        return partition.LEGALIZATION

    def check_pipeline(self, steps: Any, options: AppleOptions) -> None:
        """A quantize / palettize step whose result the deployment target cannot hold
        (int4, per-block, grouped LUTs below iOS18; quantized activations below iOS17) is
        refused before any pass runs, naming the deployment that holds it (with
        ``fallback=dequantize`` it is stored as float and named in the report instead)."""
        if options.fallback == "dequantize":
            return
        problems = partition.pipeline_problems(steps, presets.DEPLOYMENTS[options.deployment])
        if problems:
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise OptionError(f"-t apple: {problems[0]}{more}; or --target-option "
                              "fallback=dequantize (stored as float, named in the report)")

    def lower(self, program: Program, output_dir: str, options: AppleOptions) -> Lowered:
        self.require_available()
        dep = presets.DEPLOYMENTS[options.deployment]
        problems = partition.compression_problems(program, dep)
        if problems and options.fallback == "error":
            more = f" (and {len(problems) - 1} more)" if len(problems) > 1 else ""
            raise OptionError(f"-t apple: {problems[0]}{more}; or --target-option "
                              "fallback=dequantize (stored as float, named in the report)")
        lowered, record = lower_program(program, output_dir, options)
        if options.check:
            lowered.report["apple_check"] = check.check_package(program, output_dir, record,
                                                                options)
        return lowered

    def executes(self, options: AppleOptions) -> bool:
        return platform.system() == "Darwin" and predict_works()

    def load(self, output_dir: str, manifest: dict[str, Any]) -> Any:
        return load_runner(output_dir, manifest)

    def listing(self) -> str:
        return presets.listing()

    def not_verified(self, options: AppleOptions) -> list[str]:
        out = []
        if not self.executes(options):
            out.append("execution by Core ML on an Apple device (Core ML runs only on "
                       "macOS/iOS; the lowering's apple_check ran the package in edgecc's "
                       "MIL interpreter instead)")
        out.append(f"compute units '{options.compute_units}': ANE/GPU numerics and placement "
                   "are chosen by Core ML on the device")
        if not options.check:
            out.append("the package check (check=false)")
        elif options.check_samples == 0:
            out.append("running the package in edgecc's MIL interpreter (check_samples=0)")
        elif not check.interpreter_available():
            out.append("running the package in edgecc's MIL interpreter (not installed: "
                       "edgecc.targets.apple.mil.interpreter)")
        return out
