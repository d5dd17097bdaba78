"""MobileNetV2-32 w8a8 at 2 threads: where the second thread gains or loses, per pool job in
the model's own run, and the whole model under library knob settings.

``--mode calls``: the int8 build runs whole, alternating 1 and 2 pool threads
(``edgecc_pool_threads``) every run; with ``edgecc_pool_timing`` 2 every ``parallel_for`` of
the run is logged (items, wall ns, pooled, the caller's items, the worker's ns). Per job (one a
kernel call, in call order) the median wall time at 1 and 2 threads, its ratio, how often it
went to the pool and the worker's share: the calls' cost in place (the next call's reads of
what the other core wrote land in that call). The clock reads cost ~0.1 us a job.

``--mode model``: the fp32 and int8 builds, each under every column's knobs (set in both
libraries where the symbol exists: pool knobs are per library), interleaved in one process;
paired ratios (10th / 50th / 90th percentile over rounds) of each column to the default, for
int8 and fp32, and int8 / fp32 per column.

    python bench/x86_int8_dw_threads.py --mode calls [--model mobilenet_v2] [--rounds 200]
        [--compare edgecc_x86_int8_dw_serial_outputs:0]   (a knob vs as built, both 2t)
    python bench/x86_int8_dw_threads.py --mode model [--repeats 400]
        [--columns "dw16=edgecc_x86_int8_dw_output_work:16;parts1=edgecc_pool_chunk_parts:1"]

A column is ``name=symbol:value[,symbol:value]`` (full symbol names; ``int32_t`` for the
knobs ``end_to_end.KNOBS`` or the pool declare so, else ``int64_t``; ``int8.symbol`` /
``fp32.symbol``: that build's library only). Writes
``bench/results/x86_int8_dw_threads_<mode>.json``. Not a goal measurement (bench/tvm_cpu.py is).
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
from bench.tvm_cpu import interleaved_times, median_p10  # noqa: E402
from bench.x86_int8_common import build_pair, paired_spread, write_result  # noqa: E402

warnings.filterwarnings("ignore")
INT32 = {"edgecc_pool_threads", "edgecc_pool_timing", "edgecc_pool_two_ended",
         "edgecc_pool_chunk_parts", "edgecc_pool_done_once", "edgecc_pool_adaptive",
         "edgecc_x86_num_tasks"}


def _ctype(symbol: str):
    from edgecc.targets.tvm.end_to_end import KNOBS

    wide = {k.symbol: k.ctypes_type for k in KNOBS}
    return ctypes.c_int32 if symbol in INT32 else wide.get(symbol, ctypes.c_int64)


def parse_columns(text: str) -> dict:
    """``"a=sym:v,sym:v;b=sym:v"`` -> ``{"default": {}, "a": {sym: v, ...}, ...}``."""
    cols = {"default": {}}
    for part in filter(None, text.split(";")):
        name, spec = part.split("=", 1)
        cols[name] = {k: int(v) for k, v in (kv.rsplit(":", 1) for kv in spec.split(","))}
    return cols


def _library(res):
    return ctypes.CDLL(res._runner.library, mode=os.RTLD_NOLOAD | os.RTLD_LOCAL)


def calls_table(model: str, rounds: int, compare: dict | None = None) -> dict:
    """Per pool job of one int8 run: median wall at 1 and 2 threads (alternating runs); with
    ``compare`` ({symbol: value} of the int8 library), at 2 threads as built ("1t" columns)
    and under ``compare`` ("2t" columns) instead."""
    from bench.tvm_runtime import kind
    from bench.vm_calls import kernel_calls

    with tempfile.TemporaryDirectory() as d:
        inputs, shape, built = build_pair(model, d)
        res = built["int8"]
        lib = _library(res)
        threads = ctypes.c_int32.in_dll(lib, "edgecc_pool_threads")
        full = threads.value or THREADS
        timing = ctypes.c_int32.in_dll(lib, "edgecc_pool_timing")
        log = (ctypes.c_int64 * (512 * 6)).in_dll(lib, "edgecc_pool_log")
        nxt = ctypes.c_int64.in_dll(lib, "edgecc_pool_log_next")
        labels = [s.replace("edgecc_x86_", "") + str(tuple(getattr(a[0], "shape", ())))
                  for _, s, a in kernel_calls(res._runner, inputs) if kind(s) != "builtin"]
        knobs = {sym: (_ctype(sym).in_dll(lib, sym), v) for sym, v in (compare or {}).items()}
        defaults = {sym: k.value for sym, (k, _) in knobs.items()}
        jobs = {1: [], 2: []}
        whole = {1: [], 2: []}
        for r in range(rounds):
            for t in ((1, 2) if r % 2 else (2, 1)):
                if compare:  # column 1: as built, 2: the compared setting, both 2 threads
                    for sym, (k, v) in knobs.items():
                        k.value = v if t == 2 else defaults[sym]
                else:
                    threads.value = 1 if t == 1 else full
                res.run(*inputs)  # the pool awake (or asleep) as in a stream of runs
                timing.value = 2
                n0 = nxt.value
                start = time.perf_counter()
                res.run(*inputs)
                whole[t].append((time.perf_counter() - start) * 1e6)
                n1 = nxt.value
                timing.value = 0
                jobs[t].append([[log[6 * (i % 512) + k] for k in range(6)]
                                for i in range(n0, n1)])
        threads.value = full
        for sym, (k, _) in knobs.items():
            k.value = defaults[sym]
    n = min(len(j) for t in jobs for j in jobs[t])
    rows = []
    for i in range(n):
        one = statistics.median(j[i][1] for j in jobs[1]) / 1e3
        two = statistics.median(j[i][1] for j in jobs[2]) / 1e3
        rows.append({"call": labels[i] if len(labels) == n else f"job {i}",
                     "items": jobs[2][0][i][0], "us_1t": one, "us_2t": two,
                     "pooled": sum(j[i][2] for j in jobs[2]) / len(jobs[2]),
                     "caller_share": statistics.median(j[i][3] / max(1, j[i][0])
                                                       for j in jobs[2]),
                     "worker_us": statistics.median(j[i][5] for j in jobs[2]) / 1e3})
    return {"model": model, "input": shape, "load_average": os.getloadavg()[0],
            "rounds": rounds, "compare": compare or {}, "whole_us_1t": statistics.median(whole[1]),
            "whole_us_2t": statistics.median(whole[2]), "jobs": rows}


def print_calls(r: dict) -> None:
    print(f"\n{r['model']} {r['input']} int8, per pool job in place (load {r['load_average']:.1f})")
    if r["compare"]:
        print(f"  (compare mode: '1t' = 2 threads as built, '2t' = 2 threads with {r['compare']})")
    print(f"  {'call':<26} {'items':>5} {'1t us':>7} {'2t us':>7} {'2t/1t':>6} {'pooled':>6} "
          f"{'caller':>6} {'wk us':>6}")
    for c in r["jobs"]:
        print(f"  {c['call'][:26]:<26} {c['items']:5d} {c['us_1t']:7.2f} {c['us_2t']:7.2f} "
              f"{c['us_2t'] / c['us_1t']:6.2f} {c['pooled']:6.2f} {c['caller_share']:6.2f} "
              f"{c['worker_us']:6.2f}")
    s1, s2 = sum(c["us_1t"] for c in r["jobs"]), sum(c["us_2t"] for c in r["jobs"])
    print(f"  {'sum of jobs':<26} {'':5} {s1:7.1f} {s2:7.1f} {s2 / s1:6.3f}")
    print(f"  whole run (timed, logging on): 1t {r['whole_us_1t']:.1f} us, "
          f"2t {r['whole_us_2t']:.1f} us")


def model_ab(model: str, columns: dict, repeats: int) -> dict:
    """fp32 and int8 under each column's knobs, interleaved; paired ratios."""
    with tempfile.TemporaryDirectory() as d:
        inputs, shape, built = build_pair(model, d)
        knobs = {}  # (precision, symbol) -> (ctypes value, default)
        for prec, res in built.items():
            lib = _library(res)
            for col in columns.values():
                for key in col:
                    only, _, sym = key.rpartition(".")
                    if only and only != prec:
                        continue
                    try:
                        v = _ctype(sym).in_dll(lib, sym)
                    except ValueError:
                        continue
                    knobs.setdefault((prec, key), (v, v.value))

        def setting(col):
            for (_, key), (v, default) in knobs.items():
                v.value = columns[col].get(key, default)

        reference = {p: built[p].run(*inputs) for p in built}
        for col in columns:  # bit-identical across the settings (int8), same fp32 outputs
            setting(col)
            for p in built:
                out, ref = built[p].run(*inputs), reference[p]
                outs = out if isinstance(out, (list, tuple)) else [out]
                refs = ref if isinstance(ref, (list, tuple)) else [ref]
                assert all((a == b).all() for a, b in zip(outs, refs)), (col, p)

        def run(col, p):
            def go():
                setting(col)
                built[p].run(*inputs)
            return go

        fns = {f"{p}:{c}": run(c, p) for c in columns for p in built}
        times = interleaved_times(fns, repeats)
        setting("default")
    stats = median_p10(times)
    return {"model": model, "input": shape, "load_average": os.getloadavg()[0],
            "median_ms": {k: v["median_ms"] for k, v in stats.items()},
            "int8_vs_default": {c: paired_spread(times, f"int8:{c}", "int8:default", repeats)
                                for c in columns},
            "fp32_vs_default": {c: paired_spread(times, f"fp32:{c}", "fp32:default", repeats)
                                for c in columns},
            "int8_vs_fp32": {c: paired_spread(times, f"int8:{c}", f"fp32:{c}", repeats)
                             for c in columns},
            "int8_vs_fp32_default": {c: paired_spread(times, f"int8:{c}", "fp32:default",
                                                      repeats) for c in columns}}


