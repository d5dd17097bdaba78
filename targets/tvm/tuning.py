"""MetaSchedule tuning for the TVM CPU targets, with a record cache keyed by workload and
target, so a second compile of the same model does not tune again.

    db, stats = tune(module, target, trials=500)      # tunes only kernels the cache lacks
    build(module, target, "model.so", database=db)    # lowering.build: tuned where recorded

A *task* is one fused TIR kernel of the legalized module the build compiles — after
``lowering.hand_written_kernels`` took the layers edgecc's x86 kernels cover (``prepare``), so
the budget goes to the TVM kernels that remain (softmax, reductions, products of two
activations ...), not to linears and convolutions the build replaces; its record key is MetaSchedule's structural hash of the kernel (shapes, dtypes, constants
folded in) plus the target (LLVM CPU, features, thread count). Records live under
``root`` (the targets' ``tune_cache`` option; default ``~/.cache/edgecc/tuning``), one
JSON database per target. Kernels
with a record are taken from the cache; the rest share the trial budget (MetaSchedule's
gradient task scheduler gives more trials to the kernels that take the most time). Before
the search, edgecc's default schedule of each kernel is measured the same way and recorded
as a candidate, so the record a build applies is the fastest measured — never the tuner's
worse pick when a small budget finds nothing better (the manifest's ``default_kept`` counts
those, over every kernel with a record, and ``outcome`` says it in a sentence — "default
schedule kept for all N kernels ..." when no candidate beat it; ``budget`` states the trial
budget). Kernels that end up without a valid record keep edgecc's default schedule. On the
host target ``end_to_end.tune_host`` then times the whole model: the untuned build, the tuned
one, edgecc's kernel settings (per model and per call site) and the kernels' variant switches
(``end_to_end.KNOBS``: e.g. the fp32 convolution's Winograd path), keeping the untuned build
unless a candidate beats it beyond the measured noise (``end_to_end.verdict``).

Two things make TVM 0.27's tuner usable on a small machine:

* its builder imports every tensor-intrinsic table (CUDA, ROCm, Hexagon: ~35 s of TVMScript
  parsing) in each worker, and restarts its workers for every batch — ``_build`` below is
  the same build without that import; and the GPU tables are stubbed in this process
  (``_skip_gpu_intrinsics``), as CPU schedules never use them;
* its logs go to files in the cache's ``logs/``, not the terminal (MetaSchedule's console
  handler follows its logger's level, which is raised for the tuning and restored after);
  a progress bar counts trials instead.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import logging
import os
import sys
import tempfile
import time
import types
from collections.abc import Iterator
from typing import Any

from edgecc.errors import LoweringError
from edgecc.instruments import record_stage_part

GPU_INTRINSIC_TABLES = ("cuda", "rocm", "hexagon", "riscv_cpu")


def default_cache() -> str:
    """Where records go when no ``tune_cache`` is given."""
    return os.path.join(os.path.expanduser("~"), ".cache", "edgecc", "tuning")


def _skip_gpu_intrinsics() -> None:
    """Register empty modules for TVM's non-CPU tensor intrinsic tables (see module doc)."""
    for name in GPU_INTRINSIC_TABLES:
        full = f"tvm.s_tir.tensor_intrin.{name}"
        sys.modules.setdefault(full, types.ModuleType(full))


def _build(mod: Any, target: Any, _params: Any) -> Any:
    """MetaSchedule's default_build without importing the tensor-intrinsic tables."""
    from tvm.driver import build as tvm_build
    from tvm.s_tir.transform import RemoveWeightLayoutRewriteBlock

    return tvm_build(RemoveWeightLayoutRewriteBlock(skip_tensor_rewrite=True)(mod),
                     target=target)


def _export_cross(cc: str, mod: Any) -> str:
    """MetaSchedule's export for another machine: a shared library linked by ``cc``."""
    from tvm.support import cc as tvm_cc

    path = os.path.join(tempfile.mkdtemp(), "tvm_tmp_mod.so")
    mod.export_library(path, fcompile=tvm_cc.cross_compiler(cc))
    return path


def target_key(target: Any, device: str = "") -> str:
    """A short, stable name for a target's records: the JSON of its attributes, and the
    device the kernels were measured on when it is not this machine."""
    text = json.dumps(json.loads(str(target)) if str(target).startswith("{") else str(target),
                      sort_keys=True) + device
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def prepare(module: Any, target: Any) -> Any:
    """The module as the CPU pipeline sees it before scheduling: the layers edgecc's
    hand-written kernels cover rewritten to calls to them (``lowering.hand_written_kernels``,
    as ``lowering.build`` does), then legalized, fused TVM kernels — the ones that remain,
    which are what the build schedules and so what is worth tuning."""
    import tvm

    from edgecc.targets.tvm.lowering import hand_written_kernels
    from edgecc.targets.tvm.pipeline import kernel_passes

    module = hand_written_kernels(module, target)
    with target:
        return tvm.transform.Sequential(kernel_passes(target))(module)


