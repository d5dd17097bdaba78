"""Quantization accuracy: edgecc against onnxruntime's quantizer and torchao, on the same
model, the same calibration data and the same granularity. Prints a table per model and
writes ``bench/results/quant_compare.json``.

    python bench/quant_compare.py [--models minilm,digits]

* all-MiniLM-L6-v2 (real weights): mean cosine of held-out sentence embeddings to fp32
  PyTorch (128 calibration sentences from the Python reference, 64 held-out sentences from
  scikit-learn's dataset descriptions and the model card).
* digits CNN (trained here on scikit-learn's digits): test accuracy on 450 held-out images,
  calibration on 8 training batches of 50, averaged over 5 splits / trainings.

Peers (what each row runs):
* ``ort quantize_static``: onnxruntime.quantization.quantize_static, QDQ format, per-channel
  int8 weights, uint8 activations (its defaults), MinMax calibration, only the MatMul /
  Gemm / Conv nodes with constant weights (the layers edgecc quantizes; attention's
  activation x activation MatMuls stay float in both), run by onnxruntime; with and without
  ``reduce_range``
  (7-bit weights, which its x86 u8s8 kernels need to avoid 16-bit saturation).
* ``ort MatMulNBits``: onnxruntime's 4-bit weight-only quantizer (RTN, block 32, asym).
* ``torchao``: quantize_ with Int8WeightOnlyConfig / Int8DynamicActivationInt8WeightConfig
  (where it applies: linear layers; run in PyTorch eager).
* ``edgecc sim``: the quantized Program run in PyTorch (edgecc's reference semantics);
  ``edgecc onnx/ort``: edgecc's QDQ ONNX artifact run by onnxruntime.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import tempfile
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "2")

import torch  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import edgecc  # noqa: E402
from edgecc.cli import human_bytes, table  # noqa: E402
from edgecc.pass_base import PassContext  # noqa: E402
from edgecc.pass_manager import PassManager  # noqa: E402

warnings.filterwarnings("ignore")


def ort_session(path: str):
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = 2
    so.log_severity_level = 3
    return ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])


def ort_runner(path: str):
    sess = ort_session(path)
    names = [i.name for i in sess.get_inputs()]
    return lambda *xs: torch.from_numpy(sess.run(None, {n: x.numpy() for n, x in
                                                        zip(names, xs)})[0])


class Reader:
    """onnxruntime CalibrationDataReader over edgecc calibration batches."""

    def __init__(self, path: str, batches):
        names = [i.name for i in ort_session(path).get_inputs()]
        self.items = iter([{n: x.numpy() for n, x in zip(names, b)} for b in batches])

    def get_next(self):
        return next(self.items, None)


def weight_layers(path: str) -> list[str]:
    """MatMul / Gemm / Conv nodes with a constant weight: the layers edgecc quantizes
    (attention's activation x activation MatMuls stay float in both)."""
    import onnx

    m = onnx.load(path)
    consts = {i.name for i in m.graph.initializer}
    consts |= {o for n in m.graph.node if n.op_type == "Constant" for o in n.output}
    return [n.name for n in m.graph.node
            if n.op_type in ("MatMul", "Gemm", "Conv") and n.input[1] in consts]


def ort_static(fp32_path: str, batches, out: str, reduce_range: bool) -> str:
    from onnxruntime.quantization import QuantFormat, QuantType, quantize_static

    quantize_static(fp32_path, out, Reader(fp32_path, batches), quant_format=QuantFormat.QDQ,
                    per_channel=True, reduce_range=reduce_range,
                    activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8,
                    nodes_to_quantize=weight_layers(fp32_path))
    return out


def ort_4bit(fp32_path: str, out: str, block: int = 32) -> str:
    import onnx
    from onnxruntime.quantization.matmul_nbits_quantizer import MatMulNBitsQuantizer

    q = MatMulNBitsQuantizer(onnx.load(fp32_path), block_size=block, is_symmetric=False)
    q.process()
    q.model.save_model_to_file(out, use_external_data_format=False)
    return out


def edgecc_program(program, pipeline, batches):
    return PassManager(pipeline)(program.copy(), context=PassContext(calibration=batches)).program


def file_size(path: str) -> int:
    return sum(os.path.getsize(os.path.join(os.path.dirname(path), f))
               for f in os.listdir(os.path.dirname(path)) if f.startswith(
                   os.path.basename(path)))


def torchao_model(model, config: str):
    from torchao.quantization import (Int8DynamicActivationInt8WeightConfig,
                                      Int8WeightOnlyConfig, quantize_)

    m = copy.deepcopy(model)
    quantize_(m, {"w8a16": Int8WeightOnlyConfig(),
                  "dynamic-int8": Int8DynamicActivationInt8WeightConfig()}[config])
    return m


def compare(name, model, program, calib, evaluate, metric, rows_out, tmp):
    """Run every contender; ``evaluate(fn) -> float`` scores a callable on held-out data."""
    from edgecc.accounting import measure

    results = []

    def add(method, bits, score, size, note=""):
        results.append({"method": method, "bits": bits, metric: round(score, 5),
                        "bytes": size, "note": note})
        print(f"  {method:<42} {score:.5f}", flush=True)

    t0 = time.perf_counter()
    add("fp32 (PyTorch)", "fp32", evaluate(lambda *x: model(*x)), measure(program).bytes)
    fp32_onnx = edgecc.compile(program, target="onnx", pipeline="dce",
                               output_dir=os.path.join(tmp, f"{name}-fp32"), verify=False)
    fp32_path = os.path.join(fp32_onnx.output_dir, "model.onnx")

    # int8 weights, int8 activations (static)
    q = edgecc_program(program, "quantize{scheme=w8a8}", calib)
    add("edgecc w8a8 (sim)", "w8a8", evaluate(q.run), measure(q).bytes)
    q = edgecc_program(program, "quantize{scheme=w8a8,activation_dtype=uint8,"
                                "embeddings=false}", calib)
    add("edgecc w8a8 uint8 acts, layers only (sim)", "w8a8", evaluate(q.run),
        measure(q).bytes, "ort's configuration")
    res = edgecc.compile(program, target="onnx", pipeline="quantize{scheme=w8a8}",
                         calibration=calib, output_dir=os.path.join(tmp, f"{name}-edgecc-w8a8"))
    path = os.path.join(res.output_dir, "model.onnx")
    add("edgecc w8a8 -> onnx, run by onnxruntime", "w8a8", evaluate(ort_runner(path)),
        file_size(path), "7-bit weights (target constraint)")
    for rr in (False, True):
        out = ort_static(fp32_path, calib, os.path.join(tmp, f"{name}-ort-{rr}.onnx"), rr)
        add(f"ort quantize_static{' reduce_range' if rr else ''}", "w8a8",
            evaluate(ort_runner(out)), file_size(out),
            "QDQ, per-channel QInt8 weights, QUInt8 activations, MinMax")

    # weight-only and dynamic int8 against torchao
    for scheme in ("w8a16", "dynamic-int8"):
        q = edgecc_program(program, f"quantize{{scheme={scheme}}}", calib)
        add(f"edgecc {scheme} (sim)", scheme, evaluate(q.run), measure(q).bytes,
            "per-token activations" if scheme == "dynamic-int8" else "")
        q = edgecc_program(program, f"quantize{{scheme={scheme},embeddings=false}}", calib)
        add(f"edgecc {scheme}, linear layers only (sim)", scheme, evaluate(q.run),
            measure(q).bytes, "as torchao quantizes")
        try:
            tm = torchao_model(model, scheme)
            add(f"torchao {scheme}", scheme, evaluate(lambda *x: tm(*x)), 0,
                "linear layers only")
        except Exception as exc:  # torchao is optional
            print(f"  torchao {scheme}: not run ({type(exc).__name__}: {exc})")

    if metric == "cosine":  # 4-bit weights (transformers)
        for algo in ("rtn", "gptq", "awq"):
            q = edgecc_program(program, f"quantize{{scheme=w4a16,group_size=32,"
                                        f"algorithm={algo}}}", calib)
            add(f"edgecc w4a16 g32 {algo} (sim)", "w4a16", evaluate(q.run), measure(q).bytes)
        for algo in ("rtn", "gptq"):
            q = edgecc_program(program, f"quantize{{scheme=w4a16,group_size=32,"
                                        f"algorithm={algo},embeddings=false}}", calib)
            add(f"edgecc w4a16 g32 {algo}, linear layers only (sim)", "w4a16",
                evaluate(q.run), measure(q).bytes, "as MatMulNBits quantizes")
        out = ort_4bit(fp32_path, os.path.join(tmp, f"{name}-ort-4bit.onnx"))
        add("ort MatMulNBits (RTN, block 32)", "w4a16", evaluate(ort_runner(out)),
            file_size(out), "MatMul weights only")
    print(f"  ({time.perf_counter() - t0:.0f} s)")
    rows_out[name] = results
    return results


def minilm(rows_out, tmp):
    from examples.minilm import load_minilm, tokenize
    from examples.text_corpus import calibration_sentences, heldout_sentences

    model, tok = load_minilm()
    calib = tokenize(tok, calibration_sentences(128), batch_size=16)
    held = tokenize(tok, heldout_sentences(64), batch_size=16)
    with torch.no_grad():
        refs = [model(*b) for b in held]
    program = PassManager("dce")(edgecc.trace(model, calib[0])).program

    def evaluate(fn):
        with torch.no_grad():
            outs = [fn(*b) for b in held]
        outs = [o[0] if isinstance(o, (tuple, list)) else o for o in outs]
        return torch.cat([torch.nn.functional.cosine_similarity(o.float(), r)
                          for o, r in zip(outs, refs)]).mean().item()

    print("all-MiniLM-L6-v2, held-out mean cosine to fp32:")
    return compare("minilm", model, program, calib, evaluate, "cosine", rows_out, tmp)


def digits(rows_out, tmp, seeds: int = 5):
    """Digits CNN: each method's test accuracy averaged over ``seeds`` train/test splits and
    trainings (one split has only 450 test images: one image is 0.22 points)."""
    from examples.digits import accuracy, train_digits_cnn

    per_seed = []
    for seed in range(seeds):
        model, data = train_digits_cnn(seed=seed)
        xs, _ = data.batches()
        program = PassManager("fold-batchnorm,dce")(edgecc.trace(model, xs[0])).program

        def evaluate(fn, data=data):
            return accuracy(fn, data.x_test, data.y_test)

        print(f"digits CNN (split {seed}), test accuracy (%):")
        one: dict[str, list] = {}
        split_dir = os.path.join(tmp, f"split{seed}")
        os.makedirs(split_dir, exist_ok=True)
        compare("digits", model, program, xs[:8], evaluate, "accuracy", one, split_dir)
        per_seed.append(one["digits"])
    merged = []
    for i, row in enumerate(per_seed[0]):
        scores = [run[i]["accuracy"] for run in per_seed]
        merged.append({**row, "accuracy": round(sum(scores) / len(scores), 3),
                       "per_split": scores})
    rows_out["digits"] = merged
    return merged


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="minilm,digits")
    ap.add_argument("--json", default=os.path.join(ROOT, "bench", "results",
                                                   "quant_compare.json"))
    args = ap.parse_args()
    torch.set_num_threads(2)
    rows: dict[str, list] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            {"minilm": minilm, "digits": digits}[name](rows, tmp)
    for name, results in rows.items():
        metric = "cosine" if name == "minilm" else "accuracy"
        print(f"\n{name}")
        print(table([(r["method"], r["bits"], f"{r[metric]:.5f}" if metric == "cosine"
                      else f"{r[metric]:.2f}", human_bytes(r["bytes"]) if r["bytes"] else "-",
                      r["note"]) for r in results],
                    ("method", "bits", metric, "size", "note")))
    os.makedirs(os.path.dirname(args.json), exist_ok=True)
    with open(args.json, "w") as f:
        json.dump(rows, f, indent=2)
    print(f"\nwrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
