"""A/B of a kernel source against its committed version (``git show REV:path``): both
libraries linked side by side, the calls interleaved, paired ratios per round, outputs checked
bit for bit. Used for the register-resident write-backs (``lin_tile``: the accumulators no
longer in a stack array). The linear: MiniLM's four shapes (``x86_linear_peak.SHAPES``).

    python bench/x86_tile_registers_ab.py [--rev HEAD] [--rounds 15] [--repeats 5] \
        [--shapes qkv,attn_out,ffn_in,ffn_out,n32]

1 thread, CPU time of the calling thread. Prints a table and writes
``bench/results/x86_tile_registers_ab.json``. Say the load (``uptime``) with it."""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "bench"))


def _old_attention_source(rev: str) -> str:
    """x86_attention_source.SOURCE with ``rev``'s linear text in place of the working tree's."""
    import types

    from edgecc.targets.tvm import x86_attention_source, x86_linear_source

    text = subprocess.run(["git", "show", f"{rev}:targets/tvm/x86_linear_source.py"], cwd=ROOT,
                          check=True, capture_output=True, text=True).stdout
    old = types.ModuleType("old_linear")
    exec(compile(text, "old_linear", "exec"), old.__dict__)  # noqa: S102 - the repo's own file
    src = x86_attention_source.SOURCE
    assert src.count(x86_linear_source.BODY) == 2
    return src.replace(x86_linear_source.BODY, old.BODY)


def _library(source: str, folder: str, tag: str):
    import tvm_ffi

    from edgecc.targets.tvm import x86_int8
    from edgecc.targets.tvm.x86_attention_source import LINEAR

    obj = x86_int8.compiled_object(source=source, cache="x86_tile_registers_ab")
    so = os.path.join(folder, f"{tag}.so")
    subprocess.run([os.environ.get("CXX", "g++"), "-shared", obj, "-o", so], check=True)
    lib = ctypes.CDLL(so)
    ctypes.c_int32.in_dll(lib, "edgecc_pool_threads").value = 1
    return tvm_ffi.load_module(so)[LINEAR]


def main() -> int:
    import numpy as np

    from edgecc.targets.tvm.x86_attention_source import SOURCE
    from x86_linear_peak import SHAPES, shape_call

    ap = argparse.ArgumentParser()
    ap.add_argument("--rev", default="HEAD")
    ap.add_argument("--rounds", type=int, default=15)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--shapes", default="qkv,attn_out,ffn_in,ffn_out,n32")
    args = ap.parse_args()
    clock = time.thread_time
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        libs = {"old": _library(_old_attention_source(args.rev), folder, "old"),
                "new": _library(SOURCE, folder, "new")}
        for shape in args.shapes.split(","):
            calls = {k: shape_call(f, *SHAPES[shape]) for k, f in libs.items()}
            for fn, _ in calls.values():
                fn()
            same = np.array_equal(calls["old"][1].numpy(), calls["new"][1].numpy())
            ratios, t_new = [], []
            for r in range(args.rounds):
                med = {}
                for key in (("old", "new") if r % 2 == 0 else ("new", "old")):
                    ts = []
                    for _ in range(args.repeats):
                        t0 = clock()
                        calls[key][0]()
                        ts.append(clock() - t0)
                    med[key] = statistics.median(ts)
                ratios.append(med["new"] / med["old"])
                t_new.append(med["new"])
            q = statistics.quantiles(ratios, n=4)
            rows.append({"shape": shape, "mkn_gelu_res": SHAPES[shape], "new_ms":
                         1e3 * statistics.median(t_new), "new_over_old": statistics.median(ratios),
                         "q1": q[0], "q3": q[2], "bit_identical": bool(same)})
    load = os.getloadavg()[0]
    print(f"lin_tile registers A/B (1 thread, CPU time, {args.rounds} rounds; load {load:.1f})")
    print(f"{'shape':16s} {'new ms':>8s} {'new/old':>8s} {'q1-q3':>13s} same")
    for r in rows:
        print(f"{r['shape']:16s} {r['new_ms']:8.3f} {r['new_over_old']:8.3f} "
              f"{r['q1']:6.3f}-{r['q3']:6.3f} {r['bit_identical']}")
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "x86_tile_registers_ab.json"), "w") as f:
        json.dump({"load": load, "rounds": args.rounds, "rows": rows}, f, indent=1)
    return 0 if all(r["bit_identical"] for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
