"""Where a pooled int8 ``conv_direct4`` call's second thread loses time: each band's copy and
tiles timed (TSC) on the thread that ran it, the model run whole in place.

The int8 build of a CNN runs in turns under columns of library settings (``--columns``:
``name=symbol:value,...;name=`` — empty: as built), with ``edgecc_x86_int8_direct4_trace`` 1:
every band of every ``conv_direct4`` call logs the TSC at its start, after its copy, after its
first row of panels, at its end, and whether a pool worker ran it. Per call of the run and
band: the median copy / tiles (first row) us, split by who ran it and whether the other band
of the call ran at the same time on a worker ("c alone": the caller ran every band; "c +w":
the caller's band while a worker ran the other; "w|c": a worker's band whose band in the call
before the caller ran).

    python bench/x86_int8_thread_cost.py [--model resnet20] [--rounds 200]
        [--columns "pool=;t1=edgecc_pool_threads:1;serial=edgecc_x86_num_tasks:1"] [--records]

Found with it (s17, ResNet-20 w8a8, Zen 4 KVM 2 vCPUs under load 2-5 from other jobs, so a
worker joined 5-20% of the runs; medians of those): a 16->16@32 band of 16 rows takes 0.37 us
copy + 5.8 us tiles on the caller alone (two bands serially = one 32-row band at 1 thread:
0.7 + 11.6 us, no banding cost) but 1.5-1.8 + 7.5-7.7 us on the worker (its first row of
panels no slower than the rest: uniform, not a cold start of the code). Bisected with scratch
variants of the worker's band (the caller's band and outputs unchanged): outputs into a buffer
of the worker's own 1.2-1.4 + 7.3-7.5 (the output lines are not the cost); x and the weights
copied to its own memory before the band (the copy untimed) 0.37 + 6.1-6.6; the tables,
offsets and residual copied instead 0.9-1.2 + 6.2-6.4; everything private and reused every
call 0.35 + 5.9 — the worker computes at full speed, its loss is its band's data (the input
rows its copy reads, the weights, the per-call tables the caller writes) missing from its
caches: here the other jobs' processes share its vCPU between joins. Not frequency (a
dependent add chain on the caller runs at the same rate while the worker runs its band), not
page faults or IPIs (none per run); synthetic two-thread loops on private data (L1 to 2 MB) do
not slow each other. In some periods the caller's band was ~1.3x slower too while a worker
ran (1.03x in others). Writes ``bench/results/x86_int8_thread_cost.json``. A debug view, not a goal measurement.
"""

from __future__ import annotations

import argparse
import collections
import ctypes
import os
import statistics
import sys
import tempfile
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.host import THREADS  # noqa: E402  (sets TVM_NUM_THREADS before TVM starts)
from bench.x86_int8_common import build_pair, write_result  # noqa: E402
from bench.x86_int8_dw_threads import _ctype, _library  # noqa: E402

warnings.filterwarnings("ignore")
SLOTS = 4096


def tsc_mhz() -> float:
    """The TSC's rate (the kernel's 'cpu MHz' on this KVM guest: its TSC counts at it)."""
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1])
    return 1000.0


def parse_columns(text: str) -> dict:
    """``"a=sym:v,sym:v;b="`` -> ``{"a": {sym: v, ...}, "b": {}}`` (b: as built)."""
    cols = {}
    for part in filter(None, text.split(";")):
        name, spec = part.split("=", 1)
        cols[name] = {k: int(v) for k, v in (kv.rsplit(":", 1)
                                             for kv in filter(None, spec.split(",")))}
    return cols


def layer_name(code: int) -> str:
    return f"{code >> 32}->{code & 0xFFFF}@{(code >> 16) & 0xFFFF}"


def split_calls(recs: list) -> list:
    """A run's band records (in log order) as one list per conv_direct4 call: a call's bands
    are logged before the next call starts (the caller waits for the worker's)."""
    calls = []
    for rec in recs:
        cur = calls[-1] if calls else None
        if cur is None or cur[0][7] != rec[7] or any(r[3] == rec[3] for r in cur):
            calls.append([rec])
        else:
            cur.append(rec)
    return [sorted(c, key=lambda r: r[3]) for c in calls]


