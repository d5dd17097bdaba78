"""int8 activations handed between stride-1 convolutions in the consumer's padded
channel-quad layout (``x86_int8_c4``) A/B'd end to end: a w8a8 model built with
``x86_int8_c4.ENABLED`` off ("nchw": every conv_direct4 band copies its input rows) and on
("c4": producers store the copy's layout, consumers read it in place); the c4 build with its
library knob ``edgecc_x86_int8_c4`` 0 (every marked call on NCHW copies, slower) is checked
bit-identical and, with ``--knob0``, timed too.
Outputs are compared bit for bit first; then the builds run interleaved in one process
(``bench.tvm_cpu``'s rounds) at 1 thread (the calling thread's CPU time: every library's pool
set to 1 thread) and, with ``--wall``, at 2 threads (wall clock: meaningful only when the other
vCPU is idle — the load is printed). Prints paired ratios per round vs "nchw" (median,
p10 / p90) and writes ``bench/results/x86_int8_c4.json``.

    python bench/x86_int8_c4.py [--models resnet20,mobilenet_v2] [--repeats 200] [--wall]
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
from bench.tvm_cpu import calibration, models  # noqa: E402
from bench.x86_int8_common import (compile_run, knob_runs, same_outputs,  # noqa: E402
                                   time_builds, write_result)

warnings.filterwarnings("ignore")

BUILDS = {"nchw": False, "c4": True}  # x86_int8_c4.ENABLED per build


def measure(name: str, repeats: int, wall: bool, knob0: bool = False) -> dict:
    import torch

    from edgecc.targets.tvm import x86_int8_c4

    make, inputs, shape = models()[name]
    module = make().eval()
    default = x86_int8_c4.ENABLED
    builds, outs, report, d = {}, {}, {}, tempfile.mkdtemp()
    try:
        for key, on in BUILDS.items():
            x86_int8_c4.ENABLED = on
            os.makedirs(os.path.join(d, key))
            res, outs[key] = compile_run(module, inputs, calibration(inputs), "int8",
                                         os.path.join(d, key))
            ik = res.report["lowering"].get("integer_kernels", {})
            report[key] = {k: ik.get(k, 0) for k in ("x86_c4_out", "x86_c4_inplace")}
            builds[key] = res
    finally:
        x86_int8_c4.ENABLED = default
    libs = {k: ctypes.CDLL(r._runner.library) for k, r in builds.items()}
    knob = ctypes.c_int64.in_dll(libs["c4"], x86_int8_c4.KNOB)
    pools = [ctypes.c_int32.in_dll(lib, "edgecc_pool_threads") for lib in libs.values()]

    run = knob_runs(builds, inputs, knob)
    fns = {k: run(k) for k in builds}
    if knob0:
        fns["c4_knob0"] = run("c4", 0)
    with torch.no_grad():
        knob.value = 0
        same = {k: same_outputs(outs[k], outs["nchw"]) for k in builds}
        same["c4_knob0"] = same_outputs(builds["c4"].run(*inputs), outs["nchw"])
        knob.value = 1
    row = {"model": name, "input": shape, "bit_identical": same, "report": report}
    assert all(same.values()), same
    time_builds(row, fns, pools, repeats, wall, "nchw")
    knob.value = 1
    return row


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20")
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--wall", action="store_true", help="also 2 threads, wall clock")
    parser.add_argument("--knob0", action="store_true",
                        help="also time the c4 build with edgecc_x86_int8_c4 0 (the fallback)")
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "x86_int8_c4.json"))
    args = parser.parse_args()
    rows = [measure(m, args.repeats, args.wall, args.knob0) for m in args.models.split(",")]
    for r in rows:
        print(f"{r['model']} {r['input']}: bit-identical {r['bit_identical']}")
        print(f"  report {r['report']}")
        for key in ("1t", f"{THREADS}t"):
            if key not in r:
                continue
            m = r[key]
            print(f"  {key} ({m['clock']}, load {r['load_average_' + key]:.1f} -> "
                  f"{r['load_average_' + key + '_end']:.1f}): " + "  ".join(
                      f"{k} {v * 1000:.1f} us" for k, v in m["median_ms"].items()))
            for label, s in m["vs_nchw"].items():
                print(f"    {label + '/nchw':<14} paired median {s['median']:.3f}x  p10-p90 "
                      f"[{s['p10']:.3f}, {s['p90']:.3f}]  ({s['rounds']} rounds)")
    write_result(args.output, {"benchmark": "int8 activations in the consumer's c4 layout",
                               "threads": THREADS, "repeats": args.repeats, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
