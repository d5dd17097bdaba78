"""What the native pool benches (``bench/pool_knobs_native.py``, ``bench/x86_pool_handoff.py``)
share: a C++ program over edgecc's kernel pool (``x86_kernel_ffi.ffi_prelude``: the same pool
the kernels run on, no Python, TVM or torch at run time) built with a private copy of
libtvm_ffi.so beside it, and the head every such program starts with: the includes, the
prelude, ``now_ns()`` (CLOCK_MONOTONIC) and ``chain(n)`` (n dependent multiply-adds: work of a
known length that no compiler folds)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from edgecc.targets.tvm.x86_kernel_ffi import ffi_prelude  # noqa: E402

HEAD = r"""
#include <tvm/ffi/c_api.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <algorithm>
#include <vector>
@PRELUDE@
static inline int64_t now_ns() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000000000LL + t.tv_nsec;
}
volatile double sink;
static void chain(int64_t n) {
  double x = 1.0;
  for (int64_t k = 0; k < n; ++k) x = x * 0.9999999 + 1e-9;
  sink = x;
}
"""


def build_native(directory: str, name: str, body: str) -> str:
    """``HEAD`` + ``body`` compiled as ``directory/name`` with a copy of libtvm_ffi.so there
    (rpath $ORIGIN, so the folder runs anywhere: ``--build DIR``); its path."""
    import tvm_ffi.libinfo

    os.makedirs(directory, exist_ok=True)
    src, exe = os.path.join(directory, f"{name}.cc"), os.path.join(directory, name)
    with open(src, "w") as f:
        f.write(HEAD.replace("@PRELUDE@", ffi_prelude(0)) + body)
    paths = tvm_ffi.libinfo.find_include_path()
    includes = [f"-I{p}" for p in ([paths] if isinstance(paths, str) else paths)]
    ffi = tvm_ffi.libinfo.find_libtvm_ffi()
    shutil.copy(ffi, os.path.join(directory, os.path.basename(ffi)))
    subprocess.run(["g++", "-O2", "-std=c++17", *includes, src, "-o", exe,
                    os.path.join(directory, os.path.basename(ffi)), "-Wl,-rpath,$ORIGIN",
                    "-lpthread", "-ldl"], check=True)
    return exe
