"""Host builds of the tiny decoders, made once per session and shared by the llm tests
(a build is two TVM compiles: ~15 s each on a loaded 2-core machine)."""

from __future__ import annotations

import pytest
import torch

import edgecc.llm as llm
from tests.targets.gguf import tiny

MAX_SEQ = 40
PREFILL = 8


def hf_greedy(model: torch.nn.Module, ids: torch.Tensor, n: int) -> list[int]:
    """``transformers``' own ``generate`` (greedy), EOS not treated specially (random
    weights emit it like any token; edgecc's generator runs with stop_at_eos=False)."""
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    with torch.no_grad():
        out = model.generate(ids, max_new_tokens=n, do_sample=False, min_new_tokens=n)
    return out[0, ids.shape[1]:].tolist()


def prompt(length: int, seed: int) -> torch.Tensor:
    return torch.randint(3, tiny.VOCAB, (1, length),
                         generator=torch.Generator().manual_seed(seed))


_BUILDS: dict[str, tuple] = {}


def host_build(name: str, root) -> tuple:
    """(model, DecoderPrograms, DecoderBuild) of ``tiny.<name>()``, built once."""
    if name not in _BUILDS:
        pytest.importorskip("transformers")
        pytest.importorskip("tvm")
        model = getattr(tiny, name)()
        dec = llm.export_decoder(model, max_seq_len=MAX_SEQ)
        build = llm.build_decoder(dec, "host", str(root / name), prefill_len=PREFILL)
        _BUILDS[name] = (model, dec, build)
    return _BUILDS[name]


@pytest.fixture(scope="session")
def llm_root(tmp_path_factory):
    return tmp_path_factory.mktemp("llm")


@pytest.fixture(scope="session", params=["llama_gqa", "qwen2"])
def built(request, llm_root):
    return host_build(request.param, llm_root)


@pytest.fixture(scope="session")
def llama_built(llm_root):
    return host_build("llama_gqa", llm_root)
