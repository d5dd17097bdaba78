"""The one-row matmul (GEMV) schedule of an LLM's decode step: chosen by the default CPU
schedule for ``M = 1`` float matmuls only, fused epilogues kept, and bit-identical to the
register tile it replaces (every output sums over ``k`` in the same order)."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("tvm")


def _kernel(m: int, k: int, n: int, epilogue: str):
    from tvm import te

    x = te.placeholder((1, m, k), name="x")
    w = te.placeholder((k, n), name="w")  # the transposed weight, as after legalization
    r = te.placeholder((1, m, n), name="r")
    red = te.reduce_axis((0, k), name="k")
    mm = te.compute((1, m, n), lambda a, i, j: te.sum(x[a, i, red] * w[red, j], axis=red),
                    name="matmul")
    if epilogue == "add":  # o_proj / down_proj + residual
        out = te.compute((1, m, n), lambda a, i, j: mm[a, i, j] + r[a, i, j], name="T_add")
    else:  # SiLU(gate) * up
        silu = te.compute((1, m, n), lambda a, i, j: mm[a, i, j] * te.sigmoid(mm[a, i, j]),
                          name="T_silu")
        out = te.compute((1, m, n), lambda a, i, j: silu[a, i, j] * r[a, i, j],
                         name="T_multiply")
    return te.create_prim_func([x, w, r, out])


def _run(sch, args):
    import tvm

    from edgecc.targets.tvm import lowering

    lib = tvm.compile(sch.mod, target=lowering.llvm_target(None, 2))
    tensors = [tvm.runtime.tensor(a) for a in args]
    getattr(lib, "mod", lib)["main"](*tensors)
    return tensors[-1].numpy()


@pytest.mark.parametrize("k, n, epilogue", [(64, 192, "add"), (96, 320, "silu")])
def test_gemv_schedule_is_bit_identical_to_the_register_tile(k, n, epilogue):
    from tvm import s_tir

    from edgecc.targets.tvm import schedule
    from edgecc.targets.tvm.gemv_schedule import gemv_schedule

    func = _kernel(1, k, n, epilogue)
    sch = schedule.schedule_kernel(func)
    text = sch.mod.script()
    # the default schedule took the GEMV rule: wide column tasks streaming the rows
    assert "edgecc_register_tile" in text and "T.parallel" in text and "T.vectorized" in text
    assert "k_1" in text  # the reduction split into row groups (the register tile has none)
    rng = np.random.default_rng(0)
    args = [rng.standard_normal((1, 1, k), dtype=np.float32),
            rng.standard_normal((k, n), dtype=np.float32),
            rng.standard_normal((1, 1, n), dtype=np.float32), np.zeros((1, 1, n), np.float32)]
    got = _run(sch, args)
    tile = schedule._register_tiled(s_tir.Schedule(func))
    assert tile is not None
    np.testing.assert_array_equal(got, _run(tile, args))
    y = args[0][0] @ args[1]
    ref = y + args[2][0] if epilogue == "add" else y / (1 + np.exp(-y)) * args[2][0]
    np.testing.assert_allclose(got[0], ref, rtol=1e-4, atol=1e-4)
    # not a GEMV: two rows (a prefill), or columns that no vector-width chunk divides
    assert gemv_schedule(s_tir.Schedule(_kernel(2, k, n, epilogue))) is None
    assert gemv_schedule(s_tir.Schedule(_kernel(1, k, 24, epilogue))) is None
