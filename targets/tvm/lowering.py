"""Lower a ``Program`` to a TVM Relax module and build it for an LLVM CPU target.

    module = to_relax(program)                         # Relax IRModule, weights bound
    build(module, llvm_target(None, None), "model.so") # schedule.py / pipeline.py

The operators TVM's importer lacks or gets wrong are converted by ``converters``; tvm is
imported inside the functions only.
"""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from edgecc.errors import LoweringError, one_line
from edgecc.instruments import record_stage_part, stage_timer
from edgecc.program import Program
from edgecc.targets.tvm.converters import CUSTOM_CONVERTERS
from edgecc.targets.tvm.quant_lowering import widen_fp8_constants


def to_relax(program: Program, *, integer_kernels: bool = False, isa: str = "generic",
             report: dict[str, Any] | None = None, show_tvm_log: bool = False,
             weight_kernels: bool | None = None) -> Any:
    """The program as a Relax ``IRModule`` with weights bound as constants; with
    ``integer_kernels``, quantized linears and convs become int8 products for ``isa``
    (``integer_lowering``, ``int8_gemm``) and the layers that could not are warned about
    (``warnings``, naming each). ``report`` receives the integer-kernel statistics;
    ``show_tvm_log`` lets TVM's native log through (``captured_native_stderr``).

    ``weight_kernels``: linears with 4/8-bit constant weights and float activations call
    the x86 weight-only kernel (``x86_wonly``; its statistics go to ``report["weight_only"]``)
    instead of float32 weights folded at compile time. None (the default): on when this
    machine is x86-64 and the build is for it (no integer kernels, or the x86 ones) — the
    host target and its LLM libraries; arm64 builds (integer kernels for an Arm ISA) never."""
    import warnings

    from tvm import relax
    from tvm.relax.frontend.torch import from_exported_program

    from edgecc.targets.tvm.integer_lowering import exported_constants, integer_converters

    converters = dict(CUSTOM_CONVERTERS)
    exported = widen_fp8_constants(program).exported()
    notes: list[str] = []
    kernels = None
    wonly = None
    if weight_kernels is None:
        from edgecc.targets.tvm import x86_wonly

        weight_kernels = x86_wonly.supported() and (not integer_kernels or isa == "avx2")
    if weight_kernels:  # innermost: the integer kernels (below) fall back to it
        from edgecc.quant import quantized_by_edgecc
        from edgecc.targets.tvm.quant_lowering import weight_only_converters

        wonly = weight_only_converters(converters, exported_constants(exported), notes,
                                       bf16_activations=quantized_by_edgecc(program))
    if integer_kernels:
        kernels = integer_converters(converters, exported_constants(exported), isa, notes)
    with captured_native_stderr(show=show_tvm_log), stage_timer("tvm import"):
        try:
            module = from_exported_program(
                exported, custom_convert_map=converters, run_ep_decomposition=False
            )
            if kernels is not None or (wonly is not None and wonly.used):
                # the float dequantize of what now runs in integer / from packed weights
                module = relax.transform.DeadCodeElimination()(module)
            external = []
            if kernels is not None and kernels.uses_x86:
                from edgecc.targets.tvm.x86_int8 import external_module

                external.append(external_module())
            if wonly is not None and wonly.used:
                from edgecc.targets.tvm import x86_wonly

                external.append(x86_wonly.external_module())
            if external:
                module = module.with_attr("external_mods", external)
        except Exception as exc:
            raise LoweringError(f"TVM Relax import failed: {one_line(exc)}") from exc
    for note in notes:
        warnings.warn(note, stacklevel=2)
    if report is not None and kernels is not None:
        report.update({"isa": isa, **_run_time_isa(isa), **kernels.stats,
                       "float_fallbacks": notes})
    if report is not None and wonly is not None and (wonly.used
                                                     or wonly.stats["weight_only_float"]):
        report["weight_only"] = {**wonly.stats, "float_fallbacks": notes}
    return module


def _run_time_isa(isa: str) -> dict[str, str]:
    """What the x86 int8 kernels run with: ``isa`` is the floor the artifact needs (AVX2);
    each call picks ``vpdpbusd`` by cpuid where the CPU has it. The manifest says both, and
    what the build machine would pick (its /proc/cpuinfo flags, the same test as cpuid)."""
    if isa != "avx2":
        return {}
    try:
        with open("/proc/cpuinfo") as f:
            flags = next((line.split(":", 1)[1].split() for line in f
                          if line.startswith("flags")), [])
    except OSError:
        flags = []
    here = ("avx512_vnni" if {"avx512_vnni", "avx512bw"} <= set(flags)
            else "avx_vnni" if "avx_vnni" in flags else "avx2" if "avx2" in flags
            else "unknown")
    return {"isa_at_run_time": "by cpuid per call: avx512_vnni, else avx_vnni, else avx2",
            "isa_build_machine": here}


def llvm_target(mcpu: str | None, num_cores: int | None) -> Any:
    import tvm
    from tvm.target import codegen

    spec: dict[str, Any] = {"kind": "llvm", "mcpu": mcpu or codegen.llvm_get_system_cpu()}
    if num_cores:
        spec["num-cores"] = num_cores
    return tvm.target.Target(spec)


@contextlib.contextmanager
def captured_native_stderr(show: bool = False) -> Iterator[list[str]]:
    """Collect what native code (TVM's C++ logging) writes to file descriptor 2.

    TVM logs warnings such as "Fast mode segfaults when there are out-of-bounds indices"
    for every gather it compiles; they are noise for users and are shown only if the
    build fails (or with ``show``: the targets' ``tvm_log=true`` option).
    """
    lines: list[str] = []
    if show:
        yield lines
        return
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile(mode="w+b") as sink:
        os.dup2(sink.fileno(), 2)
        try:
            yield lines
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            lines.extend(sink.read().decode(errors="replace").splitlines())


