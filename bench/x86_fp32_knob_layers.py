"""One (or several) int32/int64 fp32 kernel knobs A/B'd layer by layer inside the model's own
run, one thread: each CNN built once (fp32, 1 thread), then run with the knobs at ``off``
and ``on`` in turn (the order flipped every round), each call's thread CPU time stamped by a
VM instrument (``bench/x86_fp32_profile.py``'s method), the minimum over rounds per call
(the least disturbed by other processes on a shared machine). In the model, unlike a kernel
called alone, each layer's input comes from where the previous layer left it (L2 or memory):
MobileNetV2-224's 112-wide depthwise planes ran faster alone in row blocks but slower in
the model. Depthwise layers and convolutions are listed by shape, the rest summed. Prints a table and writes
``bench/results/x86_fp32_knob_layers.json``.

    python bench/x86_fp32_knob_layers.py --knob edgecc_x86_fp32_dw_rows,edgecc_x86_fp32_dw_flat
                                         [--off 0] [--on 1] [--models mobilenet_v2] [--rounds 40]
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import sys
import tempfile
import time
import warnings

os.environ["TVM_NUM_THREADS"] = "1"  # before TVM's pool starts
os.environ["OMP_NUM_THREADS"] = "1"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
warnings.filterwarnings("ignore")

from bench.x86_fp32_knob import knob_ctype  # noqa: E402


def layer_key(symbol: str, args) -> str:
    if symbol == "edgecc_x86_sdwconv":
        m = [int(v) for v in args[3].numpy()]
        return f"depthwise {m[1]} s{m[6]} @{m[2]}"
    if symbol == "edgecc_x86_sconv":
        m = [int(v) for v in args[3].numpy()]
        return f"conv {m[5]}x{m[6]} s{m[7]} {m[1]}->{m[4]} @{m[2]}"
    return "other layers"


def measure(name: str, symbols: list[str], types: list, off: int, on: int,
            rounds: int) -> dict:
    """Per layer group: min thread-CPU us over rounds with the knobs off / on; and the whole
    call's (min and median)."""
    import torch

    import edgecc
    from bench.tvm_cpu import models
    from bench.vm_calls import kernel_calls

    make, inputs, _ = models()[name]
    with tempfile.TemporaryDirectory() as d, torch.no_grad():
        res = edgecc.compile(make().eval(), "host", example_inputs=inputs,
                             output_dir=os.path.join(d, "o"), progress=False,
                             target_options={"num_threads": 1})
        res.run(*inputs)
    library = ctypes.CDLL(res._runner.library)  # the runner's copy
    knobs = [t.in_dll(library, s) for s, t in zip(symbols, types)]
    defaults = [k.value for k in knobs]
    runner = res._runner
    calls = [c for c in kernel_calls(runner, inputs) if not c[1].startswith("vm.builtin")]
    stamps: list[float] = []

    def stamp(func, symbol, before, _ret, *args):
        if not str(symbol).startswith("vm.builtin"):
            stamps.append(time.thread_time())
        return 0

    per = {v: [[] for _ in calls] for v in (off, on)}
    whole: dict[int, list[float]] = {off: [], on: []}
    try:
        with torch.no_grad():
            for r in range(rounds):
                for v in ((off, on) if r % 2 else (on, off)):
                    for k in knobs:
                        k.value = v
                    res.run(*inputs)
                    t = time.thread_time()
                    res.run(*inputs)
                    whole[v].append(time.thread_time() - t)
                    stamps.clear()
                    runner.vm.set_instrument(stamp)
                    try:
                        res.run(*inputs)
                    finally:
                        runner.vm.set_instrument(None)
                    for i in range(len(calls)):
                        per[v][i].append(stamps[2 * i + 1] - stamps[2 * i])
    finally:
        for k, v in zip(knobs, defaults):
            k.value = v
    groups: dict[str, dict[str, float]] = {}
    for i, (_, symbol, args) in enumerate(calls):
        g = groups.setdefault(layer_key(symbol, args), {"off_us": 0.0, "on_us": 0.0, "n": 0})
        g["off_us"] += min(per[off][i]) * 1e6
        g["on_us"] += min(per[on][i]) * 1e6
        g["n"] += 1
    return {"model": name, "load_average": os.getloadavg()[0], "layers": groups,
            "whole": {str(v): {"min_us": min(ts) * 1e6,
                               "median_us": sorted(ts)[len(ts) // 2] * 1e6}
                      for v, ts in whole.items()}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--knob", required=True, help="the library global(s) to move: a,b")
    parser.add_argument("--off", type=int, default=0)
    parser.add_argument("--on", type=int, default=1)
    parser.add_argument("--models", default="mobilenet_v2")
    parser.add_argument("--rounds", type=int, default=40)
    parser.add_argument("--ctype", choices=("int32", "int64"), default="int32",
                        help="the knobs' C type when end_to_end.KNOBS does not list them")
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "x86_fp32_knob_layers.json"))
    args = parser.parse_args()
    symbols = args.knob.split(",")
    types = [knob_ctype(s, args.ctype) for s in symbols]
    rows = [measure(m, symbols, types, args.off, args.on, args.rounds)
            for m in args.models.split(",")]
    for r in rows:
        print(f"\n{r['model']}: 1 thread, min thread-CPU us over {args.rounds} rounds in the "
              f"run, {args.knob} = {args.off} / {args.on} (load {r['load_average']:.1f})")
        print(f"{'layers':<28}{'n':>4}{'off':>11}{'on':>11}{'on/off':>8}")
        for key in sorted(r["layers"], key=lambda k: (k == "other layers", k)):
            g = r["layers"][key]
            print(f"{key:<28}{g['n']:>4}{g['off_us']:11.1f}{g['on_us']:11.1f}"
                  f"{g['on_us'] / g['off_us']:7.2f}x")
        w_off, w_on = r["whole"][str(args.off)], r["whole"][str(args.on)]
        print(f"{'whole call (min)':<32}{w_off['min_us']:11.1f}{w_on['min_us']:11.1f}"
              f"{w_on['min_us'] / w_off['min_us']:7.2f}x")
        print(f"{'whole call (median)':<32}{w_off['median_us']:11.1f}{w_on['median_us']:11.1f}"
              f"{w_on['median_us'] / w_off['median_us']:7.2f}x")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"benchmark": f"fp32 knob {args.knob} per layer in the model, 1 thread",
                   "knobs": symbols, "off": args.off, "on": args.on, "rounds": args.rounds,
                   "rows": rows}, f, indent=2)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
