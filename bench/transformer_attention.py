"""The fp32 transformers' attention calls alone, A/B by a kernel knob, in one process: each
model's fp32 host build (``bench.pool_common.build``), its ``edgecc_x86_attention`` calls
(``bench.vm_calls.kernel_calls``) re-run with the arguments the VM passed them, the knob
``edgecc_x86_attention_prefetch`` (or ``--knob``) set to each value in turn, interleaved
rounds, paired ratios (median and 10th-90th percentile) to the first value; the model's
outputs compared bit for bit across values. ``--whole``: the whole model too; ``--serial``:
every pool job on the calling thread, timed by its CPU time (1 thread: what the load leaves
of the wall clock does not count). Prints a table, writes
``bench/results/transformer_attention.json``.

    python bench/transformer_attention.py [--models minilm,bert,gpt2] [--variants 0,1]
                                          [--rounds 30] [--whole] [--serial] [--knob NAME]
    python bench/transformer_attention.py --knob edgecc_x86_linear_prefetch,edgecc_x86_linear_panel_prefetch \
        --variants 2:0,1:8 --whole  (two knobs, a variant per pair of values)
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import statistics
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.host import THREADS  # noqa: E402,F401  (sets TVM_NUM_THREADS before TVM starts)
from bench.vm_calls import kernel_calls  # noqa: E402

KNOB = "edgecc_x86_attention_prefetch"


def _quantiles(xs):
    xs = sorted(xs)
    return (statistics.median(xs), xs[len(xs) // 10], xs[(len(xs) * 9) // 10])


class _Knobs:
    """One int64 knob of the library, or several (``--knob A,B``: a variant ``a:b`` sets
    A to a and B to b), set and read as one ``value``."""

    def __init__(self, lib, names: str) -> None:
        self.vars = [ctypes.c_int64.in_dll(lib, n) for n in names.split(",")]

    @property
    def value(self):
        values = tuple(v.value for v in self.vars)
        return values[0] if len(values) == 1 else values

    @value.setter
    def value(self, values) -> None:
        values = values if isinstance(values, tuple) else (values,)
        assert len(values) == len(self.vars), values
        for var, v in zip(self.vars, values):
            var.value = v


def _variant(text: str):
    """``3`` -> 3; ``2:0`` -> (2, 0) (one value per knob of ``--knob A,B``)."""
    return tuple(int(v) for v in text.split(":")) if ":" in text else int(text)


def measure(name: str, variants: list, rounds: int, whole: bool, serial: bool,
            knob_name: str = KNOB) -> dict:
    import numpy as np

    from bench.pool_common import build

    built = build(name)
    runner, inputs = built.res._runner, built.inputs
    lib = ctypes.CDLL(runner.library, mode=os.RTLD_NOLOAD | os.RTLD_LOCAL)
    knob = _Knobs(lib, knob_name)
    default = knob.value
    # --serial: every pool job on the calling thread, timed by its CPU time (what the call
    # costs one thread, not what the load leaves of the wall clock)
    ctypes.c_int64.in_dll(lib, "edgecc_x86_serial_work_log2").value = 63 if serial else 0
    clock = time.thread_time if serial else time.perf_counter
    calls = [c for c in kernel_calls(runner, inputs) if c[1] == "edgecc_x86_attention"]

    def attention():
        for func, _, a in calls:
            func(*a)

    outputs = {}  # the whole model's outputs (a replayed call's buffers may be another's)
    for v in variants:
        knob.value = v
        out = runner.run(*inputs)
        outputs[v] = [np.array(o.numpy(), copy=True) for o in out]
    knob.value = variants[0]
    identical = {v: all(np.array_equal(x, y) for x, y in zip(outputs[variants[0]], outputs[v]))
                 for v in variants}
    err = {v: max(float(np.max(np.abs(x - y) / (np.abs(x) + 1e-30)))
                  for x, y in zip(outputs[variants[0]], outputs[v])) for v in variants}
    parts = {"attention": attention}
    if whole:
        parts["whole"] = lambda: runner.run(*inputs)
    times = {(p, v): [] for p in parts for v in variants}
    for r in range(rounds):
        order = variants if r % 2 == 0 else variants[::-1]
        for p, fn in parts.items():
            for v in order:
                knob.value = v
                fn()
                t = clock()
                fn()
                times[(p, v)].append((clock() - t) * 1e3)
    knob.value = default
    row = {"model": name, "knob": knob_name, "serial": serial, "load": os.getloadavg()[0],
           "rounds": rounds,
           "attention_calls": len(calls),
           "bit_identical": {str(v): same for v, same in identical.items()},
           "max_rel_err": {str(v): e for v, e in err.items()},
           "parts": {}}
    for p in parts:
        base = times[(p, variants[0])]
        for v in variants:
            ratio = _quantiles([b / a for a, b in zip(base, times[(p, v)])])
            row["parts"][f"{p}:{v if isinstance(v, int) else ':'.join(map(str, v))}"] = {"median_ms": statistics.median(times[(p, v)]),
                                        "ratio": ratio}
            print(f"{name:8s} {p:10s} variant {v}: {statistics.median(times[(p, v)]):8.3f} ms"
                  f"  ratio {ratio[0]:.3f} ({ratio[1]:.3f}-{ratio[2]:.3f})"
                  f"  identical {identical[v]} err {err[v]:.2e}")
    print(f"  load {row['load']:.2f}")
    return row


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--models", default="minilm")
    p.add_argument("--variants", default="0,1")
    p.add_argument("--knob", default=KNOB, help="the int64 knob the variants set (A,B: "
                   "two, each variant a:b)")
    p.add_argument("--rounds", type=int, default=30)
    p.add_argument("--whole", action="store_true")
    p.add_argument("--serial", action="store_true",
                   help="every job on the calling thread, its CPU time (1 thread)")
    p.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                     "transformer_attention.json"))
    args = p.parse_args()
    variants = [_variant(v) for v in args.variants.split(",")]
    rows = [measure(m, variants, args.rounds, args.whole, args.serial, args.knob)
            for m in args.models.split(",")]
    with open(args.output, "w") as f:
        json.dump(rows, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
