"""TVM's CPU pipeline as edgecc builds with it: fast math, legalization and fusion, the
tuned schedules of a MetaSchedule database where it has records, edgecc's default schedule
(``schedule``) for every other kernel, then TVM's lowering and finalization.

    Relax ─ fast_math ─ library dispatch ─ legalize/fuse ─┬─ tuned (database) ─┬─ lower ─ VM
                                                          └─ default schedule ─┘
"""

from __future__ import annotations

import contextlib
from typing import Any

from edgecc.targets.tvm.fast_math import fast_math
from edgecc.targets.tvm.schedule import default_cpu_schedule


def kernel_passes(target: Any) -> list[Any]:
    """Relax -> legalized, fused kernels (what the schedule and the tuner see): fast math,
    TVM's library dispatch and legalization."""
    from tvm.relax.backend.cpu_generic import pipeline as cpu_generic

    return ([fast_math()] + cpu_generic.library_dispatch_passes(target)
            + cpu_generic.legalize_passes(target))


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
                kernel_passes(target)
                + tuned
                + [default_cpu_schedule()]
                + cpu_generic.dataflow_lower_passes(target)
                + cpu_generic.finalize_passes(target)
            )
            return seq(mod)

    return run
