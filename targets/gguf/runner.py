"""How a ``-t gguf`` file runs here: llama.cpp itself, through ``xllamacpp`` (a prebuilt
llama.cpp with its server API, in this process), compared with the edgecc program.

llama.cpp's server gives log-probabilities, not logits: ``logprobs(ids)`` asks for the
next-token distribution after every prefix of ``ids`` (all ``n_vocab`` entries, one
completion per prefix, no prompt cache), and ``compare`` sets them against
``log_softmax`` of the program's logits. A log-probability is the logit minus one constant
per position (the log of the softmax sum), so llama.cpp's logits are known up to that
constant: ``max_abs_logit`` compares the two with each position's mean difference removed.
That is the number F32 files are held to (1e-4): llama.cpp normalises in float32, which on
SmolLM2's 49,152-token vocabulary shifts every log-probability of a position by up to
2.3e-4 (measured against float64) while its logits stay within 4e-5 of float64 and 2.6e-5
of PyTorch's float32; ``max_abs_logprob`` reports the shifted difference too. The KV cache
is F32 and flash attention off: llama.cpp's
defaults (F16 cache) move F32 log-probabilities by ~1e-2.

Quantized files are not bit-comparable (llama.cpp quantizes the activations of quantized
matmuls to 8 bits, the program keeps them float): they are judged by top-1 agreement and
the KL divergence of llama.cpp's distribution from the program's.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from edgecc.errors import EdgeccError
from edgecc.program import Program


class LlamaCppRunner:
    """A GGUF file loaded by llama.cpp (xllamacpp), CPU, F32 KV cache."""

    def __init__(self, path: str, *, n_ctx: int = 256, threads: int = 1):
        import xllamacpp as x

        params = x.CommonParams()
        params.model.path = path
        params.n_ctx = n_ctx
        params.cache_type_k = params.cache_type_v = x.ggml_type.GGML_TYPE_F32
        params.flash_attn_type = x.llama_flash_attn_type.LLAMA_FLASH_ATTN_TYPE_DISABLED
        params.cpuparams.n_threads = threads
        params.cpuparams_batch.n_threads = threads
        params.warmup = False
        params.verbosity = -1  # llama.cpp logs every request otherwise
        self.n_ctx = n_ctx
        self.server = x.Server(params)
        self.n_vocab = _read_vocab_size(path)

    def next_token_logprobs(self, ids: Sequence[int]) -> np.ndarray:
        """``log p(token | ids)`` for every token of the vocabulary, float64 ``[n_vocab]``."""
        if len(ids) >= self.n_ctx:
            raise EdgeccError(f"a prompt of {len(ids)} tokens does not fit the context of "
                              f"{self.n_ctx}")
        out = self.server.handle_completions({
            "prompt": [int(i) for i in ids], "n_predict": 1, "n_probs": self.n_vocab,
            "temperature": 0, "add_special": False, "cache_prompt": False})
        if "error" in out:
            raise EdgeccError(f"llama.cpp refused the request: {out['error']}")
        entries = out["choices"][0]["logprobs"]["content"][0]["top_logprobs"]
        lp = np.full(self.n_vocab, -np.inf)
        for e in entries:
            lp[e["id"]] = e["logprob"]
        return lp

    def logprobs(self, ids: Sequence[int]) -> np.ndarray:
        """``[len(ids), n_vocab]``: row ``i`` is the distribution after ``ids[:i + 1]``."""
        return np.stack([self.next_token_logprobs(ids[:i + 1]) for i in range(len(ids))])

    def run(self, input_ids: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """Log-probabilities ``[batch, seq, n_vocab]`` for token ids ``[batch, seq]``."""
        rows = [self.logprobs(row.tolist()) for row in input_ids.reshape(-1, input_ids.shape[-1])]
        return (torch.from_numpy(np.stack(rows)).to(torch.float32),)


def _read_vocab_size(path: str) -> int:
    import gguf

    reader = gguf.GGUFReader(path)
    for key in ("llama.vocab_size", "tokenizer.ggml.tokens"):
        field = reader.fields.get(key)
        if field is not None:
            return int(field.contents()) if key.endswith("size") else len(field.data)
    raise EdgeccError(f"'{path}' names no vocabulary size")


def program_logprobs(program: Program, input_ids: torch.Tensor) -> np.ndarray:
    """``log_softmax`` of the program's logits (its first output) ``[seq, n_vocab]``."""
    with torch.no_grad():
        logits = program.run(input_ids.reshape(1, -1))[0]
    return torch.log_softmax(logits[0].double(), dim=-1).numpy()


def compare(program: Program, path: str, input_ids: torch.Tensor, *,
            runner: LlamaCppRunner | None = None) -> dict[str, Any]:
    """llama.cpp running ``path`` against ``program`` on ``input_ids`` (one sequence):
    max-abs difference of logits (up to a constant per position, see the module docstring)
    and of log-probabilities, top-1 agreement, mean KL(program || llama.cpp),
    and ``top1_flip_margin``: the largest gap between the program's best and second-best
    log-probability at a position where the two top-1 tokens differ (0.0: none differ) --
    a flip between near-ties is float noise, one with a wide margin is a bug."""
    ids = input_ids.reshape(-1)
    runner = runner or LlamaCppRunner(path, n_ctx=max(64, 2 * len(ids)))
    ours = program_logprobs(program, ids)
    theirs = runner.logprobs(ids.tolist())
    p = np.exp(ours)
    kl = float(np.mean(np.sum(p * (ours - np.maximum(theirs, -1e30)), axis=-1)))
    top2 = np.sort(ours, axis=-1)[:, -2:]
    flips = ours.argmax(-1) != theirs.argmax(-1)
    diff = ours - theirs
    return {"tokens": int(len(ids)),
            "max_abs_logit": float(np.abs(diff - diff.mean(-1, keepdims=True)).max()),
            "max_abs_logprob": float(np.abs(diff).max()),
            "top1_agreement": float(np.mean(~flips)),
            "top1_flip_margin": float((top2[:, 1] - top2[:, 0])[flips].max(initial=0.0)),
            "kl": max(kl, 0.0)}


def load_runner(output_dir: str, manifest: dict[str, Any]) -> LlamaCppRunner:
    from edgecc.targets.gguf.lower import MODEL

    return LlamaCppRunner(os.path.join(output_dir, MODEL))
