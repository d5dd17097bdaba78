"""Where w8a8 loses to fp32 on a CNN at ``THREADS`` threads, per layer, in place: the fp32 and
the w8a8 build of one model (``bench.x86_int8_common.build_pair``) each replayed call by call
in the VM's order (``bench.vm_calls.kernel_calls``; each call timed by the wall clock where it
runs, after the layer before it), the two builds interleaved in one process (the order
alternating per round). The fp32 build's fused blocks (``edgecc_x86_sexpdw``: MobileNetV2-224's
stem, 224 and 112 blocks) make one row ("fused region") against the w8a8 calls of the same
layers; after it the two builds' calls are matched one to one from the end (each layer a
call in both). Per row: the median us of each build, the median over rounds of the paired
int8 / fp32 ratio, and the bytes the int8 calls move through memory (their inputs and
outputs, weights left out) against their multiply-adds. Writes
``bench/results/x86_int8_band_profile.json``.

    python bench/x86_int8_band_profile.py [--models mobilenet_v2_224] [--rounds 20] [--reps 3]

Step 1 of s16 H-D (issue 18: w8a8 MobileNetV2-224 at <= 0.6x of fp32 reliably). Not a goal
measurement (bench/tvm_cpu.py is).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.host import THREADS  # noqa: E402  (sets TVM_NUM_THREADS before TVM starts)
from bench.tvm_cpu import PAUSE_S  # noqa: E402
from bench.tvm_runtime import kind  # noqa: E402
from bench.vm_calls import kernel_calls  # noqa: E402
from bench.x86_int8_common import build_pair, percentile, replay, write_result  # noqa: E402

warnings.filterwarnings("ignore")
FUSED = "edgecc_x86_sexpdw"


def shape_of(t) -> tuple:
    return tuple(int(d) for d in t.shape)


def nbytes(t) -> int:
    n = 1
    for d in t.shape:
        n *= int(d)
    return n * (t.dtype.bits // 8)


def describe(symbol: str, args: list) -> str:
    short = symbol.replace("edgecc_x86_", "")
    return f"{short}{shape_of(args[0])}->{shape_of(args[-1])}"


def macs(symbol: str, args: list) -> int:
    """Multiply-adds of an int8 conv / depthwise call (0 for the rest), from its meta."""
    if symbol not in ("edgecc_x86_qconv", "edgecc_x86_qdwconv"):
        return 0
    m = [int(v) for v in args[2].numpy()]
    if symbol == "edgecc_x86_qconv":  # [.., N, C, H, W, OC, KH, KW, .., OH(18), OW(19)]
        return m[5] * m[6] * m[9] * m[10] * m[11] * m[18] * m[19]
    return m[5] * m[6] * m[9] * m[10] * m[17] * m[18]  # N C KH KW OH OW


def segments(fp32: list, int8: list) -> list[tuple[str, list[int], list[int]]]:
    """(label, fp32 call indices, int8 call indices) rows: the fused region, then one row a
    layer matched from the end."""
    last = max((i for i, c in enumerate(fp32) if c[1] == FUSED), default=-1)
    rest = len(fp32) - last - 1
    rows = [("fused region", list(range(last + 1)), list(range(len(int8) - rest)))]
    for j in range(rest):
        i, k = last + 1 + j, len(int8) - rest + j
        rows.append((describe(int8[k][1], int8[k][2]), [i], [k]))
    return rows


def measure(name: str, rounds: int, reps: int) -> dict:
    import torch

    with tempfile.TemporaryDirectory() as d, torch.no_grad():
        inputs, shape, built = build_pair(name, d)
        calls = {label: [c for c in kernel_calls(res._runner, inputs) if kind(c[1]) != "builtin"]
                 for label, res in built.items()}
        rows = segments(calls["fp32"], calls["int8"])
        labels = ["fp32", "int8"]
        times = {label: [] for label in labels}
        for r in range(rounds):
            for label in (labels if r % 2 == 0 else labels[::-1]):
                time.sleep(PAUSE_S / 10)
                times[label].append(replay(calls[label], reps))
    out = []
    for label, fi, ki in rows:
        f = [sum(t[i] for i in fi) for t in times["fp32"]]
        q = [sum(t[i] for i in ki) for t in times["int8"]]
        ratios = [b / a for a, b in zip(f, q)]
        moved = sum(nbytes(calls["int8"][k][2][0]) + nbytes(calls["int8"][k][2][-1]) for k in ki)
        mac = sum(macs(calls["int8"][k][1], calls["int8"][k][2]) for k in ki)
        out.append({"row": label, "fp32_calls": len(fi), "int8_calls": len(ki),
                    "fp32_us": statistics.median(f), "int8_us": statistics.median(q),
                    "int8_vs_fp32": [percentile(ratios, p) for p in (0.1, 0.5, 0.9)],
                    "int8_bytes": moved, "int8_macs": mac,
                    "int8_calls_list": [describe(calls["int8"][k][1], calls["int8"][k][2])
                                        for k in ki]})
    f = [sum(t) for t in times["fp32"]]
    q = [sum(t) for t in times["int8"]]
    total = [b / a for a, b in zip(f, q)]
    return {"model": name, "input": shape, "threads": THREADS, "rounds": rounds, "reps": reps,
            "load_average": os.getloadavg()[0], "rows": out,
            "sum_us": {"fp32": statistics.median(f), "int8": statistics.median(q)},
            "sum_int8_vs_fp32": [percentile(total, p) for p in (0.1, 0.5, 0.9)]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="mobilenet_v2_224")
    parser.add_argument("--rounds", type=int, default=20)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "x86_int8_band_profile.json"))
    args = parser.parse_args()
    results = [measure(m, args.rounds, args.reps) for m in args.models.split(",")]
    for r in results:
        print(f"\n{r['model']} {r['input']}  {r['threads']}t in place, {r['rounds']} rounds "
              f"(load {r['load_average']:.1f})")
        print(f"  {'row':<44} {'fp32 us':>9} {'int8 us':>9} {'i8/f32 p10 p50 p90':>20} "
              f"{'MB':>6} {'B/MAC':>6}")
        for w in r["rows"]:
            p = w["int8_vs_fp32"]
            bpm = w["int8_bytes"] / w["int8_macs"] if w["int8_macs"] else float("nan")
            print(f"  {w['row'][:44]:<44} {w['fp32_us']:9.1f} {w['int8_us']:9.1f} "
                  f"{p[0]:6.2f} {p[1]:6.2f} {p[2]:6.2f} {w['int8_bytes'] / 1e6:6.2f} {bpm:6.3f}")
        p = r["sum_int8_vs_fp32"]
        print(f"  {'sum':<44} {r['sum_us']['fp32']:9.1f} {r['sum_us']['int8']:9.1f} "
              f"{p[0]:6.2f} {p[1]:6.2f} {p[2]:6.2f}")
    write_result(args.output, {"benchmark": "w8a8 vs fp32 per layer in place, paired",
                               "threads": THREADS, "rows": results})
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
