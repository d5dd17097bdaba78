"""Where a CNN's fp32 time goes, one thread, edgecc against onnxruntime layer by layer:
edgecc's default host build (every VM call, timed in the calling thread's CPU time) and
onnxruntime's per-node profiler (same model, ``intra_op_num_threads=1``), both as the minimum
over rounds so other processes' load counts as little as it can (a per-call minimum is
optimistic: the sum of layers is below a typical whole call, most for the memory-bound
layers of MobileNetV2-224). Layers are grouped by kind (stem conv, 3x3 stride 1 / 2, 1x1, depthwise,
linear, TVM-generated ops, onnxruntime's layout reorders, ...) and, within a kind, by shape.

    python bench/x86_fp32_profile.py [--models resnet20,mobilenet_v2,mobilenet_v2_224]
                                     [--rounds 15] [--detail] [--winograd 0|1]

``--winograd 0`` / ``1``: the library's ``edgecc_x86_fp32_winograd`` set to it (0: the direct
same-size 3x3 paths); by default left as linked (1: Winograd F(2x2, 3x3), the default build's
path; before this option took a value, the script set 0 unless ``--winograd`` was given).

edgecc's layers are timed in the VM's own run (a VM instrument stamps the thread's CPU time
before and after each call: the column includes the instrument's return, ~1-2 us a call) and
alone (re-run with the same arguments: warm caches, the ``alone`` column).

Also the whole call, one thread, CPU time (edgecc's ``CompileResult.run`` and onnxruntime's
session, min over rounds): ``whole - sum of layers`` is what runs around the layers (the VM,
the Python call; onnxruntime's session) plus the per-call minimum's optimism. onnxruntime's
NCHWc graph pads channels to multiples of 16 (12 -> 16, 72 -> 80): its shapes say so. Prints a table per model and writes
``bench/results/x86_fp32_profile.json``. Not a timed test: the machine's load matters, say so.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import warnings
from collections import defaultdict

os.environ["TVM_NUM_THREADS"] = "1"  # before TVM's pool starts
os.environ["OMP_NUM_THREADS"] = "1"
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

warnings.filterwarnings("ignore")

CNNS = "resnet20,mobilenet_v2,mobilenet_v2_224"


def conv_kind(c: int, oc: int, kh: int, stride: int, depthwise: bool) -> str:
    if depthwise:
        return f"depthwise {kh}x{kh} s{stride}"
    if c <= 4:
        return "stem conv"
    return f"{kh}x{kh} conv s{stride}"


def edgecc_layers(res, inputs, rounds: int) -> tuple[list[dict], float]:
    """Per VM call of one run: kind, shape key, min thread-CPU us; and the whole call's."""
    from bench.vm_calls import kernel_calls
    from edgecc.targets.tvm.runner import tvm_tensor

    runner = res._runner
    calls = kernel_calls(runner, inputs)
    rows = []
    for func, sym, args in calls:
        if sym.startswith("vm.builtin"):
            continue
        row = {"symbol": sym}
        if sym == "edgecc_x86_sconv":
            m = [int(v) for v in args[3].numpy()]
            c, h, oc, kh, sh = m[1], m[2], m[4], m[5], m[7]
            row.update(kind=conv_kind(c, oc, kh, sh, False),
                       key=f"{c}->{oc} @{h}" + (" +res" if len(args) == 7 else ""))
        elif sym == "edgecc_x86_sdwconv":
            m = [int(v) for v in args[3].numpy()]
            c, h, kh, sh = m[1], m[2], m[4], m[6]
            row.update(kind=conv_kind(c, c, kh, sh, True), key=f"{c} @{h}")
        elif sym == "edgecc_x86_sgemm":
            m = [int(v) for v in args[3].numpy()]
            row.update(kind="linear", key=f"{m[0]}x{m[1]}x{m[2]}")
        else:
            row.update(kind="tvm op", key=sym)
        row["call"] = (func, args)
        rows.append(row)
    times = [[] for _ in rows]
    seq = [[] for _ in rows]
    stamps: list = []

    def stamp(func, symbol, before, _ret, *args):
        if not str(symbol).startswith("vm.builtin"):
            stamps.append(time.thread_time())
        return 0

    whole = []
    main = runner.vm["main"]
    args = [tvm_tensor(t, runner.device) for t in inputs]
    for _ in range(rounds):
        t = time.thread_time()
        res.run(*inputs)
        whole.append(time.thread_time() - t)
        stamps.clear()
        runner.vm.set_instrument(stamp)
        try:
            main(*args)
        finally:
            runner.vm.set_instrument(None)
        for i in range(len(rows)):  # before / after stamps of call i, in the run's order
            seq[i].append(stamps[2 * i + 1] - stamps[2 * i])
        for i, row in enumerate(rows):
            func, cargs = row["call"]
            func(*cargs)
            reps = 3
            t = time.thread_time()
            for _ in range(reps):
                func(*cargs)
            times[i].append((time.thread_time() - t) / reps)
    for row, ts, ss in zip(rows, times, seq):
        row["alone_us"] = min(ts) * 1e6
        row["us"] = min(ss) * 1e6
        del row["call"]
    return rows, min(whole) * 1e6


