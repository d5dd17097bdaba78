"""Tuning on the host target: MetaSchedule with a budget and a record cache keyed by kernel
and target (reuse without tuning on the second compile, tuned schedules actually applied),
on the module the build compiles (after the hand-written x86 kernels took their layers);
then the whole model timed end to end, the untuned build among the candidates, with edgecc's
kernel settings linked into the library when one of them wins."""

import pytest
import torch

import edgecc
from edgecc.errors import LoweringError
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
    # the rule (end_to_end.verdict) found it faster beyond the noise in both passes
    e2e = tuning["end_to_end"]
    assert "default" in e2e["ms"] and e2e["chosen"] in e2e["ms"] and not e2e["from_cache"]
    assert any(k.startswith(("default,", "tuned,")) for k in e2e["ms"])  # kernel settings
    assert set(e2e["verdicts"]) == set(e2e["ms"]) - {"default"} and e2e["rule"]
    # the call-site search timed the one call of the x86 SGEMM
    assert e2e["sites"]["sites"] == 1 and e2e["calls"]["site_rounds"] > 0
    # and the per-call-site kernel variants (the pool's knobs apply to the SGEMM's site)
    assert e2e["site_knobs"]["sites"] == 1 and e2e["site_knobs"]["knobs"] >= 1
    assert "per-call-site kernel-variant search" in tuning["budget"]
    if e2e["chosen"] != "default":
        assert e2e["verdicts"][e2e["chosen"]]["bound"] < 1 - MARGIN
        assert e2e["confirm"]["candidate"] == e2e["chosen"]
        assert e2e["confirm"]["bound"] < 1 - MARGIN
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

    # per call site: the build calls the wrapper, which runs the kernel with the site's
    # settings (and times it while asked to); the manifest still counts the kernel's layers
    sites = end_to_end.KernelSettings(sites=((end_to_end.SERIAL, 0),))
    routed = lowering.hand_written_kernels(end_to_end.with_kernel_settings(module, sites), target)
    assert end_to_end.call_sites(routed) == []  # every kernel call goes through a wrapper
    report, path = {}, str(tmp_path / "sites.so")
    lowering.build(end_to_end.with_kernel_settings(module, sites), target, path, report=report)
    assert report["x86_fp32"]["x86_fp32_gemm"] == 1
    library = end_to_end._Library(path, 2)
    assert library.sites == 1 and list(library.table[0]) == [end_to_end.SERIAL]
    library.site_times(on=True)
    np.testing.assert_array_equal(library.vm.run(x)[0].numpy(), outputs["default"])
    assert library.site_times(on=False)[0] > 0
    table, summary = end_to_end.site_search(library, [x], 3, 2)
    assert summary["sites"] == 1 and (table is None or len(table.sites) == 1)
    with pytest.raises(LoweringError, match="2 call-site settings for 1 call sites"):
        lowering.build(end_to_end.with_kernel_settings(
            module, end_to_end.KernelSettings(sites=((0, 0), (63, 0)))), target,
            str(tmp_path / "bad.so"))


