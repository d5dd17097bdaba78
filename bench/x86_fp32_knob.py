"""One fp32 kernel knob (a global of the fp32 kernel library: ``int64_t`` such as
``edgecc_x86_fp32_s2_phases``, or ``int32_t`` such as ``edgecc_x86_fp32_dw_rows`` and the
knobs ``end_to_end.KNOBS`` declares int32) A/B'd end to end: each CNN built once (fp32), then
run with the knob set to each value in turn, interleaved in one process
(``bench.tvm_cpu.interleaved_times``: every value sees the same spells of a shared machine).
Same library, same process, only the knob moves: an A/B of one kernel path without two
builds' layout and cache differences (``bench/x86_fp32.py --against`` compares two builds).
The knobs' paths give the same sums (Winograd within 1e-5), so the outputs do not change.

``--threads 2`` (the default): wall clock, TVM's and edgecc's pools at 2 threads; ``--threads
1``: the calling thread's CPU time at 1 thread (kernel work on a loaded machine). The knob's C
type comes from ``end_to_end.KNOBS`` when listed there, else ``--ctype`` (writing an int32
knob as int64 would overwrite its neighbour). Prints medians and 10th percentiles, writes
``bench/results/x86_fp32_knob.json``.

    python bench/x86_fp32_knob.py --knob edgecc_x86_fp32_dw_rows --ctype int32 [--values 1,0]
                                  [--models resnet20,mobilenet_v2] [--repeats 60] [--threads 2]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import tempfile
import warnings


ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
from bench.threads_arg import threads_before_tvm  # noqa: E402

THREADS = threads_before_tvm()
warnings.filterwarnings("ignore")

from bench.tvm_cpu import interleaved_times, median_p10, models, paired_ratio  # noqa: E402


def knob_ctype(symbol: str, ctype: str):
    """ctypes type of ``symbol``: end_to_end.KNOBS' declaration, else ``ctype``."""
    from edgecc.targets.tvm.end_to_end import KNOBS

    declared = {k.symbol: k.ctype for k in KNOBS}.get(symbol)
    name = {"int32_t": "int32", "int64_t": "int64"}.get(declared, ctype)
    return ctypes.c_int32 if name == "int32" else ctypes.c_int64


def measure(name: str, values: list[int], repeats: int, symbols: list[str], ctypes_: list) -> dict:
    """Medians / 10th percentiles (ms) of one model's fp32 build per knob value (every knob of
    ``symbols`` set to it)."""
    import torch

    import edgecc

    make, inputs, shape = models()[name]
    module = make().eval()
    with tempfile.TemporaryDirectory() as d, torch.no_grad():
        res = edgecc.compile(module, "host", example_inputs=inputs,
                             output_dir=os.path.join(d, "o"), progress=False,
                             target_options={"num_threads": THREADS})
        res.run(*inputs)
    library = ctypes.CDLL(res._runner.library)  # the runner's copy
    knobs = [t.in_dll(library, s) for s, t in zip(symbols, ctypes_)]
    defaults = [k.value for k in knobs]

    def at(value):
        def run():
            for k in knobs:
                k.value = value
            res.run(*inputs)
        return run

    try:
        with torch.no_grad():
            times = interleaved_times({v: at(v) for v in values}, repeats,
                                      clock="cpu" if THREADS == 1 else "wall")
    finally:
        for k, v in zip(knobs, defaults):
            k.value = v
    stats = median_p10(times)
    for v in values:  # the rounds paired: the median of (v's round mean / the first value's)
        stats[v]["paired_vs_first"] = paired_ratio(times, v, values[0], repeats)
    return {"model": name, "input": shape, "load_average": os.getloadavg()[0],
            "shifts": {str(v): stats[v] for v in values}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--knob", required=True,
                        help="the library global to move (a,b: several, set alike)")
    parser.add_argument("--values", default="1,0", help="its values; the first is restored")
    parser.add_argument("--models", default="resnet20,mobilenet_v2")
    parser.add_argument("--repeats", type=int, default=60)
    parser.add_argument("--threads", type=int, default=2,
                        help="2: wall clock; 1: the calling thread's CPU time")
    parser.add_argument("--ctype", choices=("int32", "int64"), default="int64",
                        help="the knob's C type when end_to_end.KNOBS does not list it")
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "x86_fp32_knob.json"))
    args = parser.parse_args()
    values = [int(v) for v in args.values.split(",")]
    symbols = args.knob.split(",")
    types = [knob_ctype(s, args.ctype) for s in symbols]
    rows = [measure(m, values, args.repeats, symbols, types) for m in args.models.split(",")]
    print(f"{'model':<18}" + "".join(f"{args.knob[-12:] + '=' + str(v):>22}" for v in values))
    for r in rows:
        base = r["shifts"][str(values[0])]["median_ms"]
        print(f"{r['model']:<18}" + "".join(
            f"{r['shifts'][str(v)]['median_ms']:14.3f} {r['shifts'][str(v)]['median_ms'] / base:5.2f}x"
            for v in values) + f"   (load {r['load_average']:.1f})")
        print(f"{'  p10':<18}" + "".join(f"{r['shifts'][str(v)]['p10_ms']:22.3f}" for v in values))
        print(f"{'  paired':<18}" + "".join(
            f"{r['shifts'][str(v)]['paired_vs_first']:21.3f}x" for v in values))
    clock = "wall clock" if THREADS > 1 else "thread CPU time"
    print(f"\nms end to end ({THREADS} thread(s), {clock}), medians / 10th percentiles of "
          "interleaved rounds; x = vs the first value (paired: median of per-round ratios)")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"benchmark": f"fp32 knob {args.knob}, end to end", "knob": args.knob,
                   "repeats": args.repeats, "threads": THREADS, "clock": clock,
                   "rows": [{**r, "values": r.pop("shifts")} for r in rows]}, f, indent=2)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
