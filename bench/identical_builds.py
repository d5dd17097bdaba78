"""Two builds of the same model and options (A and A': separate compiles, separate output
directories, each loaded by its own runner) timed as ``bench/tvm_cpu.py`` times its columns
(``interleaved_times``: rounds of a pause, untimed warm-up calls, then timed ones, each
callable in turn), alone and with what a ``tvm_cpu.py`` row loads beside them (PyTorch eager,
onnxruntime fp32 and int8, edgecc's other builds of the model). A' / A must be 1.0 within
noise in every scenario: identical code measured in one run has to agree, or the bench's
columns (fp32/ort, tuned/untuned) mean nothing.

    python bench/identical_builds.py [--models resnet20,mobilenet_v2] [--repeats 20] [--passes 3]

Models and builds: ResNet-20 fp32 and MobileNetV2-32 w8a8 with integer kernels (what
``--tune`` kept as "tuned" when the tuner chose the untuned build). Scenarios, each timed
``--passes`` times, alternating:

- ``alone``: A, A' only;
- ``row``: the columns of a ``tvm_cpu.py --tune`` row in its order: eager, ort fp32, ort int8,
  edgecc fp32, edgecc int8, then A' (the "tuned" copy) — A is whichever of fp32 / int8 the
  model's build is;
- ``ort``: ort fp32, A, ort int8, A' (onnxruntime's threads next to each copy).

Prints per scenario and pass the medians, A'/A of the medians and ``paired`` (the median over
rounds of A''s block median / A's in the same round), and the libraries' paths (a
byte-identical build loads the same library: the same dlopen handle, pool, worker and
statics; only the VM object differs). Writes ``bench/results/identical_builds.json``.

Measured (Zen 4 KVM, 2 vCPUs, shared, 2 threads, --repeats 20). Before (2 blocks of 10 per
column, load ~3): A'/A of the medians 0.81-1.48 over 9 passes per model; one callable timed as
two columns 0.49-1.54. The same callable's block medians are bimodal (ResNet-20 fp32 0.35 /
0.55 ms; onnxruntime's 0.41 / 0.80): the machine switches speed states for seconds. After
(>= 10 rounds, rotated order; 04:04-04:08, load 1.8-2): A'/A of the medians 0.87-1.30,
median over passes 0.90-1.16 per scenario; paired 0.90-1.14, median 0.96-1.11 — still not
the ~5% a quiet machine should give; a model's whole run is ~1 minute of such states.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.host import THREADS  # noqa: E402  (TVM_NUM_THREADS before TVM starts)
from bench import tvm_cpu  # noqa: E402
from bench.tvm_cpu import (  # noqa: E402
    calibration, interleaved_times, median_p10, models, ort_fp32_fn, ort_int8_fn,
)

import torch  # noqa: E402

import edgecc  # noqa: E402

FP32 = "fold-batchnorm,fuse,dce"
W8A8 = "fold-batchnorm,quantize{scheme=w8a8},fuse,dce"
BUILDS = {"resnet20": "fp32", "mobilenet_v2": "int8"}  # the copy pair's build per model


def build(module, inputs, pipeline, calib, **options):
    """A loaded edgecc host artifact (as ``tvm_cpu.edgecc_fn``): (callable, library path)."""
    with tempfile.TemporaryDirectory() as d:
        res = edgecc.compile(module, "host", example_inputs=inputs, pipeline=pipeline,
                             calibration=calib, output_dir=os.path.join(d, "o"),
                             progress=False, target_options={"num_threads": THREADS,
                                                             **options})
        res.run(*inputs)  # loads the library (a private copy) before the directory goes
    return (lambda: res.run(*inputs)), getattr(res._runner, "library", None)


def round_ratio(b: list, a: list, repeats: int) -> float:
    """The median over rounds of b's block median / a's in the same round (paired: both
    blocks met the same spell of the machine, as end_to_end.py's rule pairs candidates)."""
    block = max(1, min(10, repeats // tvm_cpu.MIN_ROUNDS))
    return statistics.median(statistics.median(b[i:i + block]) / statistics.median(a[i:i + block])
                             for i in range(0, min(len(a), len(b)), block))


def scenarios(fns: dict, kind: str) -> dict:
    """name -> ordered callables (see the module docstring)."""
    a, b = fns["A"], fns["A'"]
    other = fns["edgecc_int8"] if kind == "fp32" else fns["edgecc_fp32"]
    row = {"eager": fns["eager"], "ort_fp32": fns["ort_fp32"], "ort_int8": fns["ort_int8"]}
    if kind == "fp32":
        row.update({"A": a, "edgecc_int8": other})
    else:
        row.update({"edgecc_fp32": other, "A": a})
    row["A'"] = b
    return {"alone": {"A": a, "A'": b}, "row": row,
            "ort": {"ort_fp32": fns["ort_fp32"], "A": a, "ort_int8": fns["ort_int8"],
                    "A'": b}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20,mobilenet_v2")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--passes", type=int, default=3)
    parser.add_argument("--scenarios", default="alone,row,ort")
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "identical_builds.json"))
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    table = models()
    out = {"benchmark": "identical edgecc builds A / A' in one interleaved run",
           "threads": THREADS, "repeats": args.repeats, "passes": args.passes,
           "pause_s": tvm_cpu.PAUSE_S, "warmup_s": tvm_cpu.WARMUP_S,
           "load_before": os.getloadavg()[0], "rows": []}
    print(f"{'model':<14}{'build':<6}{'scenario':<9}{'pass':>5}{'A ms':>9}{'A_ ms':>9}"
          f"{'A_/A':>8}{'paired':>8}   others (ms)")
    for name in args.models.split(","):
        make, inputs, _ = table[name]
        kind = BUILDS[name]
        module = make().eval()
        calib = calibration(inputs)
        with torch.no_grad():
            fns = {"eager": lambda m=module, i=inputs: m(*i),
                   "ort_fp32": ort_fp32_fn(module, inputs),
                   "ort_int8": ort_int8_fn(module, inputs, calib)}
            libs = {}
            fns["edgecc_fp32"], libs["edgecc_fp32"] = build(module, inputs, FP32, None)
            fns["edgecc_int8"], libs["edgecc_int8"] = build(module, inputs, W8A8, calib,
                                                            integer_kernels=True)
            fns["A"], libs["A"] = fns[f"edgecc_{kind}"], libs[f"edgecc_{kind}"]
            if kind == "fp32":
                fns["A'"], libs["A'"] = build(module, inputs, FP32, None)
            else:
                fns["A'"], libs["A'"] = build(module, inputs, W8A8, calib,
                                              integer_kernels=True)
            print(f"{name}: libraries {libs}", flush=True)
            chosen = scenarios(fns, kind)
            results = []
            for p in range(args.passes):
                for sname in args.scenarios.split(","):
                    times = interleaved_times(chosen[sname], args.repeats)
                    stats = median_p10(times)
                    ratio = stats["A'"]["median_ms"] / stats["A"]["median_ms"]
                    paired = round_ratio(times["A'"], times["A"], args.repeats)
                    results.append({"scenario": sname, "pass": p, "ratio": ratio,
                                    "paired_ratio": paired, "p10_ratio":
                                    stats["A'"]["p10_ms"] / stats["A"]["p10_ms"],
                                    "stats": stats, "load": os.getloadavg()[0]})
                    others = " ".join(f"{k}={v['median_ms']:.3f}" for k, v in stats.items()
                                      if k not in ("A", "A'"))
                    print(f"{name:<14}{kind:<6}{sname:<9}{p:>5}{stats['A']['median_ms']:>9.3f}"
                          f"{stats[chr(65) + chr(39)]['median_ms']:>9.3f}{ratio:>7.2f}x{paired:>7.2f}x   "
                          f"{others}", flush=True)
        summary = {s: {stat: statistics.median(r[stat] for r in results if r["scenario"] == s)
                       for stat in ("ratio", "paired_ratio", "p10_ratio")}
                   for s in args.scenarios.split(",")}
        print(f"{name}: median A'/A per scenario {summary}", flush=True)
        out["rows"].append({"model": name, "build": kind, "libraries": libs,
                            "same_library": libs["A"] == libs["A'"], "passes": results,
                            "median_ratio": summary})
    out["load_after"] = os.getloadavg()[0]
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(out, f, indent=2)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
