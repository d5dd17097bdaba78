"""edgecc's TVM CPU artifacts on this machine's x86 CPU (the same machinery as -t arm64, with
an ``llvm`` host target): fp32 and int8 (w8a8) latency, against PyTorch eager and
onnxruntime (fp32, and onnxruntime's own int8 QDQ model from quantize_static), 2 threads
each, median of repeats. Prints a table and writes ``bench/results/tvm_cpu.json``.

    python bench/tvm_cpu.py [--repeats 20] [--models resnet20,mobilenet_v2,bert] [--tune 200]

edgecc columns: ``fp32``; ``int8 sim`` = float simulation with int8 weight storage (the host
default); ``int8 int`` = integer kernels (``integer_kernels=true``: int8 GEMMs and convs,
int32 bias, fixed-point requantize — what -t arm64 runs). Each untuned (edgecc's default
schedule) and, with ``--tune N``, MetaSchedule-tuned with a budget of N trials per compile
(a fresh record cache per model, so the budget is all the tuning it got; each kernel's
default schedule is a measured candidate, so tuned is never the tuner's worse pick).
Every variant is built first, then all are timed in interleaved rounds (per round: a few
untimed calls, then 10 timed ones, of each), so a slow spell of a shared machine does not
favour one column.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.host import THREADS, models  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

import edgecc  # noqa: E402

warnings.filterwarnings("ignore")


def calibration(inputs, n=4):
    torch.manual_seed(1)
    out = []
    for _ in range(n):
        batch = []
        for t in inputs:
            batch.append(torch.randint(0, 30000, t.shape) if t.dtype == torch.long and
                         t.max() > 1 else (t.clone() if t.dtype == torch.long else
                                           torch.randn_like(t)))
        out.append(tuple(batch))
    return out


def ort_fp32_fn(module, inputs):
    import onnxruntime as ort

    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "m.onnx")
        torch.onnx.export(module, inputs, dynamo=True, verbose=False).save(path)
        sess = ort.InferenceSession(path, _ort_options(), providers=["CPUExecutionProvider"])
    feed = {i.name: t.numpy() for i, t in zip(sess.get_inputs(), inputs)}
    return lambda: sess.run(None, feed)


def _ort_options():
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = THREADS
    opts.inter_op_num_threads = 1
    return opts


def ort_int8_fn(module, inputs, calib):
    """onnxruntime's own static int8 QDQ model (quantize_static, per-channel weights)."""
    import onnxruntime as ort
    from onnxruntime.quantization import (
        CalibrationDataReader, QuantFormat, QuantType, quantize_static,
    )

    with tempfile.TemporaryDirectory() as d:
        fp32, int8 = os.path.join(d, "m.onnx"), os.path.join(d, "q.onnx")
        torch.onnx.export(module, inputs, dynamo=True, verbose=False).save(fp32)
        names = [i.name for i in ort.InferenceSession(fp32).get_inputs()]

        class Reader(CalibrationDataReader):
            def __init__(self):
                self.it = iter([{n: t.numpy() for n, t in zip(names, b)} for b in calib])

            def get_next(self):
                return next(self.it, None)

        quantize_static(fp32, int8, Reader(), quant_format=QuantFormat.QDQ, per_channel=True,
                        activation_type=QuantType.QInt8, weight_type=QuantType.QInt8)
        sess = ort.InferenceSession(int8, _ort_options(), providers=["CPUExecutionProvider"])
    feed = {n: t.numpy() for n, t in zip(names, inputs)}
    return lambda: sess.run(None, feed)


def edgecc_fn(module, inputs, pipeline, calib, **target_options):
    """A compiled edgecc host artifact (loaded once) and what its tuning did, if tuned."""
    with tempfile.TemporaryDirectory() as d:
        if target_options.get("tune_trials"):
            target_options["tune_cache"] = os.path.join(d, "tuning")
        res = edgecc.compile(module, "host", example_inputs=inputs, pipeline=pipeline,
                             calibration=calib, output_dir=os.path.join(d, "o"),
                             progress=False, target_options={"num_threads": THREADS,
                                                             **target_options})
        res.run(*inputs)  # loads the library (a private copy) before the directory goes
    return (lambda: res.run(*inputs)), res.report.get("lowering", {}).get("tuning")


PAUSE_S = 0.3  # between blocks: the previous runtime's threads stop spinning


