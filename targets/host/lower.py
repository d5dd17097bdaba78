"""Lower a program for ``-t host``: TVM Relax → (MetaSchedule records where tuned) →
edgecc's default CPU schedule → LLVM for this machine's CPU (or the preset's), exported as
``model.so`` with the weights inside, plus the bundle's ``README.txt``."""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from edgecc.program import Program
from edgecc.target import Artifact, Lowered, example_shape
from edgecc.targets.host.presets import resolve

if TYPE_CHECKING:
    from edgecc.targets.host.target import HostOptions

LIBRARY = "model.so"
README = "README.txt"


def lower_program(program: Program, output_dir: str, options: HostOptions) -> Lowered:
    from edgecc.targets.tvm import lowering

    from edgecc.targets.tvm import x86_int8

    report: dict[str, Any] = {}
    integer: dict[str, Any] = {}
    mcpu = options.mcpu or resolve(options.preset).mcpu
    target = lowering.llvm_target(mcpu or None, options.num_threads or None)
    # x86 with AVX2: the fused int8 kernels (x86_int8); elsewhere the generic int8 GEMM
    isa = x86_int8.ISA if options.integer_kernels and x86_int8.supported(target) else "generic"
    module = lowering.to_relax(program, integer_kernels=options.integer_kernels, isa=isa,
                               report=integer, show_tvm_log=options.tvm_log)
    if integer:
        report["integer_kernels"] = integer
    database, how = None, f"{options.schedule} schedule"
    if options.tune_trials:  # kernel by kernel, then the whole model measured end to end
        from edgecc.targets.tvm.end_to_end import tune_host

        module, database, stats = tune_host(module, target, options.tune_trials,
                                            root=options.tune_cache or None)
        report["tuning"] = stats
        how = f"tuned ({options.tune_trials} trials): {stats['applied']}"
    lowering.build(module, target, os.path.join(output_dir, LIBRARY), options.schedule,
                   database=database, show_tvm_log=options.tvm_log, report=report)
    cpu = str(target.attrs["mcpu"])
    _write_readme(program, output_dir, cpu, options)
    return Lowered([Artifact(LIBRARY, "library",
                             f"TVM Relax VM executable with weights, llvm {cpu}, {how}"),
                    Artifact(README, "docs", "how to run it")], report)


def _write_readme(program: Program, output_dir: str, cpu: str, options: HostOptions) -> None:
    with open(os.path.join(os.path.dirname(__file__), README)) as f:
        template = f.read()
    specs = program.input_specs
    example = ", ".join(f"tvm.runtime.tensor(np.zeros({example_shape(s)}, '{s.dtype}'))"
                        for s in specs)
    threads = (f"{options.num_threads} TVM worker threads" if options.num_threads
               else "TVM's default thread count")
    with open(os.path.join(output_dir, README), "w") as f:
        origin = "the mcpu option" if options.mcpu else f"preset {options.preset}"
        f.write(template.format(cpu=f"llvm {cpu} ({origin})", threads=threads,
                                example=example,
                                inputs=", ".join(s.describe() for s in specs)))
