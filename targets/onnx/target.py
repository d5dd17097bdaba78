"""``-t onnx``: write an ``.onnx`` file (``torch.onnx`` dynamo exporter) and verify it with
onnxruntime.

The program's composites are decomposed first (ONNX has no fused conv+activation
operator; onnxruntime fuses again itself). Dynamic dimensions stay symbolic in the file.
Weights go to an external-data side file when they would approach protobuf's 2 GB limit
(or always / never, by option). ``onnx.checker`` must accept the result.

Not yet: quantized regions as QDQ (no quantization passes exist yet).
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import Any, Literal

from edgecc.errors import LoweringError, one_line
from edgecc.passes import AttentionMaskToAdditive, DecomposeComposites
from edgecc.pipeline_text import PassStep
from edgecc.program import Program
from edgecc.target import Artifact, Availability, Target

MODEL = "model.onnx"
WEIGHTS = "model.onnx.data"
EXTERNAL_THRESHOLD = 1 << 30  # bytes of weights above which "auto" uses external data


@dataclasses.dataclass(frozen=True)
class OnnxOptions:
    opset: int = 20
    external_data: Literal["auto", "always", "never"] = "auto"

    def __post_init__(self) -> None:
        if not 18 <= self.opset <= 23:
            raise ValueError("opset must be between 18 and 23 (torch.onnx's dynamo exporter)")


@functools.lru_cache(maxsize=1)
def _versions() -> tuple[dict[str, str], list[str]]:
    found, missing = {}, []
    for module, package in (("onnx", "onnx"), ("onnxruntime", "onnxruntime"),
                            ("onnxscript", "onnxscript")):
        try:
            found[package] = __import__(module).__version__
        except Exception:
            missing.append(package)
    return found, missing


class OnnxTarget(Target):
    """ONNX file (torch.onnx dynamo exporter), checked, and verified with onnxruntime."""

    name = "onnx"
    description = "an .onnx file for any ONNX runtime (verified with onnxruntime)"
    Options = OnnxOptions
    can_execute = True

    def availability(self) -> Availability:
        found, missing = _versions()
        if missing:
            return Availability(False, f"missing {', '.join(missing)}: pip install -c "
                                       f"constraints.txt {' '.join(missing)}")
        return Availability(True, ", ".join(f"{k} {v}" for k, v in found.items()))

    def legalization(self, options: OnnxOptions) -> tuple[PassStep, ...]:
        # onnxruntime's attention does not zero fully-masked query rows as PyTorch does.
        return (PassStep(DecomposeComposites, DecomposeComposites.Options()),
                PassStep(AttentionMaskToAdditive, AttentionMaskToAdditive.Options()))

    def lower(self, program: Program, output_dir: str, options: OnnxOptions) -> list[Artifact]:
        self.require_available()
        import onnx
        import torch

        from edgecc.accounting import measure

        external = options.external_data == "always" or (
            options.external_data == "auto" and measure(program).bytes > EXTERNAL_THRESHOLD)
        path = os.path.join(output_dir, MODEL)
        # The exporter logs that torchvision's ops are absent; nothing here uses them.
        logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
        try:
            onnx_program = torch.onnx.export(
                program.export(), (), dynamo=True, opset_version=options.opset, verbose=False,
                input_names=[s.name for s in program.input_specs],
                output_names=[s.name for s in program.output_specs])
            onnx_program.save(path, external_data=external)
        except Exception as exc:
            raise LoweringError(f"ONNX export failed: {one_line(exc)}") from exc
        if external:
            _rename_external_data(path, output_dir)
        try:
            onnx.checker.check_model(path, full_check=True)
        except Exception as exc:
            raise LoweringError(f"onnx.checker rejected the exported model: {one_line(exc)}") from exc
        artifacts = [Artifact(MODEL, "model", f"ONNX opset {options.opset}")]
        if external:
            artifacts.append(Artifact(WEIGHTS, "weights", "external tensor data of model.onnx"))
        return artifacts

    def load(self, output_dir: str, manifest: dict[str, Any]) -> Any:
        from edgecc.targets.onnx.runner import OnnxRuntimeRunner

        return OnnxRuntimeRunner(os.path.join(output_dir, MODEL))


def _rename_external_data(path: str, directory: str) -> None:
    """Give the side file one predictable name and point every tensor at it."""
    import onnx
    from onnx.external_data_helper import convert_model_to_external_data

    model = onnx.load(path, load_external_data=True)
    for name in os.listdir(directory):
        if name != MODEL:
            os.remove(os.path.join(directory, name))
    convert_model_to_external_data(model, all_tensors_to_one_file=True, location=WEIGHTS,
                                   size_threshold=1024)
    onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location=WEIGHTS, size_threshold=1024)
