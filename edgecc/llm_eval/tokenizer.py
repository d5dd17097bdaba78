"""The tokenizer a GGUF file carries (``tokenizer.ggml.*``), rebuilt with ``tokenizers``.

Reading the keys with ``gguf.GGUFReader`` takes under a second; ``transformers``'
``AutoTokenizer.from_pretrained(dir, gguf_file=...)`` parses the whole file (a minute and
more on SmolLM2). Supported: byte-level BPE (``tokenizer.ggml.model = "gpt2"``) with the
GPT-2 split rule, and SmolLM's (``pre = "smollm"``: every digit its own piece first, as
llama.cpp's ``LLAMA_VOCAB_PRE_TYPE_SMOLLM``). Others are refused with the name of the
pre-tokenizer; pass token ids instead.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from edgecc.errors import EdgeccError

_PRE = ("smollm", "gpt-2", "default")
_CONTROL = 3  # gguf.TokenType.CONTROL


class TokenizerError(EdgeccError):
    """A GGUF tokenizer edgecc cannot rebuild."""


def tokenizer_fields(path: str) -> dict[str, Any]:
    import gguf

    reader = gguf.GGUFReader(path)
    return {k: f.contents() for k, f in reader.fields.items() if k.startswith("tokenizer.ggml.")}


def build_tokenizer(fields: Mapping[str, Any], where: str = "the GGUF file") -> Any:
    """A ``tokenizers.Tokenizer`` from the ``tokenizer.ggml.*`` keys (``key -> value``)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers

    kind, pre = fields.get("tokenizer.ggml.model"), fields.get("tokenizer.ggml.pre", "default")
    if kind != "gpt2" or pre not in _PRE:
        raise TokenizerError(f"{where}: tokenizer '{kind}' / pre-tokenizer '{pre}' is not "
                             "rebuilt by edgecc (byte-level BPE 'gpt2' with pre-tokenizer "
                             f"{', '.join(_PRE)}); pass token ids instead")
    tokens = list(fields["tokenizer.ggml.tokens"])
    merges = [tuple(m.split(" ", 1)) for m in fields["tokenizer.ggml.merges"]]
    tok = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, merges,
                               fuse_unk=False, byte_fallback=False))
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    tok.pre_tokenizer = (pre_tokenizers.Sequence([
        pre_tokenizers.Digits(individual_digits=True), byte_level]) if pre == "smollm"
        else byte_level)
    tok.decoder = decoders.ByteLevel()
    types = list(fields.get("tokenizer.ggml.token_type", []))
    tok.add_special_tokens([t for t, ty in zip(tokens, types) if int(ty) == _CONTROL])
    return tok


def encode(tokenizer: Any, text: str) -> list[int]:
    """Token ids of ``text`` without BOS / EOS."""
    return list(tokenizer.encode(text, add_special_tokens=False).ids)