def trace_columns(model: str, columns: dict, rounds: int) -> dict:
    """Per column, per (call, band): the copy / tiles TSC ticks of every run, who ran the band
    (0 caller, 1 worker) and who ran the same band of the call before (-1: none)."""
    with tempfile.TemporaryDirectory() as d:
        inputs, shape, built = build_pair(model, d)
        res = built["int8"]
        lib = _library(res)
        trace = ctypes.c_int64.in_dll(lib, "edgecc_x86_int8_direct4_trace")
        log = (ctypes.c_int64 * (SLOTS * 8)).in_dll(lib, "edgecc_x86_int8_direct4_trace_log")
        nxt = ctypes.c_int64.in_dll(lib, "edgecc_x86_int8_direct4_trace_next")
        knobs = {}
        for col in columns.values():
            for sym in col:
                v = _ctype(sym).in_dll(lib, sym)
                knobs.setdefault(sym, (v, v.value))
        reference = res.run(*inputs).numpy()
        got = {c: collections.defaultdict(list) for c in columns}
        for r in range(rounds):
            for col in (list(columns) if r % 2 else list(columns)[::-1]):
                for sym, (v, default) in knobs.items():
                    v.value = columns[col].get(sym, default)
                res.run(*inputs)  # the caches as in a stream of runs under this column
                trace.value = 1
                n0 = nxt.value
                out = res.run(*inputs)
                n1 = nxt.value
                trace.value = 0
                assert (out.numpy() == reference).all(), col
                assert n1 - n0 <= SLOTS
                recs = [[log[8 * (i % SLOTS) + k] for k in range(8)] for i in range(n0, n1)]
                calls = split_calls(recs)
                for i, call in enumerate(calls):
                    prev = calls[i - 1] if i else []
                    pooled = int(any(rec[6] for rec in call))
                    for b, rec in enumerate(call):
                        before = prev[b][6] if b < len(prev) and len(prev) == len(call) else -1
                        got[col][(i, b)].append((rec[1] - rec[0], rec[2] - rec[1], rec[6],
                                                 before, rec[7], rec[3], rec[4], rec[5], pooled))
        for sym, (v, default) in knobs.items():
            v.value = default
    return {"model": model, "input": shape, "load_average": os.getloadavg()[0],
            "rounds": rounds, "tsc_mhz": tsc_mhz(), "columns": columns,
            "records": {c: {f"{k[0]}.{k[1]}": v for k, v in got[c].items()} for c in columns}}


CASES = (("c alone", lambda r: r[8] == 0), ("c +w", lambda r: r[2] == 0 and r[8] == 1),
         ("w", lambda r: r[2] == 1),
         ("w|w", lambda r: r[2] == 1 and r[3] == 1), ("w|c", lambda r: r[2] == 1 and r[3] == 0),
         ("c|w", lambda r: r[2] == 0 and r[3] == 1))


def summarize(r: dict) -> list:
    """Per call and band: per column and case (who ran it | who ran it the call before) the
    number of runs and the median copy / tiles us."""
    mhz = r["tsc_mhz"]
    keys = sorted({k for c in r["records"].values() for k in c},
                  key=lambda k: tuple(int(x) for x in k.split(".")))
    rows = []
    for k in keys:
        row = {"band": k}
        for col, recs in r["records"].items():
            for name, test in CASES:
                mine = [x for x in recs.get(k, []) if test(x)]
                if mine:
                    row["layer"] = layer_name(mine[0][4])
                    row["rows"] = [mine[0][5], mine[0][6]]
                    row[f"{col}:{name}"] = {
                        "n": len(mine), "copy_us": statistics.median(x[0] for x in mine) / mhz,
                        "tiles_us": statistics.median(x[1] for x in mine) / mhz,
                        "first_row_us": statistics.median(x[7] for x in mine) / mhz}
        rows.append(row)
    return rows


def print_trace(r: dict, rows: list) -> None:
    print(f"\n{r['model']} {r['input']} int8, conv_direct4 bands (load {r['load_average']:.1f});"
          f" median us copy / tiles (their first row) (n runs); c alone: the caller ran"
          f" every band, c +w: the caller's band while a worker ran the other, w|c: a worker's"
          f" band whose band the call before the caller ran")
    for col in r["columns"]:
        print(f"  column {col} {r['columns'][col]}")
        print(f"  {'band':<6} {'layer':<11} {'rows':>7}" +
              "".join(f" {name:>20}" for name, _ in CASES))
        for b in rows:
            cells = [b.get(f"{col}:{name}") for name, _ in CASES]
            if not any(cells):
                continue
            print(f"  {b['band']:<6} {b['layer']:<11} {b['rows'][0]:3d}-{b['rows'][1]:<3d}" +
                  "".join(f" {v['copy_us']:4.2f}/{v['tiles_us']:5.2f}({v['first_row_us']:4.2f}) "
                          f"n{v['n']:<3d}" if v else f" {'-':>20}" for v in cells))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="resnet20")
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--columns", default="pool=;serial=edgecc_x86_num_tasks:1")
    parser.add_argument("--records", action="store_true",
                        help="keep every run's band records in the JSON (large)")
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "x86_int8_thread_cost.json"))
    args = parser.parse_args()
    columns = parse_columns(args.columns)
    result = trace_columns(args.model, columns, args.rounds)
    rows = summarize(result)
    print_trace(result, rows)
    result["bands"] = rows
    if not args.records:
        result.pop("records")
    print(f"\n{THREADS} threads, TSC {result['tsc_mhz']:.0f} MHz, one process")
    write_result(args.output, {"benchmark": "int8 conv_direct4 per-thread band cost",
                               "threads": THREADS, "result": result})
    return 0


if __name__ == "__main__":
    sys.exit(main())
