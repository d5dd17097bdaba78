"""Where a transformer's 2-thread time goes: every VM call of edgecc's default fp32 build,
timed by the wall clock inside the VM's own run (an instrument stamps ``perf_counter`` before
and after each call; min over rounds), in a 1-thread and a 2-thread build of the same model in
one process, rounds interleaved. Grouped by kernel (sgemm by M x K x N); the ``2t/1t`` column
is each group's scaling (0.5 = perfect on 2 threads). Under load the minimum is the least
disturbed call: say the load.

    python bench/transformer_scaling.py [--models gpt2,bert,minilm] [--rounds 20]

Prints a table per model and writes ``bench/results/transformer_scaling.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from collections import defaultdict

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.tvm_cpu import models  # noqa: E402

import edgecc  # noqa: E402


def _build(module, inputs, threads):
    with tempfile.TemporaryDirectory() as d:
        res = edgecc.compile(module, "host", example_inputs=inputs, pipeline=None,
                             output_dir=os.path.join(d, "o"), progress=False,
                             target_options={"num_threads": threads})
        res.run(*inputs)
    return res


def _keys(res, inputs) -> list[str]:
    from bench.vm_calls import kernel_calls

    keys = []
    for _, sym, args in kernel_calls(res._runner, inputs):
        if sym.startswith("vm.builtin"):
            continue
        if sym in ("edgecc_x86_sgemm", "edgecc_x86_linear"):  # by M x K x N (+ fused GELU)
            m = [int(v) for v in args[3].numpy()]
            sym = f"{'sgemm' if sym.endswith('sgemm') else 'linear'} {m[0]}x{m[1]}x{m[2]}" + \
                (" gelu" if len(m) > 3 and m[3] else "")
        keys.append(sym)
    return keys


def _one_round(res, inputs, stamps: list) -> list[float]:
    from edgecc.targets.tvm.runner import tvm_tensor

    runner = res._runner

    def stamp(func, symbol, before, _ret, *args):
        if not str(symbol).startswith("vm.builtin"):
            stamps.append(time.perf_counter())
        return 0

    for _ in range(3):
        res.run(*inputs)
    args = [tvm_tensor(t, runner.device) for t in inputs]
    stamps.clear()
    runner.vm.set_instrument(stamp)
    try:
        runner.vm["main"](*args)
    finally:
        runner.vm.set_instrument(None)
    return [stamps[2 * i + 1] - stamps[2 * i] for i in range(len(stamps) // 2)]


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="gpt2,bert,minilm")
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    out = {"load": os.getloadavg(), "models": {}}
    for name in args.models.split(","):
        make, inputs, _ = models()[name]
        module = make().eval()
        builds = {t: _build(module, inputs, t) for t in (1, 2)}
        keys = _keys(builds[1], inputs)
        best = {t: None for t in builds}
        whole = {t: [] for t in builds}
        stamps: list = []
        for r in range(args.rounds):
            for t in (builds if r % 2 == 0 else reversed(list(builds))):
                s = time.perf_counter()
                builds[t].run(*inputs)
                whole[t].append(time.perf_counter() - s)
                got = _one_round(builds[t], inputs, stamps)
                best[t] = got if best[t] is None else [min(a, b) for a, b in zip(best[t], got)]
        groups = defaultdict(lambda: {"n": 0, 1: 0.0, 2: 0.0})
        for i, k in enumerate(keys):
            g = groups[k]
            g["n"] += 1
            for t in builds:
                g[t] += best[t][i] * 1e6
        print(f"\n{name}: wall us, min over {args.rounds} rounds, load "
              f"{os.getloadavg()[0]:.1f}")
        print(f"{'kernel':34s} {'n':>3s} {'1 thread':>10s} {'2 threads':>10s} {'2t/1t':>6s}")
        rows = {}
        for k, g in sorted(groups.items(), key=lambda kv: -kv[1][2]):
            print(f"{k:34s} {g['n']:3d} {g[1]:10.1f} {g[2]:10.1f} {g[2] / g[1]:6.2f}")
            rows[k] = {"n": g["n"], "us_1t": g[1], "us_2t": g[2]}
        s1, s2 = (sum(best[t]) * 1e6 for t in (1, 2))
        w1, w2 = (min(whole[t]) * 1e6 for t in (1, 2))
        print(f"{'sum of calls':34s} {'':3s} {s1:10.1f} {s2:10.1f} {s2 / s1:6.2f}")
        print(f"{'whole call (min)':34s} {'':3s} {w1:10.1f} {w2:10.1f} {w2 / w1:6.2f}")
        out["models"][name] = {"kernels": rows, "sum_us": {"1": s1, "2": s2},
                               "whole_us": {"1": w1, "2": w2}}
    path = os.path.join(ROOT, "bench", "results", "transformer_scaling.json")
    with open(path, "w") as f:
        json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
