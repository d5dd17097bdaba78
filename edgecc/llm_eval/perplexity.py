"""Perplexity of a decoder on token windows: an edgecc program (PyTorch) or a GGUF file run
by llama.cpp (xllamacpp), on the same windows so the numbers compare.

``windows(ids, ctx)`` cuts the token ids into non-overlapping windows of ``ctx`` tokens (a
last partial window is dropped); each window is evaluated on its own, from an empty
context and without a BOS token, and every token after the first is scored::

    ppl = exp( mean over windows w, positions 1 <= i < ctx of  -log p(w[i] | w[:i]) )

* Program: one forward pass over the whole window (``input_ids [1, ctx]``, first output =
  logits), ``log_softmax`` in float64.
* llama.cpp: its server API returns log-probabilities of generated tokens only, so every
  position is one completion of the prefix ``w[:i]`` (``cache_prompt``: llama.cpp decodes
  just the one new token) whose single generated token is forced to ``w[i]`` with a logit
  bias; the log-probability it reports for that token is computed from the raw logits
  (before sampling), which is ``log p(w[i] | w[:i])`` (checked: equal to the full
  ``n_probs = n_vocab`` distribution within 1e-5). F32 KV cache, flash attention off
  (``targets/gguf/runner.LlamaCppRunner``).
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from edgecc.errors import EdgeccError
from edgecc.program import Program


@dataclasses.dataclass(frozen=True)
class Perplexity:
    """What ``program_perplexity`` / ``llamacpp_perplexity`` measured."""

    perplexity: float
    nll: float  # mean negative log-likelihood per scored token (nats)
    tokens: int  # scored tokens: windows * (ctx - 1)
    windows: int
    ctx: int
    seconds: float
    runtime: str  # "edgecc program (PyTorch)" | "llama.cpp (xllamacpp ...)"

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def windows(ids: Sequence[int], ctx: int, max_windows: int = 0) -> list[list[int]]:
    """Non-overlapping windows of ``ctx`` tokens (``max_windows`` > 0: the first that many)."""
    if ctx < 2:
        raise EdgeccError(f"a context of {ctx} tokens scores nothing: use --ctx 2 or more")
    n = len(ids) // ctx
    if max_windows:
        n = min(n, max_windows)
    if n == 0:
        raise EdgeccError(f"the text has {len(ids)} tokens, fewer than one window of {ctx}: "
                          "use a longer text or a smaller --ctx")
    return [list(map(int, ids[i * ctx:(i + 1) * ctx])) for i in range(n)]


def _result(nll_sum: float, count: int, wins: list[list[int]], t0: float, runtime: str
            ) -> Perplexity:
    nll = nll_sum / count
    return Perplexity(math.exp(nll), nll, count, len(wins), len(wins[0]),
                      round(time.perf_counter() - t0, 3), runtime)


def window_nll(logits: torch.Tensor, window: Sequence[int]) -> float:
    """Sum of ``-log p(w[i] | w[:i])`` for ``i >= 1`` from logits ``[ctx, n_vocab]``."""
    lp = torch.log_softmax(logits[:-1].double(), dim=-1)
    target = torch.tensor(window[1:], dtype=torch.int64)
    return float(-lp.gather(1, target[:, None]).sum())


def program_perplexity(program: Program, wins: list[list[int]]) -> Perplexity:
    """Perplexity of an edgecc program (run in PyTorch) whose first input is ``input_ids``
    ``[1, seq]`` and whose first output is the logits ``[1, seq, n_vocab]``."""
    t0 = time.perf_counter()
    total = 0.0
    with torch.no_grad():
        for w in wins:
            logits = program.run(torch.tensor([w], dtype=torch.int64))[0]
            if logits.dim() != 3 or logits.shape[1] != len(w):
                raise EdgeccError(f"the program's first output has shape "
                                  f"{tuple(logits.shape)}, not logits [1, {len(w)}, n_vocab]")
            total += window_nll(logits[0], w)
    return _result(total, len(wins) * (len(wins[0]) - 1), wins, t0, "edgecc program (PyTorch)")


def module_perplexity(module: torch.nn.Module, wins: list[list[int]]) -> Perplexity:
    """The same for a ``transformers`` causal LM (PyTorch eager: ``module(ids).logits``)."""
    t0 = time.perf_counter()
    total = 0.0
    with torch.no_grad():
        for w in wins:
            out = module(torch.tensor([w], dtype=torch.int64))
            logits = out.logits if hasattr(out, "logits") else out[0]
            total += window_nll(logits[0], w)
    return _result(total, len(wins) * (len(wins[0]) - 1), wins, t0, "PyTorch eager")


def llamacpp_perplexity(path: str, wins: list[list[int]], *, threads: int = 2,
                        runner: Any = None) -> Perplexity:
    """Perplexity of a GGUF file run by llama.cpp (see the module docstring)."""
    from importlib.metadata import version

    from edgecc.registry import default_target_registry

    t0 = time.perf_counter()
    ctx = len(wins[0])
    gguf_target = default_target_registry().get("gguf")
    runner = runner or gguf_target.llama_cpp(path, n_ctx=max(64, ctx + 8), threads=threads)
    total = 0.0
    for w in wins:
        for i in range(1, len(w)):
            total -= next_token_logprob(runner, w[:i], w[i])
    return _result(total, len(wins) * (ctx - 1), wins, t0,
                   f"llama.cpp (xllamacpp {version('xllamacpp')})")


def next_token_logprob(runner: Any, prefix: Sequence[int], token: int) -> float:
    """``log p(token | prefix)`` from llama.cpp: one forced completion step."""
    out = runner.server.handle_completions({
        "prompt": [int(t) for t in prefix], "n_predict": 1, "n_probs": 1,
        "temperature": 0, "add_special": False, "cache_prompt": True,
        "logit_bias": [[int(token), 1000.0]]})
    if "error" in out:
        raise EdgeccError(f"llama.cpp refused the request: {out['error']}")
    entry = out["choices"][0]["logprobs"]["content"][0]
    if int(entry["id"]) != int(token):
        raise EdgeccError(f"llama.cpp generated token {entry['id']} where {token} was forced "
                          "(logit bias not applied)")
    lp = float(entry["logprob"])
    if not np.isfinite(lp):
        raise EdgeccError(f"llama.cpp gave log p = {lp} for token {token}")
    return lp
