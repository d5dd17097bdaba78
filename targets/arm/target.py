"""``-t arm64``: an aarch64 shared library for 64-bit Arm CPUs, cross-compiled with TVM Relax
+ LLVM for a core preset (or a triple and a feature list), verified by running it under
qemu-aarch64 when the emulation cache is set up (``scripts/setup_arm.sh``).

Output bundle: ``model.so`` (aarch64, weights inside), ``run_model.py`` (a deploy runner that
needs only numpy and the TVM runtime), ``README.txt`` (how to run it on a board) and the
manifest.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import shutil
from typing import Any

import torch.fx as fx

from edgecc.errors import LoweringError
from edgecc.passes import ApplyMasks, AttentionMaskToAdditive
from edgecc.pipeline_text import PassStep
from edgecc.program import Program, op_name
from edgecc.target import Artifact, Availability, Support, Target, save_lowering_report
from edgecc.targets.arm import emulation
from edgecc.targets.arm.presets import llvm_spec, resolve

LIBRARY = "model.so"
RUNNER = "run_model.py"


@dataclasses.dataclass(frozen=True)
class ArmOptions:
    preset: str = "generic"  # a core or board: `edgecc targets` lists them
    features: tuple[str, ...] = ()  # extra AArch64 features, e.g. (+i8mm,)
    mtriple: str = "aarch64-linux-gnu"
    num_threads: int = 0  # TVM worker threads at run time; 0 = TVM's default
    cc: str = "aarch64-linux-gnu-g++"  # the cross compiler that links model.so

    def __post_init__(self) -> None:
        resolve(self.preset, self.features, self.mtriple)  # a clear error for a bad choice
        if self.num_threads < 0:
            raise ValueError("num_threads must be >= 0")


@functools.lru_cache(maxsize=1)
def _supported() -> frozenset[str]:
    from edgecc.targets.host.lowering import supported_op_names

    return frozenset(supported_op_names())


README = """edgecc arm64 artifact: {preset} ({mcpu}), {triple}, features {features}

Files: model.so (aarch64 shared library with the weights), run_model.py, manifest.json.

On the board (64-bit Arm Linux, Python >= 3.9):
    pip install numpy apache-tvm-ffi==0.1.14.post0 apache-tvm==0.27.0.post1
    python3 -c "import numpy as np; np.savez('inputs.npz', {example})"
    TVM_USE_RUNTIME_LIB=1 python3 run_model.py model.so inputs.npz outputs.npz --repeat 20

Inputs (in order, as arg0, arg1, ...): {inputs}
"""


class ArmTarget(Target):
    """64-bit Arm CPUs via TVM Relax + LLVM cross-compilation; verified under qemu-aarch64."""

    name = "arm64"
    description = "64-bit Arm CPUs (TVM Relax, LLVM, aarch64 cross-compiled)"
    Options = ArmOptions
    can_execute = True  # under emulation, when set up (see executes())

    def availability(self) -> Availability:
        try:
            import tvm
        except Exception:
            return Availability(False, "apache-tvm is not installed: pip install -c "
                                       "constraints.txt 'apache-tvm==0.27.0.post1' "
                                       "'apache-tvm-ffi==0.1.14.post0'")
        if shutil.which(ArmOptions.cc) is None:
            return Availability(False, f"no cross compiler {ArmOptions.cc}: apt-get install "
                                       "g++-aarch64-linux-gnu (or run scripts/setup_arm.sh)")
        emu = "qemu-aarch64 verification ready" if emulation.ready() else (
            "no verification here: " + emulation.why_not_ready())
        return Availability(True, f"apache-tvm {tvm.__version__}, {ArmOptions.cc}; {emu}")

    def executes(self) -> bool:
        return emulation.ready()

    def listing(self) -> str:
        from edgecc.targets.arm.presets import describe

        return "presets (--target-option preset=NAME):\n" + describe()

    def not_verified(self) -> list[str]:
        if emulation.ready():
            return ["speed on real hardware (qemu checks the numbers, not the timing)"]
        return ["artifact execution: " + emulation.why_not_ready()]

    def supports(self, node: fx.Node) -> Support:
        if getattr(node.target, "__name__", "") in _supported():
            return Support(True)
        return Support(False, f"TVM Relax has no converter for {op_name(node)}")

    def legalization(self, options: ArmOptions) -> tuple[PassStep, ...]:
        return (PassStep(AttentionMaskToAdditive, AttentionMaskToAdditive.Options()),
                PassStep(ApplyMasks, ApplyMasks.Options()))

    def lower(self, program: Program, output_dir: str, options: ArmOptions) -> list[Artifact]:
        self.require_available()
        import tvm
        from tvm.support import cc

        from edgecc.targets.host import lowering

        if shutil.which(options.cc) is None:
            raise LoweringError(f"cross compiler '{options.cc}' not found: apt-get install "
                                "g++-aarch64-linux-gnu (or run scripts/setup_arm.sh)")
        bad = self.unsupported_nodes(program)
        if bad:
            listed = "; ".join(f"{n} ({op}): {why}" for n, op, why in bad[:10])
            raise LoweringError(f"arm64 target cannot lower {len(bad)} node(s): {listed}")
        core = resolve(options.preset, options.features, options.mtriple)
        target = tvm.target.Target(llvm_spec(core, options.mtriple, options.num_threads))
        from edgecc.targets.host.int8_gemm import isa_for

        integer: dict[str, Any] = {}
        module = lowering.to_relax(program, integer_kernels=True, isa=isa_for(core.features),
                                   report=integer)
        lowering.build(module, target, os.path.join(output_dir, LIBRARY), "edgecc",
                       fcompile=cc.cross_compiler(options.cc))
        save_lowering_report(output_dir, {"integer_kernels": integer} if integer else {})
        shutil.copyfile(os.path.join(os.path.dirname(__file__), RUNNER),
                        os.path.join(output_dir, RUNNER))
        specs = program.input_specs
        example = ", ".join(f"arg{i}=np.zeros({list(s.shape)}, '{s.dtype}')"
                            for i, s in enumerate(specs))
        with open(os.path.join(output_dir, "README.txt"), "w") as f:
            f.write(README.format(preset=options.preset, mcpu=core.mcpu or "generic",
                                  triple=options.mtriple,
                                  features=" ".join("+" + x for x in core.features),
                                  example=example,
                                  inputs=", ".join(s.describe() for s in specs)))
        features = " ".join("+" + x for x in core.features)
        return [Artifact(LIBRARY, "library", f"aarch64 TVM Relax VM executable with weights, "
                                             f"{core.mcpu or 'generic'} {features}"),
                Artifact(RUNNER, "runner", "deploy runner (numpy + TVM runtime)"),
                Artifact("README.txt", "docs", "how to run it on a board")]

    def load(self, output_dir: str, manifest: dict[str, Any]) -> Any:
        threads = manifest["target"]["options"].get("num_threads") or 0
        return emulation.EmulatedRunner(output_dir, LIBRARY, threads)
