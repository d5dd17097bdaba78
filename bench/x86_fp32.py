"""edgecc's default fp32 host build of the CNNs against onnxruntime fp32, side by side, plus
which path each of the x86 fp32 kernel calls took in one inference (the kernels' path
counters: convolutions reading their input in place or through im2col panels, depthwise
planes row-vectorized or generic) and the rewrite counts of the lowering report.

    python bench/x86_fp32.py [--models resnet20,mobilenet_v2,mobilenet_v2_224]
                             [--repeats 20] [--threads 2]

Only fp32 is built (no int8 / tuning), so it is the quick loop for the fp32 kernels;
``bench/tvm_cpu.py`` is the issue's measure. Same timing as there (interleaved rounds, median,
onnxruntime with ``--threads`` intra-op threads). Prints a table and writes
``bench/results/x86_fp32.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import tvm_cpu  # noqa: E402

warnings.filterwarnings("ignore")

CNNS = "resnet20,mobilenet_v2,mobilenet_v2_224"
PATHS = ("conv_in_place", "conv_im2col", "depthwise_3x3", "depthwise_generic",
         "depthwise_3x3_avx512", "conv_row_runs", "depthwise_3x3_channels")


def path_calls(res, inputs) -> dict:
    """Calls per kernel path during one run of ``res`` (a compiled host artifact)."""
    from edgecc.targets.tvm.x86_fp32_source import PATH_QUERY

    lib = res._runner.module if hasattr(res, "_runner") else None
    if lib is None:
        return {}
    query = lib.get_function(PATH_QUERY, query_imports=True)
    before = [int(query(i)) for i in range(len(PATHS))]
    res.run(*inputs)
    return {"avx512": bool(query(-1)),
            **{p: int(query(i)) - b for i, (p, b) in enumerate(zip(PATHS, before))}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=CNNS)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=tvm_cpu.THREADS)
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "x86_fp32.json"))
    args = parser.parse_args()
    tvm_cpu.THREADS = args.threads
    import edgecc

    table = {"threads": args.threads, "onnxruntime": tvm_cpu.ort_settings(), "models": {}}
    print(f"onnxruntime {table['onnxruntime']['version']}, {args.threads} thread(s)")
    print(f"{'model':18s} {'ort fp32':>9s} {'edgecc':>9s} {'ratio':>7s}  rewrites / paths")
    for name in args.models.split(","):
        make, inputs, _ = tvm_cpu.models()[name]
        module = make().eval()
        fns = {"ort": tvm_cpu.ort_fp32_fn(module, inputs)}
        with edgecc_artifact(edgecc, module, inputs, args.threads) as res:
            fns["edgecc"] = lambda res=res: res.run(*inputs)
            paths = path_calls(res, inputs)
            rewrites = res.report.get("lowering", {}).get("x86_fp32", {})
            ms = tvm_cpu.interleaved_ms(fns, args.repeats)
        ratio = ms["edgecc"] / ms["ort"]
        table["models"][name] = {"ort_ms": ms["ort"], "edgecc_ms": ms["edgecc"],
                                 "ratio": ratio, "paths": paths, "rewrites": rewrites}
        print(f"{name:18s} {ms['ort']:9.3f} {ms['edgecc']:9.3f} {ratio:6.2f}x  "
              f"{ {k: v for k, v in rewrites.items() if k != 'left_on_tvm'} } {paths}")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(table, f, indent=1)


class edgecc_artifact:  # noqa: N801 - a context manager read as a function
    """Compile ``module`` for the host (fp32, default schedule) into a temporary folder."""

    def __init__(self, edgecc, module, inputs, threads):
        self.args = (edgecc, module, inputs, threads)

    def __enter__(self):
        import tempfile

        edgecc, module, inputs, threads = self.args
        self.tmp = tempfile.TemporaryDirectory()
        res = edgecc.compile(module, "host", example_inputs=inputs, progress=False,
                             output_dir=os.path.join(self.tmp.name, "o"),
                             target_options={"num_threads": threads})
        res.run(*inputs)
        return res

    def __exit__(self, *exc):
        self.tmp.cleanup()


if __name__ == "__main__":
    main()
