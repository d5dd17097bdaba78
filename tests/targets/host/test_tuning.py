"""Tuning on the host target: MetaSchedule with a budget and a record cache keyed by kernel
and target (reuse without tuning on the second compile, tuned schedules actually applied),
on the module the build compiles (after the hand-written x86 kernels took their layers);
then the whole model timed end to end, the untuned build among the candidates, with edgecc's
kernel settings linked into the library when one of them wins."""

import pytest
import torch

import edgecc
from edgecc.targets.tvm.tuning import outcome as tuning_outcome

pytestmark = pytest.mark.slow


class _Scores(torch.nn.Module):
    """A linear (the x86 SGEMM kernel takes it) and what stays on TVM's kernels after the
    rewrite: a product of two activations and a reduction."""

    def __init__(self):
        super().__init__()
        self.proj = torch.nn.Linear(64, 64)

    def forward(self, x):
        h = torch.relu(self.proj(x))
        return torch.softmax(h @ h.transpose(-1, -2), -1).sum(-1)


def _model():
    torch.manual_seed(0)
    return _Scores().eval(), torch.randn(2, 16, 64)


def _tasks(module, target, rewrite):
    import tvm
    from tvm.s_tir import meta_schedule as ms

    from edgecc.targets.tvm import tuning
    from edgecc.targets.tvm.pipeline import kernel_passes

    if rewrite:
        prepared = tuning.prepare(module, target)
    else:
        with target:
            prepared = tvm.transform.Sequential(kernel_passes(target))(module)
    return {t.task_name for t in ms.relax_integration.extract_tasks(prepared, target)
            if tuning._has_reduction(t.dispatched[0])}


def test_tune_then_reuse_the_cache(tmp_path):
    from edgecc.targets.tvm.end_to_end import MARGIN

    model, x = _model()
    options = {"tune_trials": 8, "tune_cache": str(tmp_path / "cache"), "num_threads": 2}
    first = edgecc.compile(model, "host", example_inputs=(x,), pipeline="fuse",
                           output_dir=str(tmp_path / "a"), target_options=options)
    tuning = first.report["lowering"]["tuning"]
    print("first:", tuning)
    assert tuning["kernels"] >= 1 and tuning["from_cache"] == 0
    assert tuning["trials_run"] >= 4 and tuning["tuned_now"] >= 1
    assert tuning["kernels_with_record"] == tuning["tuned_now"]
    # edgecc's default schedule of each kernel was measured and recorded first, so the
    # record the build uses is never slower than the untuned kernel (as measured)
    assert tuning["default_measured"] == tuning["kernels"]
    assert 0 <= tuning["default_kept"] <= tuning["kernels"]
    assert tuning["budget"].startswith("8 measured trials for this model")
    assert "then the whole model end to end" in tuning["budget"]
    # end to end: the untuned build is a measured candidate; another one is kept only when
    # it beat it by MARGIN in both passes
    e2e = tuning["end_to_end"]
    assert "default" in e2e["ms"] and e2e["chosen"] in e2e["ms"] and not e2e["from_cache"]
    assert any(k.startswith(("default,", "tuned,")) for k in e2e["ms"])  # kernel settings
    if e2e["chosen"] != "default":
        assert e2e["ms"][e2e["chosen"]] < e2e["ms"]["default"] * (1 - MARGIN)
        assert e2e["confirm_ms"][e2e["chosen"]] < e2e["confirm_ms"]["default"] * (1 - MARGIN)
    assert tuning["outcome"] == tuning_outcome(tuning) and "end to end" in tuning["outcome"]
    assert first.report["verification"]["passed"]  # tuned kernels still compute the model
    assert tuning["applied"] in first.report["artifacts"][0]["description"]

    second = edgecc.compile(model, "host", example_inputs=(x,), pipeline="fuse",
                            output_dir=str(tmp_path / "b"), target_options=options)
    again = second.report["lowering"]["tuning"]
    print("second:", again)
    assert again["trials_run"] == 0 and again["tuned_now"] == 0
    assert again["from_cache"] == tuning["kernels_with_record"]
    assert again["default_kept"] == tuning["default_kept"]  # the same records chosen
    assert again["end_to_end"]["from_cache"] and again["end_to_end"]["chosen"] == e2e["chosen"]
    assert again["applied"] == tuning["applied"]
    assert second.report["verification"]["passed"]
    assert not (tmp_path / "b" / ".tuning.json").exists()

    import tvm

    from edgecc.frontend import trace
    from edgecc.targets.tvm import lowering, tuning as tuning_mod

    module = lowering.to_relax(trace(model, (x,)))
    target = lowering.llvm_target(None, 2)
    # the tasks are the kernels the build compiles: the linear is the x86 kernel's, so its
    # TVM kernel is not tuned
    tasks = _tasks(module, target, rewrite=True)
    assert len(tasks) == tuning["kernels"] and len(tasks) < len(_tasks(module, target, False))
    # the records are applied: the kernels they cover leave the pipeline scheduled by
    # MetaSchedule (their trace), not by edgecc's default schedule
    db, stats = tuning_mod.tune(module, target, 0, root=str(tmp_path / "cache"))
    assert stats["kernels_with_record"] == tuning["kernels_with_record"]
    with target, db:
        applied = tvm.relax.transform.MetaScheduleApplyDatabase()(
            tuning_mod.prepare(module, target))
    tuned = [g for g, f in applied.functions.items()
             if isinstance(f, tvm.tirx.PrimFunc) and f.attrs and "tirx.is_scheduled" in f.attrs]
    assert len(tuned) == tuning["kernels_with_record"]


