"""Does pruning make the host artifact faster? Latency of the dense model vs 50% structured
pruning (channels / neurons / heads physically removed) vs 50% unstructured masks, on the
host target (TVM, edgecc's default CPU schedule, untuned), 2 threads, median of repeats.
Prints a table and writes ``bench/results/prune_speed.json``.

    python bench/prune_speed.py [--repeats 30] [--models resnet20,mobilenet_v2,bert]

Unstructured masks are expected to give NO speed-up: the host runs dense kernels (the
masks are folded into the weights by ``apply-masks``); only structured pruning removes work.
Not a timed test: numbers depend on the machine.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.host import THREADS, median_ms, models  # noqa: E402  (sets the thread env vars)

import torch  # noqa: E402

import edgecc  # noqa: E402

warnings.filterwarnings("ignore")

BUILDS = {
    "dense": "fold-batchnorm,dce",
    "structured-50%": "prune-structured{ratio=0.5},fold-batchnorm,dce",
    "unstructured-50%": "prune{sparsity=0.5},fold-batchnorm,dce",
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--models", default="resnet20,mobilenet_v2,bert")
    parser.add_argument("--output",
                        default=os.path.join(ROOT, "bench", "results", "prune_speed.json"))
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    table = models()
    rows = []
    for name in args.models.split(","):
        make, inputs, shape = table[name]
        module = make().eval()
        row = {"model": name, "input": shape}
        for build, pipeline in BUILDS.items():
            with tempfile.TemporaryDirectory() as d:
                t = time.perf_counter()
                res = edgecc.compile(module, "host", example_inputs=inputs, pipeline=pipeline,
                                     output_dir=os.path.join(d, "out"), progress=False,
                                     force=True, target_options={"num_threads": THREADS})
                compile_s = time.perf_counter() - t
                res.run(*inputs)
                ms = median_ms(lambda: res.run(*inputs), args.repeats)  # noqa: B023
            size = res.report["model"]["after"]
            row[build] = {"ms": ms, "parameters": size["parameters"], "macs": size["macs"],
                          "compile_s": compile_s,
                          "verified": res.report["verification"]["passed"]}
            print(f"done {name} {build}: {ms:.2f} ms", file=sys.stderr)
        dense = row["dense"]
        for build in ("structured-50%", "unstructured-50%"):
            row[build]["speedup"] = dense["ms"] / row[build]["ms"]
            row[build]["mac_ratio"] = row[build]["macs"] / dense["macs"]
        rows.append(row)

    print(f"{'model':<14}{'input':<14}{'dense ms':>10}{'struct ms':>11}{'speed-up':>10}"
          f"{'MACs kept':>11}{'params kept':>13}{'masks ms':>10}{'speed-up':>10}")
    for r in rows:
        s, u, d = r["structured-50%"], r["unstructured-50%"], r["dense"]
        print(f"{r['model']:<14}{r['input']:<14}{d['ms']:>10.2f}{s['ms']:>11.2f}"
              f"{s['speedup']:>9.2f}x{s['mac_ratio']:>11.2f}"
              f"{s['parameters'] / d['parameters']:>13.2f}{u['ms']:>10.2f}{u['speedup']:>9.2f}x")
    print("unstructured masks run on dense kernels: no speed-up is expected or claimed")
    result = {
        "benchmark": "host latency: dense vs 50% structured pruning vs 50% unstructured masks",
        "pipelines": BUILDS, "threads": THREADS, "repeats": args.repeats,
        "statistic": "median",
        "note": "unstructured sparsity runs on dense kernels here (apply-masks folds the "
                "masks): no speed-up expected",
        "machine": {"cpu": platform.processor() or platform.machine(), "cores": os.cpu_count()},
        "versions": {"edgecc": edgecc.__version__, "torch": torch.__version__,
                     "tvm": __import__("tvm").__version__},
        "rows": rows,
    }
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(result, f, indent=2)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
