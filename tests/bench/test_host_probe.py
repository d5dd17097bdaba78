"""bench/host_probe.py: the host-state probe the CPU benches record beside their timings."""

from __future__ import annotations

import itertools
import math

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


def test_scaling_is_two_threads_throughput_over_the_faster_one_thread_run():
    probe = host_probe.HostProbe.__new__(host_probe.HostProbe)
    runs = iter([0.30, 0.25, 0.20])  # one thread (slow clock), two threads, one thread again
    probe.seconds = lambda threads, iterations=0: next(runs)
    assert probe.scaling() == pytest.approx(2.0 * 0.20 / 0.25)
    probe.seconds = lambda threads, iterations=0: 0.0
    assert math.isnan(probe.scaling())


def test_probe_runs_here():
    probe = host_probe.probe()
    if probe is None:
        pytest.skip("no C compiler or not x86-64: the benches run without the probe")
    one = probe.seconds(1, 20_000)
    assert 0 < one < 1.0
    # the compiled loop runs on two threads and gives a finite gain; its value is the host's
    # state (CI read 0.06 once, a thread descheduled for the whole run), not asserted here
    value = probe.scaling(20_000)
    assert math.isfinite(value) and value > 0
