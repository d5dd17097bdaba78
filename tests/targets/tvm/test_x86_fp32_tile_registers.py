"""The AVX-512 GEMM micro-tiles keep their accumulators in registers through the write-back
(``EDGECC_TILE_WRITE_BACK``'s loops unrolled): before, GCC -O3 zeroed the 24 accumulators of a
12 x 32 tile in a stack array on entry, stored them there after the K loop and reloaded them in
a rolled write-back loop (48 extra zmm stores a tile; the 1x1 12 -> 72 @32 took 1.5x the time).
The check reads the compiled kernels' disassembly: no zmm store to the stack in the tiles."""

from __future__ import annotations

import re
import shutil
import subprocess

import pytest

pytestmark = pytest.mark.skipif(shutil.which("objdump") is None, reason="needs objdump")

TILES = ("kernel_avx512<12, 2, true, false, false>", "kernel_avx512<12, 1, true, false, false>",
         "kernel_avx512<12, 2, false, false, false>", "kernel_avx512<8, 2, true, false, false>")


def _functions(obj: str) -> dict[str, list[str]]:
    text = subprocess.run(["objdump", "-d", "--no-show-raw-insn", "-C", obj], check=True,
                          capture_output=True, text=True).stdout
    out: dict[str, list[str]] = {}
    name = None
    for line in text.splitlines():
        m = re.match(r"^[0-9a-f]+ <(.*)>:$", line)
        if m:
            name = m.group(1)
            out[name] = []
        elif name is not None:
            out[name].append(line)
    return out


def test_gemm_tiles_write_back_from_registers():
    from edgecc.targets.tvm import x86_fp32_source, x86_int8

    funcs = _functions(x86_int8.compiled_object(source=x86_fp32_source.SOURCE, cache="x86_fp32"))
    spill = re.compile(r"vmov[au]ps\s+%zmm\d+,-?0x[0-9a-f]+\(%rsp\)")
    for tile in TILES:
        found = [body for name, body in funcs.items() if tile in name]
        assert found, f"{tile} not in the kernels' object"
        for body in found:
            assert sum(1 for ln in body if "vfmadd" in ln) >= 8  # the tile itself, not a stub
            stores = [ln for ln in body if spill.search(ln)]
            assert not stores, f"{tile} stores accumulators to the stack: {stores[:3]}"
