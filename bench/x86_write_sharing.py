"""Two threads writing disjoint halves of the same buffers: a native stand-in for a pooled int8
convolution's fused float write-back (``tile_post``: per 8 x 16 tile, 8 rows of ``+ res``,
a 64-byte float store and a 16-byte int8 store, 8 output channels apart by a channel plane),
without the multiply-adds, to tell what in the outputs' memory makes a band slower at 2
threads (s18: ResNet-20 w8a8's stem and 16->16@32 second convolutions ~1-2 us a band slower
at 2 threads, both threads; bench/x86_int8_thread_cost.py).

Each thread runs its band (output rows: pixels [t x 512, t x 512 + 512) of 16 channels of
32 x 32, the row split conv_direct4's bands make) ``--passes`` times over a float residual,
a float output and an int8 output; the program prints the median us a band of each thread.
Layouts (``--layouts``), each run as its own process, interleaved over ``--rounds``:

- ``alone``: thread 0 alone on the shared buffers (the 1-thread time of a band);
- ``shared``: both threads, one set of buffers (the model's tensors: each thread its rows);
- ``private``: both threads, each its own set of buffers (allocated by the main thread);
- ``fout`` / ``qout`` / ``res``: only that array shared, the others private;
- ``offNNN``: both threads in one allocation, thread 1's set NNN bytes after thread 0's
  (its rows' lines still disjoint from thread 0's);
- ``aligned``: ``shared`` with every array page-aligned (else at offsets in their pages as
  ResNet-20's buffers are);
- ``chan`` / ``chan_al``: bands of output channels (thread t: channels 8t..8t+7 of every
  pixel, whole channel planes: each thread its own pages), unaligned / page-aligned;
  ``chan_alone``: thread 0 alone so;
- ``stage``: each thread's band into its own buffers, then its rows copied into the shared
  ones (a staging fix's cost); ``stage_alone``: thread 0 alone so.

    python bench/x86_write_sharing.py [--rounds 9] [--passes 4000] [--layouts ...]

Writes ``bench/results/x86_write_sharing.json``. No TVM or torch: runs on any x86-64 Linux
with gcc (AVX-512). A debug view, not a goal metric. Found with it (s19, 11 rounds, medians,
thread 0 / thread 1 us a band):

- Zen 4 KVM 2 vCPUs, the other vCPU idle (load 1.0): alone 1.98; shared 2.44 / 2.95;
  private 1.96 / 2.01; only fout shared 2.14 / 2.64 (qout 2.05 / 1.95, res 1.93 / 1.93:
  as private); off65536 2.00 / 1.67 (off4096 2.41 / 2.86, off32768 2.23 / 2.24); chan 2.12 /
  2.85 (its alone 1.33: channel bands do not avoid it); stage 3.76 / 4.43 (a private band
  plus the copy costs more than the shared band); every array page-aligned: aligned 3.65 /
  4.66, chan_al 3.15 / 3.96 (4K aliasing of res loads with the fout / q stores of the row
  before, ld = 4096 bytes: never page-align these buffers alike). In some minutes every
  two-thread layout was ~2.6 / 2.6, private too (the host's state: vCPUs placed apart or
  not), so repeat it.
- The device machine's Xeon (KVM, 16 vCPUs, 9 rounds): alone 4.23, shared 4.07 / 3.97,
  private 4.15 / 4.25, fout 4.28 / 4.23: no sharing cost there.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

SOURCE = r"""
#define _GNU_SOURCE
#include <immintrin.h>
#include <pthread.h>
#include <sched.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <stdint.h>
#include <x86intrin.h>

