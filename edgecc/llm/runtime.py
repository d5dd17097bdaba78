"""Token generation over a built decoder bundle: prefill, then one decode step a token.

    gen = Generator("out/")                                  # a build_decoder bundle
    for token in gen.generate([1, 2, 3], 16, Sampler(temperature=0.8, top_k=40, seed=1)):
        ...                                                  # streamed as each is produced
    gen.stats.line()                                         # prefill / decode tokens/s

A bundle (``build_decoder``'s output directory)::

    decoder.json       {"config": {...}, "prefill_len": C, "target": ..., ...}
    prefill/           edgecc.compile output: the step with T = C tokens
    decode/            edgecc.compile output: the step with T = 1

Each phase runs through its target's own runner (``Target.load``: the host's TVM VM in
this process; arm64 libraries under qemu-aarch64, one emulator launch a step), so this
module needs no backend library. Each step is ``(input_ids, input_pos, k_cache, v_cache)
-> (logits, k_new, v_new)`` (``edgecc.llm.decoder``); the generator owns the cache and
writes each step's new keys and values into it in place (``write_cache``). A prompt runs
in chunks of ``C``: whole chunks, then the last ``C`` prompt tokens again (recomputing a
few positions with the same values) or, for a prompt shorter than ``C``, one chunk padded
at the end (the padding's cache slots lie at or after the position of every later step,
which sees only the slots before it, until decode steps overwrite them).

Sampling (``Sampler``): temperature 0 is greedy (argmax; ties take the lowest id, as
PyTorch's); otherwise logits / temperature, then top-k, then top-p (the smallest set of
most likely tokens whose probability reaches p), then a draw from numpy's PCG64 seeded
with ``seed``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from collections.abc import Iterator, Sequence

import numpy as np
import torch

from edgecc.errors import InputSpecError
from edgecc.llm import sampling

CONFIG_FILE = "decoder.json"
PHASES = ("prefill", "decode")


class GenerationError(InputSpecError):
    """A request the bundle cannot serve: a prompt longer than the cache, bad sampling
    options, a folder that is not a bundle."""


@dataclasses.dataclass(frozen=True)
class Sampler:
    temperature: float = 0.0  # 0: greedy
    top_k: int = 0  # 0: no limit
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        problem = sampling.options_problem(self.temperature, self.top_k, self.top_p)
        if problem:
            raise GenerationError(problem)

    def rng(self) -> np.random.Generator:
        return np.random.default_rng(self.seed)

    def pick(self, logits: np.ndarray, rng: np.random.Generator) -> int:
        """The next token from one position's logits ``[vocab]`` (``sampling.pick``, the
        code the arm64 bundle's ``generate.py`` runs too)."""
        return sampling.pick(logits, rng, self.temperature, self.top_k, self.top_p)


@dataclasses.dataclass
class Stats:
    prompt_tokens: int = 0
    generated_tokens: int = 0
    prefill_seconds: float = 0.0
    decode_seconds: float = 0.0

    @property
    def prefill_tokens_per_s(self) -> float:
        return self.prompt_tokens / self.prefill_seconds if self.prefill_seconds else 0.0

    @property
    def decode_tokens_per_s(self) -> float:
        # the first generated token comes from the prefill's logits: decode steps made
        # the others
        steps = max(self.generated_tokens - 1, 0)
        return steps / self.decode_seconds if self.decode_seconds else 0.0

    def line(self) -> str:
        return (f"prefill {self.prompt_tokens} tokens {self.prefill_tokens_per_s:.1f} tok/s, "
                f"decode {self.generated_tokens} tokens {self.decode_tokens_per_s:.1f} tok/s")


def check_request(max_seq_len: int, n_prompt: int, max_new_tokens: int) -> None:
    """``GenerationError`` unless ``n_prompt`` tokens plus ``max_new_tokens`` fit the cache."""
    if n_prompt < 1:
        raise GenerationError("the prompt is empty: give at least one token")
    if max_new_tokens < 0:
        raise GenerationError(f"max_new_tokens={max_new_tokens}: must be >= 0")
    if n_prompt + max_new_tokens > max_seq_len:
        raise GenerationError(
            f"a prompt of {n_prompt} tokens plus {max_new_tokens} to generate does not fit "
            f"the KV cache of {max_seq_len} positions: shorten the prompt, generate fewer "
            "tokens, or rebuild with a larger max_seq_len")


def read_config(bundle: str) -> dict:
    path = os.path.join(bundle, CONFIG_FILE)
    if not os.path.exists(path):
        raise GenerationError(f"'{bundle}' is not a decoder bundle (no {CONFIG_FILE}): build "
                              "one with edgecc.llm.build_decoder")
    with open(path) as f:
        return json.load(f)


