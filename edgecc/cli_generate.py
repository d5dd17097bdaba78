"""``edgecc generate OUT/ --prompt "..." -n 64``: generate text with a built decoder.

    edgecc generate out/ --prompt "The capital of France is" -n 32
    edgecc generate out/ --prompt-ids 1,9690,314 -n 16 --temperature 0.8 --top-k 40 \\
        --top-p 0.95 --seed 1

``OUT`` is one of:

* a decoder bundle (``edgecc.llm.build_decoder``) for ``host``: run here by
  ``edgecc.llm.Generator`` (TVM, prefill + decode libraries, static KV cache);
* a decoder bundle for ``arm64``: its board-side generator ``generate.py`` (numpy + the
  TVM runtime: what a board runs) under qemu-aarch64, one emulator launch for the whole
  generation, tokens streamed as it prints them, when the emulation cache is set up
  (``scripts/setup_arm.sh``); the tokens/s are the emulator's, not the chip's. A bundle
  without ``generate.py`` (older edgecc) runs step by step, one launch a step;
* a ``-t gguf`` output (``model.gguf``): llama.cpp through xllamacpp, F32 KV cache.

Tokens are printed as they come (text through the bundle's tokenizer, else ids), then one
line with the prefill and decode speed in tokens/s (on stderr: stdout is the text).
Greedy at ``--temperature 0`` (the default); sampling is seeded, but llama.cpp draws with
its own generator, so a seed reproduces tokens within one runtime, not across them.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

from edgecc.errors import EdgeccError, InputSpecError

GGUF_FILE = "model.gguf"
ARM64_GENERATOR = "generate.py"  # an arm64 bundle's board-side generator


def add_generate_parser(sub: Any) -> None:
    """Register ``edgecc generate`` on the CLI's subparsers."""
    p = sub.add_parser("generate", help="generate text with a built decoder LLM (host, "
                                        "arm64 under qemu, or -t gguf via llama.cpp)")
    p.add_argument("output_dir", help="a decoder bundle (edgecc.llm.build_decoder) or a "
                                      "-t gguf output directory")
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--prompt", default=None, help="prompt text (needs the tokenizer)")
    group.add_argument("--prompt-ids", default=None, metavar="IDS",
                       help="comma-separated token ids, e.g. 1,9690,314")
    p.add_argument("-n", "--max-new-tokens", type=int, default=64)
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-k", type=int, default=0, help="0 = no limit")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=0,
                   help="llama.cpp's CPU threads (0: 1); TVM bundles use the thread count "
                        "they were built with (num_threads target option)")
    p.add_argument("--ignore-eos", action="store_true",
                   help="generate all -n tokens even after the end-of-sequence token")
    p.add_argument("--json", action="store_true",
                   help="print one JSON object (token ids, text, tokens/s) instead")
    p.set_defaults(func=cmd_generate)


def cmd_generate(args: argparse.Namespace) -> int:
    from edgecc.llm.runtime import CONFIG_FILE, Sampler

    out = args.output_dir
    sampler = Sampler(args.temperature, args.top_k, args.top_p, args.seed)
    if os.path.exists(os.path.join(out, CONFIG_FILE)):
        from edgecc.llm.build import load_tokenizer
        from edgecc.llm.runtime import read_config

        kind = read_config(out)["target"]
        tokenizer = load_tokenizer(out)
    elif os.path.exists(os.path.join(out, GGUF_FILE)):
        kind, tokenizer = "gguf", None
    else:
        raise InputSpecError(f"'{out}' holds neither a decoder bundle ({CONFIG_FILE}: "
                             f"edgecc.llm.build_decoder) nor a -t gguf file ({GGUF_FILE})")
    if kind == "gguf":
        runner: Callable[..., Any] = _llamacpp
    elif kind == "arm64" and os.path.exists(os.path.join(out, ARM64_GENERATOR)):
        runner = _arm64
    elif kind in ("host", "arm64"):
        runner = _tvm
    else:
        raise InputSpecError(f"'{out}': a {kind} bundle cannot generate here")
    ids: list[int] | str
    if args.prompt_ids is not None:
        try:
            ids = [int(x) for x in args.prompt_ids.split(",") if x.strip()]
        except ValueError:
            raise InputSpecError(f"--prompt-ids '{args.prompt_ids}': give comma-separated "
                                 "integers, e.g. 1,9690,314") from None
    elif kind == "gguf":
        ids = args.prompt  # llama.cpp tokenizes with the file's own tokenizer
    elif tokenizer is None:
        raise InputSpecError(f"'{out}' was built without a tokenizer: give --prompt-ids")
    else:
        ids = tokenizer(args.prompt, add_special_tokens=False)["input_ids"]
    tokens: list[int] = []
    pieces: list[str] = []  # llama.cpp's own text of each token
    shown = [""]
    stats: dict[str, Any] = {}

    def emit(token: int, text: str | None) -> None:  # called as each token is produced
        tokens.append(token)
        if text is not None:
            pieces.append(text)
        if args.json:
            return
        if text is None and tokenizer is not None:
            full = tokenizer.decode(tokens)
            text, shown[0] = full[len(shown[0]):], full
        sys.stdout.write(text if text is not None else f"{token} ")
        sys.stdout.flush()

    runner(out, ids, args, sampler, stats, emit)
    if args.json:
        text = tokenizer.decode(tokens) if tokenizer is not None else (
            "".join(pieces) if pieces else None)
        print(json.dumps({"tokens": tokens, "text": text, "runtime": kind, **stats}))
        return 0
    print()
    print(f"[{kind}] prefill {stats['prompt_tokens']} tokens "
          f"{stats['prefill_tokens_per_s']:.1f} tok/s, decode {len(tokens)} tokens "
          f"{stats['decode_tokens_per_s']:.1f} tok/s"
          + (" (under qemu-aarch64: the emulator's speed, not the chip's)"
             if stats.get("emulated") else ""), file=sys.stderr)
    return 0


