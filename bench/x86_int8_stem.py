"""The 3-channel stem's int8 convolution with its VNNI rows padded to 4 channels
(``x86_int8.PAD_STEM``: conv_direct4 on a channel-quad copy) vs the (c, ky, kx) rows and the
im2col before: a CNN's w8a8 build compiled both ways in one process, the whole model's
outputs checked equal, then the stem call (the VM's own arguments) re-run alone, alternating
in rounds, by the calling thread's CPU time at 1 thread. Prints the medians and the median
paired ratio; writes ``bench/results/x86_int8_stem.json``.

    python bench/x86_int8_stem.py [--models resnet20] [--rounds 40] [--reps 20]

``--pool``: the stem serial (``edgecc_x86_int8_stem_serial`` 2^62, x86_int8_stem_source) vs
pooled (0) vs the library's default threshold vs the whole pool at one thread, at ``THREADS`` threads in place: the model's calls up to
the first convolution after the stem replayed in the VM's order, each stem call timed alone by
the wall clock; the settings alternate per round. Prints each setting's 10th / 50th / 90th
percentile of single-call times (the 10th: the calls the machine's other load did not
interrupt) and the median paired ratio per round; writes ``bench/results/x86_int8_stem_pool.json``.

Not a goal measurement (bench/tvm_cpu.py is).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import sys
import tempfile
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.host import THREADS  # noqa: E402  (sets TVM_NUM_THREADS before TVM starts)
from bench.tvm_cpu import calibration, models  # noqa: E402
from bench.tvm_runtime import kind  # noqa: E402
from bench.vm_calls import kernel_calls  # noqa: E402
from bench.x86_int8_common import same_outputs, write_result  # noqa: E402

warnings.filterwarnings("ignore")
PIPELINE = "fold-batchnorm,quantize{scheme=w8a8},fuse,dce"


def measure(name: str, rounds: int, reps: int) -> dict:
    import torch

    import edgecc
    from edgecc.targets.tvm import x86_int8

    make, inputs, shape = models()[name]
    module = make().eval()
    built, keep = {}, []
    try:
        for label, pad in (("padded", True), ("im2col", False)):
            x86_int8.PAD_STEM = pad
            d = tempfile.TemporaryDirectory()
            keep.append(d)
            with torch.no_grad():
                res = edgecc.compile(module, "host", example_inputs=inputs, pipeline=PIPELINE,
                                     calibration=calibration(inputs),
                                     output_dir=os.path.join(d.name, "o"), progress=False,
                                     target_options={"num_threads": THREADS,
                                                     "integer_kernels": True})
                out = res.run(*inputs)
            ctypes.c_int32.in_dll(ctypes.CDLL(res._runner.library),
                                  "edgecc_pool_threads").value = 1
            calls = [c for c in kernel_calls(res._runner, inputs) if kind(c[1]) != "builtin"]
            stem = next(c for c in calls if "qconv" in c[1])
            built[label] = (stem, out)
        x86_int8.PAD_STEM = True
        assert same_outputs(built["padded"][1], built["im2col"][1])
        times = {k: [] for k in built}
        for r in range(rounds):
            for k in (list(built) if r % 2 == 0 else list(built)[::-1]):
                fn, _, args = built[k][0]
                fn(*args)
                start = time.thread_time()
                for _ in range(reps):
                    fn(*args)
                times[k].append((time.thread_time() - start) / reps * 1e6)
    finally:
        x86_int8.PAD_STEM = True
        for d in keep:
            d.cleanup()
    return {"model": name, "input": shape, "load_average": os.getloadavg()[0],
            "stem": str(tuple(built["padded"][0][2][0].shape)),
            "us": {k: statistics.median(v) for k, v in times.items()},
            "padded_vs_im2col": statistics.median(
                a / b for a, b in zip(times["padded"], times["im2col"]))}


STEM_COLUMNS = {"serial": {"edgecc_x86_int8_stem_serial": 1 << 62},  # every stem
                "pooled": {"edgecc_x86_int8_stem_serial": 0},
                "default": {},  # the library's threshold (x86_int8_stem_source)
                "one_thread": {"edgecc_pool_threads": 1}}


def measure_pool(name: str, rounds: int, reps: int) -> dict:
    """The stem's wall time in place under each of STEM_COLUMNS (see ``--pool``)."""
    from bench.x86_int8_common import build_int8, percentile

    with tempfile.TemporaryDirectory() as d:
        inputs, shape, res, reference = build_int8(name, d)
        lib = ctypes.CDLL(res._runner.library)
        knobs = {"edgecc_x86_int8_stem_serial": ctypes.c_int64.in_dll(
                     lib, "edgecc_x86_int8_stem_serial"),
                 "edgecc_pool_threads": ctypes.c_int32.in_dll(lib, "edgecc_pool_threads")}
        defaults = {k: v.value for k, v in knobs.items()}

        def setting(col):
            for k, v in knobs.items():
                v.value = STEM_COLUMNS[col].get(k, defaults[k])

        for col in STEM_COLUMNS:
            setting(col)
            assert same_outputs(res.run(*inputs), reference), col
        calls = [c for c in kernel_calls(res._runner, inputs) if kind(c[1]) != "builtin"]
        first = next(i for i, c in enumerate(calls) if "qconv" in c[1])
        calls = calls[:first + 2]  # the quantize, the stem, the convolution after it
        times = {col: [] for col in STEM_COLUMNS}
        rounds_med = {col: [] for col in STEM_COLUMNS}
        names = list(STEM_COLUMNS)
        try:
            for r in range(rounds):
                for col in names[r % len(names):] + names[:r % len(names)]:
                    setting(col)
                    got = []
                    for rep in range(reps + 1):
                        for i, (fn, _, args) in enumerate(calls):
                            start = time.perf_counter()
                            fn(*args)
                            if i == first and rep:
                                got.append((time.perf_counter() - start) * 1e6)
                    times[col] += got
                    rounds_med[col].append(statistics.median(got))
        finally:
            setting("serial")
            for k, v in knobs.items():
                v.value = defaults[k]
    return {"model": name, "input": shape, "threads": THREADS,
            "load_average": os.getloadavg()[0],
            "us_p10_p50_p90": {c: [percentile(t, q) for q in (0.1, 0.5, 0.9)]
                               for c, t in times.items()},
            "vs_serial": {c: statistics.median(a / b for a, b in zip(rounds_med[c],
                                                                     rounds_med["serial"]))
                          for c in names}}