def test_kernel_settings_are_linked_and_keep_numerics(tmp_path):
    """A library built with settings carries them (the kernels' setting symbols read the
    linked values, not their weak defaults) and computes the same numbers: the settings
    only split the same work differently between threads."""
    import numpy as np

    from edgecc.frontend import trace
    from edgecc.targets.tvm import end_to_end, lowering

    model, x = _model()
    module = lowering.to_relax(trace(model, (x,)))
    target = lowering.llvm_target(None, 2)
    assert end_to_end.uses_x86_kernels(lowering.hand_written_kernels(module, target))
    settings = end_to_end.KernelSettings(serial_work_log2=63, num_tasks=1)
    outputs = {}
    for name, mod in (("default", module),
                      ("serial", end_to_end.with_kernel_settings(module, settings))):
        path = str(tmp_path / f"{name}.so")
        lowering.build(mod, target, path)
        library = end_to_end._Library(path, 2)
        values = {k: v.value for k, v in library.symbols.items()}
        assert values == ({"serial_work_log2": 0, "num_tasks": 0} if name == "default"
                          else {"serial_work_log2": 63, "num_tasks": 1}), (name, values)
        outputs[name] = library.vm.run(x)[0].numpy()
    np.testing.assert_array_equal(outputs["serial"], outputs["default"])
    assert end_to_end.with_kernel_settings(module, end_to_end.KernelSettings()) is module


def test_outcome_says_when_the_default_schedule_was_kept():
    base = {"trials_run": 16, "from_cache": 0}
    assert "default schedule kept for all 3" in tuning_outcome(
        {**base, "kernels_with_record": 3, "default_kept": 3})
    assert tuning_outcome({**base, "kernels_with_record": 3, "default_kept": 1}).startswith(
        "2 of 3 kernel(s) take a tuned schedule")
    assert "untuned" in tuning_outcome({**base, "kernels_with_record": 0, "default_kept": 0})
    # end to end: the untuned build kept, or the candidate that beat it, with both times
    e2e = {"ms": {"default": 2.0, "tuned": 2.1, "default, every kernel job serial": 1.5},
           "default_ms": 2.0, "from_cache": False}
    kept = tuning_outcome({**base, "kernels_with_record": 1, "default_kept": 0,
                           "end_to_end": {**e2e, "chosen": "default", "chosen_ms": 2.0}})
    assert "no candidate beat the untuned build (2 ms" in kept and kept.endswith("untuned one")
    unconfirmed = tuning_outcome({**base, "kernels_with_record": 1, "default_kept": 1,
                                  "end_to_end": {**e2e, "chosen": "default", "chosen_ms": 2.0,
                                                 "confirm_ms": {"default": 2.0, "tuned": 2.1,
                                                                "default, every kernel job "
                                                                "serial": 2.05}}})
    assert "in the first pass but 2.05 vs 2 ms in the confirming one" in unconfirmed
    won = tuning_outcome({**base, "kernels_with_record": 1, "default_kept": 1, "end_to_end": {
        **e2e, "chosen": "default, every kernel job serial", "chosen_ms": 1.5}})
    assert "'default, every kernel job serial' ran 1.5 ms vs the untuned build's 2 ms " \
           "(0.75x" in won and won.endswith("the build applies it")


def test_cli_tune_flag_errors(tmp_path, capsys):
    from edgecc.cli import main

    model, x = _model()
    path = tmp_path / "m.pt2"
    torch.export.save(torch.export.export(model, (x,)), str(path))
    for extra, message in ((["--tune", "0"], "the trial budget must be >= 1"),
                           (["--tune", "4", "-t", "onnx"], "tune_trials")):
        code = main(["compile", str(path), "-o", str(tmp_path / "out"), *extra])
        err = capsys.readouterr().err.strip()
        assert code == 2, err
        assert message in err and len(err.splitlines()) == 1, err
        assert not (tmp_path / "out").exists()
