"""Per-call-site kernel variants of ``--tune`` (``end_to_end.KernelSettings.site_knobs``,
``end_to_end_sites``): the call-site wrapper sets a knob for its own call only (the fp32
convolution's path counter shows one site on Winograd and the other not), the table
round-trips through JSON and the tuning cache, a table that does not fit the build raises a
clear LoweringError, and the search picks per site the value that made that site's calls
faster and runs end to end on a small CNN."""

import dataclasses
import json

import numpy as np
import pytest
import torch

from edgecc.errors import LoweringError
from edgecc.targets.tvm import end_to_end, lowering, x86_fp32

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(not x86_fp32.supported(lowering.llvm_target(None, None)),
                       reason="needs an x86 CPU with AVX2 + FMA"),
]

WINOGRAD = "edgecc_x86_fp32_winograd"
WINOGRAD_PATH = 16  # x86_fp32_source: same-size 3x3 convolutions through Winograd
BOUND = 1e-5  # Winograd vs the direct tiles, max|a - b| / max|ref| (x86_fp32_winograd4)


class _TwoConvs(torch.nn.Module):
    """Two same-size 3x3 convolutions (both Winograd by default on AVX-512): two call sites
    of ``edgecc_x86_sconv``."""

    def __init__(self):
        super().__init__()
        self.a = torch.nn.Conv2d(16, 16, 3, padding=1)
        self.b = torch.nn.Conv2d(16, 16, 3, padding=1)

    def forward(self, x):
        return self.b(torch.relu(self.a(x)))


def _module():
    from edgecc.frontend import trace

    torch.manual_seed(0)
    x = torch.randn(1, 16, 16, 16)
    return lowering.to_relax(trace(_TwoConvs().eval(), (x,))), x


def _winograd_calls(library) -> int:
    from edgecc.targets.tvm.x86_fp32_source import PATH_QUERY

    query = library.vm.module.get_function(PATH_QUERY, query_imports=True)
    return int(query(WINOGRAD_PATH))


def _runs(library, x) -> tuple[np.ndarray, int]:
    """(the output, the Winograd calls) of one run."""
    before = _winograd_calls(library)
    out = library.vm.run(x)[0].numpy()
    return out, _winograd_calls(library) - before


def _rel(a, ref) -> float:
    return float(np.abs(a - ref).max() / np.abs(ref).max())


def test_a_site_runs_its_own_knob_value_for_its_call_only(tmp_path):
    """Built with site 0 at Winograd 0: one Winograd call a run (site 1's), the library's
    knob still 1 after it (restored), outputs within BOUND of the default build's (and of
    the build at Winograd 0 everywhere); set at run time through the table, site 1 alone
    or both at 0, the counter follows."""
    x86_has_avx512 = pytest.importorskip("tests.targets.tvm.test_x86_fp32")._has_avx512()
    if not x86_has_avx512:
        pytest.skip("Winograd runs on AVX-512 only")
    module, x = _module()
    target = lowering.llvm_target(None, 2)
    callees = end_to_end.call_sites(lowering.hand_written_kernels(module, target))
    assert callees == ["edgecc_x86_sconv", "edgecc_x86_sconv"]
    default_path, site_path = str(tmp_path / "default.so"), str(tmp_path / "site.so")
    lowering.build(module, target, default_path)
    settings = end_to_end.KernelSettings(site_knobs=((0, WINOGRAD, 0),))
    routed = lowering.hand_written_kernels(end_to_end.with_kernel_settings(module, settings),
                                           target)
    assert end_to_end.call_sites(routed) == []  # both calls go through their wrappers
    lowering.build(end_to_end.with_kernel_settings(module, settings), target, site_path)
    default = end_to_end._Library(default_path, 2)
    library = end_to_end._Library(site_path, 2)
    assert library.sites == 2 and WINOGRAD in library.knob_columns
    for lib in (default, library):  # the first run of a VM calls main twice (the runner)
        lib.vm.run(x)

    ref, calls = _runs(default, x)
    assert calls == 2
    out, calls = _runs(library, x)
    assert calls == 1 and library.knobs[WINOGRAD][0].value == 1  # site 0 direct, restored
    assert _rel(out, ref) <= BOUND and not np.array_equal(out, ref)  # a real switch
    S = end_to_end.KernelSettings
    for site_knobs, want in ((((1, WINOGRAD, 0),), 1), (((0, WINOGRAD, 0), (1, WINOGRAD, 0)), 0),
                             ((), 2)):
        library.set(S(site_knobs=site_knobs))
        got, calls = _runs(library, x)
        assert calls == want, site_knobs
        assert _rel(got, ref) <= BOUND
    default.set(S(knobs=((WINOGRAD, 0),)))
    direct, calls = _runs(default, x)
    default.set(S())
    library.set(S(site_knobs=((0, WINOGRAD, 0), (1, WINOGRAD, 0))))
    both, _ = _runs(library, x)
    np.testing.assert_array_equal(both, direct)  # per site = the same kernel path, bit-exact


