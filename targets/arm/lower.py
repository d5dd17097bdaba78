"""Lower a program for ``-t arm64``: TVM Relax with integer kernels for the core's int8
instructions (``smmla`` / ``sdot`` / widening), MetaSchedule records measured on the device
where tuned (an RPC tracker's board, or qemu here), edgecc's default schedule for the rest,
LLVM for the preset's core, linked by the aarch64 cross compiler.

Bundle: ``model.so`` (aarch64, weights inside), ``run_model.py`` (a deploy runner that needs
only numpy and the TVM runtime) and ``README.txt`` (how to run it on a board).
"""

from __future__ import annotations

import contextlib
import os
import shutil
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

from edgecc.errors import LoweringError
from edgecc.program import Program
from edgecc.target import Artifact, Lowered, example_shape
from edgecc.targets.arm import emulation
from edgecc.targets.arm.presets import llvm_spec, resolve

if TYPE_CHECKING:
    from edgecc.targets.arm.target import ArmOptions

LIBRARY = "model.so"
RUNNER = "run_model.py"
README = "README.txt"
TUNING_CORES = 4


def lower_program(program: Program, output_dir: str, options: ArmOptions) -> Lowered:
    import tvm
    from tvm.support import cc

    from edgecc.targets.tvm import lowering
    from edgecc.targets.tvm.int8_gemm import isa_for

    if shutil.which(options.cc) is None:
        raise LoweringError(f"cross compiler '{options.cc}' not found: apt-get install "
                            "g++-aarch64-linux-gnu (or run scripts/setup_arm.sh)")
    core = resolve(options.preset, options.features, options.mtriple)
    # MetaSchedule needs the core count it schedules for: num_threads, else 4 (most
    # boards); the same target builds, so the records it tuned apply.
    cores = options.num_threads or (TUNING_CORES if options.tune_trials else 0)
    target = tvm.target.Target(llvm_spec(core, options.mtriple, cores))
    integer: dict[str, Any] = {}
    module = lowering.to_relax(program, integer_kernels=True, isa=isa_for(core.features),
                               report=integer, show_tvm_log=options.tvm_log)
    report: dict[str, Any] = {"integer_kernels": integer} if integer else {}
    database = None
    if options.tune_trials:
        from edgecc.targets.tvm.tuning import tune

        with _tuning_runner(options.tune_on, options.emulator_cache) as (runner, device):
            database, report["tuning"] = tune(
                module, target, options.tune_trials, root=options.tune_cache or None,
                runner=runner, cross_cc=options.cc, device=device)
    lowering.build(module, target, os.path.join(output_dir, LIBRARY), "edgecc",
                   fcompile=cc.cross_compiler(options.cc), database=database,
                   show_tvm_log=options.tvm_log)
    shutil.copyfile(os.path.join(os.path.dirname(__file__), RUNNER),
                    os.path.join(output_dir, RUNNER))
    features = " ".join("+" + x for x in core.features)
    _write_readme(program, output_dir, options, core.mcpu or "generic", features)
    return Lowered([Artifact(LIBRARY, "library", f"aarch64 TVM Relax VM executable with "
                                                 f"weights, {core.mcpu or 'generic'} {features}"),
                    Artifact(RUNNER, "runner", "deploy runner (numpy + TVM runtime)"),
                    Artifact(README, "docs", "how to run it on a board")], report)


def _write_readme(program: Program, output_dir: str, options: ArmOptions, mcpu: str,
                  features: str) -> None:
    with open(os.path.join(os.path.dirname(__file__), README)) as f:
        template = f.read()
    specs = program.input_specs
    example = ", ".join(f"arg{i}=np.zeros({example_shape(s)}, '{s.dtype}')"
                        for i, s in enumerate(specs))
    with open(os.path.join(output_dir, README), "w") as f:
        f.write(template.format(preset=options.preset, mcpu=mcpu, triple=options.mtriple,
                                features=features, example=example,
                                inputs=", ".join(s.describe() for s in specs)))


def tracker_address(text: str) -> tuple[str, int, str]:
    """``HOST:PORT:KEY`` -> its parts; a ValueError saying the form otherwise."""
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
def _tuning_runner(tune_on: str, emulator_cache: str) -> Iterator[tuple[Any, str]]:
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
        host, port, key = tracker_address(tune_on)
        yield runner(host, port, key), f"rpc:{key}"
        return
    tracker = Tracker(host="127.0.0.1", port=9190, port_end=9290, silent=True)
    try:
        with emulation.rpc_server(tracker.port, "edgecc-qemu", emulator_cache):
            yield runner("127.0.0.1", tracker.port, "edgecc-qemu"), "qemu-aarch64"
    finally:
        tracker.terminate()
