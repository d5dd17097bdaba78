"""The offline evaluation text and the GGUF tokenizer rebuilt from the file's keys."""

import pytest

from edgecc.llm_eval import build_tokenizer, encode, opticks, tokenizer_fields
from edgecc.llm_eval.tokenizer import TokenizerError


def test_the_splits_are_english_prose_and_do_not_overlap():
    test, calib = opticks("test"), opticks("calibration")
    assert len(test) > 200_000 and len(calib) > 100_000
    assert test.startswith("SECOND BOOK") and calib.startswith("THE FIRST BOOK")
    assert "_" not in test and " the " in test
    paragraph = max(test.split("\n\n")[:50], key=len)
    assert paragraph not in calib


@pytest.mark.slow
def test_smollm2_tokenizer_round_trips_and_splits_digits(smollm2_gguf):
    tok = build_tokenizer(tokenizer_fields(smollm2_gguf))
    text = "It has been observed by others, that transparent Substances 1730."
    ids = encode(tok, text)
    assert tok.decode(ids) == text
    # SmolLM's pre-tokenizer puts every digit in its own piece (llama.cpp: SMOLLM)
    assert [tok.decode([i]) for i in ids[-5:]] == ["1", "7", "3", "0", "."]
    # ids measured with transformers' GGUF tokenizer (AutoTokenizer, gguf_file=...)
    assert encode(tok, "SECOND BOOK\n\nOF") == [25874, 35906, 26830, 13663, 198, 198, 26138]


def test_an_unsupported_tokenizer_is_named():
    with pytest.raises(TokenizerError, match="'llama'"):
        build_tokenizer({"tokenizer.ggml.model": "llama", "tokenizer.ggml.tokens": ["a"]})
