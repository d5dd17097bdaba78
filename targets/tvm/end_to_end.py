"""The end-to-end stage of ``--tune`` on a machine that runs the build: the whole model is
built and timed, with what MetaSchedule measured kernel by kernel and with the choices of
edgecc's hand-written kernels that no kernel-by-kernel search can see, and the build keeps
whichever is fastest — the untuned build being one of the candidates, so a tuned build is
never slower than the default one by more than measurement noise.

    module, database, stats = tune_host(module, target, trials=64)   # tuning.tune, then this
    lowering.build(module, target, "model.so", database=database)    # what was measured best

Candidates (each a library built from ``module``, timed in interleaved rounds in this
process with the target's thread count):

* ``default``: edgecc's default schedule and kernel settings — the measured-default record;
* ``tuned``: MetaSchedule's records (only when some kernel took a tuned schedule);
* ``tuned`` (or ``default``) with other ``KernelSettings`` of the x86 kernels
  (``x86_kernel_ffi``: the work under which a ``parallel_for`` runs serially, scaled by
  2^k, k in ``SERIAL_SHIFTS``; and half the pool's tasks per parallel job where the pool has
  more than two workers) — only when the model calls those kernels.

A candidate other than the default is kept only when its median is ``MARGIN`` below the
default's twice: in the first pass over all candidates and in a second pass of the two alone.
The choice is recorded in the tuning cache beside MetaSchedule's records (``end_to_end.json``,
keyed by the model, the target and the kernels' sources), so a second compile of the same
model measures nothing. Chosen settings are linked into the library as a small object that
defines the kernels' setting symbols (``with_kernel_settings``).
"""

from __future__ import annotations

import contextvars
import ctypes
import dataclasses
import hashlib
import json
import os
import statistics
import tempfile
import time
from typing import Any

from edgecc.instruments import record_stage_part

MARGIN = 0.02  # a candidate must be this much faster than the default, in two passes
SERIAL_SHIFTS = (-2, 2, 4, 63)  # SERIAL_WORK x 2^k; 63: every kernel job serial
ROUNDS, CONFIRM_ROUNDS = 5, 3
ROUND_SECONDS = 0.2  # timed calls per candidate and round: about this long, 3 to 20 calls
CACHE_FILE = "end_to_end.json"
KERNEL_SOURCES = ("x86_fp32_source", "x86_int8_source", "x86_wonly_source",
                  "x86_attention_source", "x86_amx_source")


@dataclasses.dataclass(frozen=True)
class KernelSettings:
    """The run-time choices of edgecc's hand-written x86 kernels (``x86_kernel_ffi``):
    ``serial_work_log2`` scales each kernel set's serial threshold by 2^k (63: all serial);
    ``num_tasks`` caps the pool tasks of a parallel job (0: every worker)."""

    serial_work_log2: int = 0
    num_tasks: int = 0

    @property
    def is_default(self) -> bool:
        return self == KernelSettings()

    def describe(self) -> str:
        if self.is_default:
            return "default kernel settings"
        parts = []
        if self.serial_work_log2 >= 62:
            parts.append("every kernel job serial")
        elif self.serial_work_log2:
            parts.append(f"serial threshold x2^{self.serial_work_log2}")
        if self.num_tasks:
            parts.append(f"{self.num_tasks} tasks per parallel job")
        return ", ".join(parts)


SYMBOLS = {"serial_work_log2": ("edgecc_x86_serial_work_log2", ctypes.c_int64),
           "num_tasks": ("edgecc_x86_num_tasks", ctypes.c_int32)}


def settings_module(settings: KernelSettings) -> Any:
    """An object file defining the settings' symbols (the kernels' own are weak 0s), as a
    module TVM links into the library (compiled once per value, like the kernels)."""
    from edgecc.targets.tvm import x86_int8

    source = ("// edgecc kernel settings chosen by --tune (targets/tvm/end_to_end.py)\n"
              "#include <stdint.h>\n"
              'extern "C" {\n'
              f"int64_t edgecc_x86_serial_work_log2 = {int(settings.serial_work_log2)};\n"
              f"int32_t edgecc_x86_num_tasks = {int(settings.num_tasks)};\n"
              "}\n")
    return x86_int8.external_module(source, (), "x86_settings")


def with_kernel_settings(module: Any, settings: KernelSettings) -> Any:
    """``module`` with ``settings`` linked into the library it builds (unchanged for the
    default settings)."""
    if settings.is_default:
        return module
    external = list((module.attrs or {}).get("external_mods") or [])
    return module.with_attr("external_mods", [*external, settings_module(settings)])


def uses_x86_kernels(module: Any) -> bool:
    """Whether ``module`` calls edgecc's hand-written x86 kernels (after
    ``lowering.hand_written_kernels``)."""
    from tvm import relax

    found = []

    def visit(expr: Any) -> None:
        if isinstance(expr, relax.ExternFunc) and \
                str(expr.global_symbol).startswith("edgecc_x86_"):
            found.append(expr)

    for func in module.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    return bool(found)


