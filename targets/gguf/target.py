"""``-t gguf``: a GGUF file for llama.cpp, from a Llama-family decoder program.

The folder has the shape of every target: ``presets.py`` (what the file serves and which
quantization it carries), ``partition.py`` (the decoder recognised tensor by tensor, and
the legalization before lowering), ``lower.py`` (the GGUF writer), ``runner.py`` (llama.cpp
through xllamacpp, compared with the program) and the bundle's ``README.txt``.

``compile()``'s generic verification compares raw outputs; llama.cpp's API gives
log-probabilities and no KV cache tensors, so the lowering checks the file itself
(``check``): it runs the program's example tokens through llama.cpp and the program and
reports max-abs logit / log-probability differences, top-1 agreement and KL in the
manifest's ``lowering`` section; an F32 file whose logits disagree beyond
``F32_TOLERANCE`` fails (a wrong tensor, not float error: tests hold F32 files to 1e-4).
"""

from __future__ import annotations

import dataclasses
import functools
import os
from typing import Any, Literal

from edgecc.errors import LoweringError
from edgecc.pipeline_text import PassStep
from edgecc.program import Program
from edgecc.target import Availability, Lowered, Target
from edgecc.targets.gguf import partition, presets
from edgecc.targets.gguf.lower import MODEL, lower_program
from edgecc.targets.gguf.runner import compare, load_runner

F32_TOLERANCE = 1e-3  # max-abs logit, F32 files (measured: 5e-7 tiny models, 2.6e-5 SmolLM2)


@dataclasses.dataclass(frozen=True)
class GgufOptions:
    float_type: Literal["F32", "F16"] = "F32"  # how float 2-D weights are stored
    context_length: int = 0  # 0: the source GGUF's, else 2048
    name: str = ""  # general.name ("" = the source GGUF's, else the program's source)
    # false: quantized weights are written as float (their exact dequantized values), a
    # float file llama.cpp computes the program's own numbers with
    carry_quantization: bool = True
    check: bool = True  # run the file with llama.cpp (xllamacpp) on the example tokens
    # llama.cpp's per-tensor type mix, applied after the pipeline (the gguf-mix pass,
    # edgecc.llm.gguf_mix), as `llama-quantize in.gguf out.gguf Q4_K_M`; "none": write the
    # program's own quantization
    mix: Literal["none", "Q4_K_M"] = "none"
    # the mix's Q4_K tensors: auto = GPTQ with --calib data, round-to-nearest without
    mix_algorithm: Literal["auto", "gptq", "awq", "rtn"] = "auto"

    def __post_init__(self) -> None:
        if self.float_type not in presets.FLOAT_TYPES:
            raise ValueError(f"float_type must be one of {', '.join(presets.FLOAT_TYPES)}")
        if self.context_length < 0:
            raise ValueError("context_length must be >= 0")


@functools.lru_cache(maxsize=1)
def _versions() -> tuple[dict[str, str], list[str]]:
    from importlib.metadata import PackageNotFoundError, version

    found, missing = {}, []
    for package in ("gguf", "xllamacpp"):
        try:
            found[package] = version(package)
        except PackageNotFoundError:
            missing.append(package)
    return found, missing


class GgufTarget(Target):
    """GGUF v3 (llama architecture) for llama.cpp, checked by running it with llama.cpp."""

    name = "gguf"
    description = "a GGUF file for llama.cpp (Llama-family decoders; checked with xllamacpp)"
    Options = GgufOptions
    can_execute = False  # see the module docstring: the lowering checks the file instead
    quantization = presets.QUANTIZATION

    def availability(self) -> Availability:
        found, missing = _versions()
        if "gguf" in missing:
            return Availability(False, "missing gguf: pip install -c constraints.txt gguf")
        detail = ", ".join(f"{k} {v}" for k, v in found.items())
        if missing:
            detail += " (no xllamacpp: files are written but not run; pip install xllamacpp)"
        return Availability(True, detail)

    def legalization(self, options: GgufOptions) -> tuple[PassStep, ...]:
        if options.mix == "none":
            return partition.LEGALIZATION
        from edgecc.llm.gguf_mix import GgufMix, GgufMixOptions

        mix = GgufMixOptions(ftype=options.mix, algorithm=options.mix_algorithm)
        return (*partition.LEGALIZATION, PassStep(GgufMix, mix))

    def lower(self, program: Program, output_dir: str, options: GgufOptions) -> Lowered:
        self.require_available()
        lowered = lower_program(program, output_dir, options)
        if options.check and "xllamacpp" in _versions()[0]:
            lowered.report["llamacpp_check"] = _check(program, output_dir, lowered)
        return lowered

    def load(self, output_dir: str, manifest: dict[str, Any]) -> Any:
        return load_runner(output_dir, manifest)

    @staticmethod
    def llama_cpp(path: str, *, n_ctx: int = 256, threads: int = 1) -> Any:
        """Any GGUF file loaded by llama.cpp (xllamacpp), for tools in the core that reach
        the target through the registry (edgecc.llm_eval's perplexity)."""
        from edgecc.targets.gguf.runner import LlamaCppRunner

        return LlamaCppRunner(path, n_ctx=n_ctx, threads=threads)

    def not_verified(self, options: GgufOptions) -> list[str]:
        out = ["compile()'s raw-output comparison (llama.cpp gives log-probabilities and no "
               "KV cache tensors): the lowering's llamacpp_check compares log-probabilities"]
        if not options.check or "xllamacpp" not in _versions()[0]:
            out.append("running the file with llama.cpp (check=false or no xllamacpp)")
        return out


def _check(program: Program, output_dir: str, lowered: Lowered) -> dict[str, Any]:
    example = program.example_inputs[0] if program.example_inputs else None
    if example is None or example.is_floating_point() or example.dim() != 2:
        return {"performed": False, "reason": "the program's first input is not token ids"}
    result = compare(program, os.path.join(output_dir, MODEL), example[0])
    floats = set(lowered.report["tensor_types"]) <= {"F32"}
    result["performed"] = True
    if floats:
        result["tolerance"] = F32_TOLERANCE
        if result["max_abs_logit"] > F32_TOLERANCE:
            raise LoweringError(f"-t gguf: llama.cpp's logits differ from the program's by "
                                f"{result['max_abs_logit']:.3g} "
                                f"(> {F32_TOLERANCE:g}) on the example tokens")
    return result