// a band: output pixels [t*512, t*512+512) of 16 channels of 32x32 (chan: channels
// [8t, 8t+8) of all 1024 pixels), tile_post's row ops
static int chan;
__attribute__((target("avx512f,avx512bw")))
static void band(const float* res, float* fout, int8_t* q, int t) {
  const __m512 s = _mm512_set1_ps(1.5f), qs = _mm512_set1_ps(0.37f);
  const int p0 = chan ? 0 : t * 512, p1 = chan ? 1024 : t * 512 + 512;
  const int c0 = chan ? 8 * t : 0, c1 = chan ? 8 * t + 8 : 16;
  for (int px = p0; px < p1; px += 16)
    for (int cb = c0; cb < c1; cb += 8)
      for (int r = 0; r < 8; ++r) {
        const int at = (cb + r) * 1024 + px;
        __m512 v = _mm512_max_ps(_mm512_add_ps(_mm512_loadu_ps(res + at), s),
                                 _mm512_setzero_ps());
        _mm512_storeu_ps(fout + at, v);
        const __m512 w = _mm512_roundscale_ps(_mm512_div_ps(v, qs), 0);
        _mm_storeu_si128((__m128i*)(q + at), _mm512_cvtsepi32_epi8(_mm512_cvtps_epi32(w)));
      }
}

struct Set { float* res; float* fout; int8_t* q; };
static struct Set sets[2], staged[2];  // staged: the tensors a staging band copies its rows to
static int stage;

// stage: the band's rows of fout and q copied from the thread's buffers into the shared ones
__attribute__((target("avx512f,avx512bw")))
static void copy_rows(const struct Set* from, const struct Set* to, int t) {
  for (int c = 0; c < 16; ++c) {
    const int at = c * 1024 + t * 512;
    for (int i = 0; i < 512; i += 16)
      _mm512_storeu_ps(to->fout + at + i, _mm512_loadu_ps(from->fout + at + i));
    for (int i = 0; i < 512; i += 64)
      _mm512_storeu_si512(to->q + at + i, _mm512_loadu_si512(from->q + at + i));
  }
}
static int passes, nthreads;
static volatile int go = 0;
static double us[2];
static double tsc_mhz;

static void* thread_main(void* arg) {
  const long id = (long)arg;
  cpu_set_t cs; CPU_ZERO(&cs); CPU_SET(id, &cs);
  pthread_setaffinity_np(pthread_self(), sizeof cs, &cs);
  const struct Set s = sets[id];
  for (int i = 0; i < 100; ++i) {
    band(s.res, s.fout, s.q, (int)id);
    if (stage) copy_rows(&s, &staged[id], (int)id);
  }
  __atomic_fetch_add(&go, 1, __ATOMIC_SEQ_CST);
  for (long spin = 0; __atomic_load_n(&go, __ATOMIC_SEQ_CST) < nthreads; ++spin) {
    _mm_pause();
    if (spin > 2000000000L) return 0;  // the other thread never came: give up
  }
  const uint64_t t0 = __rdtsc();
  for (int i = 0; i < passes; ++i) {
    band(s.res, s.fout, s.q, (int)id);
    if (stage) copy_rows(&s, &staged[id], (int)id);
  }
  us[id] = (double)(__rdtsc() - t0) / passes / tsc_mhz;
  return 0;
}

static char* block(size_t bytes) {  // page-aligned, zeroed by the main thread
  char* p = (char*)aligned_alloc(4096, bytes);
  memset(p, 0, bytes);
  return p;
}

