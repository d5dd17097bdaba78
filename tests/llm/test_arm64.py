"""An arm64 decoder bundle: cross-compiled prefill + decode libraries, run step by step
under qemu-aarch64 by ``edgecc generate`` (the arm64 target's own runner): greedy tokens
equal ``transformers``' ``generate``."""

from __future__ import annotations

import json
import os

import pytest

import edgecc.llm as llm
from edgecc.cli import main
from edgecc.targets.arm import emulation
from tests.llm.conftest import hf_greedy, prompt
from tests.targets.gguf import tiny

pytest.importorskip("tvm")


@pytest.mark.slow
def test_arm64_bundle_generates_under_qemu(tmp_path, capsys):
    if not emulation.ready():
        pytest.skip(f"no aarch64 emulation: {emulation.why_not_ready()}")
    model = tiny.llama_gqa()
    dec = llm.export_decoder(model, max_seq_len=16)
    # prefill_len=1: the prompt runs through the decode step (one arm64 build; CI time)
    build = llm.build_decoder(dec, "arm64", str(tmp_path / "arm"), prefill_len=1)
    assert os.path.exists(os.path.join(build.output_dir, "decode", "run_model.py"))
    assert not os.path.exists(os.path.join(build.output_dir, "prefill"))
    assert build.report["phases"]["prefill"]["dir"] == "decode"
    for phase in ("prefill", "decode"):
        assert build.report["phases"][phase]["verification"]["passed"]  # run under qemu
    ids = prompt(6, 0)
    argv = ["generate", build.output_dir, "--prompt-ids", ",".join(map(str, ids[0].tolist())),
            "-n", "4", "--ignore-eos", "--json"]
    assert main(argv) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["tokens"] == hf_greedy(model, ids, 4) and out["runtime"] == "arm64"