def settings_candidates(threads: int) -> list[KernelSettings]:
    """The settings measured besides the default: thresholds scaled by ``SERIAL_SHIFTS``, and
    half the pool's tasks per job where the pool has more than two workers."""
    out = [KernelSettings(serial_work_log2=k) for k in SERIAL_SHIFTS]
    if threads > 2:
        out.append(KernelSettings(num_tasks=threads // 2))
    return out


# ---- measuring ----------------------------------------------------------------------------

class _Library:
    """One built candidate library, loaded once: a VM to run and its setting symbols."""

    def __init__(self, path: str, threads: int):
        from edgecc.targets.tvm import runner

        self.vm = runner.VmRunner(path, threads)
        # the same file the VM loaded (dlopen returns its handle): its setting symbols
        handle = ctypes.CDLL(runner._private_copy(path))
        self.symbols = {}
        for field, (name, ctype) in SYMBOLS.items():
            try:
                self.symbols[field] = ctype.in_dll(handle, name)
            except ValueError:  # no x86 kernels linked: nothing to set
                pass

    def set(self, settings: KernelSettings) -> None:
        for field, symbol in self.symbols.items():
            symbol.value = getattr(settings, field)


def _inputs(module: Any) -> list[Any]:
    """Inputs of ``module``'s ``main`` (static shapes): ones for integers (valid token ids
    and masks), normal samples for floats."""
    import numpy as np
    import torch

    from tvm import relax

    out = []
    rng = np.random.default_rng(0)
    for param in module["main"].params:
        ty = param.ty
        if not isinstance(ty, relax.TensorType):
            raise ValueError(f"input {param.name_hint} is not a tensor")
        shape = [int(d) for d in ty.shape]
        dtype = str(ty.dtype)
        if dtype.startswith(("int", "uint")):
            value = np.ones(shape, dtype)
        elif dtype == "bool":
            value = np.ones(shape, bool)
        else:
            value = rng.standard_normal(shape).astype(dtype)
        out.append(torch.from_numpy(value))
    return out


def _time_rounds(candidates: dict[str, tuple[_Library, KernelSettings]], libraries: list[Any],
                 inputs: list[Any], rounds: int, block: int) -> dict[str, float]:
    """Median ms of each candidate over ``rounds`` interleaved rounds of ``block`` timed calls
    (after one untimed call); every library gets the candidate's settings first."""
    times: dict[str, list[float]] = {k: [] for k in candidates}
    for _ in range(rounds):
        for name, (library, settings) in candidates.items():
            for lib in libraries:
                lib.set(settings)
            library.vm.run(*inputs)
            for _ in range(block):
                t = time.perf_counter()
                library.vm.run(*inputs)
                times[name].append((time.perf_counter() - t) * 1000)
    for lib in libraries:
        lib.set(KernelSettings())
    return {k: statistics.median(v) for k, v in times.items()}


def _build(module: Any, target: Any, database: Any, path: str) -> None:
    """``lowering.build`` outside the compile's stage clock (an empty context): the
    candidates' builds are part of the tuning stage, not the build's codegen."""
    from edgecc.targets.tvm import lowering

    contextvars.Context().run(lowering.build, module, target, path, database=database)


def _cache_key(module: Any, target: Any) -> str:
    import importlib

    import tvm_ffi

    sources = []
    for name in KERNEL_SOURCES:  # a kernel change invalidates the choice
        try:
            sources.append(importlib.import_module(f"edgecc.targets.tvm.{name}").SOURCE)
        except (ImportError, AttributeError):
            continue
    # the functions' structure and shapes (the kernels linked in as attributes cannot be
    # hashed; their sources are, below); the weights' values do not change the timing
    funcs = sorted((str(gvar.name_hint), tvm_ffi.structural_hash(func, skip_tensor_content=True))
                   for gvar, func in module.functions.items())
    text = "|".join([str(funcs), str(target),
                     *(hashlib.sha256(s.encode()).hexdigest()[:16] for s in sources)])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _read_cache(directory: str) -> dict[str, Any]:
    try:
        with open(os.path.join(directory, CACHE_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _write_cache(directory: str, key: str, record: dict[str, Any]) -> None:
    cache = _read_cache(directory)
    cache[key] = record
    path = os.path.join(directory, CACHE_FILE)
    with open(path + ".tmp", "w") as f:
        json.dump(cache, f, indent=1)
    os.replace(path + ".tmp", path)


def measure(module: Any, target: Any, database: Any, tuned_kernels: bool) -> dict[str, Any]:
    """Build and time the candidates (module docstring); returns the record: ``chosen``
    (a candidate's name), ``tuned_kernels`` / ``settings`` of it, every candidate's
    ``ms``, ``default_ms``, ``calls`` timed per candidate and ``seconds``."""
    from edgecc.targets.tvm.lowering import hand_written_kernels

    start = time.perf_counter()
    threads = int(target.attrs.get("num-cores", 0) or 0)
    with_x86 = uses_x86_kernels(hand_written_kernels(module, target))
    if not (tuned_kernels or with_x86):  # one candidate: the default, nothing to compare
        return {"chosen": "default", "tuned_kernels": False,
                "settings": dataclasses.asdict(KernelSettings()), "ms": {}, "confirm_ms": {},
                "default_ms": None, "chosen_ms": None,
                "calls": {"rounds": 0, "per_round": 0, "confirm_rounds": 0},
                "seconds": round(time.perf_counter() - start, 2)}
    inputs = _inputs(module)
    with tempfile.TemporaryDirectory() as d:
        builds = {"default": None, **({"tuned": database} if tuned_kernels else {})}
        libraries = {}
        for name, db in builds.items():
            path = os.path.join(d, f"{name}.so")
            _build(module, target, db, path)
            libraries[name] = _Library(path, threads)
        base = "tuned" if tuned_kernels else "default"
        candidates = {name: (lib, KernelSettings()) for name, lib in libraries.items()}
        if with_x86:
            for settings in settings_candidates(threads):
                candidates[f"{base}, {settings.describe()}"] = (libraries[base], settings)
        default = libraries["default"]
        for _ in range(2):  # warm: page faults, the pool's first wake
            default.vm.run(*inputs)
        t = time.perf_counter()
        default.vm.run(*inputs)
        block = max(3, min(20, round(ROUND_SECONDS / max(time.perf_counter() - t, 1e-6))))
        libs = list(libraries.values())
        ms = _time_rounds(candidates, libs, inputs, ROUNDS, block)
        best = min(ms, key=ms.get)
        confirm = None
        if best != "default" and ms[best] < ms["default"] * (1 - MARGIN):
            confirm = _time_rounds({"default": candidates["default"], best: candidates[best]},
                                   libs, inputs, CONFIRM_ROUNDS, block)
        chosen = best if confirm is not None and \
            confirm[best] < confirm["default"] * (1 - MARGIN) else "default"
        settings = candidates[chosen][1]
        for lib in libs:  # TVM keeps loaded libraries: leave their settings at default
            lib.set(KernelSettings())
    return {"chosen": chosen, "tuned_kernels": chosen.startswith("tuned"),
            "settings": dataclasses.asdict(settings),
            "ms": {k: round(v, 4) for k, v in ms.items()},
            "confirm_ms": {k: round(v, 4) for k, v in (confirm or {}).items()},
            "default_ms": round(ms["default"], 4), "chosen_ms": round(ms[chosen], 4),
            "calls": {"rounds": ROUNDS, "per_round": block, "confirm_rounds":
                      CONFIRM_ROUNDS if confirm is not None else 0},
            "seconds": round(time.perf_counter() - start, 2)}


def tune_host(module: Any, target: Any, trials: int, *, root: str | None = None,
              progress: bool | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """``tuning.tune`` (MetaSchedule, kernel by kernel), then the end-to-end stage for a
    build that runs here. Returns the module to build (with the chosen kernel settings),
    the database to build with (None when the untuned kernels were faster end to end) and
    the statistics for the manifest (``tuning.tune``'s, plus ``end_to_end``, with
    ``budget`` and ``outcome`` saying what was measured and what the build applies)."""
    from edgecc.targets.tvm import tuning

    database, stats = tuning.tune(module, target, trials, root=root, progress=progress)
    start = time.perf_counter()
    tuned_kernels = stats["kernels_with_record"] > stats["default_kept"]
    key = _cache_key(module, target)
    cached = _read_cache(stats["cache"]).get(key)
    if cached is not None and stats["trials_run"] == 0:
        record = {**cached, "from_cache": True}
    else:
        record = {**measure(module, target, database, tuned_kernels), "from_cache": False}
        _write_cache(stats["cache"], key, {k: v for k, v in record.items()
                                           if k != "from_cache"})
    record_stage_part("tvm tuning", time.perf_counter() - start)
    stats["end_to_end"] = record
    stats["budget"] += (f"; then the whole model end to end: {len(record['ms'])} "
                        "candidate(s) (the untuned build among them), "
                        f"{record['calls']['rounds']} interleaved rounds of "
                        f"{record['calls']['per_round']} calls each"
                        + (" (read from the cache)" if record["from_cache"] else ""))
    stats["outcome"] = tuning.outcome(stats)
    settings = KernelSettings(**record["settings"])
    if record["tuned_kernels"]:
        tuned = stats["kernels_with_record"] - stats["default_kept"]
        stats["applied"] = (f"MetaSchedule-tuned ({tuned}/{stats['kernels']} kernels), edgecc "
                            f"schedule for the rest, {settings.describe()}")
    elif settings.is_default:
        stats["applied"] = ("edgecc's default schedule and kernel settings (the untuned build: "
                            "no candidate was faster end to end)")
    else:
        stats["applied"] = f"edgecc's default schedule, {settings.describe()}"
    return (with_kernel_settings(module, settings),
            database if record["tuned_kernels"] else None, stats)
