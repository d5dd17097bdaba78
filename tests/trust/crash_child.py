"""A compile that stops (sleeps) at a named stage, for ``test_crash_safe_output.py`` to kill.

Started once (imports paid once); reads ``STAGE OUT MARKER`` lines on stdin and forks one
compile per line, answering with the compile's PID. The compile writes ``MARKER`` when it
reaches the stage, then sleeps until it is killed. The parent warms up with one
compile on a single thread (no thread pool to fork) and verifies nothing (no onnxruntime
session).
"""

from __future__ import annotations

import os
import signal
import sys
import time
import warnings

warnings.simplefilter("ignore")

import torch  # noqa: E402

import edgecc  # noqa: E402
import edgecc.compiler  # noqa: E402
import edgecc.output_dir  # noqa: E402
from edgecc.pass_base import Pass, PassResult  # noqa: E402
from edgecc.registry import default_pass_registry, default_target_registry  # noqa: E402


def reached(marker: str) -> None:
    with open(marker, "w") as f:
        f.write(str(os.getpid()))
    time.sleep(600)


def install(stage: str, marker: str) -> str:
    """Make the compile stop at ``stage``; returns the pipeline to run."""
    if stage == "passes":
        class Stop(Pass):
            name = "stop-here"

            def run(self, program, options, context=None):
                reached(marker)
                return PassResult(program, modified=False)
        default_pass_registry().register(Stop)
        return "dce,stop-here"
    if stage == "lowering":  # the artifact is written, the manifest not yet
        cls = default_target_registry().get("onnx")
        lower = cls.lower

        def stopping_lower(self, *args, **kwargs):
            out = lower(self, *args, **kwargs)
            reached(marker)
            return out
        cls.lower = stopping_lower
    elif stage == "manifest":  # verified, about to write the manifest
        write = edgecc.compiler.write_manifest

        def stopping_write(directory, manifest):
            path = write(directory, manifest)
            with open(path, "r+") as f:  # half of it on disk
                f.truncate(os.path.getsize(path) // 2)
            reached(marker)
        edgecc.compiler.write_manifest = stopping_write
    elif stage == "commit":  # the bundle swapped into place, the old one not yet removed
        rmtree = edgecc.output_dir.shutil.rmtree

        def stopping_rmtree(path, *args, **kwargs):
            reached(marker)
            return rmtree(path, *args, **kwargs)
        edgecc.output_dir.shutil.rmtree = stopping_rmtree
    elif stage == "commit-fallback":  # no renameat2: killed between the two renames
        edgecc.output_dir._exchange = lambda a, b: False
        rename = os.rename
        calls = []

        def stopping_rename(a, b):
            rename(a, b)
            calls.append(b)
            if len(calls) == 1 and b.endswith(".old"):
                reached(marker)
        edgecc.output_dir.os.rename = stopping_rename
    return "dce"  # "complete": no stop


def main() -> None:
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # killed compiles are reaped
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.ReLU()).eval()
    x = torch.randn(2, 6)
    # warm up (lazy imports, torch.export's first trace) on one thread, so each forked
    # compile starts fast and no thread pool is forked
    torch.set_num_threads(1)
    import tempfile

    with tempfile.TemporaryDirectory() as tmp:
        edgecc.compile(model, "onnx", pipeline="dce", example_inputs=(x,),
                       output_dir=os.path.join(tmp, "warm"), verify=False)
    print("ready", flush=True)
    for line in sys.stdin:
        stage, out, marker = line.split()
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                pipeline = install(stage, marker)
                edgecc.compile(model, "onnx", pipeline=pipeline, example_inputs=(x,),
                               output_dir=out, force=True)
                if stage == "complete":
                    with open(marker, "w") as f:
                        f.write("done")
            except BaseException:
                import traceback

                traceback.print_exc()
                code = 1
            finally:
                sys.stderr.flush()
                os._exit(code)
        print(pid, flush=True)


if __name__ == "__main__":
    main()
