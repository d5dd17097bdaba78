"""``edgecc eval-ppl MODEL_OR_OUT``: perplexity of a GGUF decoder on real English text.

MODEL_OR_OUT is a ``.gguf`` file or a ``-t gguf`` output folder (its ``model.gguf``).
``--runtime llamacpp`` (default) runs the file with llama.cpp (xllamacpp); ``program``
imports it (``edgecc.load``) and runs the edgecc program in PyTorch; ``both`` does both on
the same windows. The text is Newton's *Opticks* test split (``edgecc.llm_eval.text``)
unless ``--text FILE``; the tokenizer is the file's own.
"""

from __future__ import annotations

import argparse
import json
import os
from typing import Any

from edgecc.errors import EdgeccError


def add_eval_ppl_parser(sub: Any) -> None:
    p = sub.add_parser("eval-ppl", help="perplexity of a GGUF decoder (llama.cpp and/or the "
                                        "edgecc program) on real English text")
    p.add_argument("model", help="a .gguf file or a '-t gguf' output folder")
    p.add_argument("--text", default=None, metavar="FILE",
                   help="UTF-8 text to evaluate on (default: Newton's Opticks, Books 2-3, "
                        "shipped in apache-tvm-ffi)")
    p.add_argument("--ctx", type=int, default=128, help="tokens per window (default 128)")
    p.add_argument("--windows", type=int, default=8,
                   help="evaluate the first N windows (0: all; default 8)")
    p.add_argument("--runtime", choices=("llamacpp", "program", "both"), default="llamacpp")
    p.add_argument("--threads", type=int, default=2, help="llama.cpp threads (default 2)")
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_eval_ppl)


def resolve_gguf(model: str) -> str:
    path = os.path.join(model, "model.gguf") if os.path.isdir(model) else model
    if not os.path.exists(path):
        raise EdgeccError(f"'{model}' is neither a .gguf file nor a '-t gguf' output folder "
                          "(no model.gguf in it)")
    if not path.endswith(".gguf"):
        raise EdgeccError(f"'{model}': eval-ppl reads GGUF decoders (.gguf or a '-t gguf' "
                          "output folder)")
    return path


def cmd_eval_ppl(args: argparse.Namespace) -> int:
    from edgecc.llm_eval import perplexity as ppl
    from edgecc.llm_eval import text, tokenizer

    if args.ctx < 2 or args.windows < 0 or args.threads < 1:
        raise EdgeccError("--ctx must be >= 2, --windows >= 0 and --threads >= 1")
    path = resolve_gguf(args.model)
    body = text.read_text(args.text) if args.text else text.opticks("test")
    tok = tokenizer.build_tokenizer(tokenizer.tokenizer_fields(path), f"'{path}'")
    ids = None
    if args.windows:  # ~4 characters a token: tokenize a generous prefix, not the whole book
        ids = tokenizer.encode(tok, body[:args.ctx * args.windows * 12])
        if len(ids) < args.ctx * args.windows:
            ids = None
    wins = ppl.windows(ids or tokenizer.encode(tok, body), args.ctx, args.windows)
    results = []
    if args.runtime in ("program", "both"):
        import edgecc

        results.append(ppl.program_perplexity(edgecc.load(path), wins))
    if args.runtime in ("llamacpp", "both"):
        results.append(ppl.llamacpp_perplexity(path, wins, threads=args.threads))
    source = args.text or text.SOURCE
    if args.json:
        print(json.dumps({"model": path, "text": source,
                          "results": [r.as_dict() for r in results]}, indent=2))
        return 0
    print(f"{path}: {len(wins)} windows x {args.ctx} tokens of {source}")
    for r in results:
        print(f"  {r.runtime:<32} perplexity {r.perplexity:8.4f}  ({r.tokens} tokens scored, "
              f"{r.seconds:.1f} s)")
    return 0
