"""edgecc's default fp32 host build of the CNNs against onnxruntime fp32, side by side, plus
which path each of the x86 fp32 kernel calls took in one inference (the kernels' path
counters: convolutions reading their input in place or through im2col panels from row runs
or gathers, depthwise planes by rows (AVX2 / AVX-512) or 16 channels per vector, generic)
and the rewrite counts of the lowering report.

    python bench/x86_fp32.py [--models resnet20,mobilenet_v2,mobilenet_v2_224]
                             [--repeats 20] [--threads 2] [--against REV]
    python bench/x86_fp32.py --threads 1 --clock cpu [--against REV]
    python bench/x86_fp32.py --layers [--against REV] [--select TEXT] [--layer-threads 1]

Only fp32 is built (no int8 / tuning), so it is the quick loop for the fp32 kernels;
``bench/tvm_cpu.py`` is the issue's measure. Same timing as there (interleaved rounds, median,
onnxruntime with ``--threads`` intra-op threads). ``--against REV`` adds a column: the same
build with the kernels' source as of git revision REV (an A/B in one process). Prints a
table and writes ``bench/results/x86_fp32.json``.

``--layers``: a per-layer A/B of the kernels of REV (default HEAD) against this tree's, on
the CNNs' layer shapes (ResNet-20, MobileNetV2 at 32 and 224) and BERT / MiniLM GEMMs, each
library called directly (one thread), interleaved rounds, timed in thread CPU time (so
other processes' load does not count; the minimum over rounds), with the two outputs'
largest relative difference (0 when the paths agree bit for bit). Needs ``g++`` and git.
``--layer-threads N`` (N > 1) runs them on N pool threads, timed in wall clock (the
median over ``--layer-rounds``): the split's cost, which thread CPU time does not see.
Writes ``bench/results/x86_fp32_layers.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import warnings

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench import tvm_cpu  # noqa: E402

warnings.filterwarnings("ignore")

CNNS = "resnet20,mobilenet_v2,mobilenet_v2_224"
PATHS = ("conv_in_place", "conv_im2col", "depthwise_3x3", "depthwise_generic",
         "depthwise_3x3_avx512", "conv_row_runs", "depthwise_3x3_channels", "conv_prefetch",
         "conv_unpadded", "conv_same3x3", "conv_same3x3_padded", "conv_im2col_tiles",
         "conv_same3x3_columns", "conv_same3x3_window", "conv_s2_phases")

# --layers: name -> conv (c, h, w, oc, k, stride, pad, residual, depthwise) or gemm (m, k, n)
LAYERS = {
    "r20 3x3 16@32 +res": dict(c=16, h=32, w=32, oc=16, k=3, s=1, pad=1, res=True),
    "r20 3x3 32@16": dict(c=32, h=16, w=16, oc=32, k=3, s=1, pad=1),
    "r20 3x3 64@8 +res": dict(c=64, h=8, w=8, oc=64, k=3, s=1, pad=1, res=True),
    "r20 3x3 s2 16->32": dict(c=16, h=32, w=32, oc=32, k=3, s=2, pad=1),
    "r20 3x3 s2 32->64": dict(c=32, h=16, w=16, oc=64, k=3, s=2, pad=1),
    "r20 1x1 s2 16->32": dict(c=16, h=32, w=32, oc=32, k=1, s=2, pad=0),
    "r20 first 3->16": dict(c=3, h=32, w=32, oc=16, k=3, s=1, pad=1),
    "mb32 1x1 160->640 @4": dict(c=160, h=4, w=4, oc=640, k=1, s=1, pad=0),
    "mb32 1x1 480->160 @4": dict(c=480, h=4, w=4, oc=160, k=1, s=1, pad=0),
    "mb32 1x1 12->72 @32": dict(c=12, h=32, w=32, oc=72, k=1, s=1, pad=0),
    "mb32 dw 480 @4": dict(c=480, h=4, w=4, k=3, s=1, pad=1, dw=True),
    "mb32 dw 288 @8": dict(c=288, h=8, w=8, k=3, s=1, pad=1, dw=True),
    "mb32 dw s2 288 @8": dict(c=288, h=8, w=8, k=3, s=2, pad=1, dw=True),
    "mb32 dw 96 @16": dict(c=96, h=16, w=16, k=3, s=1, pad=1, dw=True),
    "mb32 dw 72 @32": dict(c=72, h=32, w=32, k=3, s=1, pad=1, dw=True),
    "mb224 1x1 8->48 @224": dict(c=8, h=224, w=224, oc=48, k=1, s=1, pad=0),
    "mb224 1x1 12->72 @224": dict(c=12, h=224, w=224, oc=72, k=1, s=1, pad=0),
    "mb224 1x1 72->12 +res @224": dict(c=72, h=224, w=224, oc=12, k=1, s=1, pad=0, res=True),
    "mb224 1x1 480->160 @28": dict(c=480, h=28, w=28, oc=160, k=1, s=1, pad=0),
    "mb224 1x1 48->288 @56": dict(c=48, h=56, w=56, oc=288, k=1, s=1, pad=0),
    "mb224 1x1 16->96 @112": dict(c=16, h=112, w=112, oc=96, k=1, s=1, pad=0),
    "mb224 1x1 96->16 +res @112": dict(c=96, h=112, w=112, oc=16, k=1, s=1, pad=0, res=True),
    "mb224 1x1 288->48 +res @56": dict(c=288, h=56, w=56, oc=48, k=1, s=1, pad=0, res=True),
    "mb224 dw 192 @56": dict(c=192, h=56, w=56, k=3, s=1, pad=1, dw=True),
    "mb224 dw 480 @28": dict(c=480, h=28, w=28, k=3, s=1, pad=1, dw=True),
    "mb224 dw s2 288 @56": dict(c=288, h=56, w=56, k=3, s=2, pad=1, dw=True),
    "mb224 dw s2 72 @224": dict(c=72, h=224, w=224, k=3, s=2, pad=1, dw=True),
    "mb224 dw 72 @224": dict(c=72, h=224, w=224, k=3, s=1, pad=1, dw=True),
    "mb224 dw 96 @112": dict(c=96, h=112, w=112, k=3, s=1, pad=1, dw=True),
    "mb224 first 3->16 s2": dict(c=3, h=224, w=224, oc=16, k=3, s=2, pad=1),
    "gemm bert 512x768x768": dict(gemm=(512, 768, 768)),
    "gemm minilm 1024x384x1536": dict(gemm=(1024, 384, 1536)),
}


def source_at(rev: str) -> str:
    """The kernels' C++ source as of git revision ``rev``."""
    import importlib.util
    import subprocess
    import tempfile

    text = subprocess.run(["git", "-C", ROOT, "show", f"{rev}:targets/tvm/x86_fp32_source.py"],
                          capture_output=True, text=True, check=True).stdout
    with tempfile.TemporaryDirectory() as d:
        path = os.path.join(d, "x86_fp32_source_rev.py")
        with open(path, "w") as f:
            f.write(text)
        spec = importlib.util.spec_from_file_location("x86_fp32_source_rev", path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
    return module.SOURCE


def _shared_library(source: str, folder: str):
    """``source`` compiled into a shared library in ``folder`` and loaded (its own copy)."""
    import subprocess

    import tvm
    import tvm_ffi.libinfo

    import hashlib

    key = hashlib.sha256(source.encode()).hexdigest()[:16]
    cc, so = os.path.join(folder, f"k-{key}.cc"), os.path.join(folder, f"k-{key}.so")
    with open(cc, "w") as f:
        f.write(source)
    paths = tvm_ffi.libinfo.find_include_path()
    includes = [f"-I{p}" for p in ([paths] if isinstance(paths, str) else paths)]
    subprocess.run([os.environ.get("CXX", "g++"), "-shared", "-fPIC", "-O3", "-std=c++17",
                    *includes, cc, "-o", so], check=True, capture_output=True)
    return tvm.runtime.load_module(so)


def _layer_args(cfg: dict):
    """(symbol, argument arrays, output shape) of one --layers case, fixed random data."""
    import numpy as np

    from edgecc.targets.tvm.x86_fp32 import pack_panels

    rng = np.random.default_rng(0)
    relu6 = np.array([0.0, 6.0], np.float32)
    if "gemm" in cfg:
        m, k, n = cfg["gemm"]
        args = [rng.standard_normal((m, k), np.float32),
                pack_panels(rng.standard_normal((k, n), np.float32) * 0.05),
                rng.standard_normal(n).astype(np.float32), np.array([m, k, n], np.int64),
                np.array([-np.inf, np.inf], np.float32)]
        return "edgecc_x86_sgemm", args, (m, n)
    c, h, w, k, s, pad = (cfg[key] for key in ("c", "h", "w", "k", "s", "pad"))
    oh, ow = (h + 2 * pad - k) // s + 1, (w + 2 * pad - k) // s + 1
    x = rng.standard_normal((1, c, h, w), np.float32)
    if cfg.get("dw"):
        oc, sym = c, "edgecc_x86_sdwconv"
        wt = rng.standard_normal((c, k * k), np.float32)
        meta = [1, c, h, w, k, k, s, s, pad, pad, 1, 1, oh, ow]
    else:
        oc, sym = cfg["oc"], "edgecc_x86_sconv"
        wt = rng.standard_normal((oc, c * k * k), np.float32) * 0.1
        meta = [1, c, h, w, oc, k, k, s, s, pad, pad, 1, 1, oh, ow]
    args = [x, wt, rng.standard_normal(oc).astype(np.float32), np.array(meta, np.int64), relu6]
    if cfg.get("res"):
        args.append(rng.standard_normal((1, oc, oh, ow), np.float32))
    return sym, args, (1, oc, oh, ow)


def layers_main(args) -> None:
    """Per-layer A/B: the kernels of ``args.against`` (default HEAD) vs this tree's."""
    import tempfile
    import time

    import numpy as np
    import tvm

    from edgecc.targets.tvm.x86_fp32_source import SOURCE

    threads = args.layer_threads
    os.environ["TVM_NUM_THREADS"] = str(threads)  # before TVM's pool starts
    wall = threads > 1  # other threads' CPU time is not the calling thread's: wall clock
    clock = time.perf_counter if wall else time.thread_time
    pick = (lambda v: float(np.median(v))) if wall else min
    rev = args.against or "HEAD"
    unit = (f"us wall, {threads} threads, median over rounds" if wall
            else "us thread CPU time, min over rounds")
    table = {"against": rev, "unit": unit, "threads": threads, "layers": {}}
    with tempfile.TemporaryDirectory() as d:
        libs = {"old": _shared_library(source_at(rev), d), "new": _shared_library(SOURCE, d)}
        print(f"kernels of {rev} (old) vs this tree (new), {unit}")
        total = {"old": 0.0, "new": 0.0}
        for name, cfg in LAYERS.items():
            if args.select and args.select not in name:
                continue
            sym, arrays, shape = _layer_args(cfg)
            inputs = [tvm.runtime.tensor(a) for a in arrays]
            runs = {}
            for tag, lib in libs.items():
                out = tvm.runtime.tensor(np.zeros(shape, np.float32))
                fn = lib.get_function(sym)
                fn(*inputs, out)
                runs[tag] = (fn, out)
            a, b = runs["old"][1].numpy(), runs["new"][1].numpy()
            rel = float(np.abs(a - b).max() / max(float(np.abs(a).max()), 1e-30))
            calls = 5 if np.prod(shape) > 2e5 or "gemm" in cfg else 100
            us = {"old": [], "new": []}
            for rnd in range(args.layer_rounds):
                for tag in ("old", "new") if rnd % 2 == 0 else ("new", "old"):
                    fn, out = runs[tag]
                    t = clock()
                    for _ in range(calls):
                        fn(*inputs, out)
                    us[tag].append((clock() - t) / calls * 1e6)
            best = {tag: pick(v) for tag, v in us.items()}
            for tag in total:
                total[tag] += best[tag]
            low = {tag: min(v) for tag, v in us.items()}  # wall: rounds with both cores free
            table["layers"][name] = {**best, "speedup": best["old"] / best["new"], "rel": rel,
                                     **({"min_old": low["old"], "min_new": low["new"]}
                                        if wall else {})}
            extra = f"  (min {low['old']:.1f} / {low['new']:.1f})" if wall else ""
            print(f"{name:28s} old {best['old']:9.1f}  new {best['new']:9.1f}  "
                  f"x{best['old'] / best['new']:5.2f}  rel diff {rel:.1e}{extra}", flush=True)
        print(f"{'sum':28s} old {total['old']:9.1f}  new {total['new']:9.1f}")
    out = args.output or os.path.join(ROOT, "bench", "results", "x86_fp32_layers.json")
    with open(out, "w") as f:
        json.dump(table, f, indent=1)


def path_calls(res, inputs) -> dict:
    """Calls per kernel path during one run of ``res`` (a compiled host artifact)."""
    from edgecc.targets.tvm.x86_fp32_source import PATH_QUERY

    lib = res._runner.module if hasattr(res, "_runner") else None
    if lib is None:
        return {}
    query = lib.get_function(PATH_QUERY, query_imports=True)
    before = [int(query(i)) for i in range(len(PATHS))]
    res.run(*inputs)
    return {"avx512": bool(query(-1)),
            **{p: int(query(i)) - b for i, (p, b) in enumerate(zip(PATHS, before))}}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default=CNNS)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--threads", type=int, default=tvm_cpu.THREADS)
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="cpu: each call timed in the calling thread's CPU time (robust "
                             "to other processes' load; only with --threads 1)")
    parser.add_argument("--output", default=None)
    parser.add_argument("--against", default=None,
                        help="git revision whose kernels are measured too (A/B)")
    parser.add_argument("--layers", action="store_true", help="per-layer kernel A/B")
    parser.add_argument("--select", default="", help="--layers: names containing this")
    parser.add_argument("--layer-threads", type=int, default=1,
                        help="--layers: pool threads (> 1: wall clock, median over rounds)")
    parser.add_argument("--layer-rounds", type=int, default=11,
                        help="--layers: interleaved rounds per layer")
    args = parser.parse_args()
    if args.clock == "cpu" and args.threads != 1:
        parser.error("--clock cpu needs --threads 1 (other threads' CPU time is not counted)")
    if args.layers:
        layers_main(args)
        return
    args.output = args.output or os.path.join(ROOT, "bench", "results", "x86_fp32.json")
    tvm_cpu.THREADS = args.threads
    import edgecc

    if args.threads == 1:
        os.environ["TVM_NUM_THREADS"] = "1"  # before TVM's pool starts
    table = {"threads": args.threads, "clock": args.clock,
             "onnxruntime": tvm_cpu.ort_settings(),
             "against": args.against, "models": {}}
    old_source = source_at(args.against) if args.against else None
    print(f"onnxruntime {table['onnxruntime']['version']}, {args.threads} thread(s)")
    print(f"{'model':18s} {'ort fp32':>9s} {'edgecc':>9s} {'ratio':>7s}"
          + (f" {'edgecc@' + args.against[:7]:>14s} {'ratio':>7s}" if old_source else "")
          + "  rewrites / paths")
    for name in args.models.split(","):
        make, inputs, _ = tvm_cpu.models()[name]
        module = make().eval()
        fns = {"ort": tvm_cpu.ort_fp32_fn(module, inputs)}
        with edgecc_artifact(edgecc, module, inputs, args.threads) as res, \
                edgecc_artifact(edgecc, module, inputs, args.threads, old_source,
                                enabled=old_source is not None) as old:
            fns["edgecc"] = lambda res=res: res.run(*inputs)
            if old is not None:
                fns["old"] = lambda old=old: old.run(*inputs)
            paths = path_calls(res, inputs)
            rewrites = res.report.get("lowering", {}).get("x86_fp32", {})
            times = tvm_cpu.interleaved_times(fns, args.repeats, clock=args.clock)
        ms = {k: statistics.median(v) for k, v in times.items()}
        # ratios: the median over rounds of the paired round means (tvm_cpu.paired_ratio)
        ratio = tvm_cpu.paired_ratio(times, "edgecc", "ort", args.repeats)
        row = {"ort_ms": ms["ort"], "edgecc_ms": ms["edgecc"], "ratio": ratio, "paths": paths,
               "rewrites": rewrites}
        extra = ""
        if "old" in ms:
            old_ratio = tvm_cpu.paired_ratio(times, "old", "ort", args.repeats)
            new_vs_old = tvm_cpu.paired_ratio(times, "edgecc", "old", args.repeats)
            row.update(against_ms=ms["old"], against_ratio=old_ratio, new_vs_against=new_vs_old)
            extra = f" {ms['old']:14.3f} {old_ratio:6.2f}x  new/old {new_vs_old:5.3f}x"
        table["models"][name] = row
        print(f"{name:18s} {ms['ort']:9.3f} {ms['edgecc']:9.3f} {ratio:6.2f}x{extra}  "
              f"{ {k: v for k, v in rewrites.items() if k != 'left_on_tvm'} } {paths}")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump(table, f, indent=1)


