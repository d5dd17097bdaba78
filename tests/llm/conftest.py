"""Host builds of the tiny decoders, made once a RUN and shared by the llm tests (a build
is two TVM compiles: ~15 s each on a loaded 2-core machine). Under pytest-xdist the files
of this folder land on different workers (--dist=loadfile), so the builds go to a folder
of the run's shared temporary root (``tmp_path_factory``'s base's parent, one a run),
made under a file lock by the first worker that needs them and loaded by the others."""

from __future__ import annotations

import os

import pytest
import torch
from filelock import FileLock

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
    """(model, DecoderPrograms, DecoderBuild) of ``tiny.<name>()``, built once a run (the
    model and its export are deterministic: ``tiny`` seeds them)."""
    if name not in _BUILDS:
        pytest.importorskip("transformers")
        pytest.importorskip("tvm")
        from edgecc.llm.build import DecoderBuild
        from edgecc.llm.runtime import read_config

        model = getattr(tiny, name)()
        dec = llm.export_decoder(model, max_seq_len=MAX_SEQ)
        out = root / name
        with FileLock(str(root / f"{name}.lock")):
            if (out / "decoder.json").exists():  # another worker built it in this run
                build = DecoderBuild(str(out), read_config(str(out)),
                                     {"prefill": dec.prefill(PREFILL), "decode": dec.decode()})
            else:
                build = llm.build_decoder(dec, "host", str(out), prefill_len=PREFILL)
        _BUILDS[name] = (model, dec, build)
    return _BUILDS[name]


@pytest.fixture(scope="session")
def llm_root(tmp_path_factory):
    """This worker's own folder (outputs the tests write)."""
    return tmp_path_factory.mktemp("llm")


@pytest.fixture(scope="session")
def builds_root(tmp_path_factory):
    """The run's shared folder of host builds (see the module docstring)."""
    base = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        base = base.parent  # the run's root, shared by its workers
    root = base / "llm-host-builds"
    root.mkdir(exist_ok=True)
    return root


@pytest.fixture(scope="session", params=["llama_gqa", "qwen2"])
def built(request, builds_root):
    return host_build(request.param, builds_root)


@pytest.fixture(scope="session")
def llama_built(builds_root):
    return host_build("llama_gqa", builds_root)
