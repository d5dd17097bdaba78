"""Winograd F(2x2, 3x3) (``edgecc_x86_fp32_winograd``) against the direct same-size 3x3 path
and onnxruntime, per layer and end to end.

Layers (default): ResNet-20's same-size 3x3 convolutions (16->16 @32, 32->32 @16, 64->64 @8;
bias + ReLU, and bias + residual + ReLU), the fp32 kernel library linked alone, the knob
moved per call (0 direct, 1 Winograd on weights packed once into the library's cache, as the
default build calls it; ``wino own``: the weights transformed per call), and onnxruntime's
session of the same
layer (conv [+ add] + relu, exported from PyTorch), all interleaved in rounds
(``bench.tvm_cpu.interleaved_times``, the calling thread's CPU time) at 1 thread (``--threads``
for the library's pool and onnxruntime's intra-op threads; then wall time). Reports
medians / 10th percentiles in us. Writes ``bench/results/x86_fp32_winograd.json``
(``--threads N``: ``..._Nt.json``).

``--model``: ResNet-20 (fp32 default build, 2 threads) end to end with the knob 0 (direct)
vs 1 (Winograd, the default: weights packed once into the library's cache) in one loaded
library and onnxruntime, interleaved (wall time); then the first call of a freshly loaded
module (the packing) vs a later one, at each knob value, and the artifact's size against a
build marked ``with_winograd_weights`` (U packed at build time). Writes
``bench/results/x86_fp32_winograd_model.json`` (``--model --threads 1``: thread CPU time, all
three at 1 thread, ``..._model_1t.json``).

    python bench/x86_fp32_winograd.py [--threads 1] [--repeats 200]
    python bench/x86_fp32_winograd.py --model [--repeats 200]

Not a timed test; on a shared machine say what else ran (the JSON keeps the load average).
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import subprocess
import sys
import tempfile
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
warnings.filterwarnings("ignore")

LAYERS = [(16, 32, False), (16, 32, True), (32, 16, False), (32, 16, True), (64, 8, False),
          (64, 8, True)]
KNOB = "edgecc_x86_fp32_winograd"


def kernel_library(folder: str):
    """(TVM module, ctypes handle) of the fp32 kernels linked alone (as the tests do)."""
    import tvm

    from edgecc.targets.tvm import x86_fp32, x86_int8
    from edgecc.targets.tvm.x86_fp32_source import SOURCE

    obj = x86_int8.compiled_object(source=SOURCE, cache=x86_fp32.CACHE)
    so = os.path.join(folder, "kernels.so")
    subprocess.run([os.environ.get("CXX", "g++"), "-shared", obj, "-o", so], check=True)
    return tvm.runtime.load_module(so), ctypes.CDLL(so)


class Layer:
    """One same-size 3x3 conv + bias (+ residual) + ReLU: its edgecc call per knob value and
    batch, and its onnxruntime session."""

    def __init__(self, lib, c, hw, residual, threads):
        import numpy as np
        import tvm

        rng = np.random.default_rng(c)
        self.lib, self.residual = lib, residual
        self.w = (rng.standard_normal((c, c, 3, 3)) / np.sqrt(9 * c)).astype(np.float32)
        self.b = rng.standard_normal(c).astype(np.float32)
        self.args = {}
        x = rng.standard_normal((1, c, hw, hw)).astype(np.float32)
        res = rng.standard_normal((1, c, hw, hw)).astype(np.float32)
        self.inputs = (x, res)
        for cached in (True, False):  # the default build's form (meta[15] = 2: U from the
            # library's cache, packed at the first call), or the per-call transform (no flag)
            meta = [1, c, hw, hw, c, 3, 3, 1, 1, 1, 1, 1, 1, hw, hw] + [2] * cached
            args = [x, self.w.reshape(c, -1), self.b, np.array(meta, np.int64),
                    np.array([0, np.inf], np.float32)]
            if residual:
                args.append(res)
            args.append(np.zeros((1, c, hw, hw), np.float32))
            self.args[cached] = [tvm.runtime.tensor(np.ascontiguousarray(a)) for a in args]
        self.fn = lib[0].get_function("edgecc_x86_sconv")
        self.knob = ctypes.c_int32.in_dll(lib[1], KNOB)
        self.ort = self._ort(threads)

    def call(self, knob: int, cached: bool = True):
        args = self.args[cached]

        def run():
            self.knob.value = knob
            self.fn(*args)
        return run

    def output(self, knob: int):
        self.call(knob)()
        return self.args[True][-1].numpy()

    def _ort(self, threads):
        import onnxruntime as ort
        import torch

        conv = torch.nn.Conv2d(self.w.shape[1], self.w.shape[0], 3, padding=1)
        conv.weight.data = torch.from_numpy(self.w)
        conv.bias.data = torch.from_numpy(self.b)

        class M(torch.nn.Module):
            def __init__(self, residual):
                super().__init__()
                self.conv, self.residual = conv, residual

            def forward(self, x, r):
                y = self.conv(x)
                return torch.relu(y + r if self.residual else y)

        x, res = self.inputs
        inputs = (torch.from_numpy(x), torch.from_numpy(res))
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = threads
        opts.inter_op_num_threads = 1
        with tempfile.TemporaryDirectory() as d:
            path = os.path.join(d, "m.onnx")
            torch.onnx.export(M(self.residual).eval(), inputs, path, dynamo=False,
                              input_names=["x", "r"])
            sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        feed = {"x": x}
        if self.residual:
            feed["r"] = res
        feed = {i.name: feed[i.name] for i in sess.get_inputs()}
        self.ort_out = sess.run(None, feed)[0]
        return lambda: sess.run(None, feed)


def layers_main(args) -> dict:
    import numpy as np

    from bench.tvm_cpu import interleaved_times, median_p10

    rows = []
    with tempfile.TemporaryDirectory() as d:
        lib = kernel_library(d)
        ctypes.c_int32.in_dll(lib[1], "edgecc_pool_threads").value = args.threads
        for c, hw, residual in LAYERS:
            layer = Layer(lib, c, hw, residual, args.threads)
            direct, wino = layer.output(0), layer.output(1)
            err = float(np.abs(wino - direct).max() / np.abs(direct).max())
            err_ort = float(np.abs(wino - layer.ort_out).max() / np.abs(layer.ort_out).max())
            fns = {"direct": layer.call(0), "winograd": layer.call(1), "ort": layer.ort,
                   "wino_own": layer.call(1, cached=False)}
            times = interleaved_times(fns, args.repeats, clock="cpu" if args.threads == 1
                                      else "wall")
            layer.knob.value = 0
            st = {k: {m: v * 1000 for m, v in s.items()} for k, s in median_p10(times).items()}
            med = {k: s["median_ms"] for k, s in st.items()}
            rows.append({"layer": f"{c}->{c} @{hw}" + (" +res" if residual else ""),
                         "us": st, "winograd_vs_direct": med["winograd"] / med["direct"],
                         "winograd_vs_ort": med["winograd"] / med["ort"],
                         "direct_vs_ort": med["direct"] / med["ort"],
                         "weight_transform_us": med["wino_own"] - med["winograd"],
                         "max_rel_err_vs_direct": err, "max_rel_err_vs_ort": err_ort})
    clock = "thread CPU" if args.threads == 1 else "wall"
    print(f"{'layer':<16}{'direct':>9}{'winograd':>9}{'ort':>9}{'wino/dir':>9}{'wino/ort':>9}"
          f"{'dir/ort':>9}{'wino own':>9}{'err':>9}")
    for r in rows:
        u = r["us"]
        print(f"{r['layer']:<16}{u['direct']['median_ms']:9.1f}{u['winograd']['median_ms']:9.1f}"
              f"{u['ort']['median_ms']:9.1f}{r['winograd_vs_direct']:8.2f}x"
              f"{r['winograd_vs_ort']:8.2f}x{r['direct_vs_ort']:8.2f}x"
              f"{u['wino_own']['median_ms']:9.1f}{r['max_rel_err_vs_direct']:9.1e}")
    print(f"\nus per call, medians of interleaved rounds ({clock} time, {args.threads} thread(s)); "
          f"err: max|winograd - direct| / max|direct|; load {os.getloadavg()[0]:.1f}")
    return {"benchmark": "x86 fp32 Winograd F(2x2,3x3) per layer", "threads": args.threads,
            "clock": clock, "repeats": args.repeats, "load_average": os.getloadavg()[0],
            "rows": rows}


def _ort_model(module, inputs, threads: int):
    """onnxruntime's session of ``module`` (as ``bench.tvm_cpu.ort_fp32_fn``, ``threads``
    intra-op threads)."""
    import onnxruntime as ort
    import torch

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.onnx")
        torch.onnx.export(module, inputs, dynamo=True, verbose=False).save(path)
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    feed = {i.name: t.numpy() for i, t in zip(sess.get_inputs(), inputs)}
    return lambda: sess.run(None, feed)


def model_main(args) -> dict:
    threads = args.threads if args.threads_given else 2
    os.environ["TVM_NUM_THREADS"] = str(threads)
    os.environ["OMP_NUM_THREADS"] = str(threads)
    from bench.tvm_cpu import interleaved_times, median_p10, models

    import torch

    import edgecc

    make, inputs, shape = models()["resnet20"]
    module = make().eval()
    with tempfile.TemporaryDirectory() as d, torch.no_grad():
        res = edgecc.compile(module, "host", example_inputs=inputs, progress=False,
                             output_dir=os.path.join(d, "o"),
                             target_options={"num_threads": threads})
        res.run(*inputs)
        ort_fn = _ort_model(module, inputs, threads)
    library = ctypes.CDLL(res._runner.library)  # the copy the runner loaded
    knob = ctypes.c_int32.in_dll(library, KNOB)

    def at(value):
        def run():
            knob.value = value
            res.run(*inputs)
        return run

    with torch.no_grad():
        times = interleaved_times({"knob 0": at(0), "knob 1": at(1), "ort": ort_fn},
                                  args.repeats, clock="cpu" if threads == 1 else "wall")
        first = _first_calls(res._runner.library, knob, inputs)
        sizes = _artifact_sizes(module, inputs, res, threads)
    knob.value = 1
    st = median_p10(times)
    base = st["knob 0"]["median_ms"]
    for k, s in st.items():
        print(f"resnet20 {k:<8}{s['median_ms']:8.3f} ms (p10 {s['p10_ms']:.3f}) "
              f"{s['median_ms'] / base:5.2f}x of knob 0, {s['median_ms'] / st['ort']['median_ms']:5.2f}x of ort")
    for k, f in first.items():
        print(f"first call of a fresh module, {k}: {f['first_ms']:.3f} ms, a later call "
              f"{f['later_ms']:.3f} ms (medians of {f['loads']} loads; packings a load: "
              f"{f['packs_per_load']})")
    print(f"artifact: default build {sizes['default_bytes']} bytes, built with the Winograd "
          f"weights {sizes['with_winograd_weights_bytes']} bytes")
    clock = "thread CPU" if threads == 1 else "wall"
    print(f"\n{threads} thread(s), {clock} time, medians of interleaved rounds; "
          f"load {os.getloadavg()[0]:.1f}")
    return {"benchmark": "ResNet-20 fp32 end to end, edgecc_x86_fp32_winograd 0 vs 1",
            "input": shape, "threads": threads, "clock": clock, "repeats": args.repeats,
            "load_average": os.getloadavg()[0], "times": st, "first_call": first,
            "artifact": sizes}


def _first_calls(library: str, knob, inputs, loads: int = 7) -> dict:
    """Per knob value: the first call of a module freshly loaded from ``library`` (the same
    dlopen handle: the knob holds; new constants, so knob 1 packs them) and a later call, wall
    time, medians over ``loads`` alternating loads."""
    import gc
    import statistics
    import time

    import tvm
    from tvm import relax

    packs = ctypes.c_int64.in_dll(ctypes.CDLL(library), "edgecc_x86_fp32_winograd_packs")
    args = [tvm.runtime.tensor(t.numpy()) for t in inputs]
    got: dict = {0: [], 1: []}
    for _ in range(loads):
        for value in (0, 1):
            knob.value = value
            main = relax.VirtualMachine(tvm.runtime.load_module(library), tvm.cpu())["main"]
            before = packs.value
            t0 = time.perf_counter()
            main(*args)
            t1 = time.perf_counter()
            main(*args)
            t2 = time.perf_counter()
            got[value].append((t1 - t0, t2 - t1, packs.value - before))
            del main
            gc.collect()
    return {f"knob {v}": {"first_ms": statistics.median(r[0] for r in rs) * 1e3,
                          "later_ms": statistics.median(r[1] for r in rs) * 1e3,
                          "packs_per_load": max(r[2] for r in rs), "loads": loads}
            for v, rs in got.items()}


def _artifact_sizes(module, inputs, res, threads: int) -> dict:
    """model.so of the default build and of one marked ``with_winograd_weights``."""
    import edgecc
    from edgecc.targets.tvm import x86_fp32

    real = x86_fp32.wants_winograd_weights
    x86_fp32.wants_winograd_weights = lambda m: True
    try:
        with tempfile.TemporaryDirectory() as d:
            marked = edgecc.compile(module, "host", example_inputs=inputs, progress=False,
                                    output_dir=os.path.join(d, "o"),
                                    target_options={"num_threads": threads})
            marked.run(*inputs)
            grown = os.path.getsize(marked._runner.library)
    finally:
        x86_fp32.wants_winograd_weights = real
    return {"default_bytes": os.path.getsize(res._runner.library),
            "with_winograd_weights_bytes": grown}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=None,
                        help="layers: 1 (default); --model: 2 (default)")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--model", action="store_true", help="ResNet-20 end to end instead")
    args = parser.parse_args()
    args.threads_given = args.threads is not None
    args.threads = args.threads or 1
    if not args.model:
        os.environ["TVM_NUM_THREADS"] = str(args.threads)
    out = model_main(args) if args.model else layers_main(args)
    name = (f"x86_fp32_winograd_model{'_1t' if args.threads_given and args.threads == 1 else ''}"
            ".json" if args.model else
            f"x86_fp32_winograd{'' if args.threads == 1 else f'_{args.threads}t'}.json")
    path = os.path.join(ROOT, "bench", "results", name)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
