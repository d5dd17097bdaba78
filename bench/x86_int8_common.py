"""Setup shared by the int8 A/B benches (bench/x86_int8_*.py).

``build_pair``: a CNN of bench/tvm_cpu.py compiled twice in one process, fp32 and w8a8 with the
integer kernels (the builds bench/x86_int8_ab.py and bench/x86_int8_e2e.py compare);
``build_int8``: the w8a8 build alone, run once (the in-place benches' setup).
``write_result``: a bench's JSON written (its folder made) and said. ``same_outputs`` and
``knob_columns``: a build's outputs compared bit for bit, and one callable per column of
library knob settings after checking every column gives the same outputs.
``build_depthwise`` and ``depthwise_ab``: single int8 depthwise layers (one ``emit_depthwise``
per VM function) and their per-layer A/B of library knobs, interleaved in one process, outputs
checked equal across the columns first (bench/x86_int8_dw.py, bench/x86_int8_dwrows.py).
``per_call_summary``: a model's per-call times under knob columns as its JSON row (each call's
median and paired ratio to ``default``, the summed calls' p10 / p50 / p90 ratio), as
bench/x86_int8_calls_ab.py and bench/x86_int8_inplace.py report them.
"""

from __future__ import annotations

import ctypes
import json
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from typing import Any

# the int8 kernels' path counters on (read as each library loads), as these benches read
# them; bench/tvm_cpu.py runs the kernels as users do, without
os.environ.setdefault("EDGECC_KERNEL_COUNTERS", "1")

from bench.host import THREADS  # noqa: E402
from bench.tvm_cpu import (  # noqa: E402
    calibration, interleaved_times, median_p10, models, round_block)

PIPELINES = {"fp32": ("fold-batchnorm,fuse,dce", {}),
             "int8": ("fold-batchnorm,quantize{scheme=w8a8},fuse,dce", {"integer_kernels": True})}


def percentile(xs, q):
    """The ``q`` quantile of ``xs`` (nearest rank; nan when empty)."""
    xs = sorted(xs)
    return xs[int(q * (len(xs) - 1) + 0.5)] if xs else float("nan")


def per_call_summary(model: str, shape: str, threads: int, calls, times: dict, rounds: int
                     ) -> dict:
    """``times[column][call]``: one time (us) per round for each of the VM's ``calls``
    ((function, symbol, arguments), ``bench.vm_calls.kernel_calls``); ``default`` among the
    columns. The JSON row: per call its medians and median paired ratio to ``default``, and
    the sum over calls per round, its median and the p10 / p50 / p90 of its paired ratio."""

    names = list(times)
    rows = []
    for i, (_, symbol, args) in enumerate(calls):
        rows.append({"call": symbol.replace("edgecc_x86_", "")
                     + str(tuple(getattr(args[0], "shape", ()))),
                     "us": {c: statistics.median(times[c][i]) for c in names},
                     "vs_default": {c: statistics.median(
                         a / b for a, b in zip(times[c][i], times["default"][i]))
                         for c in names}})
    sums = {c: [sum(times[c][i][r] for i in range(len(calls))) for r in range(rounds)]
            for c in names}
    return {"model": model, "input": shape, "threads": threads,
            "load_average": os.getloadavg()[0], "calls": rows,
            "sum_us": {c: statistics.median(sums[c]) for c in names},
            "sum_vs_default": {c: [percentile([a / b for a, b in zip(sums[c], sums["default"])], q)
                                   for q in (0.1, 0.5, 0.9)] for c in names}}


def replay(calls: list, reps: int) -> list[float]:
    """One warm, untimed sequence of a VM's kernel calls (``bench.vm_calls.kernel_calls``), then
    ``reps`` timed ones, each call timed in place in the VM's order: each call's median us."""
    clock = time.perf_counter
    for fn, _, args in calls:
        fn(*args)
    got = [[] for _ in calls]
    for _ in range(reps):
        for i, (fn, _, args) in enumerate(calls):
            start = clock()
            fn(*args)
            got[i].append((clock() - start) * 1e6)
    return [statistics.median(g) for g in got]


def write_result(path: str, payload: dict) -> None:
    """``payload`` as indented JSON at ``path`` (its folder made first), then "wrote path"."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "w") as f:
        json.dump(payload, f, indent=2)
    print(f"wrote {path}")


def same_outputs(a, b) -> bool:
    """Whether two runs' outputs (a tensor or a tuple of them) are equal bit for bit."""
    a = a if isinstance(a, (list, tuple)) else [a]
    b = b if isinstance(b, (list, tuple)) else [b]
    return all((x.numpy() == y.numpy()).all() for x, y in zip(a, b))


