"""host_state: how much of a second core the host gives right now (the tuner's state guard
and the CPU benches read it)."""

from __future__ import annotations

import math

import pytest

from edgecc.targets.tvm import host_state


def test_scaling_is_two_threads_throughput_over_the_faster_one_thread_run():
    probe = host_state.HostProbe.__new__(host_state.HostProbe)
    runs = iter([0.30, 0.25, 0.20])  # one thread (slow clock), two threads, one thread again
    probe.seconds = lambda threads, iterations=0: next(runs)
    assert probe.scaling() == pytest.approx(2.0 * 0.20 / 0.25)
    probe.seconds = lambda threads, iterations=0: 0.0
    assert math.isnan(probe.scaling())


def test_probe_runs_here(tmp_path):
    probe = host_state.probe(str(tmp_path))
    if probe is None:
        pytest.skip("no C compiler or not x86-64: no host reading (the tuner runs unguarded)")
    one = probe.seconds(1, 20_000)
    assert 0 < one < 1.0
    # a reading is a finite positive gain; its value is the host's state (CI read 0.06 once,
    # a thread descheduled for the whole run), not asserted here
    assert probe.scaling(20_000) > 0
