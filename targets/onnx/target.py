"""``-t onnx``: write an ``.onnx`` file (``torch.onnx`` dynamo exporter) and verify it with
onnxruntime.

The folder has the shape of every target: ``presets.py`` (the opsets and what onnxruntime
executes), ``partition.py`` (which nodes, and the legalization before export), ``lower.py``
(with ``qdq.py`` for quantized programs), ``runner.py`` and the bundle's ``README.txt``.
"""

from __future__ import annotations

import dataclasses
import functools
from typing import Any, Literal

from edgecc.pipeline_text import PassStep
from edgecc.program import Program
from edgecc.target import Availability, Lowered, Target, module_versions
from edgecc.targets.onnx import partition, presets
from edgecc.targets.onnx.lower import lower_program
from edgecc.targets.onnx.runner import load_runner


@dataclasses.dataclass(frozen=True)
class OnnxOptions:
    opset: int = presets.DEFAULT_OPSET
    external_data: Literal["auto", "always", "never"] = "auto"

    def __post_init__(self) -> None:
        if self.opset not in presets.OPSETS:
            raise ValueError(f"opset must be between {presets.OPSETS[0]} and "
                             f"{presets.OPSETS[-1]} (torch.onnx's dynamo exporter)")


@functools.lru_cache(maxsize=1)
def _versions() -> tuple[dict[str, str], list[str]]:
    return module_versions((("onnx", "onnx"), ("onnxruntime", "onnxruntime"),
                            ("onnxscript", "onnxscript")))


class OnnxTarget(Target):
    """ONNX file (torch.onnx dynamo exporter), checked, and verified with onnxruntime."""

    name = "onnx"
    description = "an .onnx file for any ONNX runtime (verified with onnxruntime)"
    Options = OnnxOptions
    can_execute = True
    quantization = presets.QUANTIZATION

    def availability(self) -> Availability:
        found, missing = _versions()
        if missing:
            return Availability(False, f"missing {', '.join(missing)}: pip install -c "
                                       f"constraints.txt {' '.join(missing)}")
        return Availability(True, ", ".join(f"{k} {v}" for k, v in found.items()))

    def legalization(self, options: OnnxOptions) -> tuple[PassStep, ...]:
        return partition.LEGALIZATION

    def lower(self, program: Program, output_dir: str, options: OnnxOptions) -> Lowered:
        self.require_available()
        return lower_program(program, output_dir, options)

    def load(self, output_dir: str, manifest: dict[str, Any]) -> Any:
        return load_runner(output_dir, manifest)
