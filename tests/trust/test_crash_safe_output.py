"""Crash-safe output (issue 20): a compile killed with SIGKILL at any stage leaves the
output directory's previous contents intact and no half-written bundle; what it left
beside the directory is cleaned (or, for an interrupted swap, put back) by the next run.

Each compile is forked from one helper process (``crash_child.py``: imports paid once)
and stops at a hook (a pass that sleeps, a target whose lowering sleeps after writing, a
manifest half written, the final swap) where it is killed.
"""

import hashlib
import json
import os
import signal
import subprocess
import sys
import time

import pytest

from edgecc.output_dir import StagedOutput, leftovers, recover_interrupted

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def tree(path):
    """{relative path: sha256} of every file under ``path``."""
    out = {}
    for root, _, files in os.walk(path):
        for f in files:
            full = os.path.join(root, f)
            out[os.path.relpath(full, path)] = hashlib.sha256(open(full, "rb").read()).hexdigest()
    return out


@pytest.fixture(scope="module")
def child():
    proc = subprocess.Popen([sys.executable, os.path.join(HERE, "crash_child.py")],
                            stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True,
                            cwd=ROOT, env={**os.environ, "PYTHONPATH": ROOT})
    assert proc.stdout.readline().strip() == "ready"
    yield proc
    proc.kill()
    proc.wait()


def kill_at(child, stage, out, tmp_path):
    marker = tmp_path / f"reached-{stage}"
    child.stdin.write(f"{stage} {out} {marker}\n")
    child.stdin.flush()
    pid = int(child.stdout.readline())
    deadline = time.monotonic() + 120
    while not marker.exists():
        assert time.monotonic() < deadline, f"the compile never reached {stage}"
        time.sleep(0.05)
    if stage == "complete":
        return
    time.sleep(0.05)  # the marker is written before the sleep starts
    os.kill(pid, signal.SIGKILL)
    for _ in range(200):  # the helper reaps it
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            break
        time.sleep(0.05)


def previous_bundle(out):
    out.mkdir()
    (out / "manifest.json").write_text('{"previous": true}\n')
    (out / "model.onnx").write_bytes(b"previous model")
    return tree(out)


@pytest.mark.parametrize("stage", ["passes", "lowering", "manifest", "commit-fallback"])
def test_killed_compile_leaves_previous_output(child, stage, tmp_path):
    out = tmp_path / "out"
    before = previous_bundle(out)
    kill_at(child, stage, out, tmp_path)
    left = leftovers(str(out))
    if stage == "commit-fallback":  # killed between the renames: out is aside, as .old
        assert not out.exists() and any(backup for _, _, backup in left)
    else:
        assert tree(out) == before
        if stage != "passes":
            assert left, "the staging directory a killed compile leaves was expected"
    recover_interrupted(str(out))  # what the next compile does first
    assert tree(out) == before and leftovers(str(out)) == []


def test_killed_after_swap_leaves_the_complete_new_bundle(child, tmp_path):
    out = tmp_path / "out"
    previous_bundle(out)
    kill_at(child, "commit", out, tmp_path)
    manifest = json.loads((out / "manifest.json").read_text())
    for art in manifest["artifacts"]:  # complete: every file the manifest lists, intact
        data = (out / art["path"]).read_bytes()
        assert hashlib.sha256(data).hexdigest() == art["sha256"]
    assert leftovers(str(out))  # the previous output, beside it, until the next run


def test_next_compile_cleans_leftovers_and_keeps_live_ones(child, tmp_path):
    out = tmp_path / "out"
    previous_bundle(out)
    kill_at(child, "lowering", out, tmp_path)
    dead = [p for p, _, _ in leftovers(str(out))]
    live = tmp_path / f".out.edgecc-{os.getpid()}-busy"  # a compile in progress
    live.mkdir()
    kill_at(child, "complete", out, tmp_path)  # the next compile, run to the end
    assert not any(os.path.exists(p) for p in dead)
    assert live.exists()
    assert json.loads((out / "manifest.json").read_text())["target"]["name"] == "onnx"


def test_failed_compile_keeps_previous_output(tmp_path):
    out = tmp_path / "out"
    before = previous_bundle(out)
    stage = StagedOutput(str(out))
    with pytest.raises(RuntimeError), stage as staging:
        open(os.path.join(staging, "model.onnx"), "w").write("half")
        raise RuntimeError("lowering failed")
    assert tree(out) == before and leftovers(str(out)) == []
