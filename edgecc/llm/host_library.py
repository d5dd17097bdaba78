"""A host decoder bundle's one library: prefill and decode as two functions of one TVM
Relax VM executable, the weights stored once.

Built as two ``edgecc.compile`` outputs, each ``model.so`` binds its own copy of every
weight: a bundle was twice the weight bytes (a 2-layer Llama with 35.7 MB of fp32
weights: 72.0 MB). Here both phases are lowered to Relax, put into one ``IRModule`` and
built once; TVM's VM code generator keeps one copy of structurally equal constants, and
the phases' weights are equal (the same program, only ``T`` differs; their compile-time
folded transposes too)::

    before:  prefill/model.so  main(ids[1, C], pos, k, v)   weights W, W^T ...
             decode/model.so   main(ids[1, 1], pos, k, v)   weights W, W^T ... (again)
    after:   model.so          prefill(ids[1, C], pos, k, v), decode(ids[1, 1], pos, k, v)
                               weights W, W^T ... once

The library is built for decode speed (``_build``): the linears that read one input
(q/k/v, gate/up) are one matmul each over concatenated weights (``llm_fusion``), the
many-row products of the prefill run on the x86 float32 kernels where the CPU has them
(``x86_fp32``, as every host build), and every kernel under 64 K iterations runs on the
calling thread (``llm_schedule``); ``decoder.json`` records each phase's kernel calls and
thread-pool launches. SmolLM2-135M's decode step::

    before:  ~760 kernel calls; q, k, v, gate, up separate; every reduction (RMSNorm,
             softmax) and every element-wise kernel over 4096 values a pool launch
    after:   672 kernel calls, 241 of them parallel (8 a layer: qkv, o, gate/up,
             down, the attention's products and cache reads; lm_head), measured

Each function is checked against its program on fresh random inputs (token ids in the
vocabulary, a start position that fits, random caches), as ``edgecc.compile`` checks an
artifact; the result goes into ``decoder.json``.
"""

from __future__ import annotations

import os
import time
from typing import Any

import numpy as np
import torch

from edgecc.errors import VerificationFailedError
from edgecc.program import Program
from edgecc.recipe import VerifyOptions

LIBRARY = "model.so"


def lower_phases(programs: dict[str, Program], output_dir: str, target_spec: str,
                 target_options: dict[str, Any] | None) -> dict[str, Any]:
    """Build ``programs`` (phase -> static step program) for the host into one library
    ``output_dir/model.so``; returns the build facts (target, seconds)."""
    from edgecc.compiler import resolve_target
    from edgecc.pass_base import PassContext
    from edgecc.pass_manager import PassManager
    from edgecc.targets.host.presets import resolve
    from edgecc.targets.tvm import lowering

    target, options = resolve_target(target_spec, target_options)
    target.require_available()
    t0 = time.perf_counter()
    functions = {}
    integer: dict[str, Any] = {}
    external: dict[tuple, Any] = {}  # C kernels the phases call (x86_int8, x86_wonly)
    for phase, program in programs.items():
        legal = program.copy(share_weights=True)
        PassManager(target.legalization(options))(legal, context=PassContext(target=target))
        target.check_lowerable(legal)
        module = lowering.to_relax(legal, integer_kernels=options.integer_kernels,
                                   report=integer, show_tvm_log=options.tvm_log)
        for mod in (module.attrs or {}).get("external_mods") or []:
            external.setdefault(_external_key(mod), mod)  # once: both phases call them
        functions[phase] = module["main"].with_attr("global_symbol", phase)
    import tvm

    module = tvm.IRModule(functions)
    if external:
        module = module.with_attr("external_mods", list(external.values()))
    mcpu = options.mcpu or resolve(options.preset).mcpu
    llvm = lowering.llvm_target(mcpu or None, options.num_threads or None)
    facts: dict[str, Any] = {}
    _build(module, llvm, os.path.join(output_dir, LIBRARY), options.schedule,
           options.tvm_log, facts)
    return {"library": LIBRARY, "functions": sorted(functions),
            "cpu": str(llvm.attrs["mcpu"]), "num_threads": options.num_threads,
            "compile_seconds": round(time.perf_counter() - t0, 2), **facts,
            **({"integer_kernels": integer} if integer else {})}


def _external_key(mod: Any) -> tuple:
    """What identifies an external kernel module: its kind and the kernel symbols it
    implements (``x86_int8`` / ``x86_wonly`` / ``x86_fp32`` make a new object a call)."""
    import importlib

    symbols = []
    for name in ("x86_int8", "x86_wonly", "x86_fp32"):
        try:
            symbols += list(getattr(importlib.import_module(f"edgecc.targets.tvm.{name}"),
                                    "SYMBOLS", ()))
        except ImportError:
            continue
    return (mod.kind, tuple(s for s in symbols if mod.implements_function(s)))


