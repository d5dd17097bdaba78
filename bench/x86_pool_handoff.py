"""The pool's hand-off cost per job on a native stand-in for ResNet-20 w8a8's call at 2 threads
(x86_kernel_ffi's pool, conv_direct4's one band a thread): a C++ program built from the prelude
runs the call's 19 pool jobs (2 bands of 32 rows each, a row a dependent multiply-add chain;
~4.6 us a band on the Xeon below) with ~1.5 us of serial work between jobs (the VM and the
serial kernels), and times whole calls of each setting interleaved (rounds rotated, per-round
paired ratios of median calls against ``even``), plus the same call with every job serial:
``handoff us/job`` = (pool call - serial call + the bands' work / 2) / jobs, what a job costs
beyond half its work. Then per job (``edgecc_pool_timing`` 1): the caller's time, its wait
for the worker, the worker's wake-up and its time. Settings: the two bands ``even`` (what
conv_direct4 does), the caller's band 1 or 2 rows longer, or ``learned`` per job (one row
more when the caller waited over a row's time for the worker, one less under a quarter:
the controller a kernel would run). No Python, TVM or torch in the timed program: it runs on
another, quiet machine too (``taskset -c 0,1``)::

    python bench/x86_pool_handoff.py --build DIR       # DIR/pool_handoff + libtvm_ffi.so
    DIR/pool_handoff [rounds] [calls_per_round]         # anywhere
    python bench/x86_pool_handoff.py [--rounds 60]      # build and run here (writes
                                                        # bench/results/x86_pool_handoff.json)

s15, the quiet 16-core Xeon (device machine), three core pairs, 50 rounds x 10 calls: a job
costs 0.57-0.65 us beyond half its work (wake-up 0.26-0.28 us, the caller's wait 0.56-0.88
us); a longer caller band makes the call slower though the caller waits less: 1 row 1.014-
1.019x, 2 rows 1.041-1.056x, learned 1.073-1.125x (it runs to the clamp, 4 rows). Earlier
variants of the pool on the same stand-in (not kept): the claim word and done counter in the
epoch's line 1.004-1.014x, the job in a line of its own apart from the epoch 1.000-1.006x,
done_once 0.997-1.004x. An item is checked to run once.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.pool_native import build_native  # noqa: E402

SOURCE = r"""
// ResNet-20 w8a8's pool jobs at 2 threads: the chain length of one item (a band), in order:
// the stem, 6 convs at 32x32, a stride-2 conv, 6 at 16x16 (one a shortcut's partner), ...
static const int64_t MODEL[] = {1400, 2000, 2000, 2000, 2000, 2000, 2000, 1200, 2000, 2000,
                                2000, 2000, 1200, 2000, 2000, 2000, 2000, 2000, 2000};