def interleaved_ms(fns, repeats, block=10, warmup=3):
    """Median latency of each callable, timed in rounds — per round, each one gets
    ``warmup`` untimed calls then ``block`` timed ones — so a slow spell of a shared machine
    affects every column alike. (Not one call each per round: the runtimes' thread pools
    spin after a call, and whichever ran next paid for the previous one's spinning.)"""
    times = {k: [] for k in fns}
    for _ in range(max(1, repeats // block)):
        for k, fn in fns.items():
            time.sleep(PAUSE_S)
            for _ in range(warmup):
                fn()
            for _ in range(block):
                t = time.perf_counter()
                fn()
                times[k].append((time.perf_counter() - t) * 1000)
    return {k: statistics.median(v) for k, v in times.items()}


def _write(args, rows):
    result = {"benchmark": "TVM CPU (x86 llvm) fp32 / int8 vs PyTorch and onnxruntime",
              "threads": THREADS, "repeats": args.repeats,
              "statistic": "median of interleaved rounds",
              "tune_trials": args.tune, "machine": {"cpu": platform.processor()
                                                    or platform.machine(),
                                                    "cores": os.cpu_count()},
              "versions": {"edgecc": edgecc.__version__, "torch": torch.__version__,
                           "onnxruntime": __import__("onnxruntime").__version__,
                           "tvm": __import__("tvm").__version__, "numpy": np.__version__},
              "rows": rows}
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--models", default="resnet20,mobilenet_v2,bert")
    parser.add_argument("--tune", type=int, default=0, metavar="TRIALS",
                        help="also measure MetaSchedule-tuned builds with this trial budget")
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "tvm_cpu.json"))
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    table = models()
    rows = []
    for name in args.models.split(","):
        make, inputs, shape = table[name]
        module = make().eval()
        calib = calibration(inputs)
        q = "fold-batchnorm,quantize{scheme=w8a8},fuse,dce"
        fp32 = "fold-batchnorm,fuse,dce"
        tuning = {}
        with torch.no_grad():
            fns = {"pytorch_eager_ms": lambda m=module, i=inputs: m(*i),
                   "onnxruntime_fp32_ms": ort_fp32_fn(module, inputs),
                   "onnxruntime_int8_ms": ort_int8_fn(module, inputs, calib),
                   "edgecc_fp32_ms": edgecc_fn(module, inputs, fp32, None)[0],
                   "edgecc_int8_sim_ms": edgecc_fn(module, inputs, q, calib)[0],
                   "edgecc_int8_int_ms": edgecc_fn(module, inputs, q, calib,
                                                   integer_kernels=True)[0]}
            if args.tune:
                fns["edgecc_fp32_tuned_ms"], tuning["fp32"] = edgecc_fn(
                    module, inputs, fp32, None, tune_trials=args.tune)
                fns["edgecc_int8_int_tuned_ms"], tuning["int8_int"] = edgecc_fn(
                    module, inputs, q, calib, integer_kernels=True, tune_trials=args.tune)
            row = {"model": name, "input": shape, **interleaved_ms(fns, args.repeats)}
        if tuning:
            row["tuning"] = {k: {f: v.get(f) for f in ("kernels", "trials_run",
                                                      "default_kept", "seconds")}
                             for k, v in tuning.items() if v}
        rows.append(row)
        print(f"done {name}: {row}", file=sys.stderr, flush=True)
        _write(args, rows)  # after each model: a long tuning run keeps what it measured
    cols = ["pytorch_eager_ms", "onnxruntime_fp32_ms", "onnxruntime_int8_ms",
            "edgecc_fp32_ms", "edgecc_int8_sim_ms", "edgecc_int8_int_ms"]
    heads = ["eager", "ort fp32", "ort int8", "edgecc fp32", "int8 sim", "int8 int"]
    if args.tune:
        cols += ["edgecc_fp32_tuned_ms", "edgecc_int8_int_tuned_ms"]
        heads += ["fp32 tuned", "int8 tuned"]
    print(f"{'model':<14}{'input':<14}" + "".join(f"{h:>13}" for h in heads))
    for r in rows:
        print(f"{r['model']:<14}{r['input']:<14}" + "".join(f"{r[c]:>13.2f}" for c in cols))
    print("ms, median, 2 threads; edgecc untuned = default schedule"
          + (f"; tuned = MetaSchedule, {args.tune} trials per compile" if args.tune else ""))
    _write(args, rows)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
