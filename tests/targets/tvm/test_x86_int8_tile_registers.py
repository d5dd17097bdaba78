"""The int8 kernels keep their accumulators in registers. dw_direct_t (the VBMI depthwise on
planes of <= 64 bytes: MobileNetV2-32's 8x8 and 4x4 layers) ran its channel loops to the
run-time count nt, so GCC kept the inputs xv and the sums a in stack arrays — stored after the
set-up and after the ky loop, reloaded by the write-back; unrolled to DW_PERM_BATCH with u < nt
tests they stay in registers (those layers 0.82-0.88x, 1 thread, the same int8 outputs,
bench/x86_int8_dw_src_ab.py). The VNNI GEMM tiles (tile_8x16_vnni512, tile_write_t,
tile_post_t) were already register-only; the check keeps them so. It reads the compiled
kernels' disassembly: no zmm store to the stack in those functions (in the two-panel tiles'
k loops: see TWO)."""

from __future__ import annotations

import re
import shutil

import pytest

from tests.targets.tvm.test_x86_fp32_tile_registers import _functions

pytestmark = pytest.mark.skipif(shutil.which("objdump") is None, reason="needs objdump")

SPILL = re.compile(r"vmov\w*\s+%zmm\d+,(-?0x[0-9a-f]+)?\(%r[sb]p\)")
# any vector access to the stack (a spill or its reload)
STACK = re.compile(r"%zmm\d+.*\(%r[sb]p\)|\(%r[sb]p\).*%zmm\d+")
# two-panel instances (the last template argument TWO): the second panel's 8 sums wait in
# registers while the first 8 are written back, and GCC parks up to 6 of them on the stack
# in each folded-offset write-back, c4 and NCHW (after the k loop: a store and a load a sum,
# per 576 vpdpbusd of a ResNet-20 tile pair) — so for them the check is the k loop's alone
TWO = re.compile(r"tile_(write|post)_t<[^>]*, true>")
KERNELS = {  # a name pattern, how many instances at least
    r"dw_direct_t<\d, (true|false)>": 8,
    r"tile_8x16_vnni512<": 2,
    r"tile_write_t<": 12,
    r"tile_post_t<": 6,
    r"tile_write_t<[^>]*, true>": 8,
    r"tile_post_t<[^>]*, true>": 5,
}


def test_int8_kernels_accumulate_in_registers():
    from edgecc.targets.tvm import x86_int8

    funcs = _functions(x86_int8.compiled_object())
    for pattern, least in KERNELS.items():
        found = {name: body for name, body in funcs.items() if re.search(pattern, name)}
        assert len(found) >= least, f"{pattern}: {sorted(found)}"
        for name, body in found.items():
            assert sum(1 for ln in body if "vpdpbusd" in ln) >= 4, name  # a kernel, not a stub
            stores = [ln for ln in body if SPILL.search(ln)]
            if TWO.search(name):  # the k loop's 16 sums stay in registers
                dots = [i for i, ln in enumerate(body) if "vpdpbusd" in ln]
                loop = body[dots[0]:dots[-1] + 1]
                assert len(dots) == 16, name
                assert not [ln for ln in loop if STACK.search(ln)], f"{name}: {loop}"
                continue
            assert not stores, f"{name} stores vectors to the stack: {stores[:3]}"
