"""Perplexity: program, PyTorch module and llama.cpp agree on the same windows (tiny random
Llama, F32 GGUF: llama.cpp's log-probabilities are within ~1e-5 of the program's)."""

import math

import pytest
import torch

from edgecc.errors import EdgeccError
from edgecc.llm_eval import llamacpp_perplexity, module_perplexity, program_perplexity, windows
from edgecc.targets.gguf import GgufOptions, GgufTarget
from tests.targets.gguf import tiny


def test_windows_are_disjoint_and_a_short_text_is_one_line():
    assert windows(list(range(10)), 4) == [[0, 1, 2, 3], [4, 5, 6, 7]]
    assert windows(list(range(10)), 4, max_windows=1) == [[0, 1, 2, 3]]
    with pytest.raises(EdgeccError, match="fewer than one window"):
        windows([1, 2], 4)


def test_program_module_and_llamacpp_perplexities_agree(tmp_path):
    model = tiny.llama_gqa(tied=True)
    program = tiny.trace(model)
    g = torch.Generator().manual_seed(5)
    wins = windows(torch.randint(3, tiny.VOCAB, (40,), generator=g).tolist(), 12)
    ours = program_perplexity(program, wins)
    assert ours.tokens == 3 * 11 and ours.windows == 3
    logits = model(torch.tensor(wins)).logits.double()
    nll = -torch.log_softmax(logits[:, :-1], -1).gather(
        2, torch.tensor(wins)[:, 1:, None]).mean()
    assert math.isclose(ours.perplexity, math.exp(float(nll)), rel_tol=1e-5)
    assert math.isclose(module_perplexity(model, wins).perplexity, ours.perplexity,
                        rel_tol=1e-5)
    GgufTarget().lower(program, str(tmp_path), GgufOptions(check=False))
    theirs = llamacpp_perplexity(str(tmp_path / "model.gguf"), wins, threads=1)
    assert abs(theirs.nll - ours.nll) < 1e-4
