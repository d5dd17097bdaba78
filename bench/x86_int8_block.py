"""int8 inverted residual blocks in one call (``x86_int8_block``) A/B'd end to end: a w8a8 model
built with ``x86_int8_block.FUSE_BLOCK`` off (three calls a block), the default (one call a
block running the three in turn, the band form where it applies: ``one_call``) and ``SPLIT``
on (the <= 16x16 blocks' expand + depthwise in two halves of the expanded channels, one
2-item pool job: the default since s33; ``split4x4`` / ``split32x32`` other limits), run
interleaved in one process
(``bench.tvm_cpu.interleaved_times``; paired ratios per round vs off), and the default build
once more with its band form off (``chained``: the library knob ``edgecc_x86_int8_block_band``
0 around each of its runs; ``one_call`` has the band form at its default). Outputs are compared
bit for bit first.

``--threads 2`` (the default): wall clock at 2 threads; ``--threads 1``: the calling thread's
CPU time. Prints a table (paired median, p10 / p90) and writes
``bench/results/x86_int8_block.json``.

    python bench/x86_int8_block.py [--models mobilenet_v2] [--repeats 200] [--threads 2]
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

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench.threads_arg import threads_before_tvm  # noqa: E402

THREADS = threads_before_tvm()
warnings.filterwarnings("ignore")

from bench.tvm_cpu import calibration, interleaved_times, models, paired_ratios  # noqa: E402

PIPELINE = "fold-batchnorm,quantize{scheme=w8a8},fuse,dce"
# build-time settings of x86_int8_block per column: three calls a block; one call a block
# (the band form where it applies: the default before s33); one call a block, the <= 16x16
# ones split (the default since s33); only the 4x4 ones; the 32x32 ones too
VARIANTS = {"off": {"FUSE_BLOCK": False}, "one_call": {"SPLIT": False}, "split": {"SPLIT": True},
            "split4x4": {"SPLIT": True, "SPLIT_MAX_PIXELS": 16},
            "split32x32": {"SPLIT": True, "SPLIT_MAX_PIXELS": 32 * 32}}
# run-time columns: (the build they run, its library knobs while they run)
KNOBBED = {"chained": ("one_call", {"edgecc_x86_int8_block_band": 0})}


def percentiles(values: list[float]) -> list[float]:
    """[10th, 90th] percentile of ``values``."""
    if len(values) < 2:
        return [values[0], values[0]] if values else []
    q = statistics.quantiles(values, n=10)
    return [q[0], q[-1]]


def measure(name: str, repeats: int) -> dict:
    import numpy as np
    import torch

    import edgecc
    from edgecc.targets.tvm import x86_int8_block

    make, inputs, shape = models()[name]
    module = make().eval()
    defaults = {k: getattr(x86_int8_block, k) for k in ("FUSE_BLOCK", "SPLIT", "SPLIT_MAX_PIXELS")}
    builds, outs, blocks, d = {}, {}, {}, tempfile.mkdtemp()
    try:
        for key, setting in VARIANTS.items():
            for k, v in {**defaults, **setting}.items():
                setattr(x86_int8_block, k, v)
            with torch.no_grad():
                res = edgecc.compile(module, "host", example_inputs=inputs, pipeline=PIPELINE,
                                     calibration=calibration(inputs),
                                     output_dir=os.path.join(d, key), progress=False,
                                     target_options={"num_threads": THREADS,
                                                     "integer_kernels": True})
                out = res.run(*inputs)
            outs[key] = np.asarray(out[0] if isinstance(out, (list, tuple)) else out)
            blocks[key] = res.report["lowering"].get("integer_kernels", {}).get("x86_blocks", 0)
            builds[key] = res
    finally:
        for k, v in defaults.items():
            setattr(x86_int8_block, k, v)
    fns = {k: (lambda r=r: r.run(*inputs)) for k, r in builds.items()}
    for key, (base, knobs) in KNOBBED.items():
        lib = ctypes.CDLL(builds[base]._runner.library)
        globs = {k: ctypes.c_int64.in_dll(lib, k) for k in knobs}

        def run(r=builds[base], globs=globs, knobs=knobs):
            saved = {k: g.value for k, g in globs.items()}
            for k, g in globs.items():
                g.value = knobs[k]
            try:
                return r.run(*inputs)
            finally:
                for k, g in globs.items():
                    g.value = saved[k]
        out = run()
        outs[key] = np.asarray(out[0] if isinstance(out, (list, tuple)) else out)
        fns[key] = run
    with torch.no_grad():
        times = interleaved_times(fns, repeats, clock="cpu" if THREADS == 1 else "wall")
    row = {"model": name, "input": shape, "threads": THREADS,
           "load_average": os.getloadavg()[0],
           "bit_identical": all(bool(np.array_equal(outs["off"], o)) for o in outs.values()),
           "fused_blocks": blocks,
           "median_ms": {k: statistics.median(v) for k, v in times.items()}, "paired": {}}
    for k in [*VARIANTS, *KNOBBED]:
        if k != "off":
            pr = paired_ratios(times, k, "off", repeats)
            row["paired"][k] = {"median": statistics.median(pr), "p10_p90": percentiles(pr),
                                "rounds": len(pr)}
    row["paired_vs_default"] = {}
    for k in ("split", "split4x4", "split32x32"):  # the split forms against one_call
        pr = paired_ratios(times, k, "one_call", repeats)
        row["paired_vs_default"][k] = {"median": statistics.median(pr),
                                       "p10_p90": percentiles(pr), "rounds": len(pr)}
    pr = paired_ratios(times, "one_call", "chained", repeats)  # the band form's own effect
    row["one_call_vs_chained"] = {"median": statistics.median(pr), "p10_p90": percentiles(pr),
                                  "rounds": len(pr)}
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenet_v2")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "x86_int8_block.json"))
    args = parser.parse_args()
    rows = [measure(m, args.repeats) for m in args.models.split(",")]
    for r in rows:
        print(f"{r['model']} {r['input']} {THREADS} thread(s), load {r['load_average']:.1f}, "
              f"bit-identical {r['bit_identical']}, fused blocks {r['fused_blocks']}")
        print("  " + "  ".join(f"{k} {v:.3f} ms" for k, v in r["median_ms"].items()))
        pairs = [(f"{k} / off", p) for k, p in r["paired"].items()]
        pairs += [(f"{k} / one_call", p) for k, p in r["paired_vs_default"].items()]
        pairs.append(("one_call / chained", r["one_call_vs_chained"]))
        for label, p in pairs:
            print(f"  {label} paired median {p['median']:.3f}x  p10-p90 "
                  f"[{p['p10_p90'][0]:.3f}, {p['p10_p90'][1]:.3f}]  ({p['rounds']} rounds)")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"benchmark": "int8 inverted residual blocks in one call vs three calls",
                   "threads": THREADS, "repeats": args.repeats, "rows": rows}, f, indent=2)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
