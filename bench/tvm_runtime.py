"""What a compiled CNN's call spends outside its kernels: edgecc's fp32 host build of each
model, timed end to end (``CompileResult.run``, the runner, the bare VM function) against the
sum of its kernels, each re-run alone with the arguments the VM passed it (a VM instrument
records every call), and onnxruntime's session, all interleaved in one process, 2 threads
(``--threads 1``: one thread, each column the caller's CPU time). Zen 4 KVM, 1 thread, CPU
time, under load (3.4), ResNet-20 (s9): res.run 844, runner 829, bare VM 815, in sequence 817,
kernels 784 us (ort 817): ~15 us in ``CompileResult.run``, ~14 in the runner (the torch tensors
in and out), ~31 between the VM and its kernels alone — the same in the Python replay, so
caches between layers, not the VM's bytecode (perf: libtvm_runtime ~1.2% of the run's
samples, ~10 us, with its 61 builtin calls).
Also the VM's calls by kind (hand-written x86 kernels, TVM-generated kernels, VM builtins) and
the same run with every hand-written job serial (``edgecc_x86_serial_work_log2`` = 63: what
the pool buys). Prints a table, writes ``bench/results/tvm_runtime.json``.

    python bench/tvm_runtime.py [--models resnet20,resnet20:int8,mobilenet_v2] [--rounds 20]

s13 (load ~2.5-3.8, 10 rounds; bench/results/tvm_runtime.json, tvm_runtime_1t.json), 1 thread
CPU time, runner / bare VM / kernels us: ResNet-20 fp32 383/379/385, int8 259/255/265;
MobileNetV2-32 fp32 635/628/650, int8 315/308/337 — the VM with its 61-155 builtins (alloc_storage
5-6, alloc_tensor 23-65) within ~5 us of the kernels replayed alone, the runner ~4-7 us over the
VM, TVM-generated kernels 0-7 us: the rest is the hand-written kernels.

A model ``name:int8`` is the w8a8 build on the integer kernels (``bench.pool_common.build``);
``x86`` / ``TVM-gen`` split the kernels' sum into the hand-written and TVM-generated calls
(per symbol in the JSON and the lines after the table).

``overhead`` = runner - sum of kernels: the VM, the pool's launches and waits, Python.
``in sequence`` = the same kernel calls replayed back to back from Python in the VM's order:
``bare VM - in sequence`` is what the VM's bytecode and builtins cost beyond a Python call per
kernel (~0.1-0.2 us each), ``in sequence - kernels`` what running the layers one after another
costs over each alone with hot caches (weights and activations fetched from L3, not the
runtime's). Zen 4 KVM, 2 threads, chrt -f 1 (quiet emulated), ResNet-20 fp32: runner 547, bare
VM 545, in sequence 562, kernels 509 us; 1 thread 959 / 956 / 986 / 927 us — the runtime
around the kernels is a few us, the rest of the gap to the kernels' sum is cache misses.

    python bench/tvm_runtime.py --pools 6 [--models bert,gpt2]

``--pools N``: one pool or two, process by process. Each model's fp32 host build is compiled
once, then loaded by 2N fresh processes, alternating ``EDGECC_ONE_POOL=1`` (TVM's generated
parallel loops on edgecc's kernel pool, the default) and ``=0`` (TVM's own pool for them, as
before: two pools in the process); each process times its calls (median of blocks of 10 after
a warm-up, like bench/tvm_cpu.py). A process-level mode (which threads end up where) shows as
run-to-run bimodality, so each process's median is listed and counted as slow when it is over
1.3x the fastest process of that model. Plus N processes that alternate the two block by block
(``edgecc_pool_configure``; TVM's pool exists in both): paired one/two ratios. Writes
``bench/results/tvm_runtime_pools.json``.
"""

from __future__ import annotations

import argparse
import collections
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
import bench.tvm_cpu  # noqa: E402
from bench.tvm_cpu import models, ort_fp32_fn  # noqa: E402


