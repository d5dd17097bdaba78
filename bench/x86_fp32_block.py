"""Whole inverted residual blocks in one call (``x86_fp32_block``) A/B'd end to end: each model
built twice, ``x86_fp32.FUSE_BLOCK`` off (the build before: expand + depthwise pairs at 224,
the other layers one call each) and on, run interleaved in one process
(``bench.tvm_cpu.interleaved_times``; paired ratios per round, on vs off). Outputs are compared
bit for bit first.

``--threads 2`` (the default): wall clock at 2 threads; ``--threads 1``: the calling thread's
CPU time. Prints a table and writes ``bench/results/x86_fp32_block.json``.

    python bench/x86_fp32_block.py [--models mobilenet_v2_224] [--repeats 100] [--threads 2]
"""

from __future__ import annotations

import argparse
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


def measure(name: str, repeats: int) -> dict:
    import numpy as np
    import torch

    import edgecc
    from edgecc.targets.tvm import x86_fp32

    make, inputs, shape = models()[name]
    module = make().eval()
    builds, outs, blocks, d = {}, {}, {}, tempfile.mkdtemp()
    try:
        for fuse in (False, True):
            x86_fp32.FUSE_BLOCK = fuse
            with torch.no_grad():
                res = edgecc.compile(module, "host", example_inputs=inputs,
                                     output_dir=os.path.join(d, f"o{int(fuse)}"), progress=False,
                                     target_options={"num_threads": THREADS})
                out = res.run(*inputs)
            outs[fuse] = np.asarray(out[0] if isinstance(out, (list, tuple)) else out)
            blocks[fuse] = res.report["lowering"]["x86_fp32"].get("fused_block")
            builds[fuse] = res
    finally:
        x86_fp32.FUSE_BLOCK = True
    fns = {"pairs": lambda: builds[False].run(*inputs), "blocks": lambda: builds[True].run(*inputs)}
    with torch.no_grad():
        times = interleaved_times(fns, repeats, clock="cpu" if THREADS == 1 else "wall")
    pr = paired_ratios(times, "blocks", "pairs", repeats)
    return {"model": name, "input": shape, "load_average": os.getloadavg()[0],
            "bit_identical": bool(np.array_equal(outs[False], outs[True])),
            "fused_blocks": blocks[True],
            "median_ms": {k: statistics.median(v) for k, v in times.items()},
            "paired_blocks_vs_pairs": statistics.median(pr), "paired_quartiles": quartiles(pr)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenet_v2_224")
    parser.add_argument("--repeats", type=int, default=100)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "x86_fp32_block.json"))
    args = parser.parse_args()
    rows = [measure(m, args.repeats) for m in args.models.split(",")]
    for r in rows:
        q = r["paired_quartiles"]
        print(f"{r['model']} ({r['fused_blocks']} blocks, bit-identical {r['bit_identical']}, "
              f"load {r['load_average']:.1f}, {THREADS} thread(s)): pairs "
              f"{r['median_ms']['pairs']:.3f} ms, blocks {r['median_ms']['blocks']:.3f} ms, "
              f"paired {r['paired_blocks_vs_pairs']:.3f}x [{q[0]:.3f}, {q[1]:.3f}]")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"benchmark": "whole inverted residual blocks in one call vs the build before",
                   "threads": THREADS, "repeats": args.repeats, "rows": rows}, f, indent=2)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
