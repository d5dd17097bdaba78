"""Run aarch64 artifacts on this x86 machine: qemu-aarch64 user-mode emulation with an
arm64 sysroot (Debian packages unpacked with ``dpkg -x``) and the aarch64 TVM runtime (PyPI's
aarch64 wheels), both fetched once into a cache.

    python -m edgecc.targets.arm.emulation --setup [--cache DIR]   # scripts/setup_arm.sh

Cache: ``root`` (the arm64 target's ``emulator_cache`` option), by default
``~/.cache/edgecc/arm64``; ``READY`` marks a complete one. ``runner.EmulatedRunner`` runs a
bundle under it; ``rpc_server`` makes it a board for MetaSchedule tuning.
"""

from __future__ import annotations

import argparse
import contextlib
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Iterator
from typing import Any

from edgecc.errors import LoweringError

QEMU = "qemu-aarch64-static"
PYTHON = "usr/bin/python3.11"
DEBIAN_PACKAGES = ("libc6", "libstdc++6", "libgcc-s1", "python3.11-minimal",
                   "libpython3.11-minimal", "libpython3.11-stdlib", "zlib1g", "libexpat1",
                   "libffi8", "libssl3", "libbz2-1.0", "liblzma5", "libuuid1", "libcrypt1")
# cloudpickle + psutil: the TVM RPC server (tuning against the emulator, rpc_server below)
WHEELS = ("apache-tvm==0.27.0.post1", "apache-tvm-ffi==0.1.14.post0", "numpy",
          "typing_extensions", "ml_dtypes", "cloudpickle", "psutil")
APT_TOOLS = {"aarch64-linux-gnu-g++": "g++-aarch64-linux-gnu",
             "aarch64-linux-gnu-objdump": "binutils-aarch64-linux-gnu",
             QEMU: "qemu-user-static"}


def default_cache() -> str:
    """Where the sysroot and runtime go when no ``emulator_cache`` is given."""
    return os.path.join(os.path.expanduser("~"), ".cache", "edgecc", "arm64")


def missing_tools() -> list[str]:
    """Debian packages to install for the tools not on PATH."""
    return sorted({pkg for tool, pkg in APT_TOOLS.items() if shutil.which(tool) is None})


def _ready_text() -> str:
    return "debian: " + " ".join(DEBIAN_PACKAGES) + "\nwheels: " + " ".join(WHEELS)


def ready(root: str = "") -> bool:
    """The tools are installed and the cache ``root`` (default: ``default_cache()``) holds
    what this version of edgecc fetches."""
    marker = os.path.join(root or default_cache(), "READY")
    if missing_tools() or not os.path.exists(marker):
        return False
    with open(marker) as f:
        return f.read() == _ready_text()


def why_not_ready(root: str = "") -> str:
    root = root or default_cache()
    tools = missing_tools()
    if tools:
        return f"missing {', '.join(tools)}: apt-get install {' '.join(tools)} (or run " \
               "scripts/setup_arm.sh)"
    if os.path.exists(os.path.join(root, "READY")):
        return f"the aarch64 runtime in {root} is out of date: run scripts/setup_arm.sh"
    return f"no aarch64 runtime in {root}: run scripts/setup_arm.sh"


def _run(cmd: list[str], **kw: Any) -> None:
    print("+", " ".join(cmd), file=sys.stderr)
    subprocess.run(cmd, check=True, **kw)