def test_the_table_round_trips_and_a_bad_table_raises(tmp_path):
    """The settings survive JSON (the manifest, the tuning cache, the build's module
    attribute) and name their choices; a table for another build raises LoweringError."""
    S = end_to_end.KernelSettings
    settings = S(sites=((0, 0), (63, 0), (0, 0)), knobs=(("edgecc_pool_done_once", 1),),
                 site_knobs=((2, "edgecc_x86_fp32_same3x3", 0), (0, WINOGRAD, 0)))
    again = S(**json.loads(json.dumps(dataclasses.asdict(settings))))
    assert again == settings and again.site_knobs[0] == (0, WINOGRAD, 0)  # sorted by site
    assert again.describe().endswith(
        "per-call-site kernel variants (2 of 3 calls: site 0 edgecc_x86_fp32_winograd=0, "
        "site 2 edgecc_x86_fp32_same3x3=0)")
    end_to_end._write_cache(str(tmp_path), "key", {"settings": dataclasses.asdict(settings)})
    assert S(**end_to_end._read_cache(str(tmp_path))["key"]["settings"]) == settings
    assert S(site_knobs=((0, WINOGRAD, 0),)).routed and not S(knobs=((WINOGRAD, 0),)).routed
    assert end_to_end.RULE_VERSION >= 7  # choices of the rule before this are measured again

    module, _ = _module()
    target = lowering.llvm_target(None, 2)
    cases = (
        (S(site_knobs=((5, WINOGRAD, 0),)), "call site 5 of 2 call sites"),
        (S(sites=((0, 0),) * 3, site_knobs=((0, WINOGRAD, 0),)), "3 call-site settings for 2"),
        (S(site_knobs=((0, "edgecc_pool_inline_ns", 0),)), "not a per-call-site kernel variant"),
        (S(site_knobs=((0, "edgecc_x86_nope", 1),)), "not a per-call-site kernel variant"),
        (S(site_knobs=((0, WINOGRAD, 0), (0, WINOGRAD, 1))), "two values of"),
    )
    for settings, message in cases:
        with pytest.raises(LoweringError, match=message):
            lowering.build(end_to_end.with_kernel_settings(module, settings), target,
                           str(tmp_path / "bad.so"))
    with pytest.raises(LoweringError, match="without the call sites"):
        end_to_end.settings_module(S(site_knobs=((0, WINOGRAD, 0),)))


