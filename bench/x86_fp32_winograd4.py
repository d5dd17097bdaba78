"""Winograd F(4x4, 3x3) (``x86_fp32_winograd4``) against F(2x2, 3x3) in ResNet-20's default fp32
build, one thread: the model built once, then the library's ``edgecc_x86_fp32_winograd_tile``
moved between 2 and 4 (and ``edgecc_x86_fp32_winograd`` to 0, the direct path) in one process.

Numerics, on the real (batch-norm folded) weights: every eligible convolution's own call
(its arguments as the VM passed them: real activations) re-run at tile 4, tile 2 and direct,
max|a - b| / max|b| per layer; and the model's output at tile 4 vs tile 2, direct and PyTorch
(``--inputs`` random inputs). Speed: per layer, each call re-run alone at tile 2 / 4 in
interleaved rounds (thread CPU time, min and median over rounds); end to end, the whole call
at tile 2 / 4 through ``bench.tvm_cpu.interleaved_times`` (thread CPU time). Two-thread wall
clock: ``bench/x86_fp32_knob.py --knob edgecc_x86_fp32_winograd_tile --values 2,4``.
Prints tables, writes ``bench/results/x86_fp32_winograd4.json``. Not a timed test: say the load.

    python bench/x86_fp32_winograd4.py [--rounds 40] [--repeats 40] [--inputs 4]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import tempfile
import time
import warnings

os.environ["TVM_NUM_THREADS"] = "1"  # before TVM's pool starts
os.environ["OMP_NUM_THREADS"] = "1"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
warnings.filterwarnings("ignore")

import numpy as np  # noqa: E402

from bench.tvm_cpu import interleaved_times, median_p10  # noqa: E402


def _rel(a: np.ndarray, ref: np.ndarray) -> float:
    return float(np.abs(a - ref).max() / np.abs(ref).max())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=40, help="per-layer timing rounds")
    parser.add_argument("--repeats", type=int, default=40, help="end-to-end rounds")
    parser.add_argument("--inputs", type=int, default=4, help="random inputs for the numerics")
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "x86_fp32_winograd4.json"))
    args = parser.parse_args()

    import torch
    import tvm

    import edgecc
    from bench.vm_calls import kernel_calls
    from edgecc.targets.tvm import x86_fp32_winograd4
    from edgecc.targets.tvm.x86_fp32_source import PATH_QUERY
    from examples.models import resnet20

    module = resnet20().eval()
    x0 = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with tempfile.TemporaryDirectory() as d, torch.no_grad():
        res = edgecc.compile(module, "host", example_inputs=(x0,),
                             output_dir=os.path.join(d, "o"), progress=False,
                             target_options={"num_threads": 1})
        res.run(x0)
    runner = res._runner
    lib = ctypes.CDLL(runner.library)
    tile = ctypes.c_int32.in_dll(lib, "edgecc_x86_fp32_winograd_tile")
    wino = ctypes.c_int32.in_dll(lib, "edgecc_x86_fp32_winograd")
    query = runner.module.get_function(PATH_QUERY, query_imports=True)
    assert (tile.value, wino.value) == (4, 1), "the default build's knobs"

    def setting(t: int, w: int = 1) -> None:
        tile.value, wino.value = t, w

    # per eligible layer: numerics and alone timing on the call's own arguments
    layers = []
    for func, sym, cargs in kernel_calls(runner, (x0,)):
        if sym != "edgecc_x86_sconv":
            continue
        m = [int(v) for v in cargs[3].numpy()]
        c, h, w, oc = m[1], m[2], m[3], m[4]
        if not (m[5] == 3 and m[7] == 1 and x86_fp32_winograd4.eligible(c, h, w)):
            continue
        outs = {}
        for name, (t, wv) in {"f4": (4, 1), "f2": (2, 1), "direct": (2, 0)}.items():
            setting(t, wv)
            before = int(query(21))
            func(*cargs)
            outs[name] = cargs[-1].numpy().copy()
            outs[name + "_calls"] = int(query(21)) - before
        setting(4)
        assert (outs["f4_calls"], outs["f2_calls"], outs["direct_calls"]) == (1, 0, 0)
        times: dict[int, list[float]] = {2: [], 4: []}
        for r in range(args.rounds):
            for t in ((2, 4) if r % 2 == 0 else (4, 2)):
                setting(t)
                func(*cargs)
                s = time.thread_time()
                for _ in range(5):
                    func(*cargs)
                times[t].append((time.thread_time() - s) / 5 * 1e6)
        setting(4)
        layers.append({
            "key": f"{c}->{oc} @{h}" + (" +res" if len(cargs) == 7 else ""),
            "f4_vs_f2": _rel(outs["f4"], outs["f2"]), "f4_vs_direct": _rel(outs["f4"], outs["direct"]),
            "f2_vs_direct": _rel(outs["f2"], outs["direct"]),
            "us": {str(t): {"min": min(v), "median": float(np.median(v))} for t, v in times.items()}})

    # the model's output
    model_err = []
    gen = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _ in range(args.inputs):
            x = torch.randn(1, 3, 32, 32, generator=gen)
            ref = module.double()(x.double()).numpy()
            module.float()
            outs = {}
            for name, (t, wv) in {"f4": (4, 1), "f2": (2, 1), "direct": (2, 0)}.items():
                setting(t, wv)
                out = res.run(x)
                out = out[0] if isinstance(out, (list, tuple)) else out
                outs[name] = np.asarray(out.numpy() if hasattr(out, "numpy") else out, np.float64)
            setting(4)
            model_err.append({"f4_vs_f2": _rel(outs["f4"], outs["f2"]),
                              "f4_vs_direct": _rel(outs["f4"], outs["direct"]),
                              "f4_vs_torch64": _rel(outs["f4"], ref),
                              "f2_vs_torch64": _rel(outs["f2"], ref),
                              "direct_vs_torch64": _rel(outs["direct"], ref)})

    def at(t):
        def run():
            setting(t)
            res.run(x0)
        return run

    with torch.no_grad():
        e2e = median_p10(interleaved_times({2: at(2), 4: at(4)}, args.repeats, clock="cpu"))
    setting(4)

    load = os.getloadavg()[0]
    print(f"ResNet-20, 1 thread, thread CPU time (us), load {load:.1f}; rel = max|a-b|/max|b|")
    print(f"{'layer':<18}{'F2 min':>9}{'F4 min':>9}{'F4/F2':>7}{'F2 med':>9}{'F4 med':>9}"
          f"{'F4 vs F2':>10}{'F4 vs dir':>10}{'F2 vs dir':>10}")
    for row in layers:
        a, b = row["us"]["2"], row["us"]["4"]
        print(f"{row['key']:<18}{a['min']:9.1f}{b['min']:9.1f}{b['min'] / a['min']:7.2f}"
              f"{a['median']:9.1f}{b['median']:9.1f}{row['f4_vs_f2']:10.1e}"
              f"{row['f4_vs_direct']:10.1e}{row['f2_vs_direct']:10.1e}")
    s2 = sum(r["us"]["2"]["min"] for r in layers)
    s4 = sum(r["us"]["4"]["min"] for r in layers)
    print(f"{'sum':<18}{s2:9.1f}{s4:9.1f}{s4 / s2:7.2f}")
    print("\nmodel output, worst over inputs: " + ", ".join(
        f"{k} {max(e[k] for e in model_err):.1e}" for k in model_err[0]))
    a, b = e2e[2], e2e[4]
    print(f"end to end (ms, median / p10 of {args.repeats} interleaved rounds): tile 2 "
          f"{a['median_ms']:.3f} / {a['p10_ms']:.3f}, tile 4 {b['median_ms']:.3f} / "
          f"{b['p10_ms']:.3f}: {b['median_ms'] / a['median_ms']:.2f}x")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"benchmark": "Winograd F(4x4) vs F(2x2), ResNet-20, 1 thread, thread CPU time",
                   "load_average": load, "rounds": args.rounds, "repeats": args.repeats,
                   "layers": layers, "model_error": model_err,
                   "end_to_end_ms": {str(k): v for k, v in e2e.items()}}, f, indent=2)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
