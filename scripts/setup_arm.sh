#!/usr/bin/env bash
# The arm64 target's tools, once: the aarch64 cross compiler and qemu-user-static (Debian
# packages; needs root) and, cached in ${EDGECC_ARM_CACHE:-~/.cache/edgecc/arm64}, an arm64
# sysroot (Debian packages unpacked with dpkg -x) and the aarch64 TVM runtime (PyPI wheels),
# with which `-t arm64` artifacts run and are verified here under qemu-aarch64.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x .venv/bin/python ] || bash scripts/setup.sh
.venv/bin/python -m edgecc.targets.arm.emulation --setup --cache "${EDGECC_ARM_CACHE:-$HOME/.cache/edgecc/arm64}"
