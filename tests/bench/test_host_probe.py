"""bench/host_probe.py: the host-state probe the CPU benches record beside their timings."""

from __future__ import annotations

import itertools

import pytest

from bench import host_probe
from bench.tvm_cpu import interleaved_times, round_block


def test_two_core_rounds_keeps_rounds_where_every_column_read_two_cores():
    probes = {"a": [1.9, 1.2, 1.8, 1.75], "b": [1.8, 1.9, 1.1, 1.7, 2.0]}
    assert host_probe.two_core_rounds(probes, ["a", "b"]) == [0, 3]
    assert host_probe.two_core_rounds(probes, ["a"]) == [0, 2, 3]
    assert host_probe.two_core_rounds({}, ["a"]) == []


def test_spread_of_probes():
    s = host_probe.spread([1.0, 1.2, 1.9, 2.0, 1.8])
    assert s["median"] == pytest.approx(1.8)
    assert (s["p10"], s["p90"]) == (1.0, 2.0)
    assert s["share_below_two_cores"] == pytest.approx(0.4)
    assert s["probes"] == 5
    assert host_probe.spread([]) == {}


def test_interleaved_times_probes_each_block_before_it():
    values = itertools.count(1)
    probes: dict = {}
    calls = []
    fns = {"x": lambda: calls.append("x"), "y": lambda: calls.append("y")}
    times = interleaved_times(fns, 20, clock="cpu", probe=lambda: float(next(values)),
                              probes=probes)
    rounds = 20 // round_block(20)
    assert {k: len(v) for k, v in probes.items()} == {"x": rounds, "y": rounds}
    assert {k: len(v) for k, v in times.items()} == {"x": 20, "y": 20}
    # one probe a block, in the rounds' order: all values distinct and consecutive
    assert sorted(probes["x"] + probes["y"]) == [float(i) for i in range(1, 2 * rounds + 1)]


def test_the_benches_read_the_tuners_probe():
    from edgecc.targets.tvm import host_state

    assert host_probe.probe is host_state.probe and host_probe.HostProbe is host_state.HostProbe