def _build(module: Any, llvm: Any, library_path: str, schedule: str, show_tvm_log: bool,
           facts: dict[str, Any]) -> None:
    """``lowering.build`` for the LLM: with edgecc's schedule, the linears that share an
    input fused (``llm_fusion``: q/k/v, gate/up), the x86 float32 kernels for the
    many-row products (``x86_fp32``, as ``lowering.build``), and small kernels run
    serially (``llm_schedule``); ``facts`` receives the counts. TVM's default schedule
    as ``lowering.build`` does it."""
    import tvm

    from edgecc.errors import LoweringError, one_line
    from edgecc.targets.tvm import lowering
    from edgecc.targets.tvm.llm_fusion import fuse_shared_input_linears
    from edgecc.targets.tvm.llm_schedule import llm_pipeline

    if schedule != "edgecc":
        lowering.build(module, llvm, library_path, schedule, show_tvm_log=show_tvm_log)
        return
    module = fuse_shared_input_linears(module, facts)
    try:
        from edgecc.targets.tvm import x86_fp32
    except ImportError:  # an older tree: TVM's kernels for every product
        x86_fp32 = None
    if x86_fp32 is not None:
        module, _ = x86_fp32.apply(module, llvm)
    kernels: dict[str, int] = {}
    relax_pipeline = llm_pipeline(llvm, report=kernels)
    external = (module.attrs or {}).get("external_mods")
    if external:  # C kernels: kept through passes that rebuild the module
        relax_pipeline = lowering._keeping_external(relax_pipeline, external)
    with lowering.captured_native_stderr(show=show_tvm_log) as log:
        try:
            executable = tvm.compile(module, target=llvm, relax_pipeline=relax_pipeline)
            executable.export_library(library_path)
            facts["kernels"] = kernels
            return
        except Exception as exc:
            error = exc
    tail = " | ".join(line for line in log[-3:] if line.strip())
    raise LoweringError(f"TVM build failed: {one_line(error)}"
                        + (f" (TVM log: {tail})" if tail else "")) from error


class LibraryStep:
    """One function of the bundle's library (``prefill`` or ``decode``): ``(ids, pos, k,
    v) -> logits``, the new keys and values written into ``k`` / ``v`` in place."""

    def __init__(self, runner: Any, function: str):
        self.runner, self.function = runner, function

    def raw(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        from edgecc.targets.tvm.runner import _flatten, tvm_tensor, use_threads

        runner = self.runner
        if runner.num_threads and runner._threads != runner.num_threads:
            runner._threads = use_threads(runner.num_threads)
        args = [tvm_tensor(t, runner.device) for t in inputs]
        return tuple(torch.from_numpy(o) for o in _flatten(runner.vm[self.function](*args)))

    def __call__(self, ids: np.ndarray, pos: int, k: torch.Tensor, v: torch.Tensor
                 ) -> np.ndarray:
        from edgecc.llm.decoder import write_cache

        logits, k_new, v_new = self.raw(torch.from_numpy(ids),
                                        torch.tensor([pos], dtype=torch.int64), k, v)
        write_cache(k, k_new, pos)
        write_cache(v, v_new, pos)
        return logits.numpy()


def load_steps(bundle: str, functions: list[str], num_threads: int) -> dict[str, LibraryStep]:
    """The library's functions as steps (one VM: the weights are loaded once), run with
    ``num_threads`` workers (0: ``TVM_NUM_THREADS``, else every CPU this process may use).

    The pool is always configured here (``use_threads``: workers not pinned to cores).
    Left to TVM's default, it pins each worker to a core; on a loaded machine a pinned
    worker waits for its core while another is idle, and every parallel kernel waits for
    it: SmolLM2-135M decoded at 0.6-2.7 tok/s that way against ~11 unpinned (measured
    in one process, load average ~10)."""
    from edgecc.targets.tvm.runner import VmRunner

    if not num_threads:
        cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") \
            else (os.cpu_count() or 1)
        num_threads = int(os.environ.get("TVM_NUM_THREADS") or 0) or cpus
    runner = VmRunner(os.path.join(bundle, LIBRARY), num_threads)
    return {name: LibraryStep(runner, name) for name in functions}


def verify_phase(step: LibraryStep, program: Program, options: VerifyOptions, seed: int
                 ) -> dict[str, Any]:
    """The library function against its program on ``options.samples`` fresh inputs;
    ``VerificationFailedError`` when an output is off by more than ``atol + rtol * |ref|``."""
    ids_spec, _, cache_spec, _ = program.input_specs
    tokens, slots = ids_spec.shape[1], cache_spec.shape[2]
    vocab = int(program.output_specs[0].shape[-1])
    gen = torch.Generator().manual_seed(seed)
    worst = 0.0
    for _ in range(max(options.samples, 1)):
        ids = torch.randint(0, vocab, (1, tokens), generator=gen)
        pos = torch.randint(0, slots - tokens + 1, (1,), generator=gen)
        k = torch.randn(cache_spec.shape, generator=gen)
        v = torch.randn(cache_spec.shape, generator=gen)
        with torch.no_grad():
            ref = program.run(ids, pos, k, v)
        got = step.raw(ids, pos, k, v)
        for name, r, g in zip(("logits", "k_new", "v_new"), ref, got):
            err = (g.double() - r.double()).abs()
            bound = options.atol + options.rtol * r.double().abs()
            worst = max(worst, float(err.max()))
            if float((err - bound).max()) > 0:
                raise VerificationFailedError(
                    f"the host library's {step.function} differs from its program: {name} "
                    f"max abs error {float(err.max()):.3g} (atol {options.atol}, rtol "
                    f"{options.rtol})")
    return {"passed": True, "samples": max(options.samples, 1), "max_abs_error": worst,
            "atol": options.atol, "rtol": options.rtol}