def ort_layers(module, inputs, rounds: int) -> tuple[list[dict], float]:
    """Per node of onnxruntime's optimized graph: kind, shape key, min us over ``rounds``
    runs (profiler); and the whole session call (min thread CPU us)."""
    import onnxruntime as ort
    import torch

    d = tempfile.mkdtemp()
    path = os.path.join(d, "m.onnx")
    torch.onnx.export(module, inputs, dynamo=True, verbose=False).save(path)
    feed_names = None
    per_node: dict[str, list[float]] = defaultdict(list)
    info: dict[str, dict] = {}
    order: list[str] = []
    whole = []
    for profile in (True, False):
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = 1
        opts.inter_op_num_threads = 1
        opts.enable_profiling = profile
        opts.profile_file_prefix = os.path.join(d, "prof")
        sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
        feed_names = [i.name for i in sess.get_inputs()]
        feed = {n: t.numpy() for n, t in zip(feed_names, inputs)}
        for _ in range(3):
            sess.run(None, feed)
        for _ in range(rounds):
            t = time.thread_time()
            sess.run(None, feed)
            if not profile:
                whole.append(time.thread_time() - t)
        if profile:
            with open(sess.end_profiling()) as f:
                events = json.load(f)
            for e in events:
                if e.get("cat") != "Node" or not e["name"].endswith("_kernel_time"):
                    continue
                name = e["name"]
                if name not in info:
                    order.append(name)
                    info[name] = e["args"]
                per_node[name].append(float(e["dur"]))
    rows = []
    for name in order:
        a = info[name]
        op = a.get("op_name", "?")
        shapes = [list(s.values())[0] for s in a.get("input_type_shape", [])]
        out = [list(s.values())[0] for s in a.get("output_type_shape", [])]
        row = {"node": name, "op": op}
        if op in ("Conv", "FusedConv") and len(shapes) >= 2 and len(shapes[1]) == 4:
            x, w = shapes[0], shapes[1]
            c, oc, kh = x[1], w[0], w[2]
            dw = w[1] == 1 and c == oc and c > 1
            stride = max(1, round(x[2] / out[0][2])) if out else 1
            row.update(kind=conv_kind(c, oc, kh, stride, dw),
                       key=(f"{c} @{x[2]}" if dw else f"{c}->{oc} @{x[2]}"
                            + (" +res" if len(shapes) >= 4 else "")))
        elif op in ("Gemm", "MatMul", "FusedGemm", "FusedMatMul"):
            row.update(kind="linear", key="x".join(str(v) for v in shapes[0]))
        elif op in ("ReorderInput", "ReorderOutput"):
            row.update(kind="ort layout reorder", key=op)
        else:
            row.update(kind="ort other op", key=op)
        row["us"] = min(per_node[name][-rounds:])
        rows.append(row)
    return rows, min(whole) * 1e6


def summarize(rows: list[dict]) -> dict[str, dict]:
    """kind -> {"us": sum, "alone_us": sum, "n": count, "shapes": {key: [n, us]}}."""
    out: dict[str, dict] = {}
    for r in rows:
        k = out.setdefault(r["kind"], {"us": 0.0, "alone_us": 0.0, "n": 0, "shapes": {}})
        k["us"] += r["us"]
        k["alone_us"] += r.get("alone_us", 0.0)
        k["n"] += 1
        s = k["shapes"].setdefault(r["key"], [0, 0.0])
        s[0] += 1
        s[1] += r["us"]
    return out


