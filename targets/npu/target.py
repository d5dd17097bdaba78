"""``-t npu``: an NPU described by a YAML description, with the CPU taking what it cannot run.

The folder has the shape of every target: ``presets.py`` (the shipped descriptions in
``devices/``), ``partition.py`` (NPU or CPU per node, with reasons: the deployability
report; ``legalize.py`` makes layer outputs int8), ``lower.py`` (C codegen or Vela per
region, the CPU part through ``edgecc.targets.tvm``), ``runner.py`` and the bundle's
``README.txt``. The split of the artifact is TVM Relax BYOC's (``byoc``: patterns and
check functions from the description, ``relax.ext.edgecc_npu_<codegen>``). The NPU
machinery: ``description``, ``region``, ``simulator``, ``tflite_writer``, ``vela_compile``,
``codegen_c``.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from edgecc.program import Program
from edgecc.target import Availability, Lowered, QuantSupport
from edgecc.targets.npu import presets
from edgecc.targets.npu.lower import lower_program
from edgecc.targets.npu.runner import load_runner
from edgecc.targets.tvm.target_base import TvmTarget


@dataclasses.dataclass(frozen=True)
class NpuOptions:
    device: str = "generic-int8"  # a shipped description: `edgecc targets`; -t npu:NAME
    description: str = ""  # path of a user's description YAML (replaces device)
    cpu: str = "host"  # where the CPU part runs: host, or an arm64 preset (arm64:NAME)
    num_threads: int = 0  # TVM worker threads for the CPU part; 0 = TVM's default
    # Ethos-U: connected NPU layers as one Vela region (cascaded); false: one op per region
    merge_regions: bool = True
    tune_trials: int = 0  # not supported for npu yet (kept for the TVM options check)
    tvm_log: bool = False  # show TVM's native log

    def __post_init__(self) -> None:
        desc = presets.resolve(self.device, self.description)  # one-line errors, suggestions
        presets.check_cpu(self.cpu, desc)
        if self.num_threads < 0:
            raise ValueError("num_threads must be >= 0")
        if self.tune_trials:
            raise ValueError("tune_trials: the npu target does not tune its CPU part yet")


def quant_support(desc: Any) -> QuantSupport:
    """The ``QuantSupport`` a description's ``quantization:`` section means."""
    q = desc.quantization
    return dataclasses.replace(
        NpuTarget.quantization,
        weight_granularities=frozenset(("per-tensor",)) if q.weight_granularity == "per-tensor"
        else frozenset(("per-tensor", "per-channel")),
        symmetric_activations_only=q.activation_zero_point == "zero")


class NpuTarget(TvmTarget):
    """NPU regions from a declarative description (Ethos-U via Vela, or C), CPU via TVM."""

    name = "npu"
    description = "NPUs from a declarative description: Arm Ethos-U (Vela), generic-int8 (C)"
    Options = NpuOptions
    can_execute = True
    preset_option = "device"
    # what the shipped descriptions compute with: int8 per-tensor static activations,
    # symmetric int8 weights per tensor or per output channel
    quantization = QuantSupport(weight_dtypes=frozenset(("int8",)),
                                activation_dtypes=frozenset(("int8",)),
                                weight_granularities=frozenset(("per-tensor", "per-channel")),
                                symmetric_weights_only=True, dynamic_activations=False)

    def availability(self) -> Availability:
        tvm = super().availability()
        if not tvm.available:
            return tvm
        try:
            import ethosu.vela  # noqa: F401
        except ImportError:
            return Availability(True, f"{tvm.detail}; Ethos-U devices need ethos-u-vela==5.2.0 "
                                      "(pip install -c constraints.txt 'edgecc[npu]')")
        return Availability(True, f"{tvm.detail}, ethos-u-vela 5.2.0")

    def legalization(self, options: Any) -> tuple:
        """The NPU's legalization. ``compile`` asks for it before any pass runs, with the
        options: the description's quantization constraints then become this target
        instance's ``quantization`` (e.g. ``zero_point: zero`` makes ``quantize`` produce
        symmetric activations), so every NPU region is legal."""
        from edgecc.targets.npu.partition import (fusable_activations, legalization,
                                                  npu_softmax, table_activations)

        desc = presets.resolve(options.device, options.description)
        self.quantization = quant_support(desc)
        return legalization(desc.quantization.activation_zero_point == "zero",
                            fusable_activations(desc), desc.op("matmul") is not None,
                            table_activations(desc), not npu_softmax(desc))

    def listing(self) -> str:
        return "devices (-t npu:NAME, or --target-option description=FILE.yaml):\n" \
            + presets.describe()

    def deployability(self, program: Program, options: NpuOptions) -> tuple[dict[str, Any], str]:
        """The deployability report of ``program`` (``edgecc inspect -t npu``): per op NPU
        or CPU with the reason, share of ops and MACs. A float program is judged after
        fold-batchnorm and fuse, as if quantized as the NPU needs."""
        from edgecc.pass_manager import PassManager
        from edgecc.targets.npu.partition import classify_program, format_report, summarize

        desc = presets.resolve(options.device, options.description)
        quantized = any(getattr(n.target, "__name__", "").startswith("quantize")
                        for n in program.nodes("call_function"))
        if not quantized:
            program = PassManager("fold-batchnorm,fuse,dce")(program.copy()).program
        report = summarize(classify_program(program, desc, assume_quantized=not quantized),
                           desc)
        report["assumed_quantization"] = not quantized
        return report, format_report(report)

    def not_verified(self, options: NpuOptions) -> list[str]:
        desc = presets.resolve(options.device, options.description)
        if desc.codegen == "vela":
            return ["Ethos-U execution: no Ethos-U hardware or Corstone FVP ran the command "
                    "streams; verification ran the NPU regions in edgecc's integer simulator "
                    "(bit-exact with LiteRT's reference kernels), and the cycle counts are "
                    "Vela's estimates"]
        return []

    def lower(self, program: Program, output_dir: str, options: NpuOptions) -> Lowered:
        self.require_available()
        self.check_lowerable(program)
        return lower_program(program, output_dir, options)

    def load(self, output_dir: str, manifest: dict[str, Any]) -> Any:
        self.require_available()
        return load_runner(output_dir, manifest)
