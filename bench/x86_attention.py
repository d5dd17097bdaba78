"""A/B of the x86 transformer float kernels (``targets/tvm/x86_attention``): each model's fp32
and w8a8 (integer kernels) host builds with and without the attention / layer-norm / GELU
rewrite, timed in interleaved rounds in one process (2 TVM threads, median), so the
columns of a row differ only by that rewrite. ``--parts`` adds a third build per row: the
rewrite with attention left on TVM's kernels (layer norm and GELU still rewritten), so
``after / no-attn`` is the fused attention kernel's own gain. Prints a table and writes
``bench/results/x86_attention.json``. ``--clock cpu`` (with ``--threads 1``) times each call
by the calling thread's CPU time instead of the wall clock: on a machine others load, the
time a descheduled thread waits is not counted (wall-clock ratios there swing by 2x).

    python bench/x86_attention.py [--models bert,gpt2,minilm] [--builds fp32,int8]
                                  [--repeats 20] [--threads 2] [--parts] [--clock wall|cpu]
    python bench/x86_attention.py --alone [--threads 2] [--repeats 200]

``--alone``: attention by itself (a model that is one scaled-dot-product attention of its
q, k, v inputs, no linears) at the three models' shapes and a few more (``ALONE``), built
with the fused kernel and with TVM's batched matmuls + softmax, timed call by call in
interleaved rounds; prints the median and the 10th percentile of each (on a loaded machine
the low percentile is the less disturbed estimate: load only adds time). Writes
``bench/results/x86_attention_alone.json`` (or ``--output``).

Models as bench/tvm_cpu.py builds them (random weights, nothing downloaded).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.host import THREADS  # noqa: E402
from bench.tvm_cpu import calibration, interleaved_times, median_p10, models  # noqa: E402

import torch  # noqa: E402

import edgecc  # noqa: E402
from edgecc.targets.tvm import x86_attention  # noqa: E402

warnings.filterwarnings("ignore")

BUILDS = {"fp32": ("fold-batchnorm,fuse,dce", {}),
          "int8": ("fold-batchnorm,quantize{scheme=w8a8},fuse,dce", {"integer_kernels": True})}


def build(module, inputs, pipeline, calib, options, parts, directory: str):
    """One host build with the rewrite of ``parts`` (``x86_attention.PARTS``: all of it;
    ``None``: ``x86_attention.apply`` as the identity); returns the callable and the
    rewrite's statistics."""
    seen = {}
    real = x86_attention.apply

    def apply(mod, target):
        if parts is None or not x86_attention.supported(target):
            return mod, None
        out, stats = x86_attention.rewrite(mod, parts)
        seen["stats"] = stats.as_dict()
        return out, stats

    x86_attention.apply = apply
    try:
        res = edgecc.compile(module, "host", example_inputs=inputs, pipeline=pipeline,
                             calibration=calib, output_dir=directory, progress=False,
                             target_options={"num_threads": threads, **options})
    finally:
        x86_attention.apply = real
    assert res.report["verification"]["passed"], res.report["verification"]
    res.run(*inputs)  # loads the library
    return (lambda: res.run(*inputs)), seen.get("stats")


threads = THREADS
VARIANTS = {"before_ms": None, "after_ms": x86_attention.PARTS}
NO_ATTENTION = ("no_attn_ms", tuple(p for p in x86_attention.PARTS if p != "attention"))


# name: (B, H, S, D, mask): "pad" an additive [B, 1, 1, S] mask, "causal" is_causal, "" none
ALONE = {"bert": (1, 4, 128, 64, "pad"), "gpt2": (1, 4, 128, 64, "causal"),
         "minilm": (16, 12, 64, 32, "pad"), "bert-base 384": (1, 12, 384, 64, "pad"),
         "8 heads 256 d128": (1, 8, 256, 128, "causal"), "1 head 1024": (1, 1, 1024, 64, ""),
         "1 head 128": (1, 1, 128, 64, ""), "1 head 32": (1, 1, 32, 64, "causal"),
         "4 x 2 heads 16": (4, 2, 16, 64, "pad"), "1 head 16": (1, 1, 16, 64, "")}