class PhaseStep:
    """One phase's compiled step, run by its target's runner (``Target.load``); the new
    keys and values it returns are written into the caller's cache in place."""

    def __init__(self, phase_dir: str):
        from edgecc.compiler import load_compiled

        manifest, target, _ = load_compiled(phase_dir)
        self.runner = target.load(phase_dir, manifest)

    def __call__(self, ids: np.ndarray, pos: int, k: torch.Tensor, v: torch.Tensor
                 ) -> np.ndarray:
        from edgecc.llm.decoder import write_cache

        logits, k_new, v_new = self.runner.run(torch.from_numpy(ids),
                                               torch.tensor([pos], dtype=torch.int64), k, v)
        write_cache(k, k_new, pos)
        write_cache(v, v_new, pos)
        return logits.numpy()


class Generator:
    """Prefill + decode over a bundle's two TVM libraries (see the module docstring).

        gen = Generator(bundle)
        for token in gen.generate([1, 2, 3], 16, Sampler(temperature=0.8, seed=1)):
            ...                      # streamed as each is produced
        gen.stats.line()             # tokens/s of prefill and decode
    """

    def __init__(self, bundle: str):
        data = read_config(bundle)
        self.config = data["config"]
        self.prefill_len = int(data["prefill_len"])
        self.max_seq_len = int(self.config["max_seq_len"])
        self.eos = set(self.config.get("eos_token_ids") or ())
        phases = data.get("phases", {})
        if data.get("library"):  # host: one library, a function a phase (host_library)
            from edgecc.llm.host_library import load_steps

            library = data["library"]
            steps = load_steps(bundle, library["functions"], library.get("num_threads") or 0)
            self.decode_step = steps[phases["decode"]["function"]]
            self.prefill_step = steps[phases["prefill"]["function"]]
        else:  # a compiled folder a phase (arm64)
            dirs = {phase: phases.get(phase, {}).get("dir", phase) for phase in PHASES}
            self.decode_step = PhaseStep(os.path.join(bundle, dirs["decode"]))
            self.prefill_step = (self.decode_step if dirs["prefill"] == dirs["decode"]
                                 else PhaseStep(os.path.join(bundle, dirs["prefill"])))
        self.stats = Stats()

    def check(self, n_prompt: int, max_new_tokens: int) -> None:
        check_request(self.max_seq_len, n_prompt, max_new_tokens)

    def empty_cache(self) -> tuple[torch.Tensor, torch.Tensor]:
        shape = (self.config["n_layer"], self.config["n_kv_head"], self.max_seq_len,
                 self.config["head_dim"])
        return torch.zeros(shape), torch.zeros(shape)

    def prefill(self, ids: Sequence[int]) -> tuple[np.ndarray, torch.Tensor, torch.Tensor]:
        """Run the prompt; the logits ``[n, vocab]`` of every prompt position and the cache."""
        c, n = self.prefill_len, len(ids)
        k, v = self.empty_cache()
        prompt = np.asarray(ids, np.int64)
        rows = np.empty((n, self.config["vocab_size"]), np.float32)
        starts = list(range(0, n - c + 1, c)) if n >= c else []
        if n % c and n >= c:
            starts.append(n - c)  # the last c tokens again (see the module docstring)
        for s in starts:
            rows[s:s + c] = self.prefill_step(prompt[None, s:s + c], s, k, v)[0]
        if n < c:
            padded = np.zeros((1, c), np.int64)
            padded[0, :n] = prompt
            rows[:] = self.prefill_step(padded, 0, k, v)[0, :n]
        return rows, k, v

    def generate(self, prompt_ids: Sequence[int], max_new_tokens: int,
                 sampler: Sampler = Sampler(), stop_at_eos: bool = True) -> Iterator[int]:
        """Yield up to ``max_new_tokens`` tokens after the prompt, one at a time."""
        ids = [int(i) for i in prompt_ids]
        self.check(len(ids), max_new_tokens)
        self.stats = stats = Stats(prompt_tokens=len(ids))
        if max_new_tokens == 0:
            return
        rng = sampler.rng()
        t0 = time.perf_counter()
        rows, k, v = self.prefill(ids)
        stats.prefill_seconds = time.perf_counter() - t0
        token = sampler.pick(rows[-1], rng)
        pos = len(ids)
        while True:
            stats.generated_tokens += 1
            yield token  # the consumer's time is not counted
            if stats.generated_tokens >= max_new_tokens or (stop_at_eos and token in self.eos):
                return
            t0 = time.perf_counter()
            logits = self.decode_step(np.array([[token]], np.int64), pos, k, v)
            token = sampler.pick(logits[0, -1], rng)
            stats.decode_seconds += time.perf_counter() - t0
            pos += 1
