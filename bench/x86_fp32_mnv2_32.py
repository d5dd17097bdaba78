"""MobileNetV2-32 (1x3x32x32) fp32 at 2 threads, call by call: every kernel call of the VM's
run timed alone (wall clock, median of repeats) as built (the pool's thresholds) and with every
job serial (``edgecc_x86_serial_work_log2`` = 63: one thread's time), next to onnxruntime's
per-node profile at the same thread count. Says which calls gain from the second thread,
which lose to the pool handoff, and where onnxruntime's layers are faster.

    python bench/x86_fp32_mnv2_32.py [--threads 2] [--repeats 200] [--model mobilenet_v2]

Prints a table and writes ``bench/results/x86_fp32_mnv2_32.json``. Not a timed test: the
machine's load matters (printed).
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


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench.threads_arg import threads_before_tvm  # noqa: E402

THREADS = threads_before_tvm()
warnings.filterwarnings("ignore")


def describe(sym: str, args) -> str:
    """A short shape key of one kernel call."""
    if sym in ("edgecc_x86_sconv", "edgecc_x86_sdwconv", "edgecc_x86_sexpdw"):
        m = [int(v) for v in args[3].numpy()] if hasattr(args[3], "numpy") else []
        shapes = "x".join(str(v) for v in m)
        return f"{sym[11:]} meta={shapes}" + (" +res" if len(args) == 7 else "")
    if sym == "edgecc_x86_sgemm":
        m = [int(v) for v in args[3].numpy()]
        return f"sgemm {m[0]}x{m[1]}x{m[2]}"
    shapes = [tuple(a.shape) for a in args if hasattr(a, "shape")]
    return f"{sym} {shapes[:2]}"


def time_call(func, args, repeats: int) -> float:
    ts = []
    for _ in range(repeats):
        t = time.perf_counter()
        func(*args)
        ts.append(time.perf_counter() - t)
    ts.sort()
    return ts[len(ts) // 2] * 1e6


def ort_nodes(module, inputs, rounds: int) -> list[dict]:
    import onnxruntime as ort
    import torch

    d = tempfile.mkdtemp()
    path = os.path.join(d, "m.onnx")
    torch.onnx.export(module, inputs, dynamo=True, verbose=False).save(path)
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    opts.enable_profiling = True
    opts.profile_file_prefix = os.path.join(d, "prof")
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    feed = {i.name: t.numpy() for i, t in zip(sess.get_inputs(), inputs)}
    for _ in range(rounds):
        sess.run(None, feed)
    with open(sess.end_profiling()) as f:
        events = json.load(f)
    per: dict[str, list[float]] = {}
    info: dict[str, dict] = {}
    for e in events:
        if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
            continue
        per.setdefault(e["name"], []).append(float(e["dur"]))
        info[e["name"]] = e["args"]
    rows = []
    for name, ds in per.items():
        a = info[name]
        ds.sort()
        shapes = [list(s.values())[0] for s in a.get("input_type_shape", [])]
        rows.append({"node": name, "op": a.get("op_name"), "shapes": shapes[:2],
                     "us": ds[len(ds) // 2]})
    return rows


def main() -> int:
    import torch

    import edgecc
    from bench.tvm_cpu import models
    from bench.vm_calls import kernel_calls
    from edgecc.targets.tvm.runner import tvm_tensor

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=200)
    p.add_argument("--model", default="mobilenet_v2")
    p.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                    "x86_fp32_mnv2_32.json"))
    args = p.parse_args()
    make, inputs, _ = models()[args.model]
    module = make().eval()
    torch.set_num_threads(THREADS)
    with tempfile.TemporaryDirectory() as d, torch.no_grad():
        res = edgecc.compile(module, "host", example_inputs=inputs, progress=False,
                             output_dir=os.path.join(d, "o"),
                             target_options={"num_threads": THREADS})
        res.run(*inputs)
        lib = ctypes.CDLL(res._runner.library)
        serial = ctypes.c_int64.in_dll(lib, "edgecc_x86_serial_work_log2")
        runner = res._runner
        calls = [c for c in kernel_calls(runner, inputs) if not c[1].startswith("vm.builtin")]
        rows = []
        for func, sym, cargs in calls:
            for _ in range(5):
                func(*cargs)
            pooled = time_call(func, cargs, args.repeats)
            serial.value = 63
            ser = time_call(func, cargs, args.repeats)
            serial.value = 0
            pooled2 = time_call(func, cargs, args.repeats)
            rows.append({"call": describe(sym, cargs), "pooled_us": min(pooled, pooled2),
                         "serial_us": ser})
        whole = {}
        for v in (0, 63) * 3:
            serial.value = v
            ts = []
            for _ in range(args.repeats):
                t = time.perf_counter()
                res.run(*inputs)
                ts.append(time.perf_counter() - t)
            ts.sort()
            whole.setdefault(v, []).append(ts[len(ts) // 2] * 1e6)
        serial.value = 0
        ort_rows = ort_nodes(module, inputs, args.repeats)
    tp = sum(r["pooled_us"] for r in rows)
    ts_ = sum(r["serial_us"] for r in rows)
    print(f"{'call':<60}{'pooled us':>10}{'serial us':>10}")
    for r in rows:
        print(f"{r['call'][:60]:<60}{r['pooled_us']:10.2f}{r['serial_us']:10.2f}")
    print(f"{'sum':<60}{tp:10.1f}{ts_:10.1f}")
    print(f"whole run (median us): as built {min(whole[0]):.1f}, all serial {min(whole[63]):.1f}")
    print("\nonnxruntime nodes")
    for r in ort_rows:
        print(f"{r['op']:<22}{str(r['shapes'])[:60]:<62}{r['us']:8.1f}")
    print(f"{'sum':<84}{sum(r['us'] for r in ort_rows):8.1f}")
    print(f"load {os.getloadavg()}")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"threads": THREADS, "load": os.getloadavg(), "calls": rows,
                   "whole_us": whole, "ort": ort_rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