def _threads_option() -> int:
    """``--threads N`` read before TVM starts (its pool takes TVM_NUM_THREADS at first use)."""
    for i, arg in enumerate(sys.argv):
        if arg == "--threads" and i + 1 < len(sys.argv):
            return int(sys.argv[i + 1])
        if arg.startswith("--threads="):
            return int(arg.split("=", 1)[1])
    return THREADS


THREADS = _threads_option()
os.environ["TVM_NUM_THREADS"] = os.environ["OMP_NUM_THREADS"] = str(THREADS)
bench.tvm_cpu.THREADS = THREADS  # onnxruntime's intra-op threads (bench.tvm_cpu._ort_options)
# one thread: the calling thread's CPU time (what the call costs, not what the load leaves of
# it); more: wall time (the pool's threads work for the caller)
CLOCK = time.thread_time if THREADS == 1 else time.perf_counter
from bench.vm_calls import kernel_calls  # noqa: E402

import torch  # noqa: E402

import edgecc  # noqa: E402

warnings.filterwarnings("ignore")


def kind(symbol: str) -> str:
    if symbol.startswith("edgecc_x86"):
        return "x86"
    return "builtin" if symbol.startswith("vm.builtin") else "tvm"


def measure(spec, rounds):
    """``spec``: ``name`` (fp32) or ``name:int8`` (w8a8 on the integer kernels)."""
    from bench.pool_common import build
    from edgecc.targets.tvm.runner import tvm_tensor

    built = build(spec)
    res, runner, inputs = built.res, built.runner, built.inputs
    with torch.no_grad():
        ort = ort_fp32_fn(built.module, inputs)
    library = ctypes.CDLL(runner.library, mode=os.RTLD_NOLOAD | os.RTLD_LOCAL)
    serial = ctypes.c_int64.in_dll(library, "edgecc_x86_serial_work_log2")
    every = kernel_calls(runner, inputs)
    calls = [c for c in every if kind(c[1]) != "builtin"]
    builtins = collections.Counter(c[1] for c in every if kind(c[1]) == "builtin")
    main = runner.vm["main"]
    args = [tvm_tensor(t, runner.device) for t in inputs]

    def in_sequence():
        for func, _, a in calls:
            func(*a)

    def all_serial():
        serial.value = 63
        try:
            runner.run(*inputs)
        finally:
            serial.value = 0

    fns = {"result_run_ms": lambda: res.run(*inputs), "runner_ms": lambda: runner.run(*inputs),
           "vm_ms": lambda: main(*args), "sequence_ms": in_sequence, "serial_ms": all_serial,
           "onnxruntime_ms": ort}
    times = {k: [] for k in fns}
    kernels = [[] for _ in calls]
    for _ in range(rounds):
        for k, fn in fns.items():
            time.sleep(0.05)
            for _ in range(3):
                fn()
            for _ in range(10):
                t = CLOCK()
                fn()
                times[k].append((CLOCK() - t) * 1e3)
        for i, (func, _, a) in enumerate(calls):
            func(*a)
            for _ in range(3):
                t = CLOCK()
                func(*a)
                kernels[i].append((CLOCK() - t) * 1e3)
    row = {"model": built.name, "precision": built.precision, "input": built.shape,
           **{k: statistics.median(v) for k, v in times.items()}}
    per = [statistics.median(v) for v in kernels]
    row["kernels_ms"] = sum(per)
    row["x86_kernels_ms"] = sum(p for p, c in zip(per, calls) if kind(c[1]) == "x86")
    row["tvm_kernels_ms"] = row["kernels_ms"] - row["x86_kernels_ms"]
    by_symbol: dict = collections.defaultdict(lambda: [0, 0.0])
    for p, c in zip(per, calls):
        by_symbol[c[1]][0] += 1
        by_symbol[c[1]][1] += p * 1e3
    row["per_symbol_us"] = {k: {"calls": n, "us": round(us, 2)} for k, (n, us) in
                            sorted(by_symbol.items(), key=lambda kv: -kv[1][1])}
    row["calls"] = {"x86": sum(kind(c[1]) == "x86" for c in calls),
                    "tvm": sum(kind(c[1]) == "tvm" for c in calls),
                    "builtin": sum(builtins.values())}
    row["builtins"] = dict(builtins)
    row["overhead_ms"] = row["runner_ms"] - row["kernels_ms"]
    row["load_average"] = os.getloadavg()[0]
    return row


