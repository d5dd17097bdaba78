"""``edgecc.compile``: model -> passes -> target artifact + verified manifest.

    res = edgecc.compile(model, target="host", pipeline="fold-batchnorm,fuse,dce",
                         example_inputs=(x,), output_dir="build/")
    res.report        # the manifest, as a dict
    res.artifacts     # files written
    res.run(x)        # run the artifact (targets that execute here)

Every check that can fail on bad input (model, pipeline text, target name and options,
output directory) runs before any work; outputs are written to a staging directory and
moved into place only when everything, verification included, has succeeded.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
import time
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch

from edgecc import distributed, malloc
from edgecc.accounting import measure
from edgecc.errors import (
    EdgeccError,
    InputSpecError,
    VerificationFailedError,
)
from edgecc.frontend import load, trace
from edgecc.inputs import fresh_inputs
from edgecc.instruments import (
    Instrument,
    IRDumpInstrument,
    NumericCheckInstrument,
    StageClock,
)
from edgecc.manifest import (
    SCHEMA_VERSION,
    created_timestamp,
    read_manifest,
    sha256_of,
    write_manifest,
)
from edgecc.metrics import compare_outputs
from edgecc.output_dir import StagedOutput, check_output_dir
from edgecc.pass_base import PassContext, make_options
from edgecc.pass_manager import PassManager, _validate
from edgecc.pipeline_text import format_pipeline, parse_pipeline
from edgecc.program import Program, TensorSpec
from edgecc.progress import Progress
from edgecc.recipe import Recipe, VerifyOptions, load_recipe
from edgecc.registry import default_target_registry
from edgecc.report.sizes import layer_sizes
from edgecc.simulate import ConstantDequantized
from edgecc.target import Artifact, Lowered, Target, split_target_spec, with_preset

DEFAULT_RECIPE = "optimize"  # used when neither a pipeline nor a recipe is given


@dataclasses.dataclass
class CompileResult:
    """The outcome of ``compile``: optimized program, artifacts, and the manifest.

    ``original`` holds the same weight tensors as the model given (no copy), and ``program``
    those weights no pass replaced: call ``program.own_weights()`` before changing any of
    its weights in place (fine-tuning it yourself)."""

    program: Program
    original: Program
    target: Target
    output_dir: str
    artifacts: list[Artifact]
    report: dict[str, Any]
    _runner: Any = None
    # the (dtype, shape) of each torch tensor input of the last call checked: a call with the
    # same skips the checks (each Python step of a ~0.7 ms call runs with cold caches)
    _checked: Any = dataclasses.field(default=None, repr=False, compare=False)

    def run(self, *inputs: Any) -> Any:
        """Run the compiled artifact; one output is returned bare, several as a tuple.

        Inputs are torch tensors or numpy arrays; outputs come back as numpy arrays when
        every input was one (what an ONNX Runtime user holds), else as torch tensors.
        """
        signature = [(x.dtype, x.shape) if type(x) is torch.Tensor else None for x in inputs]
        if signature == self._checked:  # all torch tensors, as the last call's: checked
            out = self._runner.run(*inputs)
            return out[0] if len(out) == 1 else tuple(out)
        as_numpy = bool(inputs) and all(isinstance(x, np.ndarray) for x in inputs)
        inputs = tuple(torch.from_numpy(np.ascontiguousarray(x)) if isinstance(x, np.ndarray)
                       else x for x in inputs)
        self.original.check_inputs(inputs)
        if self._runner is None:
            self._runner = self.target.load(self.output_dir, self.report)
        out = tuple(self._runner.run(*inputs))
        if inputs and None not in signature:
            self._checked = signature
        if as_numpy:
            out = tuple(o.detach().cpu().numpy() if isinstance(o, torch.Tensor) else o
                        for o in out)
        return out[0] if len(out) == 1 else out


def resolve_model(model: Any, example_inputs: Sequence[Any] | None, *,
                  trust_pickle: bool = False, dynamic_shapes: Any = None,
                  input_shapes: dict[str, Sequence[int]] | None = None,
                  import_check: Any = True) -> Program:
    """An ``nn.Module`` (with example inputs), a file path, or a ``Program`` -> ``Program``.
    ``import_check``: check an ``.onnx`` import against onnxruntime (see ``edgecc.load``)."""
    if isinstance(model, Program):
        return model.copy(share_weights=True)  # compile never changes a weight in place
    if isinstance(model, (str, os.PathLike)):
        return load(model, trust_pickle=trust_pickle, example_inputs=example_inputs,
                    input_shapes=input_shapes, import_check=import_check)
    if isinstance(model, torch.nn.Module):
        if example_inputs is None:
            raise InputSpecError(
                "compiling an nn.Module needs example_inputs, e.g. "
                "example_inputs=(torch.randn(1, 3, 224, 224),)"
            )
        return trace(model, tuple(example_inputs), dynamic_shapes=dynamic_shapes)
    raise EdgeccError(
        f"cannot compile a {type(model).__name__}: give an nn.Module, a .pt2 path or a Program"
    )


def resolve_target(spec: str, options: dict[str, Any] | None,
                   defaults: dict[str, Any] | None = None) -> tuple[Target, Any]:
    """The target named by ``spec`` (``NAME`` or ``NAME:PRESET``) and its options: the
    ``defaults`` (a recipe's), then ``options``, with the spec's preset filled in."""
    name, preset = split_target_spec(spec)
    target_cls = default_target_registry().get(name)
    values = {**(defaults or {}), **with_preset(target_cls, preset, options or {})}
    return target_cls(), make_options(target_cls, values)


@distributed.collective("compiling")
def compile(  # noqa: A001  (the public name DESIGN.md gives it)
    model: Any,
    target: str | None = None,
    *,
    pipeline: str | None = None,
    recipe: str | None = None,
    example_inputs: Sequence[Any] | None = None,
    dynamic_shapes: Any = None,
    input_shapes: dict[str, Sequence[int]] | None = None,
    calibration: Iterable[Sequence[Any]] | None = None,
    output_dir: str | None = None,
    force: bool = False,
    target_options: dict[str, Any] | None = None,
    verify: bool = True,
    verify_options: VerifyOptions | None = None,
    check_each_pass: bool = False,
    dump_ir: str | None = None,
    trust_pickle: bool = False,
    progress: bool | None = None,
    import_check: Any = True,
    device: str | None = None,
) -> CompileResult:
    """Compile ``model`` for ``target`` (see the module docstring).

    ``device`` (``cpu``, ``cuda``, ``cuda:N``): where ``quantize``'s calibration forward
    passes (activation observers, GPTQ Hessians, AWQ's search) and the training passes
    (``qat``, ``distill``, ``sparse-finetune``) run (``smooth-quant`` and
    ``quant-sensitivity`` still run on the CPU); graph rewrites stay on the CPU, and the
    program is on the CPU again before lowering, so artifacts have the same structure. Under
    ``torchrun`` every rank calibrates on its shard of ``calibration`` (see
    ``edgecc.distributed``), statistics are reduced across ranks, and only rank 0 lowers,
    verifies and writes ``output_dir``; the other ranks return a result with no artifacts.
    """
    clock = StageClock()  # compile_seconds: from here to the manifest's writing
    dev = distributed.resolve_device(device)
    if not distributed.is_main():
        progress = False  # progress on rank 0 only
    if pipeline is not None and recipe is not None:
        raise EdgeccError("give either a pipeline or a recipe, not both")
    loaded: Recipe = load_recipe(recipe or (DEFAULT_RECIPE if pipeline is None else "none"))
    target_spec = target or loaded.target or "host"
    tgt, tgt_options = resolve_target(target_spec, target_options, loaded.target_options)
    text = pipeline if pipeline is not None else (loaded.pipeline or "")
    steps = parse_pipeline(text)
    tgt.check_pipeline(steps, tgt_options)  # a step the target cannot honour: before any work
    steps = (*steps, *tgt.legalization(tgt_options))
    vopts = verify_options or loaded.verify
    avail = tgt.require_available()
    model_path = os.fspath(model) if isinstance(model, (str, os.PathLike)) else ""
    if output_dir is not None:
        check_output_dir(output_dir, force=force, protected=(model_path,))

    stages = ["load model", "run passes", f"lower for {tgt.name}", "verify", "write"]
    with Progress(stages, enabled=progress) as bar, clock:
        clock.record("checks", clock.total())  # options, pipeline, target, output dir
        bar.stage("load model")
        clock.begin("load")
        failed: BaseException | None = None
        try:  # everything a rank can fail on alone, before the first collective
            original = resolve_model(model, example_inputs, trust_pickle=trust_pickle,
                                     dynamic_shapes=dynamic_shapes, input_shapes=input_shapes,
                                     import_check=import_check)
            if calibration is not None and distributed.is_distributed():
                calibration = distributed.shard(list(calibration))
            if distributed.is_distributed():
                _validate(steps, original,
                          PassContext(calibration=calibration, target=tgt, original=original,
                                      device=dev))
        except Exception as exc:  # noqa: BLE001  (re-raised by agree)
            failed = exc
        distributed.agree(failed, "loading the model and validating the pipeline")
        # weights shared, not copied (bounded memory): passes replace weights; one that
        # trains gets its own copies first, and any other in-place change is an error.
        # On a GPU, calibration moves the working program's weights there and back
        # (Module.to swaps .data under the shared objects): a private copy, as before.
        program = original.copy(share_weights=dev.type == "cpu")
        before = measure(original)
        malloc.bound_heap(before.bytes)  # large models: freed temporaries go back to the OS

        bar.stage("run passes")
        clock.begin("passes")
        instruments: list[Any] = [SharedWeightsGuard()]
        if check_each_pass:
            instruments.append(NumericCheckInstrument(
                [fresh_inputs(original, seed=7)], atol=vopts.atol, rtol=vopts.rtol))
        if dump_ir:
            instruments.append(IRDumpInstrument(dump_ir))
        if calibration is not None:
            calibration = list(calibration)  # passes and the fidelity check both read it
        context = PassContext(calibration=calibration, target=tgt, progress=progress,
                              original=original, device=dev)
        t0 = time.perf_counter()
        failed = None
        try:
            result = PassManager(steps, instruments=instruments)(program, context=context)
        except Exception as exc:  # noqa: BLE001  (re-raised by agree)
            failed = exc
        distributed.agree(failed, "running the passes")
        program.graph_module.to("cpu")  # lowering always starts from the CPU
        pass_seconds = time.perf_counter() - t0
        after = measure(program)
        run_info = distributed.run_info(dev)
        if not distributed.is_main():  # rank 0 writes; `collective` waits for its outcome
            return CompileResult(program, original, tgt, os.path.abspath(output_dir or ""),
                                 [], {"distributed": run_info.to_json(), "written": False})

        final_dir = output_dir or tempfile.mkdtemp(prefix="edgecc-")
        stage = StagedOutput(final_dir)
        with stage as staging:
            bar.stage(f"lower for {tgt.name}")
            clock.begin("lowering")
            t0 = time.perf_counter()
            lowered = tgt.lower(program, staging, tgt_options)
            lower_seconds = time.perf_counter() - t0
            if not isinstance(lowered, Lowered):
                raise EdgeccError(
                    f"target '{tgt.name}' returned a {type(lowered).__name__} from lower(): "
                    "a target returns edgecc.Lowered(artifacts, report)")
            artifacts = lowered.artifacts
            clock.begin("write")  # the manifest, artifacts' sha256 included
            manifest: dict[str, Any] = {
                "schema_version": SCHEMA_VERSION,
                "edgecc_version": _version(),
                "created": created_timestamp(),
                "source": model_path or original.source,
                "target": {"name": tgt.name, "options": dataclasses.asdict(tgt_options),
                                   "toolchain": avail.detail},
                "inputs": [s.to_json() for s in original.input_specs],
                "outputs": [s.to_json() for s in original.output_specs],
                "pipeline": {"text": format_pipeline(steps), "passes": result.stats["passes"],
                             "seconds": round(pass_seconds, 4)},
                "distributed": run_info.to_json(),
                "lowering": {"seconds": round(lower_seconds, 4), **lowered.report},
                "model": {"before": before.to_json(), "after": after.to_json()},
                "layers": {"before": layer_sizes(original), "after": layer_sizes(program)},
                "artifacts": [_artifact_entry(staging, a) for a in artifacts],
                "not_verified": tgt.not_verified(tgt_options),
            }
            if "edgecc.import_check" in original.graph_module.meta:  # an .onnx import
                manifest["import_check"] = original.graph_module.meta["edgecc.import_check"]
            bar.stage("verify")
            clock.begin("verify")
            lossy = _lossy_passes(result.stats["passes"]) or _quantized_before(original)
            if verify and tgt.executes(tgt_options) and vopts.samples > 0:
                runner = tgt.load(staging, manifest)
                # A lossy pipeline changes the numbers on purpose: the artifact must then
                # match the compressed program (edgecc's simulator of it) to tolerance, and
                # its distance from the original is reported as fidelity.
                reference = program if lossy else original
                inputs = [fresh_inputs(reference, seed=1000 + i) for i in range(vopts.samples)]
                fidelity_on, fidelity_inputs = _fidelity_inputs(original, vopts, calibration) \
                    if lossy else ("", [])
                outs = _run_all(runner, inputs + fidelity_inputs)  # one launch if it can
                manifest["verification"] = _verify(reference, inputs, outs[:len(inputs)],
                                                   vopts, lossy, original)
                if lossy:
                    manifest["verification"]["fidelity"] = _fidelity(
                        original, fidelity_inputs, outs[len(inputs):], fidelity_on, vopts)
            else:
                reason = ("disabled by the caller" if not verify or vopts.samples == 0
                          else f"target '{tgt.name}' cannot execute on this machine")
                manifest["verification"] = {"performed": False, "reason": reason}
            bar.stage("write")
            clock.begin("write")
            for record in result.stats["passes"]:
                clock.add_part(record["pass"], record.get("seconds", 0.0), stage="passes")
            manifest["compile_seconds"] = clock.to_json()
            write_manifest(staging, manifest)
            verification = manifest["verification"]
            if verification.get("performed") and not verification["passed"]:
                raise VerificationFailedError(
                    f"the {tgt.name} artifact does not match the "
                    f"{'compressed program' if lossy else 'original model'}: "
                    f"max-abs {verification['max_abs']:.3g}, cosine "
                    f"{verification['cosine']:.6f} (atol={vopts.atol:g}, rtol={vopts.rtol:g}); "
                    "rerun with --check-each-pass to find the pass responsible"
                )
            stage.commit()
    return CompileResult(program, original, tgt, os.path.abspath(final_dir), artifacts, manifest)


class SharedWeightsGuard(Instrument):
    """The working program shares its weight tensors with the original (which verification
    and fidelity read): a pass that trains (``trains_weights`` or one of ``TRAINING``) gets
    private copies before it runs; any other pass that changed a shared weight in place is
    named (the original would no longer be the model given)."""

    TRAINING = frozenset({"qat", "sparse-finetune", "distill"})

    def before_pass(self, label: str, pass_: Any, program: Any) -> None:
        if getattr(pass_, "trains_weights", False) or getattr(pass_, "name", "") \
                in self.TRAINING:
            program.own_weights()

    def after_pass(self, label, pass_, program, result, record) -> None:
        changed = program.shared_weights_changed()
        if changed:
            raise EdgeccError(
                f"pass '{label}' changed {len(changed)} weight(s) in place "
                f"({', '.join(changed[:3])}), which compile shares with the original "
                "model: the pass must replace weights (Program.set_tensor) or set "
                "trains_weights = True")


def _artifact_entry(directory: str, artifact: Artifact) -> dict[str, Any]:
    path = os.path.join(directory, artifact.path)
    return {"path": artifact.path, "kind": artifact.kind, "bytes": os.path.getsize(path),
            "sha256": sha256_of(path), "description": artifact.description}


def _run_all(runner: Any, batches: list[tuple[Any, ...]]) -> list[tuple[Any, ...]]:
    """The runner's outputs for every input set (in one call where the runner batches:
    an emulated target pays seconds per launch)."""
    if hasattr(runner, "run_many"):
        return list(runner.run_many(batches)) if batches else []
    return [runner.run(*b) for b in batches]


def _verify(reference: Program, inputs: list[tuple[Any, ...]], outs: list[Any],
            vopts: VerifyOptions, lossy: list[str] | None = None,
            original: Program | None = None) -> dict[str, Any]:
    # a compressed program's constant weights dequantized once for all its runs, not per
    # run (the same values: edgecc.simulate)
    run = ConstantDequantized(reference).run if lossy else reference.run
    refs = [run(*x) for x in inputs]
    origs = [original.run(*x) for x in inputs] if lossy and original is not None else []
    metrics = compare_outputs(refs, outs, atol=vopts.atol, rtol=vopts.rtol)
    if lossy:
        # Quantized networks amplify float differences: a value within float error of a
        # rounding tie takes the neighbouring code on the target, and the flips compound
        # with depth (1e-6 relative noise on MiniLM's embeddings moves w8a8 outputs to
        # cosine 0.994). So the artifact passes when it is allclose, or within
        # ``quantized_cosine``, or adds less error to the simulator's output than
        # quantization itself added to the original's (SQNR comparison, same inputs).
        quant_sqnr = compare_outputs(origs, refs, atol=0.0, rtol=0.0)["sqnr_db"] if origs \
            else float("inf")
        metrics["quantization_sqnr_db"] = quant_sqnr
        metrics["passed"] = bool(metrics["passed"]
                                 or metrics["cosine"] >= vopts.quantized_cosine
                                 or metrics["sqnr_db"] >= quant_sqnr)
        return {"performed": True,
                "metric": f"allclose(atol, rtol), or cosine >= {vopts.quantized_cosine:g}, "
                          "or SQNR to the simulator >= the quantization's own SQNR, on "
                          "fresh random inputs",
                "samples": vopts.samples, "quantized_cosine": vopts.quantized_cosine,
                "reference": "compressed program (after the lossy passes "
                             + ", ".join(lossy) + "), PyTorch eager", **metrics}
    return {"performed": True, "metric": "allclose(atol, rtol) on fresh random inputs",
            "samples": vopts.samples, "reference": "original model, PyTorch eager",
            **metrics}


def _fidelity_inputs(original: Program, vopts: VerifyOptions, calibration: Any
                     ) -> tuple[str, list[tuple[Any, ...]]]:
    """What fidelity is measured on: calibration batches when there are some (real data),
    else fresh random inputs."""
    batches = [tuple(b) if isinstance(b, (tuple, list)) else (b,)
               for b in list(calibration or [])[: max(vopts.samples, 1)]]
    if batches:
        return "calibration batches", batches
    return "fresh random inputs", [fresh_inputs(original, seed=2000 + i)
                                   for i in range(vopts.samples)]


def _fidelity(original: Program, batches: list[tuple[Any, ...]], outs: list[Any], on: str,
              vopts: VerifyOptions) -> dict[str, Any]:
    """How far the artifact is from the original model (lossy pipelines)."""
    refs = [original.run(*b) for b in batches]
    m = compare_outputs(refs, outs, atol=vopts.atol, rtol=vopts.rtol)
    return {"on": on, "samples": len(batches), "reference": "original model, PyTorch eager",
            "cosine": m["cosine"], "sqnr_db": m["sqnr_db"], "max_abs": m["max_abs"]}


def _lossy_passes(records: list[dict[str, Any]]) -> list[str]:
    out = []
    for r in records:
        if "passes" in r:  # a fixpoint group
            out += _lossy_passes(r["passes"])
        elif r.get("modified") and not r.get("lossless", True):
            out.append(r["pass"])
    return out


def _quantized_before(original: Program) -> list[str]:
    """A program given to ``compile`` already quantized by edgecc's passes is verified as a
    quantized one (a target may round its activations more coarsely: the x86 weight-only
    kernel's bfloat16 prefill), as if the quantization had run inside ``compile``."""
    from edgecc.quant import quantized_by_edgecc

    return ["quantize (run before compile)"] if quantized_by_edgecc(original) else []


def _version() -> str:
    from edgecc import __version__

    return __version__


def load_compiled(output_dir: str) -> tuple[dict[str, Any], Target, list[TensorSpec]]:
    """Manifest, target and input specs of a directory ``compile`` wrote."""
    manifest = read_manifest(output_dir)
    target_cls = default_target_registry().get(manifest["target"]["name"])
    return manifest, target_cls(), [TensorSpec.from_json(s) for s in manifest["inputs"]]


__all__ = ["DEFAULT_RECIPE", "CompileResult", "compile", "load_compiled"]
