"""arm64 MetaSchedule tuning through an RPC tracker, with qemu as the board: kernels are
cross-compiled, measured on the (emulated) device, cached per kernel/target/device and
reused by the next compile."""

from __future__ import annotations

import pytest
import torch

import edgecc
from edgecc.recipe import VerifyOptions

pytestmark = pytest.mark.slow


def test_tuning_on_an_emulated_board_then_from_the_cache(qemu, tmp_path):
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(),
                                torch.nn.Linear(128, 32)).eval()
    x = torch.randn(4, 64)
    # 4 trials: one MetaSchedule batch (its smallest), measured on the emulated board (CI time)
    options = {"preset": "cortex-a76", "tune_trials": 4, "tune_on": "qemu",
               "tune_cache": str(tmp_path / "cache")}

    def build(name, verify):
        return edgecc.compile(model, "arm64", example_inputs=(x,), pipeline="fuse",
                              output_dir=str(tmp_path / name), target_options=options,
                              verify=verify, verify_options=VerifyOptions(samples=1))

    first = build("a", verify=False)
    tuning = first.report["lowering"]["tuning"]
    print("first:", tuning)
    assert tuning["measured_on"] == "qemu-aarch64" and tuning["trials_run"] == 4
    assert tuning["tuned_now"] >= 1 and tuning["from_cache"] == 0

    second = build("b", verify=True)
    again = second.report["lowering"]["tuning"]
    print("second:", again)
    assert again["trials_run"] == 0 and again["from_cache"] == tuning["kernels_with_record"]
    assert second.report["verification"]["passed"]  # the tuned library, run under qemu


def test_tuning_needs_a_device(tmp_path):
    model = torch.nn.Linear(4, 4).eval()
    for options, message in (({"tune_trials": 8}, "measures kernels on the device"),
                             ({"tune_trials": 8, "tune_on": "board:9190"},
                              "expected HOST:PORT:KEY")):
        with pytest.raises(edgecc.errors.EdgeccError, match=message):
            edgecc.compile(model, "arm64", example_inputs=(torch.randn(1, 4),),
                           output_dir=str(tmp_path / "o"), target_options=options)
        assert not (tmp_path / "o").exists()
