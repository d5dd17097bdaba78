"""Per-call profile of a compiled transformer's fp32 host build: every call the VM makes
(``bench.vm_calls.kernel_calls``), each re-run alone with the arguments the VM passed it,
grouped by symbol and by call site (symbol + argument shapes), next to the whole run, at
``--threads`` (default 2; wall clock). Prints a table, writes
``bench/results/transformer_profile.json``.

    python bench/transformer_profile.py [--models minilm,bert,gpt2] [--rounds 5]
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.host import THREADS  # noqa: E402,F401  (sets TVM_NUM_THREADS before TVM starts)
from bench.vm_calls import kernel_calls  # noqa: E402


def _shapes(args) -> str:
    out = []
    for a in args:
        shape = getattr(a, "shape", None)
        out.append("x".join(str(int(s)) for s in shape) if shape is not None else "s")
    return ",".join(out)


def profile(name: str, rounds: int) -> dict:
    from bench.pool_common import build

    built = build(name)
    runner, inputs = built.res._runner, built.inputs
    calls = [c for c in kernel_calls(runner, inputs) if not c[1].startswith("vm.builtin")]
    per = [[] for _ in calls]
    inseq = [[] for _ in calls]
    whole, sequence = [], []
    for _ in range(rounds):
        for _ in range(2):
            runner.run(*inputs)
        t = time.perf_counter()
        runner.run(*inputs)
        whole.append((time.perf_counter() - t) * 1e3)
        t0 = time.perf_counter()
        for i, (func, _, a) in enumerate(calls):  # in the VM's order, each call timed
            t = time.perf_counter()
            func(*a)
            inseq[i].append((time.perf_counter() - t) * 1e3)
        sequence.append((time.perf_counter() - t0) * 1e3)
        for i, (func, _, a) in enumerate(calls):
            func(*a)
            t = time.perf_counter()
            func(*a)
            per[i].append((time.perf_counter() - t) * 1e3)
    med = [statistics.median(p) for p in per]
    seq = [statistics.median(p) for p in inseq]
    sites: dict = collections.defaultdict(lambda: [0, 0.0, 0.0])
    symbols: dict = collections.defaultdict(lambda: [0, 0.0, 0.0])
    for m, q, (_, sym, a) in zip(med, seq, calls):
        for key, table in (((sym, _shapes(a)), sites), (sym, symbols)):
            table[key][0] += 1
            table[key][1] += m
            table[key][2] += q
    row = {"model": name, "run_ms": statistics.median(whole), "kernels_ms": sum(med),
           "sequence_ms": statistics.median(sequence), "in_sequence_ms": sum(seq),
           "load": os.getloadavg()[0],
           "symbols": {k: {"calls": n, "alone_ms": round(v, 3), "in_sequence_ms": round(w, 3)}
                       for k, (n, v, w) in sorted(symbols.items(), key=lambda kv: -kv[1][2])},
           "sites": [{"symbol": k[0], "shapes": k[1], "calls": n, "alone_ms": round(v, 3),
                      "in_sequence_ms": round(w, 3)}
                     for k, (n, v, w) in sorted(sites.items(), key=lambda kv: -kv[1][2])]}
    print(f"{name}: run {row['run_ms']:.2f} ms, sequence {row['sequence_ms']:.2f} ms, "
          f"calls in sequence {row['in_sequence_ms']:.2f}, alone {row['kernels_ms']:.2f} ms, "
          f"load {row['load']:.2f}")
    print(f"  {'symbol':40s} {'calls':>5s} {'alone':>9s} {'in seq':>9s}")
    for k, v in row["symbols"].items():
        print(f"  {k:40s} {v['calls']:5d} {v['alone_ms']:9.3f} {v['in_sequence_ms']:9.3f}")
    for s in row["sites"][:12]:
        print(f"    {s['symbol'][:30]:30s} {s['calls']:3d} {s['alone_ms']:8.3f} "
              f"{s['in_sequence_ms']:8.3f}  {s['shapes'][:90]}")
    return row


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="minilm")
    p.add_argument("--rounds", type=int, default=5)
    args = p.parse_args()
    rows = [profile(m, args.rounds) for m in args.models.split(",")]
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "transformer_profile.json"), "w") as f:
        json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