class _SiteLibrary:
    """A wrappers' library on a fake per-site clock: site i's us per call is
    ``draw(i, value of its knob override)``; records what the search set."""

    def __init__(self, draw, sites, columns):
        self.draw, self.sites, self.vm = draw, sites, self
        self.knob_columns = {s: j for j, s in enumerate(columns)}
        self.knobs = {k.symbol: (None, k.values[0] if k.symbol != WINOGRAD else 1)
                      for k in end_to_end.KNOBS}
        self.settings, self.rng = end_to_end.KernelSettings(), np.random.default_rng(0)

    def run(self, *inputs):
        pass

    def set(self, settings):
        self.settings = settings

    def site_times(self, on):
        chosen = {(i, s): v for i, s, v in self.settings.site_knobs}
        return [self.draw(i, {s: v for (j, s), v in chosen.items() if j == i}, chosen)
                * float(np.exp(self.rng.normal(0, 0.01))) for i in range(self.sites)]


def test_the_search_takes_per_site_the_value_that_made_its_calls_faster():
    """Site 0 is 20% faster at Winograd 0, site 1 10% slower, site 2 (the int8 kernel) is
    not touched by an fp32 knob, site 3 gains 3% (under SITE_GAIN): the table holds site 0's
    override alone; with nothing faster, no table; a site whose variant slows its neighbour
    by more than it gains (seen when the table is replicated whole) gives no table."""
    from edgecc.targets.tvm import end_to_end_sites

    callees = ["edgecc_x86_sconv", "edgecc_x86_sconv", "edgecc_x86_qconv", "edgecc_x86_sconv"]

    def draw(i, knobs, chosen):
        if knobs.get(WINOGRAD) == 0:
            return {0: 8.0, 1: 11.0, 2: 10.0, 3: 9.7}[i]
        return 10.0

    library = _SiteLibrary(draw, 4, [k.symbol for k in end_to_end.SITE_KNOBS])
    table, summary = end_to_end_sites.site_knob_search(library, callees, [], 3)
    assert table == end_to_end.KernelSettings(site_knobs=((0, WINOGRAD, 0),)), summary
    assert summary["changed"] == 1 and summary["choices"][0].startswith(
        "site 0 (sconv) edgecc_x86_fp32_winograd=0: ") and summary["choices"][0].endswith(" us")
    assert summary["estimated_gain_us"] == pytest.approx(2.0, abs=0.3)
    knobs = [s for s, _, sites in end_to_end_sites.site_knob_options(library, callees)]
    assert WINOGRAD in knobs and "edgecc_pool_inline_ns" not in knobs
    assert summary["blocks"] == end_to_end_sites.SITE_KNOB_ROUNDS * (sum(
        len(v) + 1 for _, v, _ in end_to_end_sites.site_knob_options(library, callees)) + 2)
    assert summary["replication"]["kept"] == 1 and summary["screened"] == 1

    def neighbour(i, knobs, chosen):  # site 0's variant costs site 1 3 us (unless site 1's own)
        if i == 0:
            return 8.0 if knobs.get(WINOGRAD) == 0 else 10.0
        if i == 1:
            return 10.0 + 3.0 * ((0, WINOGRAD) in chosen) - 3.0 * (knobs.get(WINOGRAD) == 0)
        return 10.0

    lib = _SiteLibrary(neighbour, 4, list(library.knob_columns))
    table, summary = end_to_end_sites.site_knob_search(lib, callees, [], 3)
    assert table is None and summary["screened"] == 1 and summary["replication"]["kept"] == 0

    def chance(i, knobs, chosen):  # site 3 passed the screening by chance and slows site 1
        w0 = knobs.get(WINOGRAD) == 0
        if i == 0:
            return 8.0 if w0 else 10.0
        if i == 1:
            return 11.0 if w0 else 10.0 + 5.0 * ((3, WINOGRAD) in chosen)
        if i == 3:
            return (8.0 if (1, WINOGRAD) in chosen else 10.5) if w0 else 10.0
        return 10.0

    lib = _SiteLibrary(chance, 4, list(library.knob_columns))
    table, summary = end_to_end_sites.site_knob_search(lib, callees, [], 3)
    rep = summary["replication"]
    assert summary["screened"] == 2 and rep["first"]["kept"] == 0, summary
    assert rep["second"]["kept"] == 1 and table == end_to_end.KernelSettings(
        site_knobs=((0, WINOGRAD, 0),))
    # the int8 knobs' options cover the int8 site only, the fp32 ones the fp32 sites
    options = {s: sites for s, _, sites in end_to_end_sites.site_knob_options(library, callees)}
    assert options[WINOGRAD] == [0, 1, 3] and options["edgecc_x86_int8_oc_split"] == [2]
    flat = _SiteLibrary(lambda i, knobs, chosen: 10.0, 4, list(library.knob_columns))
    assert end_to_end_sites.site_knob_search(flat, callees, [], 3)[0] is None
    # the budget: no knob after the time is spent
    table, summary = end_to_end_sites.site_knob_search(library, callees, [], 3, seconds=-1.0)
    assert table is None and summary["knobs"] == 0 and summary["skipped_for_budget"]


