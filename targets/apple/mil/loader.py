"""Load a saved ``.mlpackage`` into coremltools' MIL ``Program`` (weights read from weight.bin).

coremltools 9.0 on Linux can read and write ML Programs but not run them; its milproto loader
rebuilds the MIL program (ops, types, constants) from the model spec, which is what the numpy
interpreter walks.

    Data/com.apple.CoreML/model.mlmodel   (milproto: functions, blocks, ops)
    Data/com.apple.CoreML/weights/weight.bin  (constants)
        -> Program { main(%x: (1, 3, 8, 8, fp32)) { conv(...), relu(...), ... } -> (%out) }
"""

from __future__ import annotations

import contextlib
import io
import logging
from pathlib import Path

from edgecc.errors import ModelLoadError, one_line


def _quiet_import():
    """Import coremltools without its Linux notices (missing native proxies, version warnings)."""
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        previous = logging.root.manager.disable
        logging.disable(logging.WARNING)
        try:
            import coremltools as ct
            from coremltools.converters.mil.frontend.milproto.load import load as milproto_load
        finally:
            logging.disable(previous)
    return ct, milproto_load


def load_program(path: str | Path):
    """The MIL program of a saved ``.mlpackage`` (or ``.mlmodel`` ML Program), weights loaded.

    Raises ``ModelLoadError`` (one line) for a missing path, a file that is not an ML Program,
    or a package coremltools cannot read.
    """
    path = Path(path)
    if not path.exists():
        raise ModelLoadError(f"Core ML model '{path}' does not exist: give the path of a saved "
                             ".mlpackage")
    try:
        ct, milproto_load = _quiet_import()
    except ImportError as exc:  # pragma: no cover - coremltools is in the test environment
        raise ModelLoadError(f"reading '{path}' needs coremltools ({one_line(exc)}): "
                             "pip install -c constraints.txt coremltools==9.0") from exc
    try:
        model = ct.models.MLModel(str(path), skip_model_load=True)
        spec = model.get_spec()
    except Exception as exc:
        raise ModelLoadError(f"'{path}' is not a readable Core ML model ({one_line(exc)}): "
                             "give the path of a saved .mlpackage") from exc
    if spec.WhichOneof("Type") != "mlProgram":
        raise ModelLoadError(f"'{path}' is a Core ML '{spec.WhichOneof('Type')}' model, not an "
                             "ML Program: the interpreter runs ML Programs (convert_to='mlprogram')")
    try:
        return milproto_load(spec, spec.specificationVersion, file_weights_dir=model.weights_dir)
    except Exception as exc:
        raise ModelLoadError(f"coremltools could not load the MIL program of '{path}' "
                             f"({one_line(exc)})") from exc