def time_library(directory: str, blocks: int, ab: bool = False) -> None:
    """In this (fresh) process: the median ms of the runner's calls on ``directory``'s
    library (``--pools``' child); with ``ab``, blocks alternate between one pool and two
    (``edgecc_pool_configure``) and both medians are printed."""
    from edgecc.targets.tvm.runner import _POOLS, VmRunner

    inputs = torch.load(os.path.join(directory, "inputs.pt"), weights_only=True)
    runner = VmRunner(os.path.join(directory, "o", "model.so"), THREADS)
    modes = ("one", "two") if ab else ("one" if runner.tvm_loops_on_edgecc_pool else "two",)
    times: dict[str, list[float]] = {m: [] for m in modes}
    for i in range(blocks):
        for mode in (modes if i % 2 == 0 else modes[::-1]):
            if ab:
                assert _POOLS[runner.library](int(mode == "one"), -1) == (mode == "one")
            time.sleep(0.3)
            for _ in range(3):
                runner.run(*inputs)
            for _ in range(10):
                t = time.perf_counter()
                runner.run(*inputs)
                times[mode].append((time.perf_counter() - t) * 1e3)
    print(json.dumps({m: statistics.median(v) for m, v in times.items()}))


def pools(names: list[str], processes: int, blocks: int) -> list[dict]:
    """``--pools``: per model, ``processes`` fresh processes with one pool and as many with
    two, alternating (which goes first alternates too)."""
    import subprocess

    rows = []
    for name in names:
        make, inputs, shape = models()[name]
        module = make().eval()
        with tempfile.TemporaryDirectory() as d, torch.no_grad():
            edgecc.compile(module, "host", example_inputs=inputs,
                           pipeline="fold-batchnorm,fuse,dce", output_dir=os.path.join(d, "o"),
                           progress=False, verify=False, target_options={"num_threads": THREADS})
            torch.save(tuple(inputs), os.path.join(d, "inputs.pt"))
            ms: dict[str, list[float]] = {"one": [], "two": []}
            paired: dict[str, list[float]] = {"one": [], "two": []}

            def child(env, *extra):
                out = subprocess.run([sys.executable, __file__, "--time-library", d,
                                      "--blocks", str(blocks), *extra], env=env, check=True,
                                     capture_output=True, text=True).stdout
                return json.loads(out.strip().splitlines()[-1])

            for i in range(processes):
                for mode in (("one", "two") if i % 2 == 0 else ("two", "one")):
                    env = dict(os.environ, EDGECC_ONE_POOL="1" if mode == "one" else "0")
                    got = child(env)
                    assert list(got) == [mode], got  # the library ran as asked
                    ms[mode].append(got[mode])
                    print(f"  {name} {mode} pool(s), own process: {got[mode]:.3f} ms", flush=True)
                got = child(dict(os.environ), "--ab")  # both in one process, block by block
                for mode in paired:
                    paired[mode].append(got[mode])
                print(f"  {name} in one process: one {got['one']:.3f} ms, two {got['two']:.3f}"
                      " ms", flush=True)
        fastest = min(ms["one"] + ms["two"])
        row = {"model": name, "input": shape, "fastest_ms": fastest,
               "load_average": os.getloadavg()[0],
               "in_one_process": {**paired, "ratio_one_over_two": [
                   a / b for a, b in zip(paired["one"], paired["two"])]}}
        for mode, values in ms.items():
            row[mode] = {"process_ms": values, "median_ms": statistics.median(values),
                         "slow": sum(v > 1.3 * fastest for v in values)}
        rows.append(row)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="resnet20,mobilenet_v2,mobilenet_v2_224")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--threads", type=int, default=THREADS,
                        help="TVM / kernel / onnxruntime threads (1: CPU time)")
    parser.add_argument("--pools", type=int, default=0, metavar="N",
                        help="one pool vs two, N fresh processes each (see the docstring)")
    parser.add_argument("--blocks", type=int, default=5, help="--pools: blocks of 10 calls")
    parser.add_argument("--time-library", help=argparse.SUPPRESS)
    parser.add_argument("--ab", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--output")
    args = parser.parse_args()
    torch.set_num_threads(THREADS)
    if args.time_library:
        time_library(args.time_library, args.blocks, args.ab)
        return 0
    if args.pools:
        return main_pools(args)
    args.output = args.output or os.path.join(ROOT, "bench", "results", "tvm_runtime.json")
    rows = [measure(name, args.rounds) for name in args.models.split(",")]
    cols = ["result_run_ms", "runner_ms", "vm_ms", "sequence_ms", "kernels_ms", "x86_kernels_ms",
            "tvm_kernels_ms", "overhead_ms", "serial_ms", "onnxruntime_ms"]
    heads = ["res.run", "runner", "bare VM", "in seq.", "kernels", "x86", "TVM-gen", "overhead",
             "all serial", "ort fp32"]
    print(f"{'model':<22}" + "".join(f"{h:>11}" for h in heads) + "   calls x86/tvm/builtin  load")
    for r in rows:
        c = r["calls"]
        print(f"{r['model'] + ' ' + r['precision']:<22}" + "".join(f"{r[k]:>11.3f}" for k in cols)
              + f"   {c['x86']}/{c['tvm']}/{c['builtin']:<14}{r['load_average']:.1f}")
    print(f"ms, medians of interleaved rounds, {THREADS} thread(s), "
          + ("the caller's CPU time" if THREADS == 1 else "wall time")
          + "; kernels = sum of each VM call re-run alone; in seq. = the VM's kernel calls "
          "replayed back to back from Python; overhead = runner - kernels; all serial = every "
          "hand-written job serial")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"benchmark": "edgecc host call: kernels vs the runtime around them",
                   "threads": THREADS, "clock": CLOCK.__name__, "rounds": args.rounds,
                   "rows": rows}, f, indent=2)
    for r in rows:
        top = list(r["per_symbol_us"].items())[:12]
        print(f"{r['model']} {r['precision']}: " + ", ".join(
            f"{k[:40]} {v['us']:.1f} us/{v['calls']}" for k, v in top))
        print(f"    builtins: {r['builtins']}")
    print(f"wrote {args.output}")
    return 0


