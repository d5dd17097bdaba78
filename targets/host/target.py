"""``-t host``: compile for the build machine's CPU with TVM Relax and run it here."""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Literal

import torch.fx as fx

from edgecc.errors import LoweringError
from edgecc.passes import ApplyMasks, AttentionMaskToAdditive
from edgecc.pipeline_text import PassStep
from edgecc.program import Program, op_name
from edgecc.target import Artifact, Availability, Support, Target, save_lowering_report

LIBRARY = "model.so"


@dataclasses.dataclass(frozen=True)
class HostOptions:
    mcpu: str = ""  # LLVM CPU name; empty = this machine's (llvm_get_system_cpu)
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

    def __post_init__(self) -> None:
        if self.num_threads < 0:
            raise ValueError("num_threads must be >= 0")
        if self.tune_trials < 0:
            raise ValueError("tune_trials must be >= 0 (0 = no tuning)")
        if self.tune_trials and self.schedule != "edgecc":
            raise ValueError("tuning needs schedule=edgecc (untuned kernels fall back to it)")


@functools.lru_cache(maxsize=1)
def _tvm_version() -> str | None:
    try:
        import tvm
    except Exception:
        return None
    return str(tvm.__version__)


@functools.lru_cache(maxsize=1)
def _supported() -> frozenset[str]:
    from edgecc.targets.host.lowering import supported_op_names

    return frozenset(supported_op_names())


class HostTarget(Target):
    """This machine's CPU via Apache TVM Relax + LLVM; runs and verifies the artifact here."""

    name = "host"
    description = "the build machine's CPU (TVM Relax, LLVM)"
    Options = HostOptions
    can_execute = True

    def availability(self) -> Availability:
        version = _tvm_version()
        if version is None:
            return Availability(
                False,
                "apache-tvm is not installed: pip install -c constraints.txt "
                "'apache-tvm==0.27.0.post1' 'apache-tvm-ffi==0.1.14.post0'",
            )
        return Availability(True, f"apache-tvm {version}")

    def supports(self, node: fx.Node) -> Support:
        name = getattr(node.target, "__name__", "")
        if name in _supported():
            return Support(True)
        return Support(False, f"TVM Relax has no converter for {op_name(node)}")

    def legalization(self, options: HostOptions) -> tuple[PassStep, ...]:
        # TVM Relax's attention takes additive float masks only.
        return (PassStep(AttentionMaskToAdditive, AttentionMaskToAdditive.Options()),
                PassStep(ApplyMasks, ApplyMasks.Options()))  # dense kernels: fold masks

    def lower(self, program: Program, output_dir: str, options: HostOptions) -> list[Artifact]:
        self.require_available()
        from edgecc.targets.host import lowering

        bad = self.unsupported_nodes(program)
        if bad:
            listed = "; ".join(f"{n} ({op}): {why}" for n, op, why in bad[:10])
            raise LoweringError(f"host target cannot lower {len(bad)} node(s): {listed}")
        report: dict[str, Any] = {}
        integer: dict[str, Any] = {}
        module = lowering.to_relax(program, integer_kernels=options.integer_kernels,
                                   report=integer)
        if integer:
            report["integer_kernels"] = integer
        target = lowering.llvm_target(options.mcpu or None, options.num_threads or None)
        database, how = None, f"{options.schedule} schedule"
        if options.tune_trials:
            from edgecc.targets.host.tuning import tune

            database, stats = tune(module, target, options.tune_trials,
                                   root=options.tune_cache or None)
            report["tuning"] = stats
            how = (f"MetaSchedule-tuned ({stats['kernels_with_record']}/{stats['kernels']} "
                   "kernels), edgecc schedule for the rest")
        lowering.build(module, target, os.path.join(output_dir, LIBRARY), options.schedule,
                       database=database)
        save_lowering_report(output_dir, report)
        return [Artifact(LIBRARY, "library",
                         f"TVM Relax VM executable with weights, llvm {target.attrs['mcpu']}, "
                         f"{how}")]

    def load(self, output_dir: str, manifest: dict[str, Any]) -> Any:
        self.require_available()
        from edgecc.targets.host.runner import HostRunner

        threads = manifest["target"]["options"].get("num_threads") or None
        return HostRunner(os.path.join(output_dir, LIBRARY), threads)
