"""edgecc eval-ppl on the real SmolLM2 file (llama.cpp, one short window) and bad input."""

import json

import pytest

from edgecc.cli import main


@pytest.mark.slow
def test_eval_ppl_runs_llamacpp_on_the_real_model(smollm2_gguf, capsys):
    assert main(["eval-ppl", smollm2_gguf, "--ctx", "16", "--windows", "1", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    (r,) = out["results"]
    assert r["tokens"] == 15 and 1.0 < r["perplexity"] < 200.0
    assert "Opticks" in out["text"]


def test_a_missing_model_is_one_line_exit_2(tmp_path, capsys):
    assert main(["eval-ppl", str(tmp_path / "nope.gguf")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "neither a .gguf file" in err