class edgecc_artifact:  # noqa: N801 - a context manager read as a function
    """Compile ``module`` for the host (fp32, default schedule) into a temporary folder; with
    ``source``, the fp32 kernels built from that C++ source instead; ``enabled`` False: no
    artifact (None)."""

    def __init__(self, edgecc, module, inputs, threads, source=None, enabled=True):
        self.args = (edgecc, module, inputs, threads)
        self.source = source
        self.enabled = enabled

    def __enter__(self):
        import tempfile

        from edgecc.targets.tvm import x86_fp32

        edgecc, module, inputs, threads = self.args
        self.tmp = None
        if not self.enabled:
            return None
        self.tmp = tempfile.TemporaryDirectory()
        current = x86_fp32.SOURCE
        if self.source is not None:
            x86_fp32.SOURCE = self.source  # read by x86_fp32.external_module at build time
        try:
            res = edgecc.compile(module, "host", example_inputs=inputs, progress=False,
                                 output_dir=os.path.join(self.tmp.name, "o"),
                                 target_options={"num_threads": threads})
        finally:
            x86_fp32.SOURCE = current
        res.run(*inputs)
        return res

    def __exit__(self, *exc):
        if self.tmp is not None:
            self.tmp.cleanup()


if __name__ == "__main__":
    main()