def knob_columns(built: dict, inputs, columns, setting) -> dict:
    """Per column: a callable that applies the column's knobs (``setting(col)``) and runs
    ``built["int8"]``; plus ``"fp32"``, the fp32 build. Asserts first that every column's
    outputs equal the first run's bit for bit."""
    reference = built["int8"].run(*inputs)
    for col in columns:
        setting(col)
        assert same_outputs(built["int8"].run(*inputs), reference), col

    def run(col):
        def go():
            setting(col)
            built["int8"].run(*inputs)
        return go

    fns = {col: run(col) for col in columns}
    fns["fp32"] = lambda: built["fp32"].run(*inputs)
    return fns


def build_pair(name: str, directory: str):
    """Compile model ``name`` as fp32 and as w8a8 (integer kernels) under ``directory``.

    Returns ``(inputs, shape, {"fp32": result, "int8": result})``, each result run once."""
    make, inputs, shape = models()[name]
    module = make().eval()
    calib = calibration(inputs)
    built = {label: compile_run(module, inputs, calib, label, directory)[0]
             for label in PIPELINES}
    return inputs, shape, built


def build_int8(name: str, directory: str):
    """Compile model ``name`` as w8a8 with the integer kernels (``build_pair``'s ``int8``)
    under ``directory`` and run it once: ``(inputs, shape, result, outputs)`` (the outputs:
    the reference the benches' knob columns are checked against)."""
    make, inputs, shape = models()[name]
    res, outputs = compile_run(make().eval(), inputs, calibration(inputs), "int8", directory)
    return inputs, shape, res, outputs


def compile_run(module, inputs, calib, label: str, directory: str):
    """``module`` compiled as ``label`` (``PIPELINES``) at ``THREADS`` under ``directory``
    and run once on ``inputs``: ``(result, outputs)``."""
    import torch

    import edgecc

    pipeline, options = PIPELINES[label]
    with torch.no_grad():
        res = edgecc.compile(module, "host", example_inputs=inputs, pipeline=pipeline,
                             calibration=calib, output_dir=os.path.join(directory, label),
                             progress=False, target_options={"num_threads": THREADS, **options})
        return res, res.run(*inputs)


