"""A/B of a kernel-source change to the int8 depthwise / pool text, in one process: the
model's int8 build with the kernel source of a git revision (``--rev``, default HEAD) for the
modules in ``MODULES`` (each one's C++ string constants, and the pool prelude, swapped back
into ``x86_int8_source.SOURCE``) against the working tree's. Both builds loaded at once (each
library has its own pool).

Per depthwise call (``qdwconv``): the calling thread's CPU time at 1 pool thread, old and new
alternating per round (median over rounds of the per-round ratio new / old); then the whole
int8 model at 1 and at 2 threads, interleaved (paired p10 / p50 / p90 new / old). Outputs are
checked bit-identical first. Writes ``bench/results/x86_int8_dw_src_ab.json``.

    python bench/x86_int8_dw_src_ab.py [--rev HEAD] [--model mobilenet_v2] [--rounds 40]
                                       [--repeats 300]

Not a goal measurement (bench/tvm_cpu.py is).
"""

from __future__ import annotations

import argparse
import ctypes
import os
import statistics
import subprocess
import sys
import tempfile
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.host import THREADS  # noqa: E402  (sets TVM_NUM_THREADS before TVM starts)
from bench.tvm_cpu import calibration, interleaved_times, models  # noqa: E402
from bench.x86_int8_common import paired_spread, write_result  # noqa: E402

warnings.filterwarnings("ignore")
MODULES = ("x86_int8_dw_entry_source", "x86_int8_dw_source", "x86_int8_dwrows_source",
           "x86_int8_pool_source", "x86_kernel_ffi")
SERIAL_WORK = 1 << 17  # x86_int8_source's ffi_prelude argument


def _namespace(text: str) -> dict:
    ns: dict = {"__name__": "edgecc_rev_module"}
    exec(compile(text, "<rev>", "exec"), ns)  # noqa: S102 - the repository's own file
    return ns


def source_at(rev: str, repo: str = ROOT) -> str:
    """``x86_int8_source.SOURCE`` with MODULES' text as of ``rev`` (of the git ``repo``)."""
    import importlib

    from edgecc.targets.tvm import x86_int8_source

    source = x86_int8_source.SOURCE
    for name in MODULES:
        now = importlib.import_module(f"edgecc.targets.tvm.{name}")
        old = _namespace(subprocess.run(
            ["git", "show", f"{rev}:targets/tvm/{name}.py"], cwd=repo, check=True,
            capture_output=True, text=True).stdout)
        pairs = [(getattr(now, k), old.get(k)) for k in dir(now)
                 if k.isupper() and isinstance(getattr(now, k), str)]
        if hasattr(now, "ffi_prelude"):
            pairs.append((now.ffi_prelude(SERIAL_WORK), old["ffi_prelude"](SERIAL_WORK)))
        for new_text, old_text in pairs:
            if old_text is None or new_text == old_text or len(new_text) < 200:
                continue
            assert source.count(new_text) == 1, (name, new_text[:80])
            source = source.replace(new_text, old_text)
    return source


def build(module, inputs, directory: str, source: str | None):
    """``module``'s w8a8 build (integer kernels) with the kernel source ``source`` (None:
    the working tree's), run once."""
    import torch

    import edgecc
    from edgecc.targets.tvm import x86_int8

    defaults = x86_int8.external_module.__defaults__
    if source is not None:
        x86_int8.external_module.__defaults__ = (source, *defaults[1:])
    try:
        with torch.no_grad():
            res = edgecc.compile(module, "host", example_inputs=inputs,
                                 pipeline="fold-batchnorm,quantize{scheme=w8a8},fuse,dce",
                                 calibration=calibration(inputs), output_dir=directory,
                                 progress=False, target_options={"num_threads": THREADS,
                                                                 "integer_kernels": True})
            res.run(*inputs)
    finally:
        x86_int8.external_module.__defaults__ = defaults
    return res, inputs


