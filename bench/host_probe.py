"""How much of a second core the host gives this guest right now: the CPU benches' record of
the machine's state next to their timings.

``HostProbe().scaling()`` runs one register-only FMA loop (ten independent AVX2 ``vfmadd``
chains, no memory traffic, ~1.3 ms) on one thread, then the same loop on each of two threads
at once, then on one thread again, and returns the two threads' throughput over the faster
one thread's: ~2.0 when the two vCPUs run on two physical cores, ~1.0 when they share one
core (SMT siblings) or the second vCPU is descheduled. A coarse reading: +-10% from thread
start-up and timer noise (a few read over 2.0), and partial states in between. On this 2-vCPU
KVM guest it moves between the two within seconds (s20: 12 probes of a VNNI loop over 25 s
read 1.72-2.10x, one 1.01x), and every 2-thread time moves with it: ResNet-20 at 2 threads
(s20, 400 calls each, interleaved) ran int8 in 219.5 us and fp32 in 418 us in blocks probed
at two cores, 289 and 625 us in the others (paired int8/fp32 0.585 and 0.499 in rounds where
both blocks read so): fp32 gains more from the second core than int8 does.

``bench/tvm_cpu.py`` probes once before each column's block (after its pause, before its
warm-up calls, so the probe's threads are gone when the timed calls run) and reports the
probes' spread per model and, beside the goals' all-rounds ratios, the paired ratios over
only the rounds whose every probe read at least ``TWO_CORES`` (``two_core_rounds``) — a
diagnostic of the state, never the goal's statistic.

The probe itself is ``edgecc.targets.tvm.host_state`` (``--tune``'s whole-model stage reads it
too); ``probe()`` returns None where it cannot run (no compiler, not x86-64), and the benches
then run without it.
"""

from __future__ import annotations

import statistics

from edgecc.targets.tvm.host_state import (  # noqa: F401  (the benches' names for them)
    ITERATIONS, SOURCE, HostProbe, probe,
)

# a probe at or above this reads as two full cores (the loop's 2-thread throughput ratio)
TWO_CORES = 1.7


def spread(values: list[float]) -> dict:
    """p10 / median / p90 of the probes and the share of them under ``TWO_CORES``."""
    from bench.x86_int8_common import percentile  # (it imports bench.tvm_cpu, which imports this)

    if not values:
        return {}
    return {"p10": percentile(values, 0.1), "median": statistics.median(values),
            "p90": percentile(values, 0.9), "probes": len(values),
            "share_below_two_cores": sum(v < TWO_CORES for v in values) / len(values)}


def two_core_rounds(probes: dict[str, list[float]], columns: list[str]) -> list[int]:
    """The rounds (indices) in which every one of ``columns``' blocks was probed at or above
    ``TWO_CORES`` (one probe a column a round, as ``interleaved_times`` takes them)."""
    rounds = min((len(probes.get(c, [])) for c in columns), default=0)
    return [r for r in range(rounds) if all(probes[c][r] >= TWO_CORES for c in columns)]