constexpr int JOBS = sizeof(MODEL) / sizeof(MODEL[0]);
static int32_t seen[2];
// the split of a job's ROWS rows between its two bands (conv_direct4's
// edgecc_x86_int8_direct4_balance): 0 even, 1 learned per job as the kernel does (the caller's
// band one row longer when it waited over a row's time for the worker, one shorter when it
// waited under a quarter of one; at most ROWS / 8), 1000 + n: n rows more for the caller
constexpr int64_t ROWS = 32;
static int64_t balance = 0;
static int32_t learned[JOBS];
static int64_t call_ns(bool pool) {
  const int64_t t = now_ns();
  for (int j = 0; j < JOBS; ++j) {
    const int64_t c = MODEL[j];
    chain(1000);  // the gap: serial work on the caller
    const int64_t most = ROWS / 8;
    const int64_t want = balance == 1 ? learned[j] : balance == 0 ? 0 : balance - 1000;
    const int64_t k = ROWS / 2 + std::max(-most, std::min(most, want));
    const pthread_t caller = pthread_self();
    uint64_t t0 = __rdtsc(), caller_end = 0;
    int ran = 0;
    auto band = [&](int64_t b, int64_t e) {
      const bool mine = pthread_equal(pthread_self(), caller);
      for (int64_t i = b; i < e; ++i) {
        chain(2 * c * (i == 0 ? k : ROWS - k) / ROWS);
        seen[i] += 1;
        if (mine) { ran |= 1 << i; caller_end = __rdtsc(); }
      }
    };
    if (pool) parallel_for(2, band, 1); else band(0, 2);
    const uint64_t t1 = __rdtsc();
    if (balance == 1 && ran == 1 && caller_end > t0 && t1 >= caller_end) {
      const uint64_t row = (caller_end - t0) / (uint64_t)k, waited = t1 - caller_end;
      if (waited > row && learned[j] < most) learned[j] += 1;
      else if (waited * 4 < row && learned[j] > -most) learned[j] -= 1;
    }
  }
  return now_ns() - t;
}
int main(int argc, char** argv) {
  const int rounds = argc > 1 ? atoi(argv[1]) : 60, per = argc > 2 ? atoi(argv[2]) : 20;
  edgecc_pool_configure(-1, 2);
  // (the split, edgecc_pool_done_once); the last: every job serial
  const int settings[][2] = {{0, 0}, {1, 0}, {1001, 0}, {1002, 0}, {-1, -1}};
  const char* names[] = {"even", "learned", "lead 1 row", "lead 2 rows", "serial"};
  const int n = 5;
  std::vector<std::vector<double>> us(n), ratio(n);
  for (int w = 0; w < 200; ++w) call_ns(true);
  for (int r = 0; r < rounds; ++r) {
    double mid[n] = {};
    for (int q = 0; q < n; ++q) {
      const int s = (q + r) % n;
      const bool pool = settings[s][0] >= 0;
      if (pool) { balance = settings[s][0]; edgecc_pool_done_once = settings[s][1]; }
      for (int w = 0; w < 3; ++w) call_ns(pool);
      std::vector<double> mine;
      for (int c = 0; c < per; ++c) {
        seen[0] = seen[1] = 0;
        const double t = call_ns(pool) / 1e3;
        if (seen[0] != JOBS || seen[1] != JOBS) { fprintf(stderr, "an item ran other than once\n"); return 1; }
        us[s].push_back(t);
        mine.push_back(t);
      }
      std::sort(mine.begin(), mine.end());
      mid[s] = mine[mine.size() / 2];
    }
    for (int s = 0; s < n; ++s) ratio[s].push_back(mid[s] / mid[0]);
  }
  // the jobs' work: the serial call less its gaps
  int64_t gaps = INT64_MAX;
  for (int i = 0; i < 50; ++i) {
    const int64_t t = now_ns();
    for (int j = 0; j < JOBS; ++j) chain(1000);
    gaps = std::min(gaps, now_ns() - t);
  }
  std::sort(us[n - 1].begin(), us[n - 1].end());
  const double serial = us[n - 1][us[n - 1].size() / 2], work = serial - gaps / 1e3;
  for (int s = 0; s < n; ++s) {
    std::sort(us[s].begin(), us[s].end());
    std::sort(ratio[s].begin(), ratio[s].end());
    const size_t m = ratio[s].size();
    const double med = us[s][us[s].size() / 2];
    printf("%-18s median %8.2f us  p10 %8.2f us  paired %.3f (p10 %.3f, p90 %.3f)  "
           "handoff %.3f us/job\n", names[s], med, us[s][us[s].size() / 10], ratio[s][m / 2],
           ratio[s][m / 10], ratio[s][m * 9 / 10], (med - serial + work / 2) / JOBS);
  }
  // where a pool job's time goes (edgecc_pool_timing 1): per job, the caller's time from
  // publishing to its last item, its wait for the worker, the worker's delay from publishing
  // to its first claim and its time claiming and running items
  edgecc_pool_timing = 1;
  for (int s = 0; s < n - 1; ++s) {
    balance = settings[s][0];
    edgecc_pool_done_once = settings[s][1];
    for (int i = 0; i < 16; ++i) edgecc_pool_stat[i] = 0;
    for (int c = 0; c < 200; ++c) call_ns(true);
    const double jobs = std::max<int64_t>(1, edgecc_pool_stat[0]);
    const double joined = std::max<int64_t>(1, edgecc_pool_stat[7]);
    printf("%-18s per job: caller %.3f us, wait %.3f us, joined %.0f%%, wake %.3f us, "
           "worker %.3f us\n", names[s], edgecc_pool_stat[4] / jobs / 1e3,
           edgecc_pool_stat[5] / jobs / 1e3, 100.0 * edgecc_pool_stat[7] / jobs,
           edgecc_pool_stat[8] / joined / 1e3, edgecc_pool_stat[6] / joined / 1e3);
  }
  edgecc_pool_timing = 0;
  printf("learned leads (rows of %d):", (int)ROWS);
  for (int j = 0; j < JOBS; ++j) printf(" %d", learned[j]);
  printf("\n");
  return 0;
}
"""


def build(directory: str) -> str:
    """The program and a copy of libtvm_ffi.so in ``directory``; its path."""
    return build_native(directory, "pool_handoff", SOURCE)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", metavar="DIR", help="only build into DIR")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--calls", type=int, default=20, help="calls per setting per round")
    parser.add_argument("--output",
                        default=os.path.join(ROOT, "bench", "results", "x86_pool_handoff.json"))
    args = parser.parse_args()
    if args.build:
        print(build(args.build))
        return 0
    with tempfile.TemporaryDirectory() as d:
        out = subprocess.run(["timeout", "300", build(d), str(args.rounds), str(args.calls)],
                             check=True, capture_output=True, text=True).stdout
    print(out, end="")
    load = os.getloadavg()[0]
    print(f"load average {load:.1f}")
    os.makedirs(os.path.dirname(args.output), exist_ok=True)
    with open(args.output, "w") as f:
        json.dump({"benchmark": "edgecc pool hand-off, native ResNet-20 w8a8 stand-in, 2 threads",
                   "rounds": args.rounds, "calls": args.calls, "load_average": load,
                   "lines": out.splitlines()}, f, indent=2)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