// argv: threads, passes, tsc MHz, shared mask (1 res, 2 fout, 4 q), thread 1's offset (bytes;
// 0: shared arrays are one allocation), 1: bands of channels (else of rows), 1: the arrays
// page-aligned (else at ResNet-20's offsets in their pages), 1: staged (see the layouts)
int main(int argc, char** argv) {
  nthreads = atoi(argv[1]); passes = atoi(argv[2]); tsc_mhz = atof(argv[3]);
  const int mask = atoi(argv[4]); const long off = atol(argv[5]);
  chan = atoi(argv[6]);
  stage = atoi(argv[8]);
  const int aligned = atoi(argv[7]);
  // ResNet-20's buffers are 64-byte, not page, aligned (0x580 / 0x800 / 0xe40 in their pages)
  const long fo = aligned ? 0 : 640, qo = aligned ? 0 : 1408;
  char *r = block(65536 + 4096 + off), *f = block(65536 + 4096 + off),
       *q = block(16384 + 4096 + off);
  for (int t = 0; t < 2; ++t) {
    sets[t].res = (float*)((mask & 1) ? r + t * off : block(65536));
    sets[t].fout = (float*)((mask & 2) ? f + fo + t * off : block(65536 + 4096) + fo);
    sets[t].q = (int8_t*)((mask & 4) ? q + qo + t * off : block(16384 + 4096) + qo);
  }
  if (stage) {  // the band writes private buffers, then copies its rows into shared ones
    char* sf = block(65536 + 4096) + fo; char* sq = block(16384 + 4096) + qo;
    for (int t = 0; t < 2; ++t) staged[t] = (struct Set){sets[t].res, (float*)sf, (int8_t*)sq};
  }
  pthread_t th[2];
  for (long i = 0; i < nthreads; ++i) pthread_create(&th[i], 0, thread_main, (void*)i);
  for (long i = 0; i < nthreads; ++i) pthread_join(th[i], 0);
  printf("%.4f %.4f\n", us[0], us[1]);
  return 0;
}
"""

# name -> (threads, shared mask, thread 1's offset, bands of channels, page-aligned arrays,
# staged: private outputs copied into shared ones)
LAYOUTS = {"alone": (1, 7, 0, 0, 0, 0), "shared": (2, 7, 0, 0, 0, 0),
           "private": (2, 0, 0, 0, 0, 0), "fout": (2, 2, 0, 0, 0, 0), "qout": (2, 4, 0, 0, 0, 0),
           "res": (2, 1, 0, 0, 0, 0), "aligned": (2, 7, 0, 0, 1, 0), "chan": (2, 7, 0, 1, 0, 0),
           "chan_al": (2, 7, 0, 1, 1, 0), "chan_alone": (1, 7, 0, 1, 0, 0),
           "stage": (2, 1, 0, 0, 0, 1), "stage_alone": (1, 1, 0, 0, 0, 1)}


def layout(name: str) -> tuple[int, int, int, int, int, int]:
    if name.startswith("off"):
        return (2, 7, int(name[3:]), 0, 0, 0)
    return LAYOUTS[name]


def tsc_mhz() -> float:
    with open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("cpu MHz"):
                return float(line.split(":")[1])
    return 1000.0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=9)
    parser.add_argument("--passes", type=int, default=4000)
    parser.add_argument("--layouts", default="alone,shared,private,fout,qout,res,aligned,"
                                             "off4096,off32768,off65536,chan,chan_al,"
                                             "chan_alone,stage,stage_alone")
    parser.add_argument("--output", default=os.path.join(ROOT, "bench", "results",
                                                         "x86_write_sharing.json"))
    args = parser.parse_args()
    names = args.layouts.split(",")
    mhz = tsc_mhz()
    got = {n: [] for n in names}
    with tempfile.TemporaryDirectory() as d:
        src, exe = os.path.join(d, "ws.c"), os.path.join(d, "ws")
        with open(src, "w") as f:
            f.write(SOURCE)
        subprocess.run(["gcc", "-O2", "-o", exe, src, "-lpthread"], check=True)
        for r in range(args.rounds):
            for n in (names if r % 2 == 0 else names[::-1]):
                threads, mask, off, chan, aligned, stage = layout(n)
                out = subprocess.run(["timeout", "60", exe, str(threads), str(args.passes),
                                      str(mhz), str(mask), str(off), str(chan), str(aligned),
                                      str(stage)],
                                     capture_output=True, text=True, check=True).stdout
                got[n].append([float(x) for x in out.split()])
    load = os.getloadavg()[0]
    print(f"\ntwo threads' bands of tile_post-like writes (16 x 32 x 32, rows split), median us"
          f" a band over {args.rounds} runs of {args.passes} passes (load {load:.1f})")
    print(f"  {'layout':<10} {'thread 0':>9} {'thread 1':>9}")
    rows = {}
    for n in names:
        t0 = statistics.median(x[0] for x in got[n])
        t1 = statistics.median(x[1] for x in got[n]) if layout(n)[0] == 2 else float("nan")
        rows[n] = {"thread0_us": t0, "thread1_us": t1, "runs": got[n]}
        print(f"  {n:<10} {t0:9.2f} {t1:9.2f}")
    os.makedirs(os.path.dirname(os.path.abspath(args.output)), exist_ok=True)
    with open(args.output, "w") as f:  # (no bench imports: runs on a machine without TVM)
        json.dump({"benchmark": "two threads writing halves of shared buffers",
                   "load_average": load, "passes": args.passes, "layouts": rows}, f, indent=2)
    print(f"wrote {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
