"""``edgecc generate``: a host decoder bundle and a ``-t gguf`` file run by llama.cpp
(xllamacpp) generate the same greedy tokens as ``transformers``; bad requests are one line,
exit 2."""

from __future__ import annotations

import json

import pytest
import torch

import edgecc
from edgecc.cli import main
from tests.llm.conftest import MAX_SEQ, hf_greedy, prompt
from tests.targets.gguf import tiny

pytest.importorskip("tvm")


@pytest.fixture(scope="module")
def bundles(llama_built, llm_root):
    model, _, build = llama_built
    return model, build.output_dir, llm_root


def _json(capsys, argv):
    assert main(argv) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def test_host_bundle_generates_greedy_and_streams(bundles, capsys):
    model, host, _ = bundles
    ids = prompt(7, 0)
    text = ",".join(map(str, ids[0].tolist()))
    out = _json(capsys, ["generate", host, "--prompt-ids", text, "-n", "12", "--ignore-eos",
                         "--json"])
    assert out["tokens"] == hf_greedy(model, ids, 12) and out["runtime"] == "host"
    assert out["prefill_tokens_per_s"] > 0 and out["decode_tokens_per_s"] > 0
    assert main(["generate", host, "--prompt-ids", text, "-n", "5", "--ignore-eos"]) == 0
    captured = capsys.readouterr()
    assert captured.out.split() == [str(t) for t in out["tokens"][:5]]  # ids, no tokenizer
    assert "[host] prefill 7 tokens" in captured.err and "tok/s" in captured.err
    sampled = ["generate", host, "--prompt-ids", text, "-n", "8", "--temperature", "0.9",
               "--top-k", "20", "--top-p", "0.9", "--seed", "4", "--ignore-eos", "--json"]
    assert _json(capsys, sampled)["tokens"] == _json(capsys, sampled)["tokens"]


def test_gguf_bundle_generates_through_llamacpp(bundles, capsys):
    pytest.importorskip("xllamacpp")
    model, _, root = bundles
    out_dir = str(root / "gguf")
    edgecc.compile(tiny.trace(model), target="gguf", pipeline="", output_dir=out_dir)
    ids = prompt(7, 0)
    text = ",".join(map(str, ids[0].tolist()))
    out = _json(capsys, ["generate", out_dir, "--prompt-ids", text, "-n", "12",
                         "--ignore-eos", "--json"])
    assert out["tokens"] == hf_greedy(model, ids, 12) and out["runtime"] == "gguf"
    assert out["decode_tokens_per_s"] > 0


@pytest.mark.parametrize("argv, message", [
    (["--prompt-ids", ",".join(["5"] * (MAX_SEQ - 4)), "-n", "8"],
     f"does not fit the KV cache of {MAX_SEQ}"),
    (["--prompt", "hello"], "without a tokenizer: give --prompt-ids"),
    (["--prompt-ids", "1,x"], "comma-separated integers"),
    (["--prompt-ids", "1", "--top-p", "0"], "top_p=0.0"),
])
def test_bad_requests_are_one_line(bundles, capsys, argv, message):
    _, host, _ = bundles
    assert main(["generate", host, *argv]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and len(err.splitlines()) == 1 and "Traceback" not in err


def test_a_folder_that_is_no_bundle_is_one_line(tmp_path, capsys):
    assert main(["generate", str(tmp_path), "--prompt-ids", "1"]) == 2
    assert "neither a decoder bundle" in capsys.readouterr().err


def test_streaming_text_with_a_tokenizer_prints_as_it_goes(bundles, capsys, monkeypatch):
    """A bundle with a tokenizer prints text (decoded incrementally), not ids."""
    pytest.importorskip("tokenizers")
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {f"w{i}": i for i in range(tiny.VOCAB)}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="w0"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    fast = PreTrainedTokenizerFast(tokenizer_object=tok)
    model, host, _ = bundles
    monkeypatch.setattr("edgecc.llm.build.load_tokenizer", lambda _: fast)
    assert main(["generate", host, "--prompt", "w5 w9 w17", "-n", "6", "--ignore-eos"]) == 0
    out = capsys.readouterr().out
    ids = torch.tensor([[5, 9, 17]])
    assert out.split() == [f"w{t}" for t in hf_greedy(model, ids, 6)]
