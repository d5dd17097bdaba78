"""A/B of an ``x86_linear.LinearOptions`` flag on whole fp32 transformers: the default build
against the same build with the flag off — ``--option merge_qkv`` (the default:
``x86_linear_qkv``, an attention's q / k / v linears as one call, against three calls) or
``--option dedupe`` (``x86_attention.DEDUPE`` flipped for the "off" build: each layer's copy of
the mask ops removed or not), or
``--option none`` (two default builds: the A/A spread) — timed interleaved in one process (``bench.tvm_cpu.interleaved_times``): 2
threads by the wall clock, or with ``--cpu`` 1-thread builds by the calling thread's CPU time;
paired ratios (median over rounds, and the 10th / 90th percentiles). Outputs are checked equal
bit for bit. ``--knob NAME=VALUE`` adds the default build with that int64 kernel knob set for
its calls (e.g. ``edgecc_x86_linear_group_bytes=0``). Say the machine's load with the numbers.

    python bench/transformer_qkv.py [--models minilm,bert] [--repeats 20] [--cpu]
                                    [--option merge_qkv|dedupe|none]
                                    [--knob edgecc_x86_linear_group_bytes=0]

Prints a table and writes ``bench/results/transformer_qkv[_<option>][_cpu].json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.transformer_linear import _first, _knobbed  # noqa: E402
from bench.tvm_cpu import interleaved_times, median_p10, models  # noqa: E402

import edgecc  # noqa: E402
from edgecc.targets.tvm import x86_attention, x86_linear  # noqa: E402

_APPLY = x86_linear.apply


def build(module, inputs, threads: int, off: str = ""):
    """A build with ``x86_linear``'s option ``off`` set to False (``dedupe``:
    ``x86_attention.DEDUPE``; none: the default)."""
    linear_off = off if off not in ("", "dedupe", "none") else ""  # none: an A/A run
    options = x86_linear.LinearOptions(**({linear_off: False} if linear_off else {}))
    x86_linear.apply = lambda m, library=True, o=None: _APPLY(m, library, options)
    default = x86_attention.DEDUPE
    x86_attention.DEDUPE = not default if off == "dedupe" else default
    try:
        with tempfile.TemporaryDirectory() as d:
            res = edgecc.compile(module, "host", example_inputs=inputs, pipeline=None,
                                 output_dir=os.path.join(d, "o"), progress=False,
                                 target_options={"num_threads": threads})
            res.run(*inputs)
    finally:
        x86_linear.apply = _APPLY
        x86_attention.DEDUPE = default
    return res


def paired(times: dict, a: str, b: str) -> dict:
    """Median, 10th and 90th percentile of the per-round ratios a / b."""
    ratios = sorted(x / y for x, y in zip(times[a], times[b]))
    n = len(ratios)
    return {"median": ratios[n // 2], "p10": ratios[n // 10], "p90": ratios[(9 * n) // 10]}


def main() -> int:
    import numpy as np
    import torch

    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="minilm,bert")
    ap.add_argument("--repeats", type=int, default=20)
    ap.add_argument("--cpu", action="store_true", help="1-thread builds, CPU time")
    ap.add_argument("--knob", action="append", default=[], help="NAME=VALUE on the default build")
    ap.add_argument("--option", default="merge_qkv", help="the LinearOptions flag to turn off")
    args = ap.parse_args()
    threads = 1 if args.cpu else 2
    torch.set_num_threads(1)
    table = {"threads": threads, "clock": "cpu" if args.cpu else "wall",
             "load_before": os.getloadavg(), "models": {}}
    table["option"] = args.option
    print(f"{'model':8s} {'off ms':>9s} {'on ms':>9s} {'on/off (p10, p90)':>24s}  "
          f"({args.option})")
    for name in args.models.split(","):
        make, inputs, _ = models()[name]
        module = make().eval()
        with torch.no_grad():
            res = {"off": build(module, inputs, threads, args.option),
                   "on": build(module, inputs, threads)}
        stats = res["on"].report["lowering"]["x86_attention"]
        same = bool(np.array_equal(_first(res["off"].run(*inputs)),
                                   _first(res["on"].run(*inputs))))
        fns = {k: (lambda r=r: r.run(*inputs)) for k, r in res.items()}
        for knob in args.knob:
            key, value = knob.split("=")
            fns[f"on {knob}"] = _knobbed(res["on"], inputs, int(value), key)
        times = interleaved_times(fns, args.repeats, clock="cpu" if args.cpu else "wall")
        st = median_p10(times)
        row = {"stats": st, "bit_identical": same, "qkv_merged": stats.get("qkv_merged"),
               "deduped": stats.get("deduped"),
               "on/off": paired(times, "on", "off")}
        r = row["on/off"]
        print(f"{name:8s} {st['off']['median_ms']:9.2f} {st['on']['median_ms']:9.2f} "
              f"{r['median']:9.3f} ({r['p10']:.3f}, {r['p90']:.3f})  merged {stats.get('qkv_merged')} deduped {stats.get('deduped')}"
              f" bit-identical {same}", flush=True)
        for knob in args.knob:
            key = f"on {knob}"
            row[f"{key}/on"] = r = paired(times, key, "on")
            print(f"{'':8s} {knob}: {st[key]['median_ms']:.2f} ms, {r['median']:.3f}x "
                  f"({r['p10']:.3f}, {r['p90']:.3f}) of the default (paired)", flush=True)
        table["models"][name] = row
    table["load_after"] = os.getloadavg()
    suffix = ("" if args.option == "merge_qkv" else f"_{args.option}") + \
        ("_cpu" if args.cpu else "")
    out = os.path.join(ROOT, "bench", "results", f"transformer_qkv{suffix}.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump(table, f, indent=1)
    print(f"load {table['load_before'][0]:.1f} -> {table['load_after'][0]:.1f}; wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
