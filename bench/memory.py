"""Peak memory of quantizing a Llama-architecture model: w4a16 (GPTQ) and w8a8, from a
config with random weights, through edgecc.compile to the ONNX target with external data.
Goal: peak RSS <= 1.5x the fp32 weight bytes. Prints a table and writes
``bench/results/memory.json``.

    python bench/memory.py                       # ~1.1B parameters (TinyLlama-1.1B shape)
    python bench/memory.py --hidden 512 --layers 4 --intermediate 1408 --vocab 8000  # small

``--mmap-threshold BYTES`` sets ``EDGECC_MMAP_THRESHOLD`` for the measured processes
(``edgecc/malloc.py``: compile fixes glibc's mmap threshold at 1 MiB for models of >= 256
MiB of weights; 0 leaves glibc's dynamic threshold). ``--out NAME`` picks the JSON file
under ``bench/results/`` (default ``memory.json``). Run it with ``OMP_NUM_THREADS=1`` on a
shared machine: GPTQ's column loop is many small ops, 15x slower with two threads
competing for loaded cores (measured: 2048x2048 layer 43.6 s vs 2.9 s).

Where the memory goes (1.1B TinyLlama shape, w8a8, ``memory-1.1b-w8a8.json``: peak 5.97
GiB = 1.46x the 4.10 GiB of fp32 weights, goal met): Python + torch 0.37 GiB (0.09x); the
float model (1x: the caller's traced program, which compile's original, working program
and the quantize pass's reference share instead of copying); the int8 codes (0.25x); the
rest (~0.1x) is the output-error runs' transient (one dequantized weight, activations),
the highest place in the run. Cut this session: GPTQ Hessians (float64 ``K x K`` per layer
input, 7.7 GB = 1.9x at this shape when all were alive) are held a run of consecutive layer
inputs at a time (``hessian_budget_mib``, default 1/8 of the fp32 weights); weights are
quantized, their SQNR measured and their dequantized values built for the output-error
runs a 16 MiB block of rows at a time; glibc's heap no longer keeps freed temporaries.
w4a16-gptq at 1.1B (``memory-1.1b-w4a16-gptq.json``, commit dfc167d): peak 9.31 GiB =
2.27x, ~1x the weights above w8a8 for the whole quantize pass. What held it: finished
calibration runs' GPTQ Hessians (~340 MiB a layer at this shape, float64). The quantize
pass's calibration recorder was an ``fx.Interpreter`` subclass defined per run, closing over
the run's ``on_value`` and so its Hessian accumulators; a class is a reference cycle, so
each run's Hessians outlived their layers until Python's next full garbage collection,
which a large program's many long-lived objects make rare (found by counting torch storages
in ``gc.garbage``: every earlier run's Hessians were there). Fixed in d970864 (a
module-level recorder; a done Hessian's tensor is released at once), codes bit-identical;
``tests/passes/quantize/test_gptq_hessian_lifetime.py`` guards it with the collector off.
123M (hidden 1024, 8 layers) after the fix, under load: w4a16-gptq 1.23 GiB = 2.69x
(was 3.40x, ``memory-123m.json``; w8a8 there 2.62x; at this size Python + torch alone are
0.8x), same output error to the last digit (``memory-123m-w4a16-gptq-after.json``).
1.1B after that fix: 6.29 GiB = 1.54x, the rest of the peak in GPTQ's own working set on
the output layer (32000 x 2048: W's working copy, the codes, and the trailing update's
product ``Err @ Hinv`` — another weight's worth); that update now runs a block of rows
(~16 MiB) at a time (ea2adab, bit-identical). 1.1B w4a16-gptq now
(``memory-1.1b-w4a16-gptq.json``, OMP_NUM_THREADS=1, 2026-11-30): peak 5.97 GiB = 1.46x
(1.37x above the process's start), goal met; quantize 788 s; output error identical to the
2.27x run (SQNR 8.96 dB, cosine 0.919288).

Note: the frames the sampler names are those under this script's folder; run it from the
checkout edgecc is imported from, or the passes' frames (imported through the editable
install) are left out of "where".

Each scheme runs in a fresh process (``--one SCHEME``), so one's peak does not hide the
other's. Peak RSS is sampled every 20 ms by a thread; at each new peak the thread records
where the main thread is (the innermost edgecc / passes / targets frames), which is how the
table says where the peaks come from. ``ru_maxrss`` (the kernel's high-water mark) is
reported too. Stages: build (random init), trace (torch.export), compile (load copy,
passes, lowering with external data; verification off: it would run the model again).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import threading
import time
import traceback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
os.environ.setdefault("OMP_NUM_THREADS", "2")

PIPELINES = {
    "w8a8": "quantize{scheme=w8a8}",
    "w4a16-gptq": "quantize{scheme=w4a16,group_size=128,algorithm=gptq}",
}


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


class PeakSampler(threading.Thread):
    """Peak RSS per stage, and where the main thread was at each stage's peak."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.stage = "start"
        self.peaks: dict[str, dict] = {}
        self.main = threading.main_thread().ident
        self.running = True
        self.by_place: dict[str, int] = {}  # innermost edgecc frames -> highest RSS there

    def run(self) -> None:
        while self.running:
            now = rss()
            rec = self.peaks.setdefault(self.stage, {"peak": 0, "where": ""})
            # no stack walks while torch.export traces (reading its frames from
            # another thread broke the trace: "fake tensor in the constants")
            where = self.where() if self.stage == "compile" else ""
            if now > rec["peak"]:
                rec["peak"] = now
                rec["where"] = where
            if where:
                key = where.split(" < ")[0] + (" < " + where.split(" < ")[1]
                                                if " < " in where else "")
                self.by_place[key] = max(self.by_place.get(key, 0), now)
            time.sleep(0.02)

    def where(self) -> str:
        frame = sys._current_frames().get(self.main)
        stack = traceback.extract_stack(frame) if frame else []
        ours = [f"{os.path.relpath(s.filename, ROOT)}:{s.lineno} {s.name}"
                for s in stack if s.filename.startswith(ROOT)
                and "bench/" not in s.filename and ".venv" not in s.filename]
        return " < ".join(reversed(ours[-3:]))


