"""edgecc's Jetson ONNX against NVIDIA Model Optimizer's ONNX PTQ, on the same calibration data.

For each model (ResNet-20, the width-reduced MobileNetV2, a BERT config with random weights):

* fp32 reference: edgecc's ``-t jetson`` with ``precision=fp16`` (no quantization; for
  TensorRT 10 the ONNX stays fp32 and the builder's FP16 flag picks fp16), the ONNX both
  quantizers start from;
* edgecc: ``-t jetson`` ``precision=int8`` (w8a8, min-max ranges, ModelOpt-style placement);
* ModelOpt 0.47: ``modelopt.onnx.quantization.quantize(fp32.onnx, quantize_mode="int8",
  calibration_method="max", calibration_eps=["cpu"], high_precision_dtype="fp32")`` on the
  same calibration batches (``max``, not its default ``entropy``, so both calibrate min-max;
  fp32 so the fidelity numbers compare quantization, not fp16 -- its default output is fp16).

Columns: Q/DQ pairs (activation QuantizeLinear -> DequantizeLinear), weight DQs, weighted
ops (Conv/ConvTranspose/Gemm/MatMul) left in float, other ops that read a DQ, and
onnxruntime fidelity to the fp32 ONNX on held-out random inputs (cosine, max-abs). Both
quantized models run with onnxruntime's graph optimizations off: every Q/DQ executes as
written, the semantics TensorRT implements (onnxruntime's QDQ fusion would run its own x86
integer kernels instead). Prints a table and writes ``bench/results/jetson_qdq.json``.

    python bench/jetson_qdq.py [--models resnet20,mobilenet_v2,bert] [--calib 4] [--keep DIR]

Calibration and held-out data are random (images N(0, 1), random token ids): no dataset is
stored here, so fidelity compares the two quantizers on the same data, not accuracy.
Nothing runs on a Jetson: no TensorRT here (engine latency is not measured).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import traceback
import warnings

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import edgecc  # noqa: E402

warnings.filterwarnings("ignore")
WEIGHTED = ("Conv", "ConvTranspose", "Gemm", "MatMul")


def _models(names: list[str], n_calib: int):
    from examples.models import mobilenet_v2, resnet20
    from tests.models import token_inputs, transformer

    for name in names:
        if name in ("resnet20", "mobilenet_v2"):
            g = torch.Generator().manual_seed(5)
            calib = [(torch.randn(2, 3, 32, 32, generator=g),) for _ in range(n_calib)]
            held = [(torch.randn(2, 3, 32, 32, generator=g),) for _ in range(4)]
            module = {"resnet20": resnet20, "mobilenet_v2": mobilenet_v2}[name]()
            yield name, module.eval(), "orin-nano", calib, held
        elif name == "bert":
            torch.manual_seed(5)
            calib = [token_inputs() for _ in range(n_calib)]
            held = [token_inputs() for _ in range(4)]
            yield name, transformer("bert"), "agx-orin", calib, held
        else:
            raise SystemExit(f"unknown model {name}")


def qdq_stats(path: str) -> dict:
    """Q/DQ pairs, weight DQs and what stays float in the ONNX at ``path``."""
    import onnx

    model = onnx.load(path)
    g = model.graph
    inits = {i.name for i in g.initializer}
    producer = {o: n for n in g.node for o in n.output}

    def from_dq(name: str) -> bool:
        p = producer.get(name)
        return p is not None and p.op_type == "DequantizeLinear"

    q = [n for n in g.node if n.op_type == "QuantizeLinear"]
    pairs = sum(1 for n in g.node if n.op_type == "DequantizeLinear"
                and n.input[0] in producer and producer[n.input[0]].op_type == "QuantizeLinear")
    weight_dq = sum(1 for n in g.node if n.op_type == "DequantizeLinear"
                    and (n.input[0] in inits or (n.input[0] in producer
                         and producer[n.input[0]].op_type == "Constant")))
    weight_q = sum(1 for n in q if n.input[0] in inits)  # float weight -> Q -> DQ
    weighted = [n for n in g.node if n.op_type in WEIGHTED]
    float_ops = [n for n in weighted if not any(from_dq(i) for i in n.input[:2])]
    other = sorted({n.op_type for n in g.node if n.op_type not in WEIGHTED
                    and n.op_type not in ("QuantizeLinear", "DequantizeLinear")
                    and any(from_dq(i) for i in n.input)})
    ops = {}
    for n in g.node:
        ops[n.op_type] = ops.get(n.op_type, 0) + 1
    return {"activation_qdq_pairs": pairs - weight_q, "weight_dq": weight_dq + weight_q,
            "weighted_ops": len(weighted), "weighted_float": len(float_ops),
            "weighted_float_ops": sorted(f"{n.op_type}:{n.name}" for n in float_ops),
            "other_ops_reading_dq": other, "nodes": len(g.node),
            "opset": max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))}


def _session(path: str):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_DISABLE_ALL
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def _run(sess, batch) -> np.ndarray:
    names = [i.name for i in sess.get_inputs()]
    feed = {n: np.ascontiguousarray(x.numpy()) for n, x in zip(names, batch)}
    return np.asarray(sess.run(None, feed)[0], dtype=np.float32)


def fidelity(path: str, ref: list[np.ndarray], held: list) -> dict:
    sess = _session(path)
    outs = [_run(sess, b) for b in held]
    a = np.concatenate([o.ravel() for o in outs]).astype(np.float64)
    r = np.concatenate([o.ravel() for o in ref]).astype(np.float64)
    cos = float(a @ r / max(np.linalg.norm(a) * np.linalg.norm(r), 1e-30))
    return {"cosine": round(cos, 6), "max_abs": float(np.abs(a - r).max())}


def modelopt_quantize(fp32: str, out: str, calib: list, names: list[str]) -> float:
    from modelopt.onnx.quantization import quantize

    data = {n: np.concatenate([b[i].numpy() for b in calib]) for i, n in enumerate(names)}
    t0 = time.perf_counter()
    quantize(fp32, quantize_mode="int8", calibration_data=data, calibration_method="max",
             calibration_eps=["cpu"], high_precision_dtype="fp32", output_path=out,
             log_level="ERROR")
    return time.perf_counter() - t0


def bench(name, module, device, calib, held, work) -> dict:
    row: dict = {"model": name, "device": device, "calibration_batches": len(calib),
                 "held_out_batches": len(held)}
    fp_dir, q_dir = os.path.join(work, f"{name}_fp"), os.path.join(work, f"{name}_int8")
    edgecc.compile(module, f"jetson:{device}", example_inputs=calib[0], output_dir=fp_dir,
                   target_options={"precision": "fp16"}, verify=False)
    fp32 = os.path.join(fp_dir, "model.onnx")
    t0 = time.perf_counter()
    res = edgecc.compile(module, f"jetson:{device}", example_inputs=calib[0],
                         calibration=calib, output_dir=q_dir, verify=False,
                         target_options={"precision": "int8"})
    row["edgecc_seconds"] = round(time.perf_counter() - t0, 1)
    sess = _session(fp32)
    ref = [_run(sess, b) for b in held]
    names = [i.name for i in sess.get_inputs()]
    edge = os.path.join(q_dir, "model.onnx")
    row["edgecc"] = {**qdq_stats(edge), **fidelity(edge, ref, held),
                     "float_reasons": res.report["lowering"]["placement"]["float_reasons"],
                     "onnxruntime_vs_fake_quant_max_abs": max(
                         res.report["lowering"]["onnxruntime_vs_fake_quant"]
                         ["max_abs_per_output"]),
                     "one_step": res.report["lowering"]["onnxruntime_vs_fake_quant"]["one_step"]}
    mo = os.path.join(work, f"{name}_modelopt.onnx")
    try:
        row["modelopt_seconds"] = round(modelopt_quantize(fp32, mo, calib, names), 1)
        row["modelopt"] = {**qdq_stats(mo), **fidelity(mo, ref, held)}
    except Exception as exc:  # say exactly why, in the table
        row["modelopt"] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}",
                           "traceback_tail": traceback.format_exc().splitlines()[-3:]}
    return row


def _fmt(side: dict) -> str:
    if "error" in side:
        return f"could not run: {side['error']}"
    return (f"{side['activation_qdq_pairs']:>4} {side['weight_dq']:>4} "
            f"{side['weighted_float']:>2}/{side['weighted_ops']:<3} "
            f"{side['cosine']:.6f} {side['max_abs']:.4g}  "
            f"{','.join(side['other_ops_reading_dq']) or '-'}")


def main() -> None:
    import importlib.metadata as md

    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="resnet20,mobilenet_v2,bert")
    ap.add_argument("--calib", type=int, default=4, help="calibration batches (of 2)")
    ap.add_argument("--keep", default="", help="keep the ONNX files in this folder")
    ap.add_argument("--json", default=os.path.join(ROOT, "bench", "results", "jetson_qdq.json"))
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = args.keep or tmp
        os.makedirs(work, exist_ok=True)
        for name, module, device, calib, held in _models(args.models.split(","), args.calib):
            print(f"... {name}", file=sys.stderr, flush=True)
            rows.append(bench(name, module, device, calib, held, work))
    print("Q/DQ = activation Q->DQ pairs, wDQ = weight DequantizeLinear, float = weighted ops "
          "left float / all; cosine, max-abs vs the fp32 ONNX (onnxruntime, held-out)")
    print(f"{'model':<13}{'by':<9}{'Q/DQ':>4} {'wDQ':>4} {'float':<6} {'cosine':<8} "
          f"{'max-abs':<8} other ops reading a DQ")
    for r in rows:
        for side in ("edgecc", "modelopt"):
            print(f"{r['model']:<13}{side:<9}{_fmt(r[side])}")
    out = {"modelopt": md.version("nvidia-modelopt"), "onnxruntime": md.version("onnxruntime"),
           "note": "random calibration/held-out data; ModelOpt with calibration_method=max, "
                   "high_precision_dtype=fp32, calibration_eps=[cpu]; timings on a shared "
                   "2-core machine are not final",
           "rows": rows}
    os.makedirs(os.path.dirname(os.path.abspath(args.json)), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(out, f, indent=1)


if __name__ == "__main__":
    main()