def main_pools(args) -> int:
    names = args.models.split(",")
    if args.models == "resnet20,mobilenet_v2,mobilenet_v2_224":  # the default: CNNs
        names = ["bert", "gpt2"]
    rows = pools(names, args.pools, args.blocks)
    print(f"{'model':<10}{'pools':>6}{'median ms':>11}{'slow':>6}   per process (ms)")
    for r in rows:
        for mode in ("one", "two"):
            m = r[mode]
            print(f"{r['model']:<10}{mode:>6}{m['median_ms']:>11.3f}"
                  f"{m['slow']:>4}/{len(m['process_ms'])}   "
                  + " ".join(f"{v:.2f}" for v in m["process_ms"]))
        ratios = r["in_one_process"]["ratio_one_over_two"]
        print(f"{r['model']:<10}in one process, one/two per process: "
              + " ".join(f"{v:.2f}x" for v in ratios)
              + f"  (median {statistics.median(ratios):.2f}x)")
    bind = os.environ.get("TVM_BIND_THREADS")
    print(f"{THREADS} threads, TVM_BIND_THREADS={bind}; "
          "one = TVM's loops on edgecc's pool, two = TVM's own pool beside it; slow = over 1.3x "
          f"the model's fastest process; load average {os.getloadavg()[0]:.1f}")
    output = args.output or os.path.join(ROOT, "bench", "results", "tvm_runtime_pools.json")
    os.makedirs(os.path.dirname(output), exist_ok=True)
    with open(output, "w") as f:
        json.dump({"benchmark": "one thread pool (TVM's loops on edgecc's) vs two, per process",
                   "threads": THREADS, "processes": args.pools, "blocks": args.blocks,
                   "rows": rows}, f, indent=2)
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
