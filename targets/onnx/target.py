"""``-t onnx``: write an ``.onnx`` file (``torch.onnx`` dynamo exporter) and verify it with
onnxruntime.

The program's composites are decomposed first (ONNX has no fused conv+activation
operator; onnxruntime fuses again itself). Dynamic dimensions stay symbolic in the file.
Weights go to an external-data side file when they would approach protobuf's 2 GB limit
(or always / never, by option). ``onnx.checker`` must accept the result.

Quantized programs are written as QDQ (``QuantizeLinear`` / ``DequantizeLinear``, integer
weight initializers, 4-bit packed as ONNX packs it): see ``qdq.py``.
"""

from __future__ import annotations

import dataclasses
import functools
import logging
import os
from typing import Any, Literal

from edgecc.errors import LoweringError, one_line
from edgecc.passes import ApplyMasks, AttentionMaskToAdditive, DecomposeComposites
from edgecc.pipeline_text import PassStep
from edgecc.program import Program
from edgecc.target import Artifact, Availability, QuantSupport, Target
from edgecc.targets.onnx import qdq

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
    # QDQ formats onnxruntime executes (float8 QDQ is not run by its CPU provider). Its x86
    # int8 kernels (VPMADDUBSW) saturate with full-range 8-bit weights, so weights get 7
    # bits here, as onnxruntime's own quantizer does with reduce_range=True.
    quantization = QuantSupport(
        weight_dtypes=frozenset({"int8", "uint8", "int4", "uint4", "float16"}),
        activation_dtypes=frozenset({"int8", "uint8", "float16"}),
        reduce_range_weights=True)

    def availability(self) -> Availability:
        found, missing = _versions()
        if missing:
            return Availability(False, f"missing {', '.join(missing)}: pip install -c "
                                       f"constraints.txt {' '.join(missing)}")
        return Availability(True, ", ".join(f"{k} {v}" for k, v in found.items()))

    def legalization(self, options: OnnxOptions) -> tuple[PassStep, ...]:
        # onnxruntime's attention does not zero fully-masked query rows as PyTorch does.
        return (PassStep(DecomposeComposites, DecomposeComposites.Options()),
                PassStep(AttentionMaskToAdditive, AttentionMaskToAdditive.Options()),
                PassStep(ApplyMasks, ApplyMasks.Options()))

    def lower(self, program: Program, output_dir: str, options: OnnxOptions) -> list[Artifact]:
        self.require_available()
        import onnx
        import torch

        from edgecc.accounting import measure

        external = options.external_data == "always" or (
            options.external_data == "auto" and measure(program).bytes > EXTERNAL_THRESHOLD)
        path = os.path.join(output_dir, MODEL)
        need = qdq.required_opset(program)
        opset = max(options.opset, need)
        exportable, weights, _ = qdq.extract_weights(program)
        weights = weights or None
        # The exporter logs that torchvision's ops are absent; nothing here uses them.
        logging.getLogger("torch.onnx._internal.exporter._registration").setLevel(logging.ERROR)
        try:
            onnx_program = torch.onnx.export(
                exportable.export(), (), dynamo=True, opset_version=opset, verbose=False,
                input_names=[s.name for s in program.input_specs],
                output_names=[s.name for s in program.output_specs],
                custom_translation_table=qdq.translation_table(opset),
                # the optimizer would fold the placeholders' transposes into new
                # initializers; onnxruntime folds them itself at load time
                optimize=not weights)
            if weights:
                model = onnx_program.model_proto
                qdq.insert_stored_weights(model, weights)
                onnx.save_model(model, path, save_as_external_data=external,
                                all_tensors_to_one_file=True, location=WEIGHTS,
                                size_threshold=1024)
            else:
                onnx_program.save(path, external_data=external)
        except Exception as exc:
            raise LoweringError(f"ONNX export failed: {one_line(exc)}") from exc
        if external and not weights:
            _rename_external_data(path, output_dir)
        try:
            onnx.checker.check_model(path, full_check=True)
        except Exception as exc:
            raise LoweringError(f"onnx.checker rejected the exported model: {one_line(exc)}") from exc
        desc = f"ONNX opset {opset}"
        if weights:
            desc += f", QDQ with {len(weights)} integer weight tensors"
        if opset != options.opset:
            desc += f" (opset raised from {options.opset}: 4-bit / blocked quantization)"
        artifacts = [Artifact(MODEL, "model", desc)]
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
