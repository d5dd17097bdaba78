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
    for phase, program in programs.items():
        legal = program.copy(share_weights=True)
        PassManager(target.legalization(options))(legal, context=PassContext(target=target))
        target.check_lowerable(legal)
        module = lowering.to_relax(legal, integer_kernels=options.integer_kernels,
                                   report=integer, show_tvm_log=options.tvm_log)
        functions[phase] = module["main"].with_attr("global_symbol", phase)
    import tvm

    module = tvm.IRModule(functions)
    mcpu = options.mcpu or resolve(options.preset).mcpu
    llvm = lowering.llvm_target(mcpu or None, options.num_threads or None)
    lowering.build(module, llvm, os.path.join(output_dir, LIBRARY), options.schedule,
                   show_tvm_log=options.tvm_log)
    return {"library": LIBRARY, "functions": sorted(functions),
            "cpu": str(llvm.attrs["mcpu"]), "num_threads": options.num_threads,
            "compile_seconds": round(time.perf_counter() - t0, 2),
            **({"integer_kernels": integer} if integer else {})}


class LibraryStep:
    """One function of the bundle's library (``prefill`` or ``decode``): ``(ids, pos, k,
    v) -> logits``, the new keys and values written into ``k`` / ``v`` in place."""

    def __init__(self, runner: Any, function: str):
        self.runner, self.function = runner, function

    def raw(self, *inputs: torch.Tensor) -> tuple[torch.Tensor, ...]:
        import tvm

        from edgecc.targets.tvm.runner import _flatten, use_threads

        runner = self.runner
        if runner.num_threads and runner._threads != runner.num_threads:
            runner._threads = use_threads(runner.num_threads)
        args = [tvm.runtime.tensor(np.ascontiguousarray(t.numpy()), runner.device)
                for t in inputs]
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
    """The library's functions as steps (one VM: the weights are loaded once)."""
    from edgecc.targets.tvm.runner import VmRunner

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
