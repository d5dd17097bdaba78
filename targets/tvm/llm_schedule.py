"""The schedule of an LLM host library's kernels: small kernels run serially, one-row
matmuls take the GEMV schedule, everything else the default CPU schedule.

A decode step (one token) of a 30-layer model is ~400 kernels, most of them tiny: the
RMSNorm's sum of squares over 576 values, RoPE's rotation of 9 x 64 values, a residual
add, the attention's scores over ~170 cache slots. The default schedule
(``schedule.py``) makes the outer loop of every kernel ``T.parallel``; for a kernel of a
few thousand multiply-adds waking the thread pool (and, on a loaded machine, waiting for a
worker the OS has not scheduled) costs more than the work. Here the kernels whose
iteration space (summed over their blocks) is below ``SERIAL_BELOW`` get the default
schedule without its ``parallel`` instructions (the same trace replayed without them:
the same loop nests, vectorized as before, one thread)::

    before:  for every kernel:      parallel for i: ...        (a pool launch each)
    after:   work <  SERIAL_BELOW:  for i: ...                 (the calling thread)
             work >= SERIAL_BELOW:  parallel for i: ...        (GEMVs, lm_head, prefill)

The results are unchanged (the same loops in the same order on one thread); the kernels
keep the ``edgecc_serial`` block annotation, which tests and the bundle report count.
"""

from __future__ import annotations

import contextlib
from typing import Any

SERIAL_BELOW = 1 << 16  # iterations (about one multiply-add each) a kernel must have to
# be worth a thread-pool launch: a launch costs ~5-20 us, 64 K vectorized iterations
# about the same on one core
SERIAL = "edgecc_serial"


def kernel_work(func: Any) -> int:
    """The iterations of ``func``'s blocks (each block's loop extents multiplied, summed;
    a symbolic extent counts as ``SERIAL_BELOW``: such a kernel is never made serial)."""
    from tvm import s_tir

    sch = s_tir.Schedule(func)
    total = 0
    for block in _blocks(sch):
        n = 1
        for loop in sch.get_loops(block):
            try:
                n *= int(sch.get(loop).extent)
            except Exception:  # noqa: BLE001 - symbolic extent
                return SERIAL_BELOW
        total += n
    return total


def _blocks(sch: Any) -> list[Any]:
    try:
        root = sch.get_sblock("root")
    except Exception:  # noqa: BLE001 - no root block
        return []
    out = []
    stack = list(sch.get_child_blocks(root))
    while stack:
        block = stack.pop(0)
        out.append(block)
        stack.extend(sch.get_child_blocks(block))
    return out


def serial_schedule(func: Any) -> Any:
    """The default schedule of ``func`` without its ``parallel`` instructions (a traced
    ``s_tir.Schedule``), its blocks annotated ``SERIAL``."""
    from tvm import s_tir
    from tvm.s_tir.schedule import Trace

    from edgecc.targets.tvm.schedule import schedule_kernel

    trace = schedule_kernel(func).trace
    insts = [i for i in trace.insts if i.kind.name != "Parallel"]
    sch = s_tir.Schedule(func)
    Trace(insts, {}).apply_to_schedule(sch, remove_postproc=False)
    for block in _blocks(sch):
        with contextlib.suppress(Exception):
            sch.annotate(block, SERIAL, 1)
    return sch


def llm_cpu_schedule(serial_below: int = SERIAL_BELOW) -> Any:
    """A module pass scheduling every unscheduled PrimFunc whose work is below
    ``serial_below`` serially (``serial_schedule``); the others are left to the default
    schedule that runs after it."""
    import tvm
    from tvm import tirx

    from edgecc.targets.tvm.schedule import _is_scheduled

    @tvm.transform.module_pass(opt_level=0, name="EdgeccLlmSerialSmallKernels")
    def run(mod: Any, _ctx: Any) -> Any:
        updates = {}
        for gvar, func in mod.functions.items():
            if not isinstance(func, tirx.PrimFunc) or _is_scheduled(func):
                continue
            func = func.with_attr("global_symbol", gvar.name_hint)
            try:
                if kernel_work(func) >= serial_below:
                    continue
                updates[gvar] = serial_schedule(func).mod["main"]
            except Exception:  # noqa: BLE001 - the default schedule takes it
                continue
        for gvar, func in updates.items():
            mod[gvar] = func.with_attr("tir.is_scheduled", True)
        return mod

    return run


def count_launches(mod: Any, report: dict[str, Any]) -> None:
    """For each Relax function of ``mod`` (scheduled kernels, before lowering), the
    kernel calls it makes and how many of them run a parallel loop (a thread-pool
    launch): ``report[function] = {"kernels": n, "parallel": p}``."""
    from tvm import relax, tirx

    parallel: dict[str, bool] = {}
    for gvar, func in mod.functions.items():
        if isinstance(func, tirx.PrimFunc):
            parallel[gvar.name_hint] = "T.parallel(" in func.script()
    for gvar, func in mod.functions.items():
        if not isinstance(func, relax.Function):
            continue
        calls: list[str] = []

        def visit(expr: Any, calls: list[str] = calls) -> None:
            if isinstance(expr, relax.Call) and getattr(expr.op, "name", "") == \
                    "relax.call_tir":
                calls.append(expr.args[0].name_hint)

        relax.analysis.post_order_visit(func.body, visit)
        name = (func.attrs or {}).get("global_symbol", gvar.name_hint)
        report[str(name)] = {"kernels": len(calls),
                             "parallel": sum(parallel.get(c, False) for c in calls)}


def llm_pipeline(target: Any, serial_below: int = SERIAL_BELOW,
                 report: dict[str, Any] | None = None) -> Any:
    """edgecc's CPU pipeline (``pipeline.pipeline``) with ``llm_cpu_schedule`` before the
    default schedule; ``report`` (when given) receives ``count_launches``."""
    import tvm
    from tvm.relax.backend.cpu_generic import pipeline as cpu_generic

    from edgecc.targets.tvm.pipeline import kernel_passes
    from edgecc.targets.tvm.schedule import default_cpu_schedule

    @tvm.transform.module_pass(opt_level=0, name="EdgeccLlmCountLaunches")
    def count(mod: Any, _ctx: Any) -> Any:
        if report is not None:
            count_launches(mod, report)
        return mod

    @tvm.transform.module_pass(opt_level=0, name="EdgeccLlmCPUPipeline")
    def run(mod: Any, _ctx: Any) -> Any:
        with target:
            seq = tvm.transform.Sequential(
                kernel_passes(target)
                + [llm_cpu_schedule(serial_below), default_cpu_schedule(), count]
                + cpu_generic.dataflow_lower_passes(target)
                + cpu_generic.finalize_passes(target))
            return seq(mod)

    return run