def one(args: argparse.Namespace, scheme: str) -> dict:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    import edgecc
    from edgecc import malloc

    torch.manual_seed(0)
    sampler = PeakSampler()
    sampler.start()
    base = rss()
    sampler.stage = "build"
    config = LlamaConfig(vocab_size=args.vocab, hidden_size=args.hidden,
                         intermediate_size=args.intermediate, num_hidden_layers=args.layers,
                         num_attention_heads=args.heads, num_key_value_heads=args.kv_heads,
                         tie_word_embeddings=False)
    model = LlamaForCausalLM(config).eval()
    params = sum(p.numel() for p in model.parameters())
    fp32 = params * 4
    g = torch.Generator().manual_seed(1)
    ids = [(torch.randint(0, args.vocab, (1, args.seq), generator=g),)
           for _ in range(args.calib_batches)]
    sampler.stage = "trace"
    program = edgecc.trace(model, ids[0])
    del model  # the program holds the weights now
    sampler.stage = "compile"
    import tempfile

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory(dir=args.tmp) as tmp:
        res = edgecc.compile(program, "onnx", pipeline=PIPELINES[scheme], calibration=ids,
                             output_dir=os.path.join(tmp, "out"), verify=False,
                             target_options={"external_data": "always"}, progress=False)
        files = {a["path"]: a["bytes"] for a in res.report["artifacts"]}
    seconds = time.perf_counter() - t0
    sampler.running = False
    sampler.join()
    hwm = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return {"scheme": scheme, "parameters": params, "fp32_bytes": fp32,
            "baseline_rss": base, "ru_maxrss": hwm,
            "peak_ratio_to_fp32": round(hwm / fp32, 3),
            "peak_above_baseline_ratio": round((hwm - base) / fp32, 3),
            "stages": sampler.peaks, "artifacts": files, "compile_seconds": round(seconds, 1),
            "mmap_threshold": malloc._applied,
            "peaks_by_place": dict(sorted(sampler.by_place.items(), key=lambda kv: -kv[1])[:8]),
            "quantize_stats": {k: v for k, v in next(
                p["stats"] for p in res.report["pipeline"]["passes"] if p["pass"] == "quantize"
            ).items() if k in ("gptq_hessians", "error", "weight_bytes_after", "seconds")}}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hidden", type=int, default=2048)
    parser.add_argument("--intermediate", type=int, default=5632)
    parser.add_argument("--layers", type=int, default=22)
    parser.add_argument("--heads", type=int, default=32)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--seq", type=int, default=32)
    parser.add_argument("--calib-batches", type=int, default=4)
    parser.add_argument("--schemes", default=",".join(PIPELINES))
    parser.add_argument("--tmp", default=None, help="where the ONNX files are written")
    parser.add_argument("--mmap-threshold", type=int, default=None,
                        help="EDGECC_MMAP_THRESHOLD for the measured processes (0: glibc's "
                        "dynamic default; unset: edgecc's, 1 MiB for models >= 256 MiB)")
    parser.add_argument("--out", default="memory.json", help="file under bench/results/")
    parser.add_argument("--one", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.one:
        import warnings

        warnings.simplefilter("ignore")
        print(json.dumps(one(args, args.one)))
        return 0
    rows = []
    gib = 2 ** 30
    for scheme in args.schemes.split(","):
        argv = [f"--{k.replace('_', '-')}={v}" for k, v in vars(args).items()
                if k not in ("schemes", "one", "mmap_threshold", "out") and v is not None]
        env = dict(os.environ)
        if args.mmap_threshold is not None:
            env["EDGECC_MMAP_THRESHOLD"] = str(args.mmap_threshold)
        r = subprocess.run([sys.executable, __file__, *argv, "--one", scheme],
                           capture_output=True, text=True, env=env)
        if r.returncode != 0:
            print(f"{scheme}: failed (exit {r.returncode}): {r.stderr.strip()[-800:]}")
            continue
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    if not rows:
        return 1
    p = rows[0]["parameters"]
    print(f"glibc mmap threshold set by edgecc: {rows[0]['mmap_threshold']}")
    print(f"Llama config: {p / 1e9:.3f}B parameters, fp32 weights {rows[0]['fp32_bytes'] / gib:.2f} "
          f"GiB (hidden {args.hidden}, {args.layers} layers, vocab {args.vocab})")
    print(f"{'scheme':<12} {'peak RSS GiB':>12} {'x fp32':>7} {'(above start)':>13} "
          f"{'compile s':>9}  goal <= 1.5x")
    for r in rows:
        print(f"{r['scheme']:<12} {r['ru_maxrss'] / gib:>12.2f} {r['peak_ratio_to_fp32']:>7.2f} "
              f"{r['peak_above_baseline_ratio']:>13.2f} {r['compile_seconds']:>9.1f}  "
              f"{'met' if r['peak_ratio_to_fp32'] <= 1.5 else 'NOT met'}")
        for stage, rec in r["stages"].items():
            print(f"    {stage:<8} peak {rec['peak'] / gib:6.2f} GiB  at {rec['where'] or '-'}")
        print("    highest RSS by place (compile):")
        for place, peak in list(r["peaks_by_place"].items())[:6]:
            print(f"      {peak / gib:6.2f} GiB  {place}")
        print(f"    quantize: {r['quantize_stats']}")
    os.makedirs(os.path.join(ROOT, "bench", "results"), exist_ok=True)
    with open(os.path.join(ROOT, "bench", "results", args.out), "w") as f:
        json.dump({"config": vars(args), "runs": rows}, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