def test_the_search_runs_end_to_end_on_a_small_cnn(tmp_path, monkeypatch):
    """``measure`` on the two-convolution CNN: the per-site search ran on the wrappers'
    build (its knobs, rounds and blocks recorded), and whatever was chosen passed the rule;
    a chosen table builds and computes the model."""
    monkeypatch.setattr(end_to_end, "ROUND_SECONDS", 0.005)  # short blocks: a test
    module, x = _module()
    target = lowering.llvm_target(None, 2)
    record = end_to_end.measure(module, target, None, False)
    sk = record["site_knobs"]
    print(sk, record["chosen"])
    assert sk["sites"] == 2 and sk["knobs"] >= 5 and sk["blocks"] > 0
    assert record["calls"]["site_knob_rounds"] == sk["rounds"]
    assert len(sk["choices"]) == sk["changed"] <= 2
    if sk["changed"]:
        assert any("per-call-site kernel variants" in k for k in record["ms"])
    if record["chosen"] != "default":
        assert record["confirm"]["faster"]
    settings = end_to_end.KernelSettings(**record["settings"])
    path = str(tmp_path / "chosen.so")
    lowering.build(end_to_end.build_module(module, settings), target, path)
    out = end_to_end._Library(path, 2).vm.run(x)[0].numpy()
    lowering.build(module, target, str(tmp_path / "default.so"))
    ref = end_to_end._Library(str(tmp_path / "default.so"), 2).vm.run(x)[0].numpy()
    assert _rel(out, ref) <= BOUND


def test_a_site_table_combines_with_other_winners_but_not_the_same_knob_model_wide():
    """The greedy combination (``end_to_end.combination``) merges the kernel-variant table
    with the serial / pool table and another knob's model-wide value (all on the wrappers'
    library), but not with a model-wide value of a knob the table sets per site."""
    S = end_to_end.KernelSettings
    libs = {"default": object(), "sites": object()}

    def library_for(s):
        return end_to_end.library_for(libs, "default", s)

    table = S(site_knobs=((1, WINOGRAD, 0),))
    cands = {"default, t": (libs["sites"], table),
             "default, s": (libs["sites"], S(sites=((63, 0), (0, 0)))),
             "default, w": (libs["default"], S(knobs=((WINOGRAD, 0),))),
             "default, p": (libs["default"], S(knobs=(("edgecc_x86_fp32_s2_phases", 0),)))}
    verdicts = {k: {"ratio": r, "bound": r, "wins": 8, "rounds": 8, "faster": True}
                for k, r in (("default, t", 0.8), ("default, s", 0.85), ("default, w", 0.9),
                             ("default, p", 0.95))}
    name, (library, settings), parts = end_to_end.combination(cands, verdicts, "default, t",
                                                              library_for)
    assert parts == ["default, t", "default, s", "default, p"] and library is libs["sites"]
    assert settings == S(sites=((63, 0), (0, 0)), site_knobs=table.site_knobs,
                         knobs=(("edgecc_x86_fp32_s2_phases", 0),))
    assert "per-call-site kernel variants (1 of 2 calls: site 1 edgecc_x86_fp32_winograd=0)" \
        in name