def database(target: Any, root: str | None = None, device: str = "") -> Any:
    from tvm.s_tir import meta_schedule as ms

    directory = os.path.join(root or default_cache(), target_key(target, device))
    os.makedirs(directory, exist_ok=True)
    with open(os.path.join(directory, "target.json"), "w") as f:
        json.dump({"target": str(target), "measured_on": device or "this machine"}, f)
    return ms.database.JSONDatabase(os.path.join(directory, "workloads.json"),
                                    os.path.join(directory, "records.json"),
                                    allow_missing=True), directory


class _Progress:
    """Counts measured trials (a MetaSchedule measure callback) and shows them as a bar."""

    def __init__(self, total: int, enabled: bool | None):
        from tvm.s_tir.meta_schedule.measure_callback.measure_callback import (
            _PyMeasureCallback,
        )

        self.total, self.done, self.bar = total, 0, None
        if sys.stderr.isatty() if enabled is None else enabled:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc="tuning (trials)", file=sys.stderr, leave=False)
        self.callback = _PyMeasureCallback(self._apply)

    def _apply(self, _scheduler: Any, _task: int, candidates: Any, _built: Any,
               _ran: Any) -> None:
        self.done += len(candidates)
        if self.bar is not None:
            self.bar.update(max(0, min(self.done, self.total) - self.bar.n))

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _has_reduction(mod: Any) -> bool:
    """Whether a kernel reduces (matmul, conv, pooling, softmax ...): the kernels tuning
    pays for. Element-wise and layout kernels keep the default schedule — each task costs
    a search round of several seconds whatever its size, and they gain little from it."""
    from tvm import s_tir, tirx

    for func in mod.functions.values():
        if not isinstance(func, tirx.PrimFunc):
            continue
        try:
            sch = s_tir.Schedule(func)
            blocks = sch.get_child_blocks(sch.get_sblock("root"))
        except Exception:  # noqa: BLE001 - no root block: not a kernel tuning can help
            continue
        if any(iv.iter_type == 2 for b in blocks for iv in sch.get(b).iter_vars):
            return True
    return False


DEFAULT_MARK = "edgecc_default_schedule"


def _record_default_schedules(tasks: list[Any], target: Any, builder: Any, runner: Any,
                              db: Any) -> int:
    """Measure edgecc's default schedule of each kernel with the tuner's own builder and
    runner and commit it as a tuning record before the search: the database then answers
    with whichever is faster, so a tuned build is never slower than the untuned one by
    more than measurement noise (a small trial budget often finds nothing better), and the
    search starts from it. Returns how many were measured."""
    from tvm.s_tir import meta_schedule as ms

    from edgecc.targets.tvm.schedule import schedule_kernel

    entries = []
    for task in tasks:
        mod = task.dispatched[0]
        try:
            sch = schedule_kernel(mod)
            sch.annotate(sch.get_sblock("root"), DEFAULT_MARK, 1)
        except Exception:  # noqa: BLE001 - no default candidate for this kernel
            continue
        entries.append((mod, sch, ms.arg_info.ArgInfo.from_entry_func(sch.mod)))
    if not entries:
        return 0
    built = builder.build([ms.builder.BuilderInput(sch.mod, target) for _, sch, _ in entries])
    ok = [(e, b) for e, b in zip(entries, built) if b.error_msg is None]
    futures = runner.run([ms.runner.RunnerInput(b.artifact_path, "cpu", e[2])
                          for e, b in ok])
    measured = 0
    for ((mod, sch, args), _), future in zip(ok, futures):
        result = future.result()
        if result.error_msg is None and result.run_secs:
            workload = db.commit_workload(mod)
            db.commit_tuning_record(ms.database.TuningRecord(
                sch.trace, workload, [float(getattr(t, "value", t)) for t in result.run_secs],
                target, args))
            measured += 1
    return measured


def _default_is_best(db: Any, task: Any, target: Any) -> bool:
    record = db.query_tuning_record(task.dispatched[0], target, task.task_name)
    return record is not None and DEFAULT_MARK in str(record.trace)


