"""A/B of whole fp32 transformer builds in one process: the transformers' float linears on
``x86_fp32``'s sgemm (the default) or on TVM's loop nests with the default schedule's matmul
register tile (``schedule.DENSE_ROWS`` /
``DENSE_VECTORS``: the transformers' float linears) on whole fp32 models, built in one
process with each tile and timed interleaved (``bench.tvm_cpu.interleaved_times``): 2 threads
by the wall clock and, with ``--cpu``, 1-thread builds by the calling thread's CPU time.

    python bench/transformer_ab.py --models gpt2,bert,minilm --tiles sgemm,tvm:4x16,tvm:default [--cpu]
    python bench/transformer_ab.py --models gpt2 --tiles noview,sgemm --cpu [--build w8a8]

``noview``: the default build but the attention kernel does not read q / k / v in place
from the split of a fused projection (``x86_attention``'s split views; TVM copies the split).

Prints a table (median / p10 ms, ratio to the first tile) and writes
``bench/results/transformer_ab.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.tvm_cpu import (  # noqa: E402
    W4A16, calibration, interleaved_times, median_p10, models,
)

import edgecc  # noqa: E402
from edgecc.targets.tvm import schedule, x86_attention, x86_fp32  # noqa: E402


Q = "fold-batchnorm,quantize{scheme=w8a8},fuse,dce"  # bench/tvm_cpu.py's w8a8
BUILDS = {"fp32": (None, {}), "w8a8": (Q, {"integer_kernels": True}), "w4a16": (W4A16, {})}


def build(module, inputs, threads, kind="fp32"):
    import tempfile

    pipeline, options = BUILDS[kind]
    with tempfile.TemporaryDirectory() as d:
        res = edgecc.compile(module, "host", example_inputs=inputs, pipeline=pipeline,
                             calibration=calibration(inputs) if pipeline else None,
                             output_dir=os.path.join(d, "o"), progress=False,
                             target_options={"num_threads": threads, **options})
        res.run(*inputs)
    return res


_APPLY = x86_fp32.apply
_VIEW = x86_attention._Analysis.split_view
DEFAULT = (schedule.DENSE_ROWS, schedule.DENSE_VECTORS, schedule.DENSE_WIDE)


def _set_tile(tile: str) -> None:
    """``sgemm``: the linears on ``x86_fp32``'s hand-written kernel (the default build);
    ``tvm:default``: on TVM's loop nests with the schedule's tile rule; ``tvm:RxC``: R rows x
    C columns everywhere (4x16: the tile before 2026-12-01)."""
    x86_fp32.apply = _APPLY if tile in ("sgemm", "noview") else (
        lambda module, target: (module, None))
    x86_attention._Analysis.split_view = _VIEW if tile != "noview" else (
        lambda self, part, rs: None)
    tile = tile.removeprefix("tvm:")
    if tile in ("default", "sgemm", "noview"):
        schedule.DENSE_ROWS, schedule.DENSE_VECTORS, schedule.DENSE_WIDE = DEFAULT
        return
    r, c = (int(v) for v in tile.split("x"))
    schedule.DENSE_ROWS, schedule.DENSE_VECTORS, schedule.DENSE_WIDE = \
        (r, 4, 2), (c, 16, 8, 4), None


def _kernel_table(name, builds, inputs, rounds) -> None:
    from bench.transformer_scaling import _keys, _one_round

    best, stamps = {v: None for v in builds}, []
    for r in range(rounds):
        for v in (list(builds) if r % 2 else list(builds)[::-1]):
            got = _one_round(builds[v], inputs, stamps)
            best[v] = got if best[v] is None else [min(a, b) for a, b in zip(best[v], got)]
    for v, res in builds.items():
        total: dict[str, float] = {}
        for k, t in zip(_keys(res, inputs), best[v]):
            k = k.split()[0] if k.startswith(("sgemm", "linear")) else k
            total[k] = total.get(k, 0.0) + t * 1e6
        parts = ", ".join(f"{k} {t:.1f}" for k, t in sorted(total.items(), key=lambda kv: -kv[1])
                          if t >= 5)
        print(f"{name} {v}: sum of calls {sum(best[v]) * 1e6:.0f} us: {parts}", flush=True)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="gpt2,bert,minilm")
    ap.add_argument("--tiles", default="sgemm,tvm:4x16,tvm:default")
    ap.add_argument("--repeats", type=int, default=40)
    ap.add_argument("--build", default="fp32", choices=sorted(BUILDS))
    ap.add_argument("--kernels", action="store_true",
                    help="also each kernel's wall us in the VM's run (min over rounds; "
                         "bench/transformer_scaling.py's timing), sgemm calls summed")
    ap.add_argument("--cpu", action="store_true", help="1-thread builds, CPU time")
    args = ap.parse_args()
    threads = 1 if args.cpu else 2
    table = {}
    for name in args.models.split(","):
        make, inputs, _ = models()[name]
        module = make().eval()
        fns, outs, builds = {}, {}, {}
        for tile in args.tiles.split(","):
            _set_tile(tile)
            res = build(module, inputs, threads, args.build)
            outs[tile] = res.run(*inputs)
            builds[tile] = res
            fns[tile] = (lambda res=res: res.run(*inputs))
        first = next(iter(outs.values()))
        import numpy as np
        for tile, o in outs.items():
            a, b = np.asarray(first[0] if isinstance(first, (list, tuple)) else first), \
                np.asarray(o[0] if isinstance(o, (list, tuple)) else o)
            print(f"{name} {tile}: max rel diff vs first {np.abs(a - b).max() / np.abs(a).max():.2e}")
        if args.kernels:
            _kernel_table(name, builds, inputs,
                          args.repeats)
        times = interleaved_times(fns, args.repeats, clock="cpu" if args.cpu else "wall")
        stats = median_p10(times)
        base = next(iter(stats.values()))["median_ms"]
        for tile, s in stats.items():
            print(f"{name:8s} {tile:6s} median {s['median_ms']:8.3f} ms  p10 {s['p10_ms']:8.3f}"
                  f"  {s['median_ms'] / base:.3f}x", flush=True)
        table[name] = stats
    out = os.path.join(ROOT, "bench", "results", "transformer_ab.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"threads": threads, "clock": "cpu" if args.cpu else "wall",
                   "load": os.getloadavg(), "results": table}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
