"""The pool's job settings (x86_kernel_ffi: ``edgecc_pool_chunk_parts``, ``edgecc_pool_done_once``)
A/B on a native stand-in for a small CNN's call, with no Python, TVM or torch: a C++ program
built from the prelude runs a "model" of jobs shaped like MobileNetV2-32 int8's at 2 threads
(per job: items, each a dependent multiply-add chain; a short serial gap between jobs, as the VM
and the serial kernels leave), and times whole calls of each setting interleaved (rounds rotated,
per-round paired ratios of the
settings' median calls against the defaults'). Bit-identical by construction (the pool only
schedules); each item is checked to run once. Small enough to run on another, quiet machine:

    python bench/pool_knobs_native.py --build DIR     # DIR/pool_knobs + DIR/libtvm_ffi.so
    DIR/pool_knobs [rounds] [calls_per_round]          # anywhere (taskset -c 0,1 for 2 cores)
    python bench/pool_knobs_native.py [--rounds 60]    # build and run here

Prints one line per setting: median call us, p10, the paired ratio's median and spread.

s13, a quiet 16-core Xeon (the device machine, taskset -c 0,1, 300 rounds of 20 calls): default
439.4 us; done_once 0.998x (p10-p90 0.971-1.026), chunk_parts 1 0.988x (0.962-1.021), both
0.990x; per call 214 -> 122 claims, 214 -> 30 done additions, the worker joined every job. Here
(the 2-vCPU Zen 4 under load ~3, where the worker mostly had no CPU): 1.002 / 0.984 / 0.986x.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

from bench.pool_native import build_native  # noqa: E402

SOURCE = r"""
// a MobileNetV2-32-int8-like call: (items, multiply-adds per item) of its pool jobs, in order,
// with ~1.5 us of serial work (a serial kernel, the VM) between jobs
struct Job { int64_t items, chain; };
static const Job MODEL[] = {
  {64, 150}, {64, 120}, {64, 200}, {64, 220}, {64, 260}, {64, 280}, {64, 250}, {64, 120},
  {16, 400}, {16, 400}, {16, 200}, {4, 1500}, {4, 1000}, {4, 1000}, {4, 1000}, {4, 1000},
  {4, 1800}, {4, 1500}, {4, 1500}, {4, 1500}, {4, 1500}, {4, 1500}, {4, 1500}, {4, 1100},
  {2, 2000}, {2, 2000}, {2, 2000}, {2, 2000}, {2, 3000}, {2, 4500},
};
static std::vector<int32_t> seen;
static int64_t call_ns() {
  const int64_t t = now_ns();
  for (const Job& j : MODEL) {
    chain(1500);  // the gap: serial work on the caller
    parallel_for(j.items, [&](int64_t b, int64_t e) {
      for (int64_t i = b; i < e; ++i) { chain(j.chain); seen[i] += 1; }
    }, 1);
  }
  return now_ns() - t;
}
int main(int argc, char** argv) {
  const int rounds = argc > 1 ? atoi(argv[1]) : 60, per = argc > 2 ? atoi(argv[2]) : 20;
  edgecc_pool_configure(-1, 2);
  seen.assign(64, 0);
  std::vector<int32_t> expected(64, 0);  // per item index: the jobs that have it
  for (const Job& j : MODEL) for (int64_t i = 0; i < j.items; ++i) expected[i] += 1;
  const int settings[][2] = {{2, 0}, {2, 1}, {1, 0}, {1, 1}};  // (chunk_parts, done_once)
  const char* names[] = {"parts2 (default)", "done_once", "parts1", "parts1+done_once"};
  const int n = 4;
  std::vector<std::vector<double>> us(n), ratio(n);
  for (int w = 0; w < 200; ++w) call_ns();
  for (int r = 0; r < rounds; ++r) {
    double mid[4] = {0, 0, 0, 0};  // each setting's median call this round
    for (int q = 0; q < n; ++q) {
      const int s = (q + r) % n;
      edgecc_pool_chunk_parts = settings[s][0];
      edgecc_pool_done_once = settings[s][1];
      for (int w = 0; w < 3; ++w) call_ns();
      std::vector<double> mine;
      for (int c = 0; c < per; ++c) {
        std::fill(seen.begin(), seen.end(), 0);
        const double t = call_ns() / 1e3;
        if (seen != expected) { fprintf(stderr, "an item ran other than once\n"); return 1; }
        us[s].push_back(t);
        mine.push_back(t);
      }
      std::sort(mine.begin(), mine.end());
      mid[s] = mine[mine.size() / 2];
    }
    for (int s = 0; s < n; ++s) ratio[s].push_back(mid[s] / mid[0]);
  }
  for (int s = 0; s < n; ++s) {
    std::sort(us[s].begin(), us[s].end());
    std::sort(ratio[s].begin(), ratio[s].end());
    const size_t m = ratio[s].size();
    printf("%-18s median %8.2f us  p10 %8.2f us  paired ratio %.3f (p10 %.3f, p90 %.3f)\n",
           names[s], us[s][us[s].size() / 2], us[s][us[s].size() / 10], ratio[s][m / 2],
           ratio[s][m / 10], ratio[s][m * 9 / 10]);
  }
  edgecc_pool_timing = 1;
  for (int s = 0; s < n; ++s) {
    edgecc_pool_chunk_parts = settings[s][0];
    edgecc_pool_done_once = settings[s][1];
    for (int i = 0; i < 16; ++i) edgecc_pool_stat[i] = 0;
    edgecc_pool_claims = edgecc_pool_done_adds = 0;
    for (int c = 0; c < 100; ++c) call_ns();
    printf("%-18s per call: jobs %.1f, joined %.0f%%, claims %.1f, done adds %.1f, "
           "caller wait %.2f us, wake %.2f us\n", names[s], edgecc_pool_stat[0] / 100.0,
           100.0 * edgecc_pool_stat[7] / std::max<int64_t>(1, edgecc_pool_stat[0]),
           edgecc_pool_claims / 100.0, edgecc_pool_done_adds / 100.0,
           edgecc_pool_stat[5] / 100.0 / 1e3,
           edgecc_pool_stat[8] / 1e3 / std::max<int64_t>(1, edgecc_pool_stat[7]));
  }
  return 0;
}
"""


def build(directory: str) -> str:
    """The program and a copy of libtvm_ffi.so in ``directory``; its path."""
    return build_native(directory, "pool_knobs", SOURCE)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--build", metavar="DIR", help="only build into DIR")
    parser.add_argument("--rounds", type=int, default=60)
    parser.add_argument("--calls", type=int, default=20, help="calls per setting per round")
    args = parser.parse_args()
    if args.build:
        print(build(args.build))
        return 0
    with tempfile.TemporaryDirectory() as d:
        out = subprocess.run([build(d), str(args.rounds), str(args.calls)], check=True,
                             capture_output=True, text=True).stdout
    print(out, end="")
    print(f"load average {os.getloadavg()[0]:.1f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
