"""Runs edgecc's loaders on one file per request, in a process of its own, so that a
segfault, a hang or a memory blow-up in a loader is observed by the test instead of
taking the test run down (``tests/trust/test_fuzz_loaders.py`` drives it).

Protocol: one JSON request per stdin line, ``{"kind": "model"|"calib", "path": ...,
"specs": [[name, shape, dtype], ...]}``; one JSON answer per stdout line,
``{"outcome": "loaded"|"edgecc"|"bug", "detail": ..., "maxrss_mb": ..., "seconds": ...}``.
The address space is capped (``--mem-mb`` above what the imports took), so a loader that
believes a declared huge shape fails fast here instead of exhausting the machine's memory;
such a failure is reported as ``"bug"`` even when it was wrapped in an ``EdgeccError``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import time
import traceback
import warnings


def _vm_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


MEMORY_WORDS = ("can't allocate memory", "MemoryError", "std::bad_alloc", "out of memory",
                "Unable to allocate")


def main() -> int:
    # answers go to the original stdout; anything a library prints (onnxruntime's "EP
    # Error" lines, C++ logs) goes to stderr instead of into the protocol
    answers = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    parser = argparse.ArgumentParser()
    parser.add_argument("--mem-mb", type=int, default=2048)
    args = parser.parse_args()
    warnings.simplefilter("ignore")
    import logging

    logging.disable(logging.CRITICAL)
    import torch

    import edgecc
    from edgecc.errors import EdgeccError
    from edgecc.inputs import load_calibration
    from edgecc.program import TensorSpec

    torch.set_num_threads(1)
    limit = _vm_bytes() + args.mem_mb * (1 << 20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    print(json.dumps({"ready": True}), file=answers, flush=True)
    for line in sys.stdin:
        req = json.loads(line)
        t0 = time.perf_counter()
        try:
            if req["kind"] == "model":
                program = edgecc.load(req["path"])
                program.verify()
                answer = {"outcome": "loaded", "detail": str(len(program.input_specs))}
            else:
                specs = [TensorSpec(n, tuple(s), d) for n, s, d in req["specs"]]
                batches = load_calibration(req["path"], specs)
                answer = {"outcome": "loaded", "detail": f"{len(batches)} batches"}
        except EdgeccError as exc:
            text = str(exc)
            memory = any(w in text for w in MEMORY_WORDS)
            answer = {"outcome": "bug" if memory or "\n" in text else "edgecc",
                      "detail": f"{type(exc).__name__}: {text[:400]}"}
        except BaseException as exc:  # noqa: BLE001  (anything else is what we look for)
            if isinstance(exc, KeyboardInterrupt):
                raise
            tb = traceback.extract_tb(exc.__traceback__)[-3:]
            answer = {"outcome": "bug", "detail": f"{type(exc).__name__}: {str(exc)[:300]} "
                      f"at {[f'{f.filename}:{f.lineno}' for f in tb]}"}
        answer["seconds"] = round(time.perf_counter() - t0, 3)
        answer["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024
        print(json.dumps(answer), file=answers, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
