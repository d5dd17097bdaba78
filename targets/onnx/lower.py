"""Lower a program for ``-t onnx``: the ``torch.onnx`` dynamo exporter, quantized programs
as QDQ (``qdq``), checked by ``onnx.checker``, plus the bundle's ``README.txt``.

Dynamic dimensions stay symbolic in the file. Weights go to an external-data side file
when they would approach protobuf's 2 GB limit (or always / never, by option).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from edgecc.accounting import measure
from edgecc.errors import LoweringError, one_line
from edgecc.logs import without_torchvision_notes
from edgecc.program import Program
from edgecc.target import Artifact, Lowered, example_shape
from edgecc.targets.onnx import qdq

if TYPE_CHECKING:
    from edgecc.targets.onnx.target import OnnxOptions

MODEL = "model.onnx"
WEIGHTS = "model.onnx.data"
README = "README.txt"
EXTERNAL_THRESHOLD = 1 << 30  # bytes of weights above which "auto" uses external data


def lower_program(program: Program, output_dir: str, options: OnnxOptions) -> Lowered:
    import onnx
    import torch

    external = options.external_data == "always" or (
        options.external_data == "auto" and measure(program).bytes > EXTERNAL_THRESHOLD)
    path = os.path.join(output_dir, MODEL)
    need = qdq.required_opset(program)
    opset = max(options.opset, need)
    exportable, weights, _ = qdq.extract_weights(program)
    weights = weights or None
    try:
        with without_torchvision_notes():
            onnx_program = torch.onnx.export(
                exportable.export(), (), dynamo=True, opset_version=opset, verbose=False,
                input_names=[s.name for s in program.input_specs],
                output_names=[s.name for s in program.output_specs],
                custom_translation_table=qdq.translation_table(opset),
                # the optimizer would fold the placeholders' transposes into new
                # initializers; onnxruntime folds them itself at load time
                optimize=not weights)
        del exportable  # the export holds what it needs
        if weights:
            qdq.insert_stored_weights_ir(onnx_program.model, weights)
        _save(onnx_program.model, path, external)
    except Exception as exc:
        raise LoweringError(f"ONNX export failed: {one_line(exc)}") from exc
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
    _write_readme(program, output_dir, desc, [a.path for a in artifacts])
    artifacts.append(Artifact(README, "docs", "how to run it"))
    return Lowered(artifacts)


def _save(model: Any, path: str, external: bool) -> None:
    """Write the ``onnx_ir`` model; with external data, tensors of 1 KiB and more go to
    ``model.onnx.data`` one at a time (bounded memory: no protobuf of the weights)."""
    import onnx_ir as ir

    if external:
        ir.save(model, path, external_data=WEIGHTS, size_threshold_bytes=1024,
                max_workers=1, max_in_flight_bytes=1 << 26)
    else:
        ir.save(model, path)


def _write_readme(program: Program, output_dir: str, description: str,
                  files: list[str]) -> None:
    with open(os.path.join(os.path.dirname(__file__), README)) as f:
        template = f.read()
    specs = program.input_specs
    example = ", ".join(f"'{s.name}': np.zeros({example_shape(s)}, '{s.dtype}')" for s in specs)
    with open(os.path.join(output_dir, README), "w") as f:
        f.write(template.format(description=description, files=", ".join(files),
                                example=example,
                                inputs=", ".join(s.describe() for s in specs)))