class _Attention(torch.nn.Module):
    """One attention over [B, S, H·D] inputs (heads split and merged as transformers do)."""

    def __init__(self, heads: int, causal: bool):
        super().__init__()
        self.heads, self.causal = heads, causal

    def forward(self, q, k, v, *mask):
        b, s, e = q.shape

        def split(t):
            return t.view(b, s, self.heads, e // self.heads).transpose(1, 2)

        o = torch.nn.functional.scaled_dot_product_attention(
            split(q), split(k), split(v), attn_mask=mask[0] if mask else None,
            is_causal=self.causal)
        return o.transpose(1, 2).reshape(b, s, e)


def _percentiles(fns, repeats: int, clock: str) -> dict:
    """Per callable: median and 10th percentile of single calls, taken in interleaved
    rounds of 10 (``bench.tvm_cpu.interleaved_times``)."""
    return median_p10(interleaved_times(fns, repeats, clock=clock))


def alone_main(args) -> int:
    """``--alone``: see the module docstring."""
    rows = []
    for name, (b, h, s, d, mask) in ALONE.items():
        torch.manual_seed(0)
        inputs = [torch.randn(b, s, h * d) for _ in range(3)]
        if mask == "pad":  # the last eighth of the keys padded away, as an attention mask
            m = torch.zeros(b, 1, 1, s)
            m[..., s - s // 8:] = torch.finfo(torch.float32).min
            inputs.append(m)
        module = _Attention(h, mask == "causal").eval()
        fns = {}
        with tempfile.TemporaryDirectory() as tmp, torch.no_grad():
            for column, parts in (("fused", x86_attention.PARTS),
                                  ("tvm", NO_ATTENTION[1])):
                fns[column], seen = build(module, tuple(inputs), BUILDS["fp32"][0], None, {},
                                          parts, os.path.join(tmp, column))
                if column == "fused":
                    assert seen and seen["x86_attention"] == 1, seen
            ms = _percentiles(fns, args.repeats, args.clock)
        row = {"shape": name, "B": b, "H": h, "S": s, "D": d, "mask": mask or "none",
               **{f"{k}_{stat}": round(v[stat], 4) for k, v in ms.items() for stat in v},
               "fused_vs_tvm_median": ms["fused"]["median_ms"] / ms["tvm"]["median_ms"],
               "fused_vs_tvm_p10": ms["fused"]["p10_ms"] / ms["tvm"]["p10_ms"]}
        rows.append(row)
        print(f"done {row}", file=sys.stderr, flush=True)
    print(f"{'shape':<16}{'BxH':>7}{'S':>5}{'D':>4}{'mask':>7}{'fused ms':>10}{'tvm ms':>9}"
          f"{'ratio':>7}{'p10 fused':>10}{'p10 tvm':>9}{'ratio':>7}")
    for r in rows:
        print(f"{r['shape']:<16}{r['B'] * r['H']:>7}{r['S']:>5}{r['D']:>4}{r['mask']:>7}"
              f"{r['fused_median_ms']:>10.3f}{r['tvm_median_ms']:>9.3f}"
              f"{r['fused_vs_tvm_median']:>6.2f}x{r['fused_p10_ms']:>10.3f}"
              f"{r['tvm_p10_ms']:>9.3f}{r['fused_vs_tvm_p10']:>6.2f}x")
    clock = "CPU time of the calling thread" if args.clock == "cpu" else "wall clock"
    load = os.getloadavg()[0]
    print(f"ms per call ({clock}), {threads} thread(s), attention alone; fused = "
          f"edgecc_x86_attention, tvm = TVM's batched matmuls + softmax; load average at the end: {load:.1f}")
    out = args.output or os.path.join(ROOT, "bench", "results", "x86_attention_alone.json")
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with open(out, "w") as f:
        json.dump({"benchmark": "attention alone, fused kernel / TVM's matmuls",
                   "threads": threads, "clock": args.clock, "repeats": args.repeats,
                   "load_average_1min_at_end": load, "rows": rows}, f, indent=2)
    print(f"wrote {out}")
    return 0


def main() -> int:
    global threads
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", default="bert,gpt2,minilm")
    parser.add_argument("--builds", default="fp32,int8")
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=THREADS,
                        help="TVM worker threads of every build (default %(default)s)")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: the calling thread's CPU time (needs --threads 1)")
    parser.add_argument("--parts", action="store_true",
                        help="also time the rewrite with attention left on TVM's kernels")
    parser.add_argument("--alone", action="store_true",
                        help="attention by itself at each model's shape: fused / TVM")
    parser.add_argument("--output", help="the JSON to write (default bench/results/"
                        "x86_attention.json, with --alone x86_attention_alone.json)")
    args = parser.parse_args()
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu times one thread: use it with --threads 1")
    threads = args.threads
    torch.set_num_threads(threads)
    if args.alone:
        return alone_main(args)
    variants = dict(VARIANTS)
    if args.parts:
        variants[NO_ATTENTION[0]] = NO_ATTENTION[1]
    table, rows = models(), []
    for name in args.models.split(","):
        make, inputs, shape = table[name]
        module = make().eval()
        calib = calibration(inputs)
        for kind in args.builds.split(","):
            pipeline, options = BUILDS[kind]
            fns, stats = {}, None
            with tempfile.TemporaryDirectory() as d, torch.no_grad():
                for column, parts in variants.items():
                    fns[column], seen = build(module, inputs, pipeline,
                                              calib if kind != "fp32" else None, options,
                                              parts, os.path.join(d, column))
                    stats = seen if column == "after_ms" else stats
                stats_ms = _percentiles(fns, args.repeats, args.clock)
            ms = {k: v["median_ms"] for k, v in stats_ms.items()}
            p10 = {k.replace("_ms", "_p10_ms"): v["p10_ms"] for k, v in stats_ms.items()}
            row = {"model": name, "input": shape, "build": kind, **ms, **p10,
                   "after_vs_before": ms["after_ms"] / ms["before_ms"], "rewrite": stats}
            if args.parts:
                row["after_vs_no_attn"] = ms["after_ms"] / ms["no_attn_ms"]
                row["after_vs_no_attn_p10"] = p10["after_p10_ms"] / p10["no_attn_p10_ms"]
            rows.append(row)
            print(f"done {name} {kind}: {row}", file=sys.stderr, flush=True)
    extra = args.parts
    print(f"{'model':<10}{'build':<7}{'before ms':>11}{'after ms':>11}{'after/before':>14}"
          + (f"{'no-attn ms':>12}{'after/no-attn':>15}{'p10 ratio':>11}" if extra else ""))
    for r in rows:
        print(f"{r['model']:<10}{r['build']:<7}{r['before_ms']:>11.2f}{r['after_ms']:>11.2f}"
              f"{r['after_vs_before']:>13.2f}x"
              + (f"{r['no_attn_ms']:>12.2f}{r['after_vs_no_attn']:>14.2f}x"
                 f"{r['after_vs_no_attn_p10']:>10.2f}x" if extra else ""))
    clock = "CPU time of the calling thread" if args.clock == "cpu" else "wall clock"
    print(f"ms ({clock}), median of single calls in interleaved rounds (p10 ratio: of their "
          f"10th percentiles), {threads} TVM thread(s); before = TVM's loop nests "
          "for attention / layer norm / GELU, after = the x86_attention kernels"
          + ("; no-attn = the kernels for layer norm and GELU, attention on TVM's" if extra
             else "") + f"; load average at the end: {os.getloadavg()[0]:.1f}")
    output = args.output or os.path.join(ROOT, "bench", "results", "x86_attention.json")
    os.makedirs(os.path.dirname(output), exist_ok=True)
    with open(output, "w") as f:
        json.dump({"benchmark": "x86_attention rewrite, before / after", "threads": threads,
                   "clock": args.clock,
                   "repeats": args.repeats, "statistic": "median (and 10th percentile) of single calls in interleaved rounds",
                   "load_average_1min_at_end": os.getloadavg()[0], "rows": rows}, f, indent=2)
    print(f"wrote {output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