def main() -> int:
    from bench.tvm_runtime import kind
    from bench.vm_calls import kernel_calls

    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rev", default="HEAD")
    parser.add_argument("--repo", default=ROOT, help="the git checkout --rev is read from")
    parser.add_argument("--model", default="mobilenet_v2")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--reps", type=int, default=20)
    parser.add_argument("--repeats", type=int, default=300)
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "x86_int8_dw_src_ab.json"))
    args = parser.parse_args()
    old_source = source_at(args.rev, args.repo)
    with tempfile.TemporaryDirectory() as d:
        make, inputs, _ = models()[args.model]
        module = make().eval()  # one module (its random weights) for both builds
        built = {"old": build(module, inputs, os.path.join(d, "old"), old_source),
                 "new": build(module, inputs, os.path.join(d, "new"), None)}
        libs = {k: ctypes.CDLL(r._runner.library, mode=os.RTLD_NOLOAD | os.RTLD_LOCAL)
                for k, (r, _) in built.items()}
        assert libs["old"]._handle != libs["new"]._handle, "one library: no A/B"
        threads = {k: ctypes.c_int32.in_dll(lib, "edgecc_pool_threads") for k, lib in libs.items()}
        full = threads["new"].value or THREADS
        outs = {k: r.run(*x) for k, (r, x) in built.items()}
        for a, b in zip(*(o if isinstance(o, (list, tuple)) else [o] for o in outs.values())):
            assert (a == b).all(), "outputs differ"
        calls = {k: [c for c in kernel_calls(r._runner, x) if kind(c[1]) != "builtin"]
                 for k, (r, x) in built.items()}
        for t in threads.values():
            t.value = 1
        per_call = []
        dw = [i for i, c in enumerate(calls["new"]) if c[1].endswith("qdwconv")]
        samples = {i: {"old": [], "new": []} for i in dw}
        for r in range(args.rounds):
            for i in dw:
                for k in (("old", "new") if r % 2 == 0 else ("new", "old")):
                    fn, _, a = calls[k][i]
                    fn(*a)
                    t0 = time.thread_time()
                    for _ in range(args.reps):
                        fn(*a)
                    samples[i][k].append((time.thread_time() - t0) / args.reps * 1e6)
        for i in dw:
            s = samples[i]
            ratios = [n / o for n, o in zip(s["new"], s["old"])]
            per_call.append({"call": str(tuple(calls["new"][i][2][0].shape)),
                             "old_us": statistics.median(s["old"]),
                             "new_us": statistics.median(s["new"]),
                             "ratio": statistics.median(ratios)})
        whole = {}
        for t in (1, full):
            for v in threads.values():
                v.value = t
            fns = {k: (lambda r=r, x=x: r.run(*x)) for k, (r, x) in built.items()}
            times = interleaved_times(fns, args.repeats)
            whole[t] = {"old_ms": statistics.median(times["old"]),
                        "new_ms": statistics.median(times["new"]),
                        "new_vs_old": paired_spread(times, "new", "old", args.repeats)}
        for v in threads.values():
            v.value = full
    load = os.getloadavg()[0]
    print(f"{args.model} int8: kernel source of {args.rev} (old) vs the working tree (new); "
          f"load {load:.1f}")
    print(f"  {'qdwconv':<22} {'old us':>7} {'new us':>7} {'new/old':>7}  (1 thread, CPU time)")
    for c in per_call:
        print(f"  {c['call']:<22} {c['old_us']:7.2f} {c['new_us']:7.2f} {c['ratio']:7.3f}")
    so, sn = sum(c["old_us"] for c in per_call), sum(c["new_us"] for c in per_call)
    print(f"  {'sum':<22} {so:7.1f} {sn:7.1f} {sn / so:7.3f}")
    for t, w in whole.items():
        p = w["new_vs_old"]
        print(f"  whole model {t}t (wall): old {w['old_ms']:.3f} ms new {w['new_ms']:.3f} ms, "
              f"new/old paired p10/p50/p90 {p[0]:.3f} {p[1]:.3f} {p[2]:.3f}")
    write_result(args.output, {"benchmark": "int8 depthwise kernel source A/B", "rev": args.rev,
                               "model": args.model, "load_average": load, "per_call": per_call,
                               "whole": {str(k): v for k, v in whole.items()}})
    return 0


if __name__ == "__main__":
    sys.exit(main())