def measure(name: str, rounds: int, winograd: int | None = None) -> dict:
    import ctypes

    import torch

    import edgecc
    from bench.tvm_cpu import models

    make, inputs, _ = models()[name]
    module = make().eval()
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as d, torch.no_grad():
        res = edgecc.compile(module, "host", example_inputs=inputs, progress=False,
                             output_dir=os.path.join(d, "o"),
                             target_options={"num_threads": 1})
        res.run(*inputs)  # loads the library
        knob = ctypes.c_int32.in_dll(ctypes.CDLL(res._runner.library),
                                     "edgecc_x86_fp32_winograd")
        if winograd is not None:
            knob.value = winograd
        winograd = knob.value
        ort_rows, ort_whole = ort_layers(module, inputs, rounds)
        ec_rows, ec_whole = edgecc_layers(res, inputs, rounds)
    return {"edgecc": {"whole_us": ec_whole, "layers": ec_rows, "kinds": summarize(ec_rows)},
            "ort": {"whole_us": ort_whole, "layers": ort_rows, "kinds": summarize(ort_rows)},
            "load_average": os.getloadavg()[0], "winograd": winograd}


def print_model(name: str, r: dict, detail: bool) -> None:
    e, o = r["edgecc"], r["ort"]
    kinds = list(dict.fromkeys([*e["kinds"], *o["kinds"]]))
    print(f"\n{name}: 1 thread, us (min over rounds; edgecc: thread CPU time per call in the "
          f"run, and alone; onnxruntime: profiler), load {r['load_average']:.1f}"
          + f" ; edgecc_x86_fp32_winograd = {r.get('winograd')}")
    print(f"{'kind':26s} {'edgecc':>9s} {'alone':>9s} {'n':>4s} {'ort':>9s} {'n':>4s} "
          f"{'e/o':>6s}")
    for k in sorted(kinds, key=lambda k: -max(e["kinds"].get(k, {"us": 0})["us"],
                                              o["kinds"].get(k, {"us": 0})["us"])):
        none = {"us": 0, "alone_us": 0, "n": 0}
        a, b = e["kinds"].get(k, none), o["kinds"].get(k, none)
        ratio = f"{a['us'] / b['us']:5.2f}x" if a["us"] and b["us"] else "     -"
        print(f"{k:26s} {a['us']:9.1f} {a['alone_us']:9.1f} {a['n']:4d} {b['us']:9.1f} "
              f"{b['n']:4d} {ratio}")
        if detail:
            keys = list(dict.fromkeys([*a.get("shapes", {}), *b.get("shapes", {})]))
            for key in keys:
                sa = a.get("shapes", {}).get(key, [0, 0.0])
                sb = b.get("shapes", {}).get(key, [0, 0.0])
                ratio = f"{sa[1] / sb[1]:5.2f}x" if sa[1] and sb[1] else "     -"
                print(f"   {key:23s} {sa[1]:9.1f} {'':9s} {sa[0]:4d} {sb[1]:9.1f} {sb[0]:4d} "
                      f"{ratio}")
    se = sum(x["us"] for x in e["layers"])
    so = sum(x["us"] for x in o["layers"])
    sa = sum(x["alone_us"] for x in e["layers"])
    print(f"{'sum of layers':26s} {se:9.1f} {sa:9.1f}      {so:9.1f}      {se / so:5.2f}x")
    print(f"{'whole call (CPU time)':26s} {e['whole_us']:9.1f} {'':9s}      "
          f"{o['whole_us']:9.1f}      {e['whole_us'] / o['whole_us']:5.2f}x")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=CNNS)
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--detail", action="store_true", help="per shape within each kind")
    parser.add_argument("--winograd", type=int, choices=(0, 1), default=None,
                        help="edgecc_x86_fp32_winograd in the loaded library (default: as linked)")
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "x86_fp32_profile.json"))
    args = parser.parse_args()
    table = {"unit": "us, 1 thread, min over rounds", "rounds": args.rounds, "models": {}}
    for name in args.models.split(","):
        r = measure(name, args.rounds, args.winograd)
        table["models"][name] = r
        print_model(name, r, args.detail)
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(table, f, indent=1)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