def tune(module: Any, target: Any, trials: int, *, root: str | None = None,
         progress: bool | None = None, seed: int | None = 0, runner: Any = "local",
         cross_cc: str = "", device: str = "") -> tuple[Any, dict[str, Any]]:
    """Tune the kernels of ``module`` (a Relax module, not yet legalized) that have no
    record for ``target`` yet, with at most ``trials`` measured candidates in all.

    Another machine's kernels are linked with ``cross_cc`` and measured by ``runner`` (a
    MetaSchedule RPC runner); ``device`` names it in the cache key. Returns the database
    (records of every kernel tuned now or before) and statistics for the manifest."""
    _skip_gpu_intrinsics()
    from tvm.s_tir import meta_schedule as ms

    start = time.perf_counter()
    db, directory = database(target, root, device)
    prepared = prepare(module, target)
    tasks = ms.relax_integration.extract_tasks(prepared, target)

    tasks = [t for t in tasks if _has_reduction(t.dispatched[0])]
    missing = [t for t in tasks if not _has_record(db, t, target)]
    stats: dict[str, Any] = {"trials_budget": trials, "measured_on": device or "this machine",
                             "kernels": len(tasks),
                             "from_cache": len(tasks) - len(missing), "tuned_now": 0,
                             "trials_run": 0, "cache": directory}
    if missing and trials > 0:
        with _meta_schedule_logs_to_files():
            _tune_missing(missing, target, trials, db, directory, runner, cross_cc, seed,
                          progress, stats)
    stats["seconds"] = round(time.perf_counter() - start, 2)
    record_stage_part("tvm tuning", time.perf_counter() - start)
    stats["kernels_with_record"] = sum(_has_record(db, t, target) for t in tasks)
    stats["default_kept"] = sum(_default_is_best(db, t, target) for t in tasks)
    stats["budget"] = (f"{trials} measured trials for this model, shared by the "
                       f"{len(missing)} kernel(s) without a record (edgecc's default schedule "
                       "of each is measured too, outside the budget)")
    stats["outcome"] = outcome(stats)
    return db, stats


def outcome(stats: dict[str, Any]) -> str:
    """One sentence for the manifest: what tuning found and what the build applies (with
    ``end_to_end``: the whole-model measurement's choice, ``end_to_end.tune_host``)."""
    n, kept = stats["kernels_with_record"], stats["default_kept"]
    e2e = stats.get("end_to_end")
    if n == 0:
        text = "no kernel has a tuning record"
        if e2e is None:
            return text + ": the build is the untuned one (default schedule)"
    elif kept == n:
        text = (f"default schedule kept for all {n} kernel(s): no tuned candidate "
                f"({stats['trials_run']} trials now, {stats['from_cache']} kernel(s) from the "
                "cache) was faster than edgecc's default")
        if e2e is None:
            return text + ", so the build is the untuned one"
    else:
        text = (f"{n - kept} of {n} kernel(s) take a tuned schedule measured faster than "
                f"edgecc's default; {kept} keep the default (no candidate beat it)")
        if e2e is None:
            return text
    return text + "; " + _end_to_end_outcome(e2e)


def _end_to_end_outcome(e2e: dict[str, Any]) -> str:
    cached = " (choice read from the cache)" if e2e.get("from_cache") else ""
    if not e2e["ms"]:
        return ("end to end there was nothing to compare (no tuned kernel, no edgecc kernel "
                "settings): the build is the untuned one" + cached)
    others = {k: v for k, v in e2e["ms"].items() if k != "default"}
    verdicts = e2e.get("verdicts") or {}
    confirm = e2e.get("confirm") or {}

    def ratio(v: dict[str, Any]) -> str:  # the rule's numbers (end_to_end.verdict)
        return (f"median ratio {v['ratio']:.3g}x, bound {v['bound']:.3g}, faster in "
                f"{v['wins']}/{v['rounds']} rounds")

    guard = confirm.get("state_guard")

    def state(g: dict[str, Any]) -> str:  # end_to_end.state_guard's record
        if g["verdict"] is None:
            return (f"only {g['parallel_rounds']} of its {g['rounds']} confirming rounds found "
                    f"the host giving the threads their cores (probe >= {g['threshold']:g}; "
                    f"median reading {g['probe_median']:.3g}x), too few to judge")
        return (f"in the {g['parallel_rounds']} rounds where the host gave the threads their "
                f"cores: {ratio(g['verdict'])}")

    if e2e["chosen"] == "default":
        best = confirm.get("candidate") or min(others, key=others.get)
        confirm_ms = e2e.get("confirm_ms") or {}
        if guard is not None and not guard["faster"] and best in confirm_ms:
            return (f"end to end (the whole model timed here) '{best}' ran {confirm_ms[best]:.3g}"
                    f" vs the untuned build's {confirm_ms['default']:.3g} ms in the confirming "
                    f"pass, but {state(guard)} — a win only while the threads share a core — "
                    "so the build is the untuned one" + cached)
        if best in confirm_ms:  # faster in the screening pass, not in the confirming one
            return (f"end to end (the whole model timed here) '{best}' ran {others[best]:.3g} "
                    f"ms vs the untuned build's {e2e['default_ms']:.3g} ms in the first pass "
                    f"but {confirm_ms[best]:.3g} vs {confirm_ms['default']:.3g} ms in the "
                    "confirming one"
                    + (f" ({ratio(confirm)})" if confirm.get("rounds") else "")
                    + ", so the build is the untuned one" + cached)
        return (f"end to end (the whole model timed here) no candidate beat the untuned build "
                f"beyond the noise ({e2e['default_ms']:.3g} ms; best other: {best}, "
                f"{others[best]:.3g} ms"
                + (f", {ratio(verdicts[best])}" if best in verdicts else "")
                + "), so the build is the untuned one" + cached)
    chosen = e2e["chosen_ms"] / e2e["default_ms"]
    return (f"end to end (the whole model timed here) '{e2e['chosen']}' ran "
            f"{e2e['chosen_ms']:.3g} ms vs the untuned build's {e2e['default_ms']:.3g} ms "
            f"({chosen:.2f}x"
            + (f"; confirming pass: {ratio(confirm)}" if confirm.get("rounds") else
               ", confirmed in a second pass")
            + (f"; {state(guard)}" if guard is not None else "")
            + "): the build applies it" + cached)


