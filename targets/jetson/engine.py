"""Build and run the TensorRT engine where TensorRT and an NVIDIA GPU are present.

On a user's Jetson (or a workstation with TensorRT), ``compile()`` runs the bundle's own
``build_engine.py`` and ``run_engine.py`` in the output directory: the engine is built from
the exact ``model.onnx`` and its outputs on ``reference.npz`` are compared with edgecc's
program (within ``engine_config.json``'s ``output_atol``: one quantization step). Where
either is missing (this build machine: no tensorrt wheel, no GPU) nothing is built and the
reason goes into the report; ``not_verified`` lists the engine build and GPU execution.

An engine built on a workstation GPU is not the Jetson's (engines are not portable across
GPUs or TensorRT versions): the report names the GPU it was built on.
"""

from __future__ import annotations

import subprocess
import sys
from typing import Any

from edgecc.errors import LoweringError, one_line

PLAN = "model.plan"


def tensorrt_here() -> tuple[str | None, str]:
    """``(TensorRT version, GPU name)`` when ``tensorrt`` imports and NVML sees a GPU, else
    ``(None, why not)``."""
    try:
        import tensorrt
    except Exception as exc:  # ImportError, or a wheel without its CUDA libraries
        return None, f"tensorrt is not importable here ({one_line(exc)})"
    try:
        import pynvml

        pynvml.nvmlInit()
        if pynvml.nvmlDeviceGetCount() == 0:
            return None, "tensorrt imports but NVML sees no NVIDIA GPU"
        name = pynvml.nvmlDeviceGetName(pynvml.nvmlDeviceGetHandleByIndex(0))
    except Exception as exc:
        return None, f"tensorrt imports but no NVIDIA GPU is visible ({one_line(exc)})"
    return str(tensorrt.__version__), name.decode() if isinstance(name, bytes) else str(name)


def build_and_run(output_dir: str) -> dict[str, Any]:
    """Build ``model.plan`` with the bundle's build_engine.py and compare its outputs with
    edgecc's (run_engine.py); ``{"built": False, "reason": ...}`` where it cannot run."""
    version, gpu = tensorrt_here()
    if version is None:
        return {"built": False, "reason": gpu}
    build = subprocess.run([sys.executable, "build_engine.py", "--engine", PLAN],
                           cwd=output_dir, capture_output=True, text=True, timeout=3600)
    if build.returncode != 0:
        lines = [ln for ln in (build.stderr + build.stdout).splitlines() if ln.strip()]
        raise LoweringError(f"TensorRT {version} could not build model.onnx on {gpu}: "
                            f"{lines[-1] if lines else 'no output'}")
    run = subprocess.run([sys.executable, "run_engine.py", "--engine", PLAN],
                         cwd=output_dir, capture_output=True, text=True, timeout=600)
    lines = [ln for ln in run.stdout.splitlines() if ln.strip()]
    return {"built": True, "tensorrt": version, "gpu": gpu, "passed": run.returncode == 0,
            "outputs": lines, "detail": "; ".join(lines[-3:]) or run.stderr[-300:],
            "note": "built on this machine's GPU: the Jetson builds its own engine "
                    "(engines are not portable)"}
