"""A default CPU schedule for TVM's untuned kernels (no tuning, no search).

TVM 0.27's CPU pipeline compiles every kernel as naive, single-threaded loop nests (its CPU
dlight rules cover only GEMV and reductions). This pass gives every kernel a simple,
safe shape that LLVM turns into multi-threaded SIMD code:

* reduction blocks (matmul, convolution, pooling): the innermost spatial loop is split by
  the vector width and moved inside the reduction loops (``C[i, j] += A[i, k] * B[k, j]``
  becomes a contiguous run of ``j`` per ``k``, which LLVM vectorizes), the outer spatial
  loops are fused and run in parallel;
* element-wise blocks: all loops fused, split, outer parallel, inner vectorized.

A kernel the rules cannot schedule is left as TVM built it, so correctness never depends
on this pass; the compile verification checks outputs either way. Tuning (MetaSchedule)
is a separate, slower path.
"""

from __future__ import annotations

import contextlib
from typing import Any

VECTOR = 16


def _schedule_function(func: Any) -> Any:
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    root = sch.get_sblock("root") if _has_root(sch) else None
    blocks = sch.get_child_blocks(root) if root is not None else []
    for block in blocks:
        try:
            _schedule_block(sch, block)
        except Exception:  # noqa: BLE001 - leave this block as TVM built it
            continue
    return sch.mod["main"]


def _has_root(sch: Any) -> bool:
    try:
        sch.get_sblock("root")
        return True
    except Exception:  # noqa: BLE001
        return False


def _schedule_block(sch: Any, block: Any) -> None:
    stmt = sch.get(block)
    loops = sch.get_loops(block)
    kinds = [iv.iter_type for iv in stmt.iter_vars]
    if len(loops) != len(kinds) or not loops:
        return
    spatial = [lp for lp, k in zip(loops, kinds) if k == 0]  # IterVar.DataPar
    reduce = [lp for lp, k in zip(loops, kinds) if k == 2]  # IterVar.CommReduce
    if len(spatial) + len(reduce) != len(loops):
        return
    # TVM 0.27 cannot vectorize stores to bool buffers (lowering fails later, outside
    # our control), so such blocks are only parallelized.
    vectorize = not any("bool" in str(r.source) or "bool" in str(getattr(r.source, "dtype", ""))
                        for r in (*stmt.reads, *stmt.writes))
    if reduce:
        if not spatial:
            return
        if _integer_dot(stmt):
            # int8 x int8 -> int32: keep the reduction innermost and serial, the pattern
            # LLVM's vectorizer turns into sdot / udot on cores with +dotprod.
            fused = sch.fuse(*spatial) if len(spatial) > 1 else spatial[0]
            sch.parallel(fused)
            sch.decompose_reduction(block, reduce[0])
            return
        rows = _row_tile(sch, stmt, spatial)
        inner_o, inner_i = sch.split(spatial[-1], factors=[None, VECTOR])
        if rows > 1:
            # matmul: a register tile of `rows` output rows x VECTOR columns, so every
            # vector of the weight read in the reduction loop serves `rows` rows (without
            # it the whole weight streams from memory once per output row).
            row_o, row_i = sch.split(spatial[-2], factors=[None, rows])
            sch.reorder(*spatial[:-2], row_o, inner_o, *reduce, row_i, inner_i)
            outer = spatial[:-2] + [row_o, inner_o]
            sch.unroll(row_i)
        else:
            sch.reorder(*spatial[:-1], inner_o, *reduce, inner_i)
            outer = spatial[:-1] + [inner_o]
        fused = sch.fuse(*outer) if len(outer) > 1 else outer[0]
        sch.parallel(fused)
        sch.decompose_reduction(block, reduce[0])
        return  # the contiguous inner loop is left to LLVM's loop vectorizer
    fused = sch.fuse(*loops) if len(loops) > 1 else loops[0]
    outer, inner = sch.split(fused, factors=[None, VECTOR])
    sch.parallel(outer)
    if vectorize:
        sch.vectorize(inner)


ROW_TILES = (8, 4, 2)


def _region_dtype(region: Any) -> str:
    return str(getattr(region.source, "dtype", ""))


def _integer_dot(stmt: Any) -> bool:
    """int8/uint8 operands accumulated into int32 (an integer dot product)."""
    dtypes = {_region_dtype(r) for r in stmt.reads}
    return bool(dtypes) and dtypes <= {"int8", "uint8"} and all(
        _region_dtype(w) == "int32" for w in stmt.writes)


def _row_tile(sch: Any, stmt: Any, spatial: list[Any]) -> int:
    """Rows per register tile for matmul blocks (1: no tiling)."""
    if "matmul" not in str(stmt.name_hint if hasattr(stmt, "name_hint") else stmt.name) \
            or len(spatial) < 2:
        return 1
    try:
        extent = int(sch.get(spatial[-2]).extent)
    except Exception:  # noqa: BLE001 - symbolic extent
        return 1
    return next((r for r in ROW_TILES if extent % r == 0), 1)


def _is_scheduled(func: Any) -> bool:
    """Scheduled already: by this pass, or by MetaSchedule's database (tuned kernels)."""
    attrs = func.attrs or {}
    return any(key in attrs and bool(attrs[key])
               for key in ("tir.is_scheduled", "tirx.is_scheduled"))


def default_cpu_schedule() -> Any:
    """A module pass applying the schedule above to every unscheduled PrimFunc."""
    import tvm
    from tvm import tirx

    @tvm.transform.module_pass(opt_level=0, name="EdgeccDefaultCPUSchedule")
    def schedule(mod: Any, _ctx: Any) -> Any:
        updates = {}
        for gvar, func in mod.functions.items():
            if not isinstance(func, tirx.PrimFunc) or _is_scheduled(func):
                continue
            try:
                updates[gvar] = _schedule_function(func.with_attr("global_symbol", gvar.name_hint))
            except Exception:  # noqa: BLE001
                continue
        for gvar, func in updates.items():
            mod[gvar] = func.with_attr("tir.is_scheduled", True)
        return mod

    return schedule


def pipeline(target: Any, database: Any = None) -> Any:
    """TVM's CPU pipeline with the default schedule between legalization and lowering;
    with a MetaSchedule ``database``, kernels it has records for take the tuned schedule
    and only the others get the default one."""
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline as cpu_generic

    @tvm.transform.module_pass(opt_level=0, name="EdgeccCPUPipeline")
    def run(mod: Any, _ctx: Any) -> Any:
        tuned = []
        if database is not None:
            tuned = [tvm.relax.transform.MetaScheduleApplyDatabase(enable_warning=False)]
        with target, (database if database is not None else contextlib.nullcontext()):
            seq = tvm.transform.Sequential(
                cpu_generic.library_dispatch_passes(target)
                + cpu_generic.legalize_passes(target)
                + tuned
                + [default_cpu_schedule()]
                + cpu_generic.dataflow_lower_passes(target)
                + cpu_generic.finalize_passes(target)
            )
            return seq(mod)

    return run
