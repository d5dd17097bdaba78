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

The loop is compiled once with the system C compiler into ``~/.cache/edgecc/bench``;
``probe()`` returns None where that cannot be done (no compiler, not x86-64), and the benches
then run without it.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import statistics
import subprocess
import tempfile

# a probe at or above this reads as two full cores (the loop's 2-thread throughput ratio)
TWO_CORES = 1.7
# iterations of the ten-FMA body a thread runs (~1.3 ms on the Zen 4 guest)
ITERATIONS = 300_000

SOURCE = r"""
#include <immintrin.h>
#include <pthread.h>
#include <time.h>

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

// ten independent FMA chains (more than latency x throughput: the loop is throughput-bound)
__attribute__((target("avx2,fma"))) static void* spin(void* arg) {
  const long iters = *(const long*)arg;
  __m256 acc[10];
  for (int i = 0; i < 10; ++i) acc[i] = _mm256_set1_ps((float)i);
  const __m256 a = _mm256_set1_ps(0.999f), b = _mm256_set1_ps(1e-7f);
  for (long it = 0; it < iters; ++it)
    for (int i = 0; i < 10; ++i) acc[i] = _mm256_fmadd_ps(acc[i], a, b);
  float s = 0.f, out[8];
  for (int i = 0; i < 10; ++i) {
    _mm256_storeu_ps(out, acc[i]);
    s += out[0];
  }
  static volatile float sink;
  sink = s;
  return 0;
}

// seconds for `threads` threads (1 or 2) to run `iters` iterations each, at once
double edgecc_host_probe(int threads, long iters) {
  pthread_t t[2];
  const double t0 = now();
  for (int i = 0; i < threads; ++i) pthread_create(&t[i], 0, spin, &iters);
  for (int i = 0; i < threads; ++i) pthread_join(t[i], 0);
  return now() - t0;
}
"""


class HostProbe:
    """The compiled probe (``scaling()``: the second thread's gain now, ~1.0-2.0)."""

    def __init__(self, library: str):
        self._lib = ctypes.CDLL(library)
        self._fn = self._lib.edgecc_host_probe
        self._fn.restype = ctypes.c_double
        self._fn.argtypes = [ctypes.c_int, ctypes.c_long]

    def seconds(self, threads: int, iterations: int = ITERATIONS) -> float:
        return float(self._fn(threads, iterations))

    def scaling(self, iterations: int = ITERATIONS) -> float:
        """Two threads' throughput over one thread's: one thread, two, one again, the faster
        one-thread time taken (right after a pause the first runs at a slow clock: alone it
        read up to 2.26x)."""
        one = self.seconds(1, iterations)
        two = self.seconds(2, iterations)
        one = min(one, self.seconds(1, iterations))
        return 2.0 * one / two if two > 0 else float("nan")


def _compile(cache: str) -> str:
    """The probe's shared library in ``cache`` (compiled there once per source)."""
    key = hashlib.sha256(SOURCE.encode()).hexdigest()[:16]
    path = os.path.join(cache, f"host_probe-{key}.so")
    if os.path.exists(path):
        return path
    os.makedirs(cache, exist_ok=True)
    with tempfile.TemporaryDirectory() as d:
        src, out = os.path.join(d, "probe.c"), os.path.join(d, "probe.so")
        with open(src, "w") as f:
            f.write(SOURCE)
        subprocess.run([os.environ.get("CC", "cc"), "-O3", "-shared", "-fPIC", "-pthread",
                        src, "-o", out], check=True, capture_output=True, timeout=120)
        os.replace(out, path)  # (atomic: a concurrent bench sees the whole file or none)
    return path


def probe(cache: str | None = None) -> HostProbe | None:
    """The host probe, or None where it cannot run here (not x86-64, no C compiler)."""
    if platform.machine().lower() not in ("x86_64", "amd64"):
        return None
    cache = cache or os.path.join(os.path.expanduser("~"), ".cache", "edgecc", "bench")
    try:
        return HostProbe(_compile(cache))
    except (OSError, subprocess.SubprocessError):
        return None


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

