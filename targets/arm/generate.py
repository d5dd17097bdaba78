"""Generate with an edgecc arm64 decoder bundle on the board (numpy + the TVM runtime; no
edgecc, no PyTorch).

On the board (64-bit Arm Linux, Python >= 3.9)::

    pip install numpy apache-tvm-ffi==0.1.14.post0 apache-tvm==0.27.0.post1 [tokenizers]
    python3 generate.py . --prompt "The capital of France is" -n 32
    python3 generate.py . --prompt-ids 1,9690,314 -n 16 --temperature 0.8 --top-k 40 \\
        --top-p 0.95 --seed 1

The bundle (``edgecc.llm.build_decoder(dec, "arm64", ...)``): ``decoder.json`` (the model's
shape, the prefill length, a folder a phase), ``prefill/model.so`` and ``decode/model.so``
(one folder when the prefill is one token), ``tokenizer/tokenizer.json``. Each library is a
TVM Relax VM executable whose ``main(input_ids, input_pos, k_cache, v_cache)`` returns
``(logits, k_new, v_new)``; this script owns the KV cache (numpy, float32
``[layers, kv_heads, max_seq_len, head_dim]``) and writes each step's new entries into it.

The prompt runs in chunks of the prefill length (whole chunks, then the last chunk's
tokens again, or one chunk padded at the end for a short prompt), then one decode step a
token: the same schedule and the same sampler as ``edgecc.llm.Generator`` (greedy at
temperature 0; else temperature, top-k, top-p, a draw from numpy's PCG64 seeded with
``--seed``), so a bundle gives the same tokens here as its host build does in edgecc.
Tokens are printed as they come (text with ``--prompt`` and the ``tokenizers`` package,
else ids), then the prefill and decode speed in tokens/s on stderr. ``--jsonl`` prints one
JSON object a token and a last one with the speed (what ``edgecc generate`` reads when it
runs this script under qemu-aarch64; there the speed is the emulator's, not the chip's).
"""

import argparse
import json
import os
import sys
import time

import numpy as np

try:  # on the board: sampling.py beside this script (edgecc/llm/sampling.py, copied in)
    import sampling
except ImportError:  # this file in edgecc's source tree (loaded by its tests)
    from edgecc.llm import sampling

CONFIG_FILE = "decoder.json"


class Sampler:
    """Greedy at temperature 0 (argmax, ties to the lowest id); else logits / temperature,
    top-k, top-p (the smallest most likely set reaching p), one draw from ``rng``."""

    def __init__(self, temperature=0.0, top_k=0, top_p=1.0, seed=0):
        problem = sampling.options_problem(temperature, top_k, top_p)
        if problem:
            raise ValueError(problem)
        self.temperature, self.top_k, self.top_p, self.seed = temperature, top_k, top_p, seed

    def rng(self):
        return np.random.default_rng(self.seed)

    def pick(self, logits, rng):
        return sampling.pick(logits, rng, self.temperature, self.top_k, self.top_p)


class TvmStep:
    """One phase's library: ``(ids [1, T] int64, pos, k, v) -> (logits, k_new, v_new)``."""

    def __init__(self, library):
        import tvm
        from tvm.runtime.vm import VirtualMachine

        self.tvm = tvm
        self.device = tvm.cpu()
        self.vm = VirtualMachine(tvm.runtime.load_module(library), self.device)

    def __call__(self, ids, pos, k, v):
        t = self.tvm.runtime.tensor
        out = self.vm["main"](t(np.ascontiguousarray(ids, np.int64), self.device),
                              t(np.array([pos], np.int64), self.device),
                              t(k, self.device), t(v, self.device))
        return tuple(o.numpy() for o in out)