def _keeping_external(relax_pipeline: Any, external: Any) -> Any:
    import tvm
    from tvm import relax

    inner = relax.get_pipeline(relax_pipeline) if isinstance(relax_pipeline, str) \
        else relax_pipeline

    @tvm.transform.module_pass(opt_level=0, name="EdgeccKeepExternalModules")
    def run(mod: Any, ctx: Any) -> Any:
        out = inner(mod)
        if not (out.attrs or {}).get("external_mods"):
            out = out.with_attr("external_mods", external)
        return out

    return run


def _timed(relax_pipeline: Any, name: str, spent: list[float]) -> Any:
    """``relax_pipeline`` as one module pass that records its seconds as part ``name`` of
    the compile (``edgecc.instruments.stage_timer``) and adds them to ``spent[0]``."""
    import tvm
    from tvm import relax

    inner = relax.get_pipeline(relax_pipeline) if isinstance(relax_pipeline, str) \
        else relax_pipeline

    @tvm.transform.module_pass(opt_level=0, name="EdgeccTimed")
    def run(mod: Any, ctx: Any) -> Any:
        start = time.perf_counter()
        with stage_timer(name):
            out = inner(mod)
        spent[0] += time.perf_counter() - start
        return out

    return run


def _external_kernels(module: Any) -> list[Any]:
    """The C kernel libraries ``module`` calls but does not carry: a module assembled from
    the functions of ``to_relax`` results (``edgecc.llm.host_library``: one library, two
    phases) loses their ``external_mods`` attribute, and an unresolved
    ``call_dps_packed("edgecc_x86_...")`` only fails when the library is loaded."""
    from tvm import relax

    symbols: set[str] = set()

    def visit(expr: Any) -> None:
        if isinstance(expr, relax.ExternFunc):
            symbols.add(str(expr.global_symbol))

    for func in module.functions.values():
        if isinstance(func, relax.Function):
            relax.analysis.post_order_visit(func, visit)
    external = []
    from edgecc.targets.tvm import x86_int8, x86_wonly

    if symbols & set(x86_int8.SYMBOLS):
        external.append(x86_int8.external_module())
    if symbols & set(x86_wonly.SYMBOLS):
        external.append(x86_wonly.external_module())
    from edgecc.targets.tvm import x86_attention

    if symbols & set(x86_attention.EXPORTED):
        external.append(x86_attention.external_module())
    return external


def hand_written_kernels(module: Any, target: Any, report: dict | None = None) -> Any:
    """``module`` with the layers edgecc's hand-written kernels cover as calls to them
    (``x86_fp32.apply``, then attention / layer norm / GELU: ``x86_attention.apply``; x86
    with AVX2; others unchanged) — what ``build`` compiles with the edgecc schedule, and so
    what ``tuning`` tunes (the TVM kernels that remain)."""
    from edgecc.targets.tvm import x86_attention, x86_fp32

    module, stats = x86_fp32.apply(module, target)
    if report is not None and stats is not None:  # layers on the kernels, fused, left and why
        report["x86_fp32"] = stats.as_dict()
    module, stats = x86_attention.apply(module, target)
    if report is not None and stats is not None:  # attention / layer norm / GELU kernels
        report["x86_attention"] = stats.as_dict()
    from edgecc.targets.tvm.end_to_end import route_call_sites  # --tune's per-call settings

    return route_call_sites(module)  # unchanged unless the module carries a chosen table


def build(module: Any, target: Any, library_path: str, schedule: str = "edgecc",
          fcompile: Any = None, database: Any = None, show_tvm_log: bool = False,
          report: dict | None = None) -> None:
    """Compile ``module`` for ``target`` and export it (with ``fcompile``, e.g. a cross
    compiler, when the library is for another machine; with a MetaSchedule ``database``,
    the kernels it has tuning records for use them — see ``tuning``). With the ``edgecc``
    schedule on an x86 target with AVX2, float32 linears and convolutions first become calls
    to the hand-written kernels of ``x86_fp32`` (their counts in ``report["x86_fp32"]``), then
    attention / layer norm / GELU to ``x86_attention``'s (``report["x86_attention"]``)."""
    import tvm

    from edgecc.targets.tvm.pipeline import pipeline

    relax_pipeline = pipeline(target, database) if schedule == "edgecc" else "default"
    # the kernel libraries a module assembled from to_relax results lost (before x86_fp32
    # attaches its own: both are kept)
    lost = [] if (module.attrs or {}).get("external_mods") else _external_kernels(module)
    if schedule == "edgecc":  # x86: float32 layers on the hand-written kernels (x86_fp32)
        module = hand_written_kernels(module, target, report)
    external = [*lost, *((module.attrs or {}).get("external_mods") or [])]
    if external:  # C kernels (x86_int8): kept through passes that rebuild the module
        relax_pipeline = _keeping_external(relax_pipeline, external)
    spent = [0.0]
    relax_pipeline = _timed(relax_pipeline, "tvm relax passes", spent)
    with captured_native_stderr(show=show_tvm_log) as log:
        try:
            start = time.perf_counter()
            executable = tvm.compile(module, target=target, relax_pipeline=relax_pipeline)
            record_stage_part("tvm codegen",  # TIR lowering + LLVM: all but the relax passes
                              max(0.0, time.perf_counter() - start - spent[0]))
            with stage_timer("tvm link"):
                executable.export_library(library_path, fcompile=fcompile)
            return
        except Exception as exc:
            error = exc
    tail = " | ".join(line for line in log[-3:] if line.strip())
    raise LoweringError(
        f"TVM build failed: {one_line(error)}" + (f" (TVM log: {tail})" if tail else "")
    ) from error
