"""MetaSchedule tuning on the host target: a budget, a record cache keyed by kernel and
target, reuse without tuning on the second compile, tuned schedules actually applied."""

import pytest
import torch

import edgecc
from edgecc.targets.tvm.tuning import outcome as tuning_outcome

pytestmark = pytest.mark.slow


def _mlp():
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(),
                               torch.nn.Linear(128, 32)).eval()


def test_tune_then_reuse_the_cache(tmp_path):
    model, x = _mlp(), torch.randn(4, 64)
    options = {"tune_trials": 16, "tune_cache": str(tmp_path / "cache"), "num_threads": 2}
    first = edgecc.compile(model, "host", example_inputs=(x,), pipeline="fuse",
                           output_dir=str(tmp_path / "a"), target_options=options)
    tuning = first.report["lowering"]["tuning"]
    print("first:", tuning)
    assert tuning["kernels"] >= 2 and tuning["from_cache"] == 0
    assert tuning["trials_run"] >= 8 and tuning["tuned_now"] >= 1
    assert tuning["kernels_with_record"] == tuning["tuned_now"]
    # edgecc's default schedule of each kernel was measured and recorded first, so the
    # record the build uses is never slower than the untuned kernel (as measured)
    assert tuning["default_measured"] == tuning["kernels"]
    assert 0 <= tuning["default_kept"] <= tuning["kernels"]
    assert tuning["budget"].startswith("16 measured trials for this model")
    assert tuning["outcome"] == tuning_outcome(tuning)
    assert first.report["verification"]["passed"]  # tuned kernels still compute the model
    assert "MetaSchedule-tuned" in first.report["artifacts"][0]["description"]

    second = edgecc.compile(model, "host", example_inputs=(x,), pipeline="fuse",
                            output_dir=str(tmp_path / "b"), target_options=options)
    again = second.report["lowering"]["tuning"]
    print("second:", again)
    assert again["trials_run"] == 0 and again["tuned_now"] == 0
    assert again["from_cache"] == tuning["kernels_with_record"]
    assert again["default_kept"] == tuning["default_kept"]  # the same records chosen
    assert second.report["verification"]["passed"]
    assert not (tmp_path / "b" / ".tuning.json").exists()

    # the records are applied: the kernels they cover leave the pipeline scheduled by
    # MetaSchedule (their trace), not by edgecc's default schedule
    import tvm

    from edgecc.frontend import trace
    from edgecc.targets.tvm import lowering, tuning as tuning_mod

    module = lowering.to_relax(trace(model, (x,)))
    target = lowering.llvm_target(None, 2)
    db, stats = tuning_mod.tune(module, target, 0, root=str(tmp_path / "cache"))
    assert stats["kernels_with_record"] == tuning["kernels_with_record"]
    with target, db:
        applied = tvm.relax.transform.MetaScheduleApplyDatabase()(
            tuning_mod.prepare(module, target))
    tuned = [g for g, f in applied.functions.items()
             if isinstance(f, tvm.tirx.PrimFunc) and f.attrs and "tirx.is_scheduled" in f.attrs]
    assert len(tuned) == tuning["kernels_with_record"]


def test_outcome_says_when_the_default_schedule_was_kept():
    base = {"trials_run": 16, "from_cache": 0}
    assert "default schedule kept for all 3" in tuning_outcome(
        {**base, "kernels_with_record": 3, "default_kept": 3})
    assert tuning_outcome({**base, "kernels_with_record": 3, "default_kept": 1}).startswith(
        "2 of 3 kernel(s) take a tuned schedule")
    assert "untuned" in tuning_outcome({**base, "kernels_with_record": 0, "default_kept": 0})


def test_cli_tune_flag_errors(tmp_path, capsys):
    from edgecc.cli import main

    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(_mlp(), (torch.randn(4, 64),)), str(path))
    for extra, message in ((["--tune", "0"], "the trial budget must be >= 1"),
                           (["--tune", "4", "-t", "onnx"], "tune_trials")):
        code = main(["compile", str(path), "-o", str(tmp_path / "out"), *extra])
        err = capsys.readouterr().err.strip()
        assert code == 2, err
        assert message in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "out").exists()
