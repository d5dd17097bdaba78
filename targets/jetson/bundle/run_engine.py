#!/usr/bin/env python3
"""Run model.plan on the inputs saved in reference.npz and compare with the outputs edgecc
computed (its fake-quant program, PyTorch) -- written by edgecc's jetson target.

    python3 run_engine.py [--engine model.plan] [--npz reference.npz] [--atol A]

Uses polygraphy's TensorRT runner (pip install polygraphy), which works with TensorRT 8, 10
and 11. Exit code 0 when every output is within tolerance (default: the manifest's one
quantization step, or 1e-2 for float models).
"""
import argparse
import json
import os
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))


def main() -> int:
    with open(os.path.join(HERE, "engine_config.json")) as f:
        cfg = json.load(f)
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--engine", default=os.path.join(HERE, "model.plan"))
    ap.add_argument("--npz", default=os.path.join(HERE, "reference.npz"))
    ap.add_argument("--atol", type=float, default=cfg.get("output_atol") or 1e-2)
    args = ap.parse_args()

    from polygraphy.backend.common import BytesFromPath
    from polygraphy.backend.trt import EngineFromBytes, TrtRunner

    ref = np.load(args.npz)
    feed = {n: ref[f"input:{n}"] for n in cfg["inputs"]}
    with TrtRunner(EngineFromBytes(BytesFromPath(args.engine))) as runner:
        out = runner.infer(feed)
    ok = True
    for name in cfg["outputs"]:
        got = np.asarray(out[name], dtype=np.float32)
        want = ref[f"output:{name}"]
        diff = float(np.abs(got - want).max())
        cos = float((got * want).sum() / max(np.linalg.norm(got) * np.linalg.norm(want), 1e-30))
        passed = diff <= args.atol
        ok &= passed
        print(f"{name}: max-abs {diff:.4g} (atol {args.atol:.4g}), cosine {cos:.6f} "
              f"{'PASS' if passed else 'FAIL'}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
