"""A stride-2 block's conv1 + 1x1 shortcut as one pooled call (``x86_int8_pair``) A/B'd end to
end: a w8a8 model built in the old lowering order (the shortcut after conv2, carrying the
residual add: ``REORDER`` off), with the shortcut lowered after conv1 (conv2 carrying the add)
as two calls, and paired (the default), plus the paired build with its library knob
``edgecc_x86_int8_pair`` 0 (the two calls in turn inside the pair entry). Outputs are compared
bit for bit first; then all four run interleaved in one process (``bench.tvm_cpu``'s rounds),
at 1 thread (the calling thread's CPU time: every library's pool set to 1 thread) and, with
``--wall``, at 2 threads (wall clock: meaningful only when the other vCPU is idle). Prints
paired ratios per round vs the old order (median, p10 / p90) and writes
``bench/results/x86_int8_pair.json``.

    python bench/x86_int8_pair.py [--models resnet20] [--repeats 200] [--wall]
"""

from __future__ import annotations

import argparse
import ctypes
import os
import sys
import tempfile
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.host import THREADS  # noqa: E402  (sets TVM_NUM_THREADS before TVM starts)
from bench.tvm_cpu import calibration, models, paired_ratios  # noqa: E402
from bench.x86_int8_common import (compile_run, knob_runs, same_outputs,  # noqa: E402
                                   spread, time_builds, write_result)

warnings.filterwarnings("ignore")

# build-time settings of x86_int8_pair per build
BUILDS = {"old": {"REORDER": False, "FUSE_PAIR": False},
          "reorder": {"REORDER": True, "FUSE_PAIR": False},
          "pair": {"REORDER": True, "FUSE_PAIR": True}}


def measure(name: str, repeats: int, wall: bool) -> dict:
    import torch

    from edgecc.targets.tvm import x86_int8_pair

    make, inputs, shape = models()[name]
    module = make().eval()
    defaults = {k: getattr(x86_int8_pair, k) for k in ("REORDER", "FUSE_PAIR")}
    builds, outs, report, d = {}, {}, {}, tempfile.mkdtemp()
    try:
        for key, setting in BUILDS.items():
            for k, v in setting.items():
                setattr(x86_int8_pair, k, v)
            os.makedirs(os.path.join(d, key))
            res, outs[key] = compile_run(module, inputs, calibration(inputs), "int8",
                                         os.path.join(d, key))
            ik = res.report["lowering"].get("integer_kernels", {})
            report[key] = {k: ik.get(k, 0) for k in ("x86_early", "x86_pairs", "fused_residual")}
            builds[key] = res
    finally:
        for k, v in defaults.items():
            setattr(x86_int8_pair, k, v)
    libs = {k: ctypes.CDLL(r._runner.library) for k, r in builds.items()}
    knob = ctypes.c_int64.in_dll(libs["pair"], x86_int8_pair.KNOB)
    pools = [ctypes.c_int32.in_dll(lib, "edgecc_pool_threads") for lib in libs.values()]

    run = knob_runs(builds, inputs, knob)
    fns = {k: run(k) for k in builds}
    fns["pair_knob0"] = run("pair", 0)
    with torch.no_grad():
        knob.value = 0
        same = {k: same_outputs(outs[k], outs["old"]) for k in builds}
        same["pair_knob0"] = same_outputs(builds["pair"].run(*inputs), outs["old"])
        knob.value = 1
    row = {"model": name, "input": shape, "bit_identical": same, "report": report}
    assert all(same.values()), same
    time_builds(row, fns, pools, repeats, wall, "old", lambda times: {
        "pair_vs_reorder": spread(paired_ratios(times, "pair", "reorder", repeats)),
        "pair_vs_knob0": spread(paired_ratios(times, "pair", "pair_knob0", repeats))})
    knob.value = 1
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--wall", action="store_true", help="also 2 threads, wall clock")
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "x86_int8_pair.json"))
    args = parser.parse_args()
    rows = [measure(m, args.repeats, args.wall) for m in args.models.split(",")]
    for r in rows:
        print(f"{r['model']} {r['input']}: bit-identical {r['bit_identical']}")
        print(f"  report {r['report']}")
        for key in ("1t", f"{THREADS}t"):
            if key not in r:
                continue
            m = r[key]
            print(f"  {key} ({m['clock']}, load {r['load_average_' + key]:.1f}): " + "  ".join(
                f"{k} {v * 1000:.1f} us" for k, v in m["median_ms"].items()))
            for label, s in [*m["vs_old"].items(), ("pair/reorder", m["pair_vs_reorder"]),
                             ("pair/knob0", m["pair_vs_knob0"])]:
                print(f"    {label:<14} paired median {s['median']:.3f}x  p10-p90 "
                      f"[{s['p10']:.3f}, {s['p90']:.3f}]  ({s['rounds']} rounds)")
    write_result(args.output, {"benchmark": "int8 conv1 + stride-2 shortcut as one call",
                               "threads": THREADS, "repeats": args.repeats, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