class BoardGenerator:
    """Prefill + decode over a prefill and a decode step (``TvmStep``s, or any callables
    with their signature); ``stats`` holds the last run's token counts and seconds."""

    def __init__(self, config, prefill_len, prefill_step, decode_step):
        self.config, self.prefill_len = config, int(prefill_len)
        self.prefill_step, self.decode_step = prefill_step, decode_step
        self.max_seq_len = int(config["max_seq_len"])
        self.eos = set(config.get("eos_token_ids") or ())
        self.stats = {}

    @classmethod
    def from_bundle(cls, bundle):
        with open(os.path.join(bundle, CONFIG_FILE)) as f:
            data = json.load(f)
        phases = data.get("phases", {})
        dirs = {p: phases.get(p, {}).get("dir", p) for p in ("prefill", "decode")}
        decode = TvmStep(os.path.join(bundle, dirs["decode"], "model.so"))
        prefill = decode if dirs["prefill"] == dirs["decode"] else TvmStep(
            os.path.join(bundle, dirs["prefill"], "model.so"))
        return cls(data["config"], data["prefill_len"], prefill, decode)

    def _step(self, step, ids, pos, k, v):
        logits, k_new, v_new = step(ids, pos, k, v)
        k[:, :, pos:pos + k_new.shape[2]] = k_new
        v[:, :, pos:pos + v_new.shape[2]] = v_new
        return logits

    def prefill(self, ids):
        c, n = self.prefill_len, len(ids)
        cfg = self.config
        shape = (cfg["n_layer"], cfg["n_kv_head"], self.max_seq_len, cfg["head_dim"])
        k, v = np.zeros(shape, np.float32), np.zeros(shape, np.float32)
        prompt = np.asarray(ids, np.int64)
        rows = np.empty((n, cfg["vocab_size"]), np.float32)
        starts = list(range(0, n - c + 1, c)) if n >= c else []
        if n % c and n >= c:
            starts.append(n - c)  # the last c tokens again (same values, same slots)
        for s in starts:
            rows[s:s + c] = self._step(self.prefill_step, prompt[None, s:s + c], s, k, v)[0]
        if n < c:
            padded = np.zeros((1, c), np.int64)
            padded[0, :n] = prompt
            rows[:] = self._step(self.prefill_step, padded, 0, k, v)[0, :n]
        return rows, k, v

    def generate(self, prompt_ids, max_new_tokens, sampler=None, stop_at_eos=True):
        """Yield up to ``max_new_tokens`` tokens after the prompt, one at a time."""
        sampler = sampler or Sampler()
        ids = [int(i) for i in prompt_ids]
        if not ids:
            raise ValueError("the prompt is empty: give at least one token")
        if len(ids) + max_new_tokens > self.max_seq_len:
            raise ValueError(f"a prompt of {len(ids)} tokens plus {max_new_tokens} to "
                             f"generate does not fit the KV cache of {self.max_seq_len} "
                             "positions")
        stats = self.stats = {"prompt_tokens": len(ids), "generated_tokens": 0,
                              "prefill_seconds": 0.0, "decode_seconds": 0.0}
        if max_new_tokens == 0:
            return
        rng = sampler.rng()
        t0 = time.perf_counter()
        rows, k, v = self.prefill(ids)
        stats["prefill_seconds"] = time.perf_counter() - t0
        token = sampler.pick(rows[-1], rng)
        pos = len(ids)
        while True:
            stats["generated_tokens"] += 1
            yield token
            if stats["generated_tokens"] >= max_new_tokens or (stop_at_eos and token in self.eos):
                return
            t0 = time.perf_counter()
            logits = self._step(self.decode_step, np.array([[token]], np.int64), pos, k, v)
            token = sampler.pick(logits[0, -1], rng)
            stats["decode_seconds"] += time.perf_counter() - t0
            pos += 1

    def speed(self):
        s = self.stats
        pre = s["prompt_tokens"] / s["prefill_seconds"] if s.get("prefill_seconds") else 0.0
        steps = max(s.get("generated_tokens", 0) - 1, 0)
        dec = steps / s["decode_seconds"] if s.get("decode_seconds") else 0.0
        return {"prompt_tokens": s.get("prompt_tokens", 0),
                "generated_tokens": s.get("generated_tokens", 0),
                "prefill_tokens_per_s": pre, "decode_tokens_per_s": dec}


def _tokenizer(bundle):
    path = os.path.join(bundle, "tokenizer", "tokenizer.json")
    if not os.path.exists(path):
        sys.exit(f"error: '{bundle}' was built without a tokenizer: give --prompt-ids")
    try:
        from tokenizers import Tokenizer
    except ImportError:
        sys.exit("error: --prompt needs the tokenizers package (pip install tokenizers), "
                 "or give --prompt-ids")
    return Tokenizer.from_file(path)


def main():
    ap = argparse.ArgumentParser(description="generate with an edgecc arm64 decoder bundle")
    ap.add_argument("bundle", nargs="?", default=os.path.dirname(os.path.abspath(__file__)))
    group = ap.add_mutually_exclusive_group(required=True)
    group.add_argument("--prompt")
    group.add_argument("--prompt-ids", metavar="IDS", help="comma-separated token ids")
    ap.add_argument("-n", "--max-new-tokens", type=int, default=64)
    ap.add_argument("--temperature", type=float, default=0.0)
    ap.add_argument("--top-k", type=int, default=0)
    ap.add_argument("--top-p", type=float, default=1.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--ignore-eos", action="store_true")
    ap.add_argument("--jsonl", action="store_true",
                    help="one JSON object a token, then one with the speed")
    args = ap.parse_args()
    os.environ.setdefault("TVM_USE_RUNTIME_LIB", "1")
    try:
        sampler = Sampler(args.temperature, args.top_k, args.top_p, args.seed)
        tok = None
        if args.prompt is not None:
            tok = _tokenizer(args.bundle)
            ids = tok.encode(args.prompt, add_special_tokens=False).ids
        else:
            ids = [int(x) for x in args.prompt_ids.split(",") if x.strip()]
        gen = BoardGenerator.from_bundle(args.bundle)
        tokens, shown = [], ""
        for token in gen.generate(ids, args.max_new_tokens, sampler,
                                  stop_at_eos=not args.ignore_eos):
            tokens.append(token)
            if args.jsonl:
                sys.stdout.write(json.dumps({"token": token}) + "\n")
            elif tok is not None:
                full = tok.decode(tokens)
                sys.stdout.write(full[len(shown):])
                shown = full
            else:
                sys.stdout.write(f"{token} ")
            sys.stdout.flush()
    except ValueError as e:
        sys.exit(f"error: {e}")
    speed = gen.speed()
    if args.jsonl:
        print(json.dumps({"stats": speed}), flush=True)
        return 0
    print()
    print(f"[arm64] prefill {speed['prompt_tokens']} tokens "
          f"{speed['prefill_tokens_per_s']:.1f} tok/s, decode {speed['generated_tokens']} "
          f"tokens {speed['decode_tokens_per_s']:.1f} tok/s", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