def paired_spread(times: dict, a: str, b: str, repeats: int) -> list:
    """The 10th, 50th and 90th percentile over rounds of a's round median / b's round median
    (the rounds ``bench.tvm_cpu.paired_ratio`` pairs; medians, not its means: one preempted
    call in a round of a few moved a mean ratio by 10-30% on a loaded machine)."""

    block = round_block(repeats)
    xa, xb = times[a], times[b]
    ratios = sorted(statistics.median(xa[r * block:(r + 1) * block])
                    / statistics.median(xb[r * block:(r + 1) * block])
                    for r in range(min(len(xa), len(xb)) // block))
    if not ratios:
        return [float("nan")] * 3
    return [ratios[int(q * (len(ratios) - 1) + 0.5)] for q in (0.1, 0.5, 0.9)]


def build_depthwise(rng, layers):
    """One VM function ``f<i>`` per ``(channels, h, w, stride)`` layer: a 3x3 pad-1 int8
    depthwise with random weights and requantization. Returns ``(CDLL, vm, inputs)``."""
    from tvm import relax

    from edgecc.targets.tvm import x86_int8
    from tests.targets.tvm.int8_cases import build_and_load, random_int8, random_requant

    bb = relax.BlockBuilder()
    inputs = []
    for i, (c, h, w, s) in enumerate(layers):
        x = relax.Var("x", relax.TensorType([1, c, h, w], "int8"))
        with bb.function(f"f{i}", [x]):
            with bb.dataflow():
                out = bb.emit_output(x86_int8.emit_depthwise(
                    bb, x, random_int8(rng, c, 1, 3, 3), -3, [s, s], [1, 1], [1, 1],
                    random_requant(rng, c)))
            bb.emit_func_output(out)
        inputs.append(random_int8(rng, 1, c, h, w))
    path = os.path.join(tempfile.mkdtemp(), "dw.so")
    _, vm = build_and_load(bb.get().with_attr("external_mods", [x86_int8.external_module()]),
                           path)
    return ctypes.CDLL(path), vm, inputs


@dataclass(frozen=True)
class DepthwiseAB:
    """What a per-layer depthwise A/B compares and how it reports it."""

    columns: dict          # {column: {knob: value}}; knobs not named are set to 1
    counter: str           # the library's call counter of the path under test
    path_key: str          # row key: whether that path ran on the layer
    path_label: str        # its table header
    ratio: tuple           # (numerator column, denominator column) for the sums' ratio
    ratio_label: str       # e.g. "dw_rows/dw_perm"
    benchmark: str         # the JSON's "benchmark"
    calls: int = 50        # VM calls per timed sample


def depthwise_ab(spec: DepthwiseAB, layers, repeats: int, output: str) -> list:
    """Time each layer under each column (1 thread: thread CPU time; THREADS: wall clock),
    interleaved; print the table, write ``output``; return the rows."""
    import numpy as np
    import tvm

    lib, vm, inputs = build_depthwise(np.random.default_rng(0), layers)
    cols = spec.columns
    knobs = {n: ctypes.c_int64.in_dll(lib, n) for col in cols.values() for n in col}
    threads = ctypes.c_int32.in_dll(lib, "edgecc_pool_threads")
    counter = ctypes.c_int64.in_dll(lib, spec.counter)

    def setting(col):
        for n, k in knobs.items():
            k.value = cols[col].get(n, 1)

    rows = []
    for i, (c, h, w, s) in enumerate(layers):
        f, x = vm[f"f{i}"], tvm.runtime.tensor(inputs[i])
        outs = {}
        for col in cols:
            setting(col)
            before = counter.value
            outs[col] = f(x).numpy()
            outs[col + " path"] = counter.value - before
        for col in cols:  # bit-identical across the switches
            np.testing.assert_array_equal(outs[col], outs["built"], err_msg=col)

        def timed(col):
            def go():
                setting(col)
                for _ in range(spec.calls):
                    f(x)
            return go

        row = {"layer": f"{c}@{h}x{w} s{s}", spec.path_key: outs["built path"] == 1}
        for t, clock in ((1, "cpu"), (THREADS, "wall")):
            threads.value = t
            times = interleaved_times({col: timed(col) for col in cols}, repeats, clock=clock)
            row[f"{t}t_us"] = {col: m["median_ms"] * 1e3 / spec.calls
                               for col, m in median_p10(times).items()}
        threads.value = 0
        setting("built")
        rows.append(row)
    print(f"{'layer':<16} {spec.path_label:>5} " + " ".join(
        f"{t}t {col:>9}" for t in (1, THREADS) for col in cols) + "   (us a VM call)")
    for r in rows:
        print(f"{r['layer']:<16} {str(r[spec.path_key]):>5} " + " ".join(
            f"{r[f'{t}t_us'][col]:12.2f}" for t in (1, THREADS) for col in cols))
    sums = {f"{t}t": {col: sum(r[f"{t}t_us"][col] for r in rows) for col in cols}
            for t in (1, THREADS)}
    num, den = spec.ratio
    for t, v in sums.items():
        print(f"sum {t}: " + ", ".join(f"{col} {us:.2f}" for col, us in v.items())
              + f"  ({spec.ratio_label} {v[num] / v[den]:.3f}x)")
    print(f"1t: thread CPU time, {THREADS}t: wall; medians of {repeats} interleaved "
          f"samples of {spec.calls} calls; load {os.getloadavg()[0]:.1f}")
    os.makedirs(os.path.dirname(output), exist_ok=True)
    with open(output, "w") as fh:
        json.dump({"benchmark": spec.benchmark, "repeats": repeats,
                   "calls_per_sample": spec.calls, "threads": THREADS,
                   "load_average": os.getloadavg()[0], "rows": rows, "sums_us": sums}, fh, indent=2)
    print(f"wrote {output}")
    return rows


def spread(values: list[float]) -> dict:
    """Median, p10 and p90 of paired ratios (one a round)."""
    q = statistics.quantiles(values, n=10) if len(values) > 1 else values * 9
    return {"median": statistics.median(values), "p10": q[0], "p90": q[-1],
            "rounds": len(values)}


def time_builds(row: dict, fns: dict, pools: list, repeats: int, wall: bool, base: str,
                extra: Any = None) -> None:
    """Time ``fns`` (name -> one run) interleaved at 1 thread (the caller's CPU time: every
    ``pools`` entry, a library's ``edgecc_pool_threads``, set to 1) and with ``wall`` at
    THREADS (wall clock); into ``row[f"{t}t"]``: medians, paired ratios against ``base``
    (``vs_<base>``) and ``extra(times)``'s entries, with the load average before and after."""
    import torch

    from bench.tvm_cpu import paired_ratios

    settings = [(1, "cpu")] + ([(THREADS, "wall")] if wall else [])
    threads0 = [p.value for p in pools]
    try:
        for t, clock in settings:
            for p, v in zip(pools, threads0):
                p.value = 1 if t == 1 else v
            row[f"load_average_{t}t"] = os.getloadavg()[0]
            with torch.no_grad():
                times = interleaved_times(fns, repeats, clock=clock)
            row[f"{t}t"] = {"clock": clock,
                            "median_ms": {k: statistics.median(v) for k, v in times.items()},
                            f"vs_{base}": {k: spread(paired_ratios(times, k, base, repeats))
                                           for k in fns if k != base},
                            **(extra(times) if extra is not None else {})}
            row[f"load_average_{t}t_end"] = os.getloadavg()[0]
    finally:
        for p, v in zip(pools, threads0):
            p.value = v


def knob_runs(builds: dict, inputs: tuple, knob: Any) -> Any:
    """``run(key, on=1)``: a callable running build ``key`` on ``inputs`` with the library
    knob ``knob`` (a ``ctypes`` int64) set to ``on`` first (the builds' A/B columns)."""
    def run(key: str, on: int = 1) -> Any:
        res = builds[key]

        def go() -> None:
            knob.value = on
            res.run(*inputs)
        return go
    return run
