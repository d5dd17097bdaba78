"""Does a w8a8 CNN's kernel call gain from the second thread? Each x86 kernel call of the
int8 library re-run alone with the VM's arguments, wall clock, back to back (the pool's
worker stays awake), with every job serial (``edgecc_x86_serial_work_log2`` = 63) and with
the default threshold (0), and pooled per panel (``EDGECC_X86_CONV_BANDS=0``), interleaved in
blocks in one process. Prints per call: 1-thread us, per-panel and as-built 2-thread us,
speedup; writes ``bench/results/x86_int8_split.json``.

    python bench/x86_int8_split.py [--models resnet20,mobilenet_v2] [--reps 200] [--rounds 7]

Not a goal measurement (bench/tvm_cpu.py is): kernels alone, no VM around them.
"""

from __future__ import annotations

import argparse
import ctypes
import json
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
from bench.tvm_runtime import kernel_calls, kind  # noqa: E402

import torch  # noqa: E402

import edgecc  # noqa: E402

warnings.filterwarnings("ignore")
PIPELINE = "fold-batchnorm,quantize{scheme=w8a8},fuse,dce"


def _wall_us(fn, args, reps):
    """Wall clock of one block of back-to-back calls (us a call)."""
    t = time.perf_counter()
    for _ in range(reps):
        fn(*args)
    return (time.perf_counter() - t) / reps * 1e6


def measure(name: str, reps: int, rounds: int) -> dict:
    from edgecc.targets.tvm.runner import _private_copy

    make, inputs, shape = models()[name]
    module = make().eval()
    with tempfile.TemporaryDirectory() as d, torch.no_grad():
        res = edgecc.compile(module, "host", example_inputs=inputs, pipeline=PIPELINE,
                             calibration=calibration(inputs), output_dir=d, progress=False,
                             target_options={"num_threads": THREADS, "integer_kernels": True})
        res.run(*inputs)
        library = ctypes.CDLL(_private_copy(os.path.join(d, "model.so")))
        shift = ctypes.c_int64.in_dll(library, "edgecc_x86_serial_work_log2")
        calls = [c for c in kernel_calls(res._runner, inputs) if kind(c[1]) == "x86"]
        pool = ctypes.c_int32.in_dll(library, "edgecc_pool_threads").value
        rows = []
        # serial, pooled per panel (EDGECC_X86_CONV_BANDS=0: the split before the bands),
        # pooled as built
        variants = (("serial", 63, "1"), ("panels", 0, "0"), ("pooled", 0, "1"))
        for fn, symbol, args in calls:
            t = {key: [] for key, _, _ in variants}
            for n in range(rounds):  # every other round reversed
                for key, s, bands in (variants if n % 2 else variants[::-1]):
                    shift.value = s
                    os.environ["EDGECC_X86_CONV_BANDS"] = bands
                    _wall_us(fn, args, max(reps // 10, 3))  # warm (and the worker awake)
                    t[key].append(_wall_us(fn, args, reps))
            shift.value = 0
            os.environ.pop("EDGECC_X86_CONV_BANDS", None)
            m = {key: statistics.median(v) for key, v in t.items()}
            rows.append({"call": symbol.replace("edgecc_x86_", ""),
                         "input": list(getattr(args[0], "shape", ())),
                         "serial_us": m["serial"], "panels_us": m["panels"],
                         "pooled_us": m["pooled"], "speedup": m["serial"] / m["pooled"]})
    return {"model": name, "input": shape, "load_average": os.getloadavg()[0],
            "threads": THREADS, "pool_threads": pool, "calls": rows,
            "serial_us": sum(r["serial_us"] for r in rows),
            "panels_us": sum(r["panels_us"] for r in rows),
            "pooled_us": sum(r["pooled_us"] for r in rows)}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20,mobilenet_v2")
    parser.add_argument("--reps", type=int, default=200)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "x86_int8_split.json"))
    args = parser.parse_args()
    rows = [measure(m, args.reps, args.rounds) for m in args.models.split(",")]
    for r in rows:
        print(f"\n{r['model']} {r['input']}  threads {r['threads']} (pool {r['pool_threads']})  "
              f"(load {r['load_average']:.1f})")
        print(f"  {'call':<28} {'input':<18} {'serial us':>9} {'panels us':>9} "
              f"{'pooled us':>9} {'x':>6}")
        for c in r["calls"]:
            print(f"  {c['call'][:28]:<28} {str(tuple(c['input'])):<18} "
                  f"{c['serial_us']:9.1f} {c['panels_us']:9.1f} {c['pooled_us']:9.1f} "
                  f"{c['speedup']:6.2f}")
        print(f"  {'sum':<47} {r['serial_us']:9.1f} {r['panels_us']:9.1f} "
              f"{r['pooled_us']:9.1f} {r['serial_us'] / r['pooled_us']:6.2f}")
    print("\nus: wall clock a call, back-to-back calls, median of interleaved blocks; serial ="
          " edgecc_x86_serial_work_log2 63, pooled = 0 (the default threshold), panels = 0 "
          "with EDGECC_X86_CONV_BANDS=0; x = serial / pooled. The first few calls measured in "
          "a process gain little (seen in both orders): read the rest")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"benchmark": "w8a8 kernel calls, serial vs pooled, wall clock",
                   "reps": args.reps, "rounds": args.rounds, "rows": rows}, f, indent=2)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
