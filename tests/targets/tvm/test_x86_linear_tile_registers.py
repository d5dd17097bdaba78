"""The fp32 linear's AVX-512 micro-tiles (``lin_tile<MR, NV>``, x86_linear_source) keep their
accumulators in registers: with any loop over ``acc`` rolled (its zeroing, the k loop's, the
write-back's) GCC -O3 kept them in a stack array — zeroed on entry, stored after the k loop and
reloaded by the write-back (48 zmm stores and 24 loads a 12 x 32 tile; MiniLM's linears
0.987-0.996x without them, bit-identical, bench/x86_tile_registers_ab.py). The check reads the
compiled kernels' disassembly: no zmm store to the stack in any 512-bit tile."""

from __future__ import annotations

import re
import shutil

import pytest

from tests.targets.tvm.test_x86_fp32_tile_registers import _functions

pytestmark = pytest.mark.skipif(shutil.which("objdump") is None, reason="needs objdump")

SPILL = re.compile(r"vmov\w*\s+%zmm\d+,(-?0x[0-9a-f]+)?\(%r[sb]p\)")
STACK_READ = re.compile(r"\s(-?0x[0-9a-f]+)?\(%r[sb]p\),%zmm\d+")


def test_linear_tiles_accumulate_in_registers():
    from edgecc.targets.tvm import x86_attention, x86_int8
    from edgecc.targets.tvm.x86_attention_source import SOURCE

    funcs = _functions(x86_int8.compiled_object(source=SOURCE, cache=x86_attention.CACHE))
    tiles = {name: body for name, body in funcs.items()
             if re.search(r"isa512::lin_tile<\d+, \d>", name)}
    # the hot shapes: 12 rows (LIN_MR) x 2 and 1 vectors, and a short last row block
    for want in ("lin_tile<12, 2>", "lin_tile<12, 1>", "lin_tile<4, 2>"):
        assert any(want in name for name in tiles), f"isa512::{want} not in the kernels' object"
    for name, body in tiles.items():
        assert sum(1 for ln in body if "vfmadd" in ln) >= 4, name  # the tile, not a stub
        stores = [ln for ln in body if SPILL.search(ln)]
        reads = [ln for ln in body if STACK_READ.search(ln)]
        assert not stores, f"{name} stores accumulators to the stack: {stores[:3]}"
        assert not reads, f"{name} reads vectors from the stack: {reads[:3]}"
