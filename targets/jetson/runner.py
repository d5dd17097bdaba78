"""How the Jetson artifact is checked here, where there is no GPU and no TensorRT.

* :class:`OnnxModelRunner` runs the exact ``model.onnx`` with onnxruntime, graph
  optimizations off: every QuantizeLinear / DequantizeLinear executes as written, which is
  the semantics TensorRT implements. (onnxruntime's own QDQ fusion runs x86 u8s8 integer
  kernels that saturate 16-bit sums with full-range INT8 weights -- a property of those
  kernels, not of the model, which TensorRT's INT32 accumulation does not share.)
  ``compile()`` compares it with the fake-quant program and the original.
* :func:`lint` runs ``polygraphy check lint`` and ``polygraphy inspect model``.
* :func:`one_step_check`: onnxruntime's outputs against edgecc's fake-quant program, within
  one quantization step per output.
* :func:`check_2_4`: every weight marked sparse has at most 2 non-zeros in each group of 4
  along its input-channel axis.

The engine build and GPU execution are what remains ``not_verified``.
"""

from __future__ import annotations

import os
import subprocess
import sys
from typing import Any

import numpy as np
import torch


class OnnxModelRunner:
    def __init__(self, path: str):
        import onnxruntime as ort

        so = ort.SessionOptions()
        so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
        so.log_severity_level = 3
        self.session = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
        self.names = [i.name for i in self.session.get_inputs()]

    def run(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        feed = {n: np.ascontiguousarray(t.detach().cpu().numpy())
                for n, t in zip(self.names, inputs)}
        return tuple(torch.from_numpy(np.asarray(o)) for o in self.session.run(None, feed))


def _polygraphy() -> list[str]:
    exe = os.path.join(os.path.dirname(sys.executable), "polygraphy")
    return [exe] if os.path.exists(exe) else [sys.executable, "-m", "polygraphy"]


def lint(path: str) -> dict[str, Any]:
    """``polygraphy check lint`` and ``polygraphy inspect model`` on ``path``."""
    out: dict[str, Any] = {}
    for name, args in (("check lint", ["check", "lint", path]),
                       ("inspect model", ["inspect", "model", path, "--show", "layers"])):
        r = subprocess.run(_polygraphy() + args, capture_output=True, text=True, timeout=300)
        text = (r.stdout + r.stderr).strip()
        errors = [ln for ln in text.splitlines() if "[E]" in ln]
        out[name] = {"passed": r.returncode == 0 and not errors,
                     "detail": (errors[0] if errors else text.splitlines()[-1] if text
                                else "")[:300]}
    return out


def quant_step(model: Any) -> float:
    """The coarsest activation quantization step in ``model`` (its largest per-tensor
    activation scale); 0 when nothing is quantized."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    steps = [float(numpy_helper.to_array(inits[n.input[1]]).max())
             for n in model.graph.node
             if n.op_type == "QuantizeLinear" and n.input[0] not in inits
             and n.input[1] in inits]
    return max(steps, default=0.0)


def one_step_check(program: Any, runner: OnnxModelRunner, inputs: list[tuple[Any, ...]],
                   step: float) -> dict[str, Any]:
    """Max-abs difference per output between onnxruntime and the fake-quant program, and
    whether it is within one quantization step."""
    worst: list[float] = []
    for x in inputs:
        ref = program.run(*x)
        got = runner.run(*x)
        for i, (r, g) in enumerate(zip(ref, got)):
            d = float((r.float() - g.float()).abs().max())
            if i >= len(worst):
                worst.append(d)
            else:
                worst[i] = max(worst[i], d)
    tol = step if step > 0 else 1e-4
    return {"max_abs_per_output": worst, "one_step": step, "tolerance": tol,
            "bound": "one activation quantization step" if step > 0
            else "float tolerance 1e-4 (no activation is quantized)",
            "passed": all(d <= tol for d in worst), "samples": len(inputs)}


FP16_RELATIVE = 2.0 ** -7  # fp16 keeps 11 significant bits; 4 bits of room for depth


def fp16_check(program: Any, runner: OnnxModelRunner, inputs: list[tuple[Any, ...]]
               ) -> dict[str, Any]:
    """An fp16 ONNX against the fp32 program: max-abs per output within
    ``2^-7 * max|reference|`` (relative to each output's range)."""
    worst: list[float] = []
    tols: list[float] = []
    for x in inputs:
        for i, (r, g) in enumerate(zip(program.run(*x), runner.run(*x))):
            d = float((r.float() - g.float()).abs().max())
            t = FP16_RELATIVE * max(float(r.float().abs().max()), 1e-3)
            if i >= len(worst):
                worst.append(d), tols.append(t)
            else:
                worst[i], tols[i] = max(worst[i], d), max(tols[i], t)
    return {"max_abs_per_output": worst, "one_step": 0.0, "tolerance": min(tols),
            "bound": "fp16: 2^-7 of each output's largest magnitude",
            "passed": all(d <= t for d, t in zip(worst, tols)), "samples": len(inputs)}


def check_2_4(model: Any) -> dict[str, Any]:
    """Which Conv / Gemm / MatMul weights are 2:4 sparse along their input-channel axis
    (Conv ``[O, I, ...]`` axis 1, MatMul ``[K, N]`` axis 0, Gemm ``transB`` ``[N, K]`` 1)."""
    from onnx import numpy_helper

    inits = {i.name: i for i in model.graph.initializer}
    producer = {o: n for n in model.graph.node for o in n.output}
    result: dict[str, bool] = {}
    for node in model.graph.node:
        if node.op_type not in ("Conv", "Gemm", "MatMul") or len(node.input) < 2:
            continue
        src = node.input[1]
        dq = producer.get(src)
        if dq is not None and dq.op_type == "DequantizeLinear":
            src = dq.input[0]
        if src not in inits:
            continue
        t = inits[src]
        if t.data_type == 22:  # INT4: 2:4 sparse INT4 is not a TensorRT kernel
            continue
        w = numpy_helper.to_array(t).astype(np.float32)
        if node.op_type == "Conv":
            axis = 1
        elif node.op_type == "MatMul":
            axis = 0
        else:
            trans_b = any(a.name == "transB" and a.i for a in node.attribute)
            axis = 1 if trans_b else 0
        w = np.moveaxis(w, axis, -1)
        c = w.shape[-1]
        if c % 4:
            result[node.name] = False
            continue
        groups = (w.reshape(-1, c // 4, 4) != 0).sum(-1)
        result[node.name] = bool((groups <= 2).all())
    return result