def _has_record(db: Any, task: Any, target: Any) -> bool:
    return any(db.query_tuning_record(m, target, task.task_name) is not None
               for m in task.dispatched)


def _tune_missing(missing: list[Any], target: Any, trials: int, db: Any, directory: str,
                  runner: Any, cross_cc: str, seed: int | None, progress: bool | None,
                  stats: dict[str, Any]) -> None:
    """The search over the kernels without a record (``tune``), filling ``stats``."""
    from tvm.s_tir import meta_schedule as ms

    bar = _Progress(trials, progress)
    per_iter = max(4, min(64, trials // len(missing)))
    # MetaSchedule's evolutionary search evolves 512 candidates for each batch of 64 it
    # measures; a small budget measures small batches, so the population shrinks in
    # proportion (the same 8:1, at least 64) instead of 512 predicted for every 4-12 measured
    strategy = ms.search_strategy.EvolutionarySearch(population_size=max(64, 8 * per_iter))
    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        missing, work_dir=directory, strategy=strategy, seed=seed)  # logs in directory/logs
    builder = ms.builder.LocalBuilder(
        f_build=_build, initializer=_skip_gpu_intrinsics, timeout_sec=60,
        f_export=functools.partial(_export_cross, cross_cc) if cross_cc else None)
    if isinstance(runner, str):
        runner = ms.runner.Runner.create(runner)
    stats["default_measured"] = _record_default_schedules(missing, target, builder,
                                                          runner, db)
    with tempfile.TemporaryDirectory() as scratch:
        try:
            ms.tune_tasks(tasks=contexts, task_weights=weights, work_dir=scratch,
                          max_trials_global=trials,
                          num_trials_per_iter=per_iter,
                          builder=builder, runner=runner, database=db,
                          measure_callbacks=[*ms.measure_callback.MeasureCallback.create(
                              "default"), bar.callback])
        except Exception as exc:  # noqa: BLE001
            raise LoweringError(f"MetaSchedule tuning failed: {exc}".splitlines()[0]) \
                from exc
        finally:
            bar.close()
    stats["tuned_now"] = sum(_has_record(db, t, target) for t in missing)
    stats["trials_run"] = bar.done


@contextlib.contextmanager
def _meta_schedule_logs_to_files() -> Iterator[None]:
    """MetaSchedule's logger at WARNING while tuning (its console handler takes the logger's
    level: the terminal gets warnings, ``logs/`` gets all), without handlers (it re-lists
    them by name in a dictConfig and fails on an unnamed one, e.g. a test harness's);
    level and handlers are restored afterwards."""
    logger = logging.getLogger("tvm.s_tir.meta_schedule")
    level, handlers, propagate = logger.level, list(logger.handlers), logger.propagate
    logger.setLevel(logging.WARNING)
    logger.handlers.clear()
    try:
        yield
    finally:
        for handler in logger.handlers:
            if handler not in handlers:
                handler.close()
        logger.handlers[:] = handlers
        logger.setLevel(level)
        logger.propagate = propagate