def main_pool(args) -> int:
    rows = [measure_pool(m, args.rounds, args.reps) for m in args.models.split(",")]
    for r in rows:
        for c, (p10, p50, p90) in r["us_p10_p50_p90"].items():
            print(f"{r['model']:<10} stem {c:<10} p10 {p10:6.2f}  p50 {p50:6.2f}  p90 {p90:6.2f} us"
                  f"  paired vs serial {r['vs_serial'][c]:.3f}")
        print(f"  ({r['threads']} threads, wall clock in place; load {r['load_average']:.1f})")
    write_result(args.output.replace("x86_int8_stem.json", "x86_int8_stem_pool.json"),
                 {"benchmark": "int8 stem serial vs pooled, in place", "rounds": args.rounds,
                  "reps": args.reps, "columns": STEM_COLUMNS, "rows": rows})
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "x86_int8_stem.json"))
    parser.add_argument("--pool", action="store_true",
                        help="the stem serial vs pooled at THREADS threads, in place")
    args = parser.parse_args()
    if args.pool:
        return main_pool(args)
    rows = [measure(m, args.rounds, args.reps) for m in args.models.split(",")]
    for r in rows:
        print(f"{r['model']:<14} stem {r['stem']}: padded {r['us']['padded']:.2f} us, "
              f"im2col {r['us']['im2col']:.2f} us, paired {r['padded_vs_im2col']:.3f}  "
              f"(load {r['load_average']:.1f})")
    print("1 thread, thread CPU time; the stem call re-run alone, builds alternating per round")
    write_result(args.output, {"benchmark": "int8 stem, channels padded to 4 vs im2col",
                               "rounds": args.rounds, "reps": args.reps, "rows": rows})
    return 0


if __name__ == "__main__":
    sys.exit(main())
