"""``-t arm64``: an aarch64 shared library for 64-bit Arm CPUs, cross-compiled with TVM Relax
+ LLVM for a core preset (or a triple and a feature list), verified by running it under
qemu-aarch64 when the emulation cache is set up (``scripts/setup_arm.sh``).

Output bundle: ``model.so`` (aarch64, weights inside), ``run_model.py`` (a deploy runner that
needs only numpy and the TVM runtime), ``README.txt`` (how to run it on a board) and the
manifest.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import shutil
from collections.abc import Iterator
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
TUNING_CORES = 4
RUNNER = "run_model.py"


@dataclasses.dataclass(frozen=True)
class ArmOptions:
    preset: str = "generic"  # a core or board: `edgecc targets` lists them
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

    def __post_init__(self) -> None:
        resolve(self.preset, self.features, self.mtriple)  # a clear error for a bad choice
        if self.num_threads < 0:
            raise ValueError("num_threads must be >= 0")
        if self.tune_trials < 0:
            raise ValueError("tune_trials must be >= 0 (0 = no tuning)")
        if self.tune_trials and not self.tune_on:
            raise ValueError("tuning for arm64 measures kernels on the device: give "
                             "tune_on=HOST:PORT:KEY (a TVM RPC tracker your board is "
                             "registered with) or tune_on=qemu (emulated here; its timings "
                             "are not the chip's)")
        if self.tune_on and self.tune_on != "qemu":
            _tracker_address(self.tune_on)


def _tracker_address(text: str) -> tuple[str, int, str]:
    host, _, rest = text.partition(":")
    port, _, key = rest.partition(":")
    if not (host and port.isdigit() and key):
        raise ValueError(f"tune_on={text!r}: expected HOST:PORT:KEY (an RPC tracker and the "
                         "key your board registered with) or 'qemu'")
    return host, int(port), key


def _alloc_arguments(session: Any, device: Any, args_info: Any, alloc_repeat: int) -> Any:
    """MetaSchedule's argument allocation with the random data made here and copied over:
    a board with only the TVM runtime has no ``tvm.contrib.random``."""
    import numpy as np
    from tvm.s_tir.meta_schedule.runner.utils import alloc_argument_common

    rng = np.random.default_rng(0)

    def fill(tensor: Any) -> None:
        shape, dtype = tuple(tensor.shape), str(tensor.dtype)
        if dtype.startswith(("int", "uint")):
            value = rng.integers(-8 if dtype.startswith("int") else 0, 8, shape).astype(dtype)
        else:
            value = rng.standard_normal(shape).astype(dtype)
        tensor.copyfrom(value)

    return alloc_argument_common(fill, device, args_info, alloc_repeat)


@contextlib.contextmanager
def _tuning_runner(tune_on: str) -> Iterator[tuple[Any, str]]:
    """A MetaSchedule RPC runner for ``tune_on`` and the device's name for the cache key;
    for "qemu", a tracker here and an emulated board registered with it."""
    from tvm.rpc.tracker import Tracker
    from tvm.s_tir import meta_schedule as ms

    def runner(host: str, port: int, key: str) -> Any:
        return ms.runner.RPCRunner(
            rpc_config=ms.runner.RPCConfig(tracker_host=host, tracker_port=port,
                                           tracker_key=key, session_timeout_sec=300),
            evaluator_config=ms.runner.EvaluatorConfig(number=3, repeat=1, min_repeat_ms=0,
                                                       enable_cpu_cache_flush=False),
            f_alloc_argument=_alloc_arguments, max_workers=1)

    if tune_on != "qemu":
        host, port, key = _tracker_address(tune_on)
        yield runner(host, port, key), f"rpc:{key}"
        return
    tracker = Tracker(host="127.0.0.1", port=9190, port_end=9290, silent=True)
    try:
        with emulation.rpc_server(tracker.port, "edgecc-qemu"):
            yield runner("127.0.0.1", tracker.port, "edgecc-qemu"), "qemu-aarch64"
    finally:
        tracker.terminate()


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
        # MetaSchedule needs the core count it schedules for: num_threads, else 4 (most
        # boards); the same target builds, so the records it tuned apply.
        cores = options.num_threads or (TUNING_CORES if options.tune_trials else 0)
        target = tvm.target.Target(llvm_spec(core, options.mtriple, cores))
        from edgecc.targets.host.int8_gemm import isa_for

        integer: dict[str, Any] = {}
        module = lowering.to_relax(program, integer_kernels=True, isa=isa_for(core.features),
                                   report=integer)
        report: dict[str, Any] = {"integer_kernels": integer} if integer else {}
        database = None
        if options.tune_trials:
            from edgecc.targets.host.tuning import tune

            with _tuning_runner(options.tune_on) as (runner, device):
                database, report["tuning"] = tune(
                    module, target, options.tune_trials, root=options.tune_cache or None,
                    runner=runner, cross_cc=options.cc, device=device)
        lowering.build(module, target, os.path.join(output_dir, LIBRARY), "edgecc",
                       fcompile=cc.cross_compiler(options.cc), database=database)
        save_lowering_report(output_dir, report)
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