# -- runtimes: each calls emit(token id, its text or None) per token and fills stats --------

Emit = Callable[[int, "str | None"], None]


def _tvm(out: str, ids: list[int], args: argparse.Namespace, sampler: Any,
         stats: dict[str, Any], emit: Emit) -> None:
    from edgecc.llm.runtime import Generator

    gen = Generator(out)
    for token in gen.generate(ids, args.max_new_tokens, sampler,
                              stop_at_eos=not args.ignore_eos):
        emit(token, None)
    stats.update(prompt_tokens=gen.stats.prompt_tokens,
                 prefill_tokens_per_s=gen.stats.prefill_tokens_per_s,
                 decode_tokens_per_s=gen.stats.decode_tokens_per_s)


def _arm64(out: str, ids: list[int], args: argparse.Namespace, sampler: Any,
           stats: dict[str, Any], emit: Emit) -> None:
    """The bundle's board-side ``generate.py`` under qemu-aarch64 (the arm64 target's
    ``generate``): one emulator launch, tokens streamed as the script prints them."""
    from edgecc.llm.runtime import check_request, read_config
    from edgecc.registry import default_target_registry

    report = read_config(out)
    check_request(int(report["config"]["max_seq_len"]), len(ids), args.max_new_tokens)
    threads = int((report.get("target_options") or {}).get("num_threads") or 0)
    speed: dict[str, Any] = {}
    target = default_target_registry().get("arm64")()
    for token in target.generate(out, ids, args.max_new_tokens,
                                 temperature=sampler.temperature, top_k=sampler.top_k,
                                 top_p=sampler.top_p, seed=sampler.seed,
                                 stop_at_eos=not args.ignore_eos, num_threads=threads,
                                 stats=speed):
        emit(token, None)
    stats.update(prompt_tokens=len(ids),
                 prefill_tokens_per_s=float(speed.get("prefill_tokens_per_s", 0.0)),
                 decode_tokens_per_s=float(speed.get("decode_tokens_per_s", 0.0)),
                 emulated="qemu-aarch64: the tokens/s are the emulator's, not the chip's")


def _llamacpp(out: str, prompt: list[int] | str, args: argparse.Namespace, sampler: Any,
              stats: dict[str, Any], emit: Emit) -> None:
    """llama.cpp (xllamacpp) streaming a completion: F32 KV cache, flash attention off,
    as ``edgecc.targets.gguf.runner`` runs files."""
    try:
        import xllamacpp as x
    except ImportError:
        raise EdgeccError("generating with a -t gguf file needs llama.cpp: pip install -c "
                          "constraints.txt xllamacpp") from None
    path = os.path.join(out, GGUF_FILE)
    context = _context_length(path)
    if isinstance(prompt, list):
        n_prompt = len(prompt)
        if n_prompt < 1:
            raise InputSpecError("the prompt is empty: give at least one token")
        if n_prompt + args.max_new_tokens > context:
            raise InputSpecError(
                f"a prompt of {n_prompt} tokens plus {args.max_new_tokens} to generate does "
                f"not fit the context of {context} positions: shorten the prompt or "
                "generate fewer tokens")
    params = x.CommonParams()
    params.model.path = path
    params.n_ctx = context
    params.cache_type_k = params.cache_type_v = x.ggml_type.GGML_TYPE_F32
    params.flash_attn_type = x.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_DISABLED
    params.cpuparams.n_threads = params.cpuparams_batch.n_threads = args.threads or 1
    params.warmup = False
    params.verbosity = -1
    server = x.Server(params)
    chunks: list[dict[str, Any]] = []
    request = {"prompt": prompt, "n_predict": args.max_new_tokens, "stream": True,
               "n_probs": 1, "cache_prompt": False, "add_special": False,
               "temperature": sampler.temperature, "top_k": sampler.top_k,
               "top_p": sampler.top_p, "seed": sampler.seed, "min_p": 0.0,
               "ignore_eos": bool(args.ignore_eos)}
    started = time.perf_counter()

    def on_chunk(chunk: dict[str, Any]) -> None:  # xllamacpp calls it per token, streaming
        if "error" in chunk or chunk.get("timings"):
            chunks.append(chunk)
            return
        choice = (chunk.get("choices") or [{}])[0]
        for entry in ((choice.get("logprobs") or {}).get("content") or []):
            emit(int(entry["id"]), choice.get("text") or "")

    server.handle_completions(request, on_chunk)
    errors = [c["error"] for c in chunks if "error" in c]
    if errors:
        raise EdgeccError(f"llama.cpp refused the request: {errors[0]}")
    timings = next((c["timings"] for c in chunks if "timings" in c), {})
    stats.update(prompt_tokens=int(timings.get("prompt_n", 0)),
                 prefill_tokens_per_s=float(timings.get("prompt_per_second", 0.0)),
                 decode_tokens_per_s=float(timings.get("predicted_per_second", 0.0)),
                 seconds=round(time.perf_counter() - started, 3))


def _context_length(path: str) -> int:
    import gguf

    reader = gguf.GGUFReader(path)
    arch = str(reader.fields["general.architecture"].contents())
    field = reader.fields.get(f"{arch}.context_length")
    return int(field.contents()) if field is not None else 2048


__all__ = ["add_generate_parser", "cmd_generate"]

