"""How much of a second core the host gives this process right now (``HostProbe().scaling()``).

One register-only FMA loop (ten independent AVX2 ``vfmadd`` chains, no memory traffic, ~1.3 ms)
runs on one thread, then on each of two threads at once, then on one thread again; the
reading is the two threads' throughput over the faster one thread's: ~2.0 when two threads run
on two physical cores, ~1.0 when they share one (SMT siblings, a vCPU descheduled, another
job). A coarse reading: +-10% from thread start-up and timer noise, partial states between.

Who reads it: ``end_to_end`` (``--tune``'s whole-model stage) before each confirming round —
a candidate must win in rounds where the host gave the pool's threads their cores
(``PARALLEL_STATE``), not only while they shared one (a 2-vCPU KVM guest here switches
between the two within seconds; a serial candidate confirmed in a shared spell ran 1.55x of
the untuned build in the bench) — and the CPU benches (``bench/host_probe.py``), beside their
timings.

The loop is compiled once with the system C compiler into ``~/.cache/edgecc/bench``;
``probe()`` returns None where that cannot be done (no compiler, not x86-64).
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import subprocess
import tempfile

# a reading at or above this: the second thread added at least 0.4 of a core (end_to_end's
# state guard; the benches' "two full cores" line is 1.7)
PARALLEL_STATE = 1.4
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
