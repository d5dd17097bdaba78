"""Where a small model's run goes outside its kernels: the Relax VM's instructions per run
(builtins vs kernel calls, ``bench.vm_calls.kernel_calls``) and, interleaved in one process
(paired per round), ``runner.run`` vs the bare ``vm["main"]`` vs the kernel calls alone
(the VM's own arguments replayed back to back from Python, and each call timed in place:
``sum``). Builds ResNet-20 and MobileNetV2-32, fp32 and w8a8 (integer kernels), as
bench/tvm_cpu.py does; writes ``bench/results/vm_overhead.json``.

    python bench/vm_overhead.py [--models resnet20,mobilenet_v2] [--rounds 40] [--threads 2]
    python bench/vm_overhead.py --ab [--rounds 60]   # the plan runner against the VM

``--ab``: per model, the fp32 and the w8a8 build each run through ``CompileResult.run`` with
the native plan runner (``plan``, targets/tvm/plan_runner.py) and without it (``vm``: the
same runner with its plan set aside), the four columns interleaved (order rotated per round),
a short pause then ``--reps`` timed calls each; prints per column the median and p10-p90 of
the round means, the paired plan/vm ratio per build and the paired int8/fp32 ratio with
either path; writes ``bench/results/vm_overhead_ab.json``.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import statistics
import sys
import tempfile
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.host import THREADS  # noqa: E402,F401  (TVM_NUM_THREADS before TVM starts)
from bench.tvm_cpu import PAUSE_S, calibration, models  # noqa: E402
from bench.vm_calls import kernel_calls  # noqa: E402

warnings.filterwarnings("ignore")
PIPELINES = {"fp32": "fold-batchnorm,fuse,dce", "int8": "fold-batchnorm,quantize{scheme=w8a8},fuse,dce"}


def build(name: str, kind: str, directory: str, threads: int):
    """The compiled model (edgecc.compile's result, loaded) and its example inputs."""
    import torch

    import edgecc

    make, inputs, _ = models()[name]
    torch.manual_seed(0)
    module = make().eval()
    options = {"num_threads": threads}
    if kind == "int8":
        options["integer_kernels"] = True
    with torch.no_grad():
        res = edgecc.compile(module, "host", example_inputs=inputs, pipeline=PIPELINES[kind],
                             calibration=calibration(inputs) if kind == "int8" else None,
                             output_dir=directory, progress=False, target_options=options)
    res.run(*inputs)
    return res, inputs


def percentiles(xs):
    q = statistics.quantiles(xs, n=10)
    return {"p10": q[0], "median": statistics.median(xs), "p90": q[-1]}


def columns(res, inputs) -> dict:
    """name -> callable of one run: the runner, the bare VM, the kernel calls replayed."""
    from edgecc.targets.tvm.runner import tvm_tensor

    runner = res._runner
    main = runner.vm["main"]
    args = [tvm_tensor(t, runner.device) for t in inputs]
    calls = [(f, a) for f, s, a in kernel_calls(runner, inputs) if not s.startswith("vm.builtin.")]

    def replay():
        for f, a in calls:
            f(*a)

    return {"runner": lambda: runner.run(*inputs), "vm": lambda: main(*args), "replay": replay}, calls


def in_place_sum(calls, now=time.perf_counter) -> float:
    total = 0.0
    for f, a in calls:
        t = now()
        f(*a)
        total += now() - t
    return total


def measure(fns: dict, calls, rounds: int, reps: int) -> dict:
    names = list(fns)
    times = {k: [] for k in [*names, "sum"]}
    for r in range(rounds):
        for k in names[r % len(names):] + names[:r % len(names)] + ["sum"]:
            time.sleep(PAUSE_S / 10)
            if k == "sum":
                for _ in range(3):
                    in_place_sum(calls)
                times[k].append(statistics.fmean(in_place_sum(calls) for _ in range(reps)) * 1e6)
                continue
            fn = fns[k]
            for _ in range(3):
                fn()
            t = time.perf_counter()
            for _ in range(reps):
                fn()
            times[k].append((time.perf_counter() - t) / reps * 1e6)
    out = {k: percentiles(v) for k, v in times.items()}
    for k in names[1:] + ["sum"]:
        out[f"runner-{k}_us"] = percentiles([a - b for a, b in zip(times["runner"], times[k])])
    out["vm-sum_us"] = percentiles([a - b for a, b in zip(times["vm"], times["sum"])])
    return out


def ab(names: list[str], rounds: int, reps: int, clock: str = "wall", threads: int = THREADS,
       pause: float = PAUSE_S / 6, flush_mb: int = 0) -> list[dict]:
    """The plan runner against the VM (``--ab``); ``clock="cpu"``: the calling thread's CPU
    time (no pause; with ``threads`` 1 a loaded machine's preemptions do not count)."""
    from edgecc.targets.tvm.runner import use_threads

    import torch

    now = time.thread_time if clock == "cpu" else time.perf_counter
    flush = torch.zeros(flush_mb << 18) if flush_mb else None  # float32: MB << 18 elements
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name in names:
            built = {k: build(name, k, os.path.join(d, f"{name}_{k}"), THREADS) for k in PIPELINES}
            fns = {}
            for kind, (res, inputs) in built.items():
                runner = res._runner
                assert runner.plan is not None, f"{name} {kind}: no plan"
                plan = runner.plan
                fast = res.run(*inputs)
                runner.plan = None
                slow = res.run(*inputs)
                runner.plan = plan
                fast, slow = (fast,) if hasattr(fast, "shape") else fast, \
                    (slow,) if hasattr(slow, "shape") else slow
                assert all(a.equal(b) for a, b in zip(fast, slow)), "plan != vm"
                runner.num_threads = threads
                runner._threads = use_threads(threads)

                def column(res=res, runner=runner, plan=plan, inputs=inputs, use=True):
                    def go():
                        runner.plan = plan if use else None
                        res.run(*inputs)
                    return go

                fns[f"{kind}_vm"] = column(use=False)
                fns[f"{kind}_plan"] = column(use=True)
            cols = list(fns)
            times = {k: [] for k in cols}
            for r in range(rounds):
                for k in cols[r % len(cols):] + cols[:r % len(cols)]:
                    fn = fns[k]
                    if clock == "wall" and pause > 0:
                        time.sleep(pause)
                        t0 = time.perf_counter()
                        while time.perf_counter() - t0 < 0.01:
                            fn()
                    else:
                        fn()
                    if flush is not None:  # each call timed after evicting the caches
                        spent = 0.0
                        for _ in range(reps):
                            flush.add_(1.0)
                            t = now()
                            fn()
                            spent += now() - t
                        times[k].append(spent / reps * 1e6)
                        continue
                    t = now()
                    for _ in range(reps):
                        fn()
                    times[k].append((now() - t) / reps * 1e6)
            ratio = lambda a, b: percentiles([x / y for x, y in zip(times[a], times[b])])  # noqa: E731
            row = {"model": name, "threads": threads, "clock": clock, "rounds": rounds, "reps": reps,
                   "flush_mb": flush_mb,
                   "us": {k: percentiles(v) for k, v in times.items()},
                   "fp32_plan/vm": ratio("fp32_plan", "fp32_vm"),
                   "int8_plan/vm": ratio("int8_plan", "int8_vm"),
                   "int8/fp32_vm": ratio("int8_vm", "fp32_vm"),
                   "int8/fp32_plan": ratio("int8_plan", "fp32_plan"),
                   "load": os.getloadavg()}
            rows.append(row)
            us = row["us"]
            print(f"{name} {threads}t {clock}: " + " ".join(f"{k} {us[k]['median']:.1f} [{us[k]['p10']:.1f}-{us[k]['p90']:.1f}]"
                                         for k in cols) + " us", flush=True)
            for k in ("fp32_plan/vm", "int8_plan/vm", "int8/fp32_vm", "int8/fp32_plan"):
                print(f"  {k:15s} median {row[k]['median']:.3f}  p10-p90 {row[k]['p10']:.3f}-{row[k]['p90']:.3f}")
            print("  load", row["load"], flush=True)
    return rows


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="resnet20,mobilenet_v2")
    p.add_argument("--kinds", default="fp32,int8")
    p.add_argument("--rounds", type=int, default=40)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--threads", default="2", help="comma list, e.g. 1,2")
    p.add_argument("--ab", action="store_true", help="plan runner vs VM (see the docstring)")
    p.add_argument("--clock", default="wall", choices=["wall", "cpu"], help="--ab's clock")
    p.add_argument("--pause", type=float, default=PAUSE_S / 6,
                   help="--ab: seconds of pause (then 10 ms of untimed calls) before each block; "
                        "0: one untimed call, blocks back to back (all columns share one pool)")
    p.add_argument("--flush-mb", type=int, default=0,
                   help="--ab: write this many MB before each timed call (cold caches)")
    args = p.parse_args()
    if args.ab:
        rows = ab(args.models.split(","), args.rounds, args.reps, args.clock, int(args.threads),
                  args.pause, args.flush_mb)
        os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
        suffix = ("" if args.clock == "wall" else "_cpu") + ("_nopause" if not args.pause else "") \
            + (f"_flush{args.flush_mb}" if args.flush_mb else "")
        with open(os.path.join(ROOT, "bench", "results", f"vm_overhead_ab{suffix}.json"), "w") as f:
            json.dump({"rows": rows}, f, indent=1)
        return 0
    from edgecc.targets.tvm.runner import use_threads

    rows = []
    with tempfile.TemporaryDirectory() as d:
        for name in args.models.split(","):
            for kind in args.kinds.split(","):
                res, inputs = build(name, kind, os.path.join(d, f"{name}_{kind}"), THREADS)
                ops = collections.Counter(s for _, s, _ in kernel_calls(res._runner, inputs))
                fns, calls = columns(res, inputs)
                for threads in map(int, args.threads.split(",")):
                    res._runner.num_threads = threads
                    use_threads(threads)
                    m = measure(fns, calls, args.rounds, args.reps)
                    row = {"model": name, "kind": kind, "threads": threads,
                           "instructions": sum(ops.values()), "kernel_calls": len(calls),
                           "ops": dict(ops), **m}
                    rows.append(row)
                    print(f"{name:13s} {kind} {threads}t instr {row['instructions']:4d} "
                          f"kernels {len(calls):3d} | runner {m['runner']['median']:7.1f} "
                          f"vm {m['vm']['median']:7.1f} replay {m['replay']['median']:7.1f} "
                          f"sum {m['sum']['median']:7.1f} us | runner-vm "
                          f"{m['runner-vm_us']['median']:5.1f} vm-sum {m['vm-sum_us']['median']:5.1f}",
                          flush=True)
    load = os.getloadavg()
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", "vm_overhead.json"), "w") as f:
        json.dump({"load": load, "rounds": args.rounds, "reps": args.reps, "rows": rows}, f, indent=1)
    print("load", load)
    return 0


if __name__ == "__main__":
    sys.exit(main())
