"""Import an ONNX model over 2 GB (weights in an external-data file) and check it against
onnxruntime. Opt-in (writes ~2.3 GB to a temporary directory, needs ~10 GB of memory):

    python bench/onnx_large_model.py [--features 24000]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)


def main() -> int:
    import onnx
    import onnxruntime as ort
    import torch
    from onnx import TensorProto, helper

    import edgecc

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--features", type=int, default=24000)
    args = parser.parse_args()
    n = args.features
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "large.onnx")
        w = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32) * (1 / n ** 0.5)
        # Protobuf cannot hold > 2 GB: write the weights as the external-data file directly
        # and point the initializer at it, as large exported models arrive.
        w.tofile(os.path.join(tmp, "large.onnx.data"))
        init = TensorProto(name="w", data_type=TensorProto.FLOAT, dims=[n, n],
                           data_location=TensorProto.EXTERNAL)
        for key, value in (("location", "large.onnx.data"), ("offset", "0"),
                           ("length", str(w.nbytes))):
            entry = init.external_data.add()
            entry.key, entry.value = key, value
        graph = helper.make_graph(
            [helper.make_node("MatMul", ["x", "w"], ["h"]), helper.make_node("Relu", ["h"], ["y"])],
            "large", [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", n])],
            [helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", n])], [init])
        model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=9)
        onnx.save_model(model, path)
        x = np.random.default_rng(1).standard_normal((3, n), dtype=np.float32)
        want = x @ w
        np.maximum(want, 0, out=want)
        del model, graph, w
        size = sum(os.path.getsize(os.path.join(tmp, f)) for f in os.listdir(tmp))
        print(f"model + external data: {size / 2**30:.2f} GiB")
        t = time.perf_counter()
        program = edgecc.load(path)
        print(f"edgecc.load: {time.perf_counter() - t:.1f} s, inputs {program.input_specs[0].describe()}")
        got = program(torch.from_numpy(x))[0].numpy()
        err = float(np.abs(got - want).max())
        print(f"max-abs difference vs numpy: {err:.2e}")
        del program
        runtime = ort.InferenceSession(path).run(None, {"x": x})[0]
        print(f"max-abs difference vs onnxruntime: {float(np.abs(got - runtime).max()):.2e}")
        return 0 if err < 1e-3 else 1


if __name__ == "__main__":
    sys.exit(main())