def setup(root: str = "") -> str:
    """Install the cross tools (apt) and fetch the sysroot + runtime into ``root`` (once)."""
    tools = missing_tools()
    if tools:
        _run(["apt-get", "update", "-qq"])
        _run(["apt-get", "install", "-y", "-qq", *tools],
             env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"})
    root = root or default_cache()
    if ready(root):
        return root
    os.makedirs(root, exist_ok=True)
    work = tempfile.mkdtemp(dir=root)
    try:
        arches = subprocess.run(["dpkg", "--print-foreign-architectures"], check=True,
                                capture_output=True, text=True).stdout.split()
        if "arm64" not in arches:
            _run(["dpkg", "--add-architecture", "arm64"])
            _run(["apt-get", "update", "-qq"])
        debs = os.path.join(work, "debs")
        os.makedirs(debs)
        _run(["apt-get", "download", *[f"{p}:arm64" for p in DEBIAN_PACKAGES]], cwd=debs)
        sysroot, site = os.path.join(work, "sysroot"), os.path.join(work, "site")
        for deb in sorted(glob.glob(os.path.join(debs, "*.deb"))):
            _run(["dpkg", "-x", deb, sysroot])
        wheels = os.path.join(work, "wheels")
        _run([sys.executable, "-m", "pip", "download", "--quiet", "--no-deps",
              "--only-binary=:all:", "--python-version", "3.11",
              "--platform", "manylinux2014_aarch64", "--platform", "manylinux_2_28_aarch64",
              "-d", wheels, *WHEELS])
        for whl in glob.glob(os.path.join(wheels, "*.whl")):
            with zipfile.ZipFile(whl) as z:
                z.extractall(site)
        for big in glob.glob(os.path.join(site, "tvm", "lib", "libtvm_compiler*")) + glob.glob(
                os.path.join(site, "tvm", "lib", "libtvm_runtime_cuda*")):
            os.remove(big)  # the runtime is all an artifact needs (TVM_USE_RUNTIME_LIB=1)
        for name in ("sysroot", "site"):
            target = os.path.join(root, name)
            if os.path.exists(target):
                shutil.rmtree(target)
            os.replace(os.path.join(work, name), target)
        with open(os.path.join(root, "READY"), "w") as f:
            f.write(_ready_text())
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return root


@contextlib.contextmanager
def rpc_server(tracker_port: int, key: str, root: str = "", timeout: float = 120
               ) -> Iterator[None]:
    """A TVM RPC server running under qemu-aarch64 (the cache ``root``), registered with the
    tracker on 127.0.0.1:``tracker_port`` as ``key`` — an emulated board for MetaSchedule's
    RPC runner.

    The server starts its session workers with ``sys.executable``, an aarch64 binary the
    kernel cannot exec here: a ``sitecustomize`` points it at a shell wrapper that starts
    the interpreter under qemu again."""
    root = root or default_cache()
    if not ready(root):
        raise LoweringError(f"cannot run aarch64 code here: {why_not_ready(root)}")
    with tempfile.TemporaryDirectory() as d:
        wrapper = os.path.join(d, "aarch64-python")
        with open(wrapper, "w") as f:
            f.write("#!/bin/sh\nexec " + " ".join(
                [QEMU, "-L", os.path.join(root, "sysroot"), "-E",
                 f"PYTHONPATH={os.path.join(root, 'site')}:{d}", "-E",
                 "TVM_USE_RUNTIME_LIB=1", os.path.join(root, "sysroot", PYTHON)])
                + ' "$@"\n')
        os.chmod(wrapper, 0o755)
        with open(os.path.join(d, "sitecustomize.py"), "w") as f:
            f.write(f"import sys\nsys.executable = {wrapper!r}\n")
        log = open(os.path.join(d, "server.log"), "w+")
        proc = subprocess.Popen([wrapper, "-m", "tvm.exec.rpc_server", "--host", "127.0.0.1",
                                 "--port", "9300", "--port-end", "9400", "--tracker",
                                 f"127.0.0.1:{tracker_port}", "--key", key],
                                stdout=log, stderr=subprocess.STDOUT)
        try:
            _wait_registered(tracker_port, key, proc, log, timeout)
            yield
        finally:
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
            log.close()


def _wait_registered(port: int, key: str, proc: Any, log: Any, timeout: float) -> None:
    import time

    from tvm import rpc

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            log.seek(0)
            tail = " | ".join(log.read().strip().splitlines()[-2:])
            raise LoweringError(f"the emulated RPC server exited: {tail}")
        summary = rpc.connect_tracker("127.0.0.1", port).summary()
        if any(q.get("free", 0) for k, q in summary.get("queue_info", {}).items() if k == key):
            return
        time.sleep(1)
    raise LoweringError(f"the emulated RPC server did not register within {timeout:.0f} s")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--setup", action="store_true")
    parser.add_argument("--cache", default="", metavar="DIR",
                        help=f"where the sysroot and runtime go (default {default_cache()})")
    args = parser.parse_args()
    if args.setup:
        print(setup(args.cache))
    ok = ready(args.cache)
    print("ready" if ok else f"not ready: {why_not_ready(args.cache)}")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
