"""The fused expand 1x1 + depthwise 3x3 call (``x86_fp32_expand_dw``) A/B'd end to end: each
model built twice, with ``x86_fp32.FUSE_EXPAND_DW`` off (the expand and the depthwise as two
calls, as before) and on, plus the fused build at ``edgecc_x86_fp32_expand_dw_rows`` values
(``--rows``), all run interleaved in one process (``bench.tvm_cpu.interleaved_times``; paired
ratios per round vs the unfused build). Outputs are compared bit for bit first.

``--threads 2`` (the default): wall clock at 2 threads; ``--threads 1``: the calling thread's
CPU time. Prints a table and writes ``bench/results/x86_fp32_expand_dw.json``.

    python bench/x86_fp32_expand_dw.py [--models mobilenet_v2_224] [--repeats 60] [--threads 2]
                                       [--rows 16,8,28]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import sys
import tempfile
import warnings

from x86_fp32_knob import THREADS  # noqa: F401  (sets TVM_NUM_THREADS from --threads first)

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
warnings.filterwarnings("ignore")

from bench.tvm_cpu import interleaved_times, models, paired_ratios, quartiles  # noqa: E402


def measure(name: str, rows: list[int], repeats: int) -> dict:
    import numpy as np
    import torch

    import edgecc
    from edgecc.targets.tvm import x86_fp32

    make, inputs, shape = models()[name]
    module = make().eval()
    builds, outs, d = {}, {}, tempfile.mkdtemp()
    for fuse in (False, True):
        x86_fp32.FUSE_EXPAND_DW = fuse
        with torch.no_grad():
            res = edgecc.compile(module, "host", example_inputs=inputs,
                                 output_dir=os.path.join(d, f"o{int(fuse)}"), progress=False,
                                 target_options={"num_threads": THREADS})
            outs[fuse] = np.asarray(res.run(*inputs)[0] if isinstance(res.run(*inputs), (list, tuple))
                                    else res.run(*inputs))
        builds[fuse] = res
    x86_fp32.FUSE_EXPAND_DW = True
    fused = builds[True]
    knob = ctypes.c_int32.in_dll(ctypes.CDLL(fused._runner.library), "edgecc_x86_fp32_expand_dw_rows")
    default = knob.value

    def at(r):
        def run():
            knob.value = r
            fused.run(*inputs)
        return run

    fns = {"unfused": lambda: builds[False].run(*inputs)}
    fns.update({f"rows={r}": at(r) for r in rows})
    try:
        with torch.no_grad():
            times = interleaved_times(fns, repeats, clock="cpu" if THREADS == 1 else "wall")
    finally:
        knob.value = default
    cols = {}
    for k in fns:
        pr = paired_ratios(times, k, "unfused", repeats)
        cols[k] = {"median_ms": statistics.median(times[k]), "paired_vs_unfused": statistics.median(pr),
                   "paired_quartiles": quartiles(pr)}
    return {"model": name, "input": shape, "load_average": os.getloadavg()[0],
            "bit_identical": bool(np.array_equal(outs[False], outs[True])),
            "fused_pairs": fused.report["lowering"]["x86_fp32"].get("fused_expand_dw"),
            "columns": cols}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenet_v2_224")
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--rows", default="16", help="edgecc_x86_fp32_expand_dw_rows values")
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "x86_fp32_expand_dw.json"))
    args = parser.parse_args()
    rows = [int(r) for r in args.rows.split(",")]
    out = [measure(m, rows, args.repeats) for m in args.models.split(",")]
    for r in out:
        print(f"{r['model']} ({r['fused_pairs']} pairs fused, bit-identical {r['bit_identical']}, "
              f"load {r['load_average']:.1f}, {THREADS} thread(s))")
        for k, c in r["columns"].items():
            q = c["paired_quartiles"]
            print(f"  {k:<10} {c['median_ms']:9.3f} ms   paired {c['paired_vs_unfused']:.3f}x"
                  f"  [{q[0]:.3f}, {q[1]:.3f}]" if q else "")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"benchmark": "fused expand 1x1 + depthwise 3x3 vs two calls, end to end",
                   "threads": THREADS, "repeats": args.repeats, "rows": out}, f, indent=2)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