def print_model(r: dict, columns: dict) -> None:
    print(f"\n{r['model']} {r['input']} whole model at {THREADS} threads "
          f"(load {r['load_average']:.1f}); paired p10 / p50 / p90")
    print(f"  {'column':<12} {'int8 ms':>7} {'int8/default':>20} {'fp32/default':>20} "
          f"{'int8/fp32':>20} {'int8/fp32 def':>20}")
    fmt = "{:6.3f} {:6.3f} {:6.3f}".format
    for c in columns:
        print(f"  {c:<12} {r['median_ms'][f'int8:{c}']:7.3f} {fmt(*r['int8_vs_default'][c])} "
              f"{fmt(*r['fp32_vs_default'][c])} {fmt(*r['int8_vs_fp32'][c])} "
              f"{fmt(*r['int8_vs_fp32_default'][c])}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mode", choices=("calls", "model"), default="calls")
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=400)
    parser.add_argument("--columns", default="dw16=edgecc_x86_int8_dw_output_work:16")
    parser.add_argument("--compare", default="",
                        help="calls mode: symbol:value[,symbol:value] against the build as is "
                             "(both at 2 threads) instead of 1 vs 2 threads")
    parser.add_argument("--output", default=None)
    args = parser.parse_args()
    output = args.output or os.path.join(ROOT, "bench", "results",
                                         f"x86_int8_dw_threads_{args.mode}.json")
    if args.mode == "calls":
        compare = {k: int(v) for k, v in (kv.rsplit(":", 1)
                                          for kv in filter(None, args.compare.split(",")))}
        result = calls_table(args.model, args.rounds, compare)
        print_calls(result)
    else:
        columns = parse_columns(args.columns)
        result = model_ab(args.model, columns, args.repeats)
        result["columns"] = columns
        print_model(result, columns)
    print(f"\n{THREADS} threads, wall clock, one process")
    write_result(output, {"benchmark": f"int8 2-thread scaling ({args.mode})", "threads": THREADS,
                          "result": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
