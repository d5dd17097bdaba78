"""The classic-CNN corpus (tests/frontends/onnx/classic_cnns.py): for each model and opset,
the import's error against onnxruntime (max|d| / max|ref|, fresh input) and what the import
check costs (its own seconds, and the whole load's).

    python bench/onnx_classic_cnns.py [--models alexnet,vgg] [--opsets 9,11]

Timings on a shared, loaded machine are indicative only. Writes
bench/results/onnx_classic_cnns.json.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> None:
    import onnxruntime as ort
    import torch

    import edgecc
    from edgecc.onnx_import.self_check import relative_error
    from tests.frontends.onnx.classic_cnns import MODELS, OPSETS, export, upgraded

    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default=",".join(MODELS))
    ap.add_argument("--opsets", default=",".join([*map(str, OPSETS), "9->11"]))
    args = ap.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.models.split(","):
            for opset in args.opsets.split(","):
                path = export(name, int(opset.split("->")[0]), os.path.join(tmp, f"{name}.onnx"))
                if opset == "9->11":
                    path = upgraded(path, os.path.join(tmp, f"{name}_11.onnx"), 11)
                t0 = time.perf_counter()
                program = edgecc.load(path)
                load_s = time.perf_counter() - t0
                t0 = time.perf_counter()
                edgecc.load(path, import_check=False)
                unchecked_s = time.perf_counter() - t0
                check = program.graph_module.meta["edgecc.import_check"]
                x = torch.randn(MODELS[name][1], generator=torch.Generator().manual_seed(9))
                sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
                ref = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
                err = relative_error(program(x)[0], ref)
                rows.append({"model": name, "opset": opset, "max_rel_err": err,
                             "check_value": check["value"], "check_s": check["seconds"],
                             "load_s": round(load_s, 2), "load_unchecked_s": round(unchecked_s, 2)})
                r = rows[-1]
                print(f"{name:13s} {opset:6s} max_rel_err {err:9.2e}  check {r['check_s']:6.2f}s  "
                      f"load {r['load_s']:6.2f}s (unchecked {r['load_unchecked_s']:6.2f}s)", flush=True)
    out = os.path.join(ROOT, "bench", "results", "onnx_classic_cnns.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"onnxruntime": ort.__version__, "rows": rows}, f, indent=1)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