class _Conv(torch.nn.Module):
    """A same-size 3x3 convolution (the x86 fp32 convolution kernel takes it): the calls the
    kernel-variant knobs change."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(16, 16, 3, padding=1)

    def forward(self, x):
        return torch.relu(self.conv(x))


def test_a_kernel_variant_that_wins_is_applied_and_linked(tmp_path, monkeypatch):
    """The end-to-end stage measures the fp32 convolution's variant knobs the library has
    (a knob it lacks is skipped, and named in the record); on a clock that makes one variant
    faster, that variant is chosen, and the library built with the chosen settings runs it
    (its constructor wrote the knob) with the same outputs."""
    import dataclasses

    import numpy as np

    from edgecc.frontend import trace
    from edgecc.targets.tvm import end_to_end, lowering

    torch.manual_seed(0)
    model, x = _Conv().eval(), torch.randn(1, 16, 8, 8)
    module = lowering.to_relax(trace(model, (x,)))
    target = lowering.llvm_target(None, 2)
    missing = end_to_end.Knob("edgecc_x86_fp32_no_such_knob", "int32_t", (1,),
                              end_to_end.FP32_CONV)
    monkeypatch.setattr(end_to_end, "KNOBS", (*end_to_end.KNOBS, missing))
    want = ("edgecc_x86_fp32_same3x3", 0)
    applied = [end_to_end.KernelSettings()]
    threshold = 2  # SERIAL_SHIFTS: the other setting that wins, combined with the variant
    real_set = end_to_end._Library.set

    def set_and_note(self, settings):
        applied[0] = settings
        real_set(self, settings)

    monkeypatch.setattr(end_to_end._Library, "set", set_and_note)
    ticks = [0.0]

    def clock():  # each timed call: 1 ms, x0.5 with the wanted variant, x0.9 at the threshold
        ticks[0] += 0.001 * (0.5 if want in applied[0].knobs else 1) * (
            0.9 if applied[0].serial_work_log2 == threshold else 1)
        return ticks[0]

    # (no state guard: the fake clock has no host state to read)
    record = end_to_end.measure(module, target, None, False, clock=clock, probe=None)
    variants = record["variants"]
    # every knob of the convolution and of the pool is in the library: only the fake is skipped
    assert variants["skipped_missing_symbol"] == ["edgecc_x86_fp32_no_such_knob"]
    assert any(v.startswith("edgecc_pool_adaptive = 1") for v in variants["measured"])
    assert "edgecc_x86_fp32_same3x3 = 0 (default 1)" in variants["measured"]
    assert not any("int8" in v for v in variants["measured"])  # no int8 convolution here
    assert not any(v.startswith("edgecc_x86_fp32_same3x3 = 1") for v in variants["measured"])
    # both winners, each faster alone in the screening, are combined: the combination (0.45x)
    # beats the variant alone (0.5x) in the combining pass and is confirmed
    single = "default, kernel variant edgecc_x86_fp32_same3x3 = 0"
    assert record["verdicts"][single]["ratio"] == pytest.approx(0.5)
    assert record["verdicts"][f"default, serial threshold x2^{threshold}"]["faster"]
    combined = record["combined"]
    assert combined["components"] == [single, f"default, serial threshold x2^{threshold}"]
    assert record["chosen"] == combined["candidate"] == (
        f"default, serial threshold x2^{threshold}, "
        "kernel variant edgecc_x86_fp32_same3x3 = 0") and combined["replaces"] == single
    settings = end_to_end.KernelSettings(**record["settings"])
    assert settings == end_to_end.KernelSettings(serial_work_log2=threshold, knobs=(want,))
    assert record["confirm"]["faster"] and record["calls"]["combine_rounds"] == \
        end_to_end.ROUNDS
    assert record["verdicts"][record["chosen"]]["ratio"] == pytest.approx(0.45)
    # the manifest's times of a chosen combination come from one pass (the combining one)
    assert record["chosen_ms"] / record["default_ms"] == pytest.approx(0.45, abs=0.01)

    outputs = {}
    for name, mod in (("default", module),
                      ("tuned", end_to_end.with_kernel_settings(module, settings))):
        path = str(tmp_path / f"{name}.so")
        lowering.build(mod, target, path)
        library = end_to_end._Library(path, 2)
        # every chosen setting is linked: the values the loaded library starts with
        assert library.knobs[want[0]][1] == (1 if name == "default" else 0), name
        assert library.symbols["serial_work_log2"].value == (
            0 if name == "default" else threshold), name
        outputs[name] = library.vm.run(x)[0].numpy()
    np.testing.assert_array_equal(outputs["tuned"], outputs["default"])

    # a combination holding the call-site table: the wrappers' library links the threshold
    # and the knob's constructor too
    both = dataclasses.replace(settings, sites=((end_to_end.SERIAL, 0),))
    path = str(tmp_path / "sites.so")
    lowering.build(end_to_end.with_kernel_settings(module, both), target, path)
    library = end_to_end._Library(path, 2)
    assert library.sites == 1 and list(library.table[0]) == [end_to_end.SERIAL]
    assert library.knobs[want[0]][1] == 0 and library.symbols["serial_work_log2"].value == 2
    np.testing.assert_array_equal(library.vm.run(x)[0].numpy(), outputs["default"])

    # a knob the kernel set lacks still links (a weak reference the constructor skips), and
    # a model without convolutions measures no convolution variant
    lacking = end_to_end.KernelSettings(knobs=(("edgecc_x86_fp32_no_such_knob", 1),))
    path = str(tmp_path / "lacking.so")
    lowering.build(end_to_end.with_kernel_settings(module, lacking), target, path)
    library = end_to_end._Library(path, 2)
    np.testing.assert_array_equal(library.vm.run(x)[0].numpy(), outputs["default"])
    candidates, measured = end_to_end.knob_candidates(library, ["edgecc_x86_sgemm"])
    pool = {k.symbol for k in end_to_end.KNOBS if k.kernels == end_to_end.ANY_KERNEL}
    assert pool and {symbol for c in candidates for symbol, _ in c.knobs} == pool
    assert measured["skipped_missing_symbol"] == []
    assert all(m.split(" = ")[0] in pool for m in measured["measured"])
    # the pool's switches are measured for any kernel, and only where a kernel is called
    assert end_to_end.knob_candidates(library, []) == (
        [], {"measured": [], "skipped_missing_symbol": []})
    with pytest.raises(LoweringError, match="unknown kernel variant"):
        end_to_end.settings_module(end_to_end.KernelSettings(knobs=(("edgecc_x86_nope", 1),)))


class _FakeLibrary:
    """A candidate whose per-call time is drawn from ``draw(call_number)``, on a fake clock:
    the rule sees exactly the timings the test chose."""

    clock = [0.0]

    def __init__(self, draw):
        self.draw, self.calls, self.vm = draw, 0, self

    def run(self, *inputs):
        self.calls += 1
        _FakeLibrary.clock[0] += self.draw(self.calls) / 1000

    def set(self, settings):
        pass


def _select(draws, block=10):
    from edgecc.targets.tvm import end_to_end

    libraries = {k: _FakeLibrary(d) for k, d in draws.items()}
    candidates = {k: (lib, end_to_end.KernelSettings()) for k, lib in libraries.items()}
    return end_to_end.select(candidates, list(libraries.values()), [], block,
                             clock=lambda: _FakeLibrary.clock[0])


class _SettingsLibrary:
    """One library whose per-call time is ``draw(settings)`` for the settings last set (the
    candidates differ only in them), on a fake clock."""

    def __init__(self, draw):
        from edgecc.targets.tvm.end_to_end import KernelSettings

        self.draw, self.settings, self.vm = draw, KernelSettings(), self

    def run(self, *inputs):
        _FakeLibrary.clock[0] += self.draw(self.settings) / 1000

    def set(self, settings):
        self.settings = settings


def test_a_combination_of_winners_is_chosen_only_when_it_wins():
    """After the screening, the settings of the candidates the rule found faster than the
    default are combined (one value per setting: the better of two values of one knob; not
    one faster only within the noise); the combination
    is chosen when the rule finds it faster than the default and better than the best single
    candidate, and not when it is slower (settings that do not add up); with nothing faster,
    nothing is combined."""
    import numpy as np

    from edgecc.targets.tvm import end_to_end

    rng = np.random.default_rng(1)
    S = end_to_end.KernelSettings
    wino, other = "edgecc_x86_fp32_winograd", "edgecc_x86_fp32_s2_phases"
    settings = {"default": S(), "default, w1": S(knobs=((wino, 1),)),
                "default, w2": S(knobs=((wino, 2),)), "default, shift": S(serial_work_log2=2),
                "default, s2": S(knobs=((other, 0),))}

    def pick(factors, together):
        def draw(s):
            value = dict(s.knobs).get(wino, 0)
            parts = [factors["w1"] if value == 1 else factors["w2"] if value == 2 else 1,
                     factors["shift"] if s.serial_work_log2 == 2 else 1,
                     factors["s2"] if dict(s.knobs).get(other) == 0 else 1]
            both = sum(p != 1 for p in parts) > 1
            return (together if both else float(np.prod(parts))) * float(
                np.exp(rng.normal(0, 0.02)))

        library = _SettingsLibrary(draw)
        candidates = {k: (library, v) for k, v in settings.items()}
        return end_to_end.select(candidates, [library], [], 10,
                                 clock=lambda: _FakeLibrary.clock[0])

    wins = {"w1": 0.8, "w2": 0.85, "shift": 0.9, "s2": 1.1}
    for trial in range(5):
        picked = pick(wins, together=0.72)  # Winograd 1 and the threshold: 0.8 x 0.9
        assert picked["combined"]["components"] == ["default, w1", "default, shift"], picked
        assert picked["chosen"] == picked["combined"]["candidate"], picked
        assert picked["settings"] == S(serial_work_log2=2, knobs=((wino, 1),))
        assert picked["confirm"]["bound"] < 1 - end_to_end.MARGIN
        assert picked["verdicts"][picked["chosen"]]["ratio"] == pytest.approx(0.72, abs=0.03)
    for trial in range(5):  # together slower than the default: the best single one is kept
        picked = pick(wins, together=1.05)
        assert picked["combined"]["replaces"] is None, picked
        assert picked["chosen"] == "default, w1" and picked["settings"] == S(knobs=((wino, 1),))
        assert picked["combined"]["candidate"] not in picked["verdicts"]
    # a setting faster only within the noise (0.99x) is not combined: Winograd alone
    picked = pick({**wins, "shift": 0.99}, together=0.5)
    assert picked["combined"] is None and picked["chosen"] == "default, w1", picked
    picked = pick({"w1": 1.0, "w2": 1.01, "shift": 1.0, "s2": 1.1}, together=0.5)
    assert picked["chosen"] == "default" and picked["combined"] is None, picked
    assert picked["settings"] == S()


def test_winograd_runs_on_the_base_builds():
    """Both Winograd knob values are measured on, and built as, the base build (or the
    call-site wrappers' for a table, which may join Winograd 0): the kernels pack a build's
    Winograd weights once per library, so no build carries them (the tuned build's convolution
    constant is W alone, flagged as the build's constant: meta[15] = 2, with either value)."""
    from edgecc.targets.tvm import end_to_end, x86_fp32

    S = end_to_end.KernelSettings
    direct = S(knobs=(("edgecc_x86_fp32_winograd", 0),))
    libs = {"default": object(), "sites": object()}
    assert end_to_end.library_for(libs, "default", direct) is libs["default"]
    assert end_to_end.library_for(libs, "default", S(serial_work_log2=2)) is libs["default"]
    assert end_to_end.library_for(libs, "default", S(sites=((63, 0),))) is libs["sites"]
    assert end_to_end.library_for(libs, "default", S(sites=((63, 0),), knobs=direct.knobs)) \
        is libs["sites"]
    verdicts = {k: {"ratio": r, "bound": r, "wins": 8, "rounds": 8, "faster": True}
                for k, r in (("default, w", 0.8), ("default, t", 0.85), ("default, s", 0.9))}
    candidates = {"default, w": (libs["default"], direct),
                  "default, t": (libs["sites"], S(sites=((63, 0),))),
                  "default, s": (libs["default"], S(serial_work_log2=2))}
    name, (library, settings), parts = end_to_end.combination(
        candidates, verdicts, "default, w",
        lambda s: end_to_end.library_for(libs, "default", s))
    assert parts == ["default, w", "default, t", "default, s"] and library is libs["sites"]
    assert settings == S(serial_work_log2=2, sites=((63, 0),), knobs=direct.knobs)

    from tvm import relax

    from edgecc.frontend import trace
    from edgecc.targets.tvm import lowering

    torch.manual_seed(0)
    module = lowering.to_relax(trace(_Conv().eval(), (torch.randn(1, 16, 8, 8),)))
    target = lowering.llvm_target(None, 2)
    flags = {}
    for value in (0, 1):
        built = end_to_end.build_module(module, S(knobs=(("edgecc_x86_fp32_winograd", value),)))
        assert not x86_fp32.wants_winograd_weights(built)
        kernels = lowering.hand_written_kernels(built, target)
        (call,) = [b.value for f in kernels.functions.values() if isinstance(f, relax.Function)
                   for blk in f.body.blocks for b in blk.bindings
                   if isinstance(b.value, relax.Call)
                   and isinstance(b.value.args[0], relax.ExternFunc)
                   and str(b.value.args[0].global_symbol) == "edgecc_x86_sconv"]
        consts = [a.value.numpy() for a in call.args[1].fields if hasattr(a, "value")]
        flags[value] = (consts[0].size, int(consts[2][15]))
    assert flags == {0: (16 * 16 * 9, 2), 1: (16 * 16 * 9, 2)}


def test_block_size_reads_the_median_call_not_one_preempted_call():
    """The calls per round come from the median of several timed calls: one slow call
    (preempted under load) does not shrink the blocks."""
    from edgecc.targets.tvm import end_to_end

    ticks, durations = [0.0], iter([0.005, 0.001, 0.001, 0.001, 0.001, 0.001, 0.001])
    state = {}

    def call():
        state["d"] = next(durations)

    def clock():  # before a call: now; after it: now + its duration
        if "d" in state:
            ticks[0] += state.pop("d")
        return ticks[0]

    assert end_to_end.block_size(call, clock=clock) == round(end_to_end.ROUND_SECONDS / 0.001)


def test_the_rule_keeps_the_default_unless_faster_beyond_the_noise():
    """Candidates with chosen timings: one that is not really faster (same speed, noisy and
    heavy-tailed, or under 30% noise; 1% faster; faster only while it is screened; slower) is
    never applied; one that is faster beyond the noise is."""
    import numpy as np

    from edgecc.targets.tvm import end_to_end

    rng = np.random.default_rng(0)

    def noisy(ms, spread, tail=0.0):
        return lambda _: ms * float(np.exp(rng.normal(0, spread))) * (
            1 + (rng.random() < tail) * rng.exponential(1.0))

    screening = end_to_end.ROUNDS * (10 + 1)  # calls of a candidate in the screening pass
    not_faster = {
        "same speed": noisy(1.0, 0.10, tail=0.05),
        "1% faster": noisy(0.99, 0.01),
        "faster while screened": lambda n: (0.8 if n <= screening else 1.05)
        * float(np.exp(rng.normal(0, 0.02))),
        "same speed under 30% noise": noisy(1.0, 0.30),
        "slower": noisy(1.1, 0.05),
    }
    for name, draw in not_faster.items():  # each alone against the default, many times
        for trial in range(40):
            picked = _select({"default": noisy(1.0, 0.10, tail=0.05), name: draw})
            assert picked["chosen"] == "default", (name, trial, picked)
    for trial in range(10):
        picked = _select({"default": noisy(1.0, 0.05), "same speed": noisy(1.0, 0.05),
                          "faster": noisy(0.8, 0.05)})
        assert picked["chosen"] == "faster", (trial, picked)
        assert picked["confirm"]["bound"] < 1 - end_to_end.MARGIN
        assert picked["verdicts"]["faster"]["ratio"] == pytest.approx(0.8, abs=0.05)
    # the statistic itself: paired per-round medians
    assert end_to_end.verdict([[1.0, 1.0]] * 6, [[0.9, 0.9]] * 6) == {
        "ratio": 0.9, "noise": 0.0, "bound": 0.9, "wins": 6, "rounds": 6, "faster": True}


def _guarded(serial_ms, readings):
    """``select`` between the default (1 ms a call) and a candidate whose ms per call is
    ``serial_ms[state]`` (state: "shared" or "parallel", the host's state set by the fake
    probe, whose readings are ``readings``; the screening pass runs shared)."""
    from edgecc.targets.tvm import end_to_end, tuning

    state = ["shared"]
    values = iter(readings)

    def probe():
        value = next(values)
        state[0] = "parallel" if value >= 1.4 else "shared"
        return value

    libraries = {"default": _FakeLibrary(lambda _: 1.0),
                 "default, every kernel job serial": _FakeLibrary(
                     lambda _: serial_ms[state[0]])}
    candidates = {k: (lib, end_to_end.KernelSettings()) for k, lib in libraries.items()}
    picked = end_to_end.select(candidates, list(libraries.values()), [], 10,
                               clock=lambda: _FakeLibrary.clock[0], probe=probe)
    e2e = {**picked, "default_ms": picked["ms"]["default"],
           "chosen_ms": picked["ms"][picked["chosen"]]}
    return picked, tuning._end_to_end_outcome(e2e)


def test_the_state_guard_keeps_the_default_when_a_win_needs_a_shared_core():
    """The confirming pass reads the host before each round; a candidate must also win the
    rounds where the threads had their cores (reading >= 1.4), at least 4 of them, found in
    up to 3 passes: a serial setting that wins only while the threads share a core (0.9x
    there, 1.5x with two cores) is not applied; one that wins in both states is; with no
    round of two cores in 3 passes, nothing is applied."""
    from edgecc.targets.tvm import end_to_end

    rounds = end_to_end.CONFIRM_ROUNDS
    # first pass all shared (too few rounds to judge), second alternating: judged there
    readings = [1.0] * rounds + [1.9, 1.0] * rounds
    picked, text = _guarded({"shared": 0.9, "parallel": 1.5}, readings)
    guard = picked["confirm"]["state_guard"]
    assert picked["chosen"] == "default" and not picked["confirm"]["faster"]
    assert guard["passes"] == 2 and guard["rounds"] == 2 * rounds
    assert guard["parallel_rounds"] == rounds // 2 and guard["threshold"] == 1.4
    assert guard["verdict"]["ratio"] == pytest.approx(1.5) and not guard["faster"]
    assert "share a core" in text and "untuned" in text and "ratio 1.5x" in text

    picked, text = _guarded({"shared": 0.9, "parallel": 0.8}, readings)
    guard = picked["confirm"]["state_guard"]
    assert picked["chosen"] == "default, every kernel job serial" and guard["faster"]
    assert guard["verdict"]["ratio"] == pytest.approx(0.8)
    assert "the build applies it" in text and "gave the threads their cores" in text

    # the host never gives two cores: 3 passes, then the default (too few rounds to judge)
    picked, text = _guarded({"shared": 0.9, "parallel": 0.8}, [1.0] * (3 * rounds))
    guard = picked["confirm"]["state_guard"]
    assert picked["chosen"] == "default" and guard["verdict"] is None
    assert (guard["passes"], guard["rounds"], guard["parallel_rounds"]) == (
        end_to_end.STATE_PASSES, end_to_end.STATE_PASSES * rounds, 0)
    assert "too few to judge" in text
    # enough rounds of two cores in the first pass: no second pass
    picked, _ = _guarded({"shared": 0.9, "parallel": 0.8}, [1.9] * rounds)
    assert picked["confirm"]["state_guard"]["passes"] == 1
    assert picked["chosen"] != "default"


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
    assert "no candidate beat the untuned build beyond the noise (2 ms" in kept and kept.endswith("untuned one")
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
