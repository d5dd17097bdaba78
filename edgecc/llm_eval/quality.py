"""The quality comparison of issue 17 on a real GGUF decoder: edgecc's quantizations
(RTN / GPTQ / AWQ int4 in the Q4_0 and Q4_1 layouts, GPTQ in llama.cpp's Q4_K_M type mix,
Q8_0) as edgecc programs, as edgecc host builds (``host``: the TVM decoder library built from
the same quantized program, run by ``edgecc.llm.Generator``) and as ``-t gguf`` files run by
llama.cpp, beside llama.cpp's own quantizer (``llamacpp_quant``) on the same float weights,
on the same text windows.

Used by ``bench/llm_quality.py`` (the full table) and the slow tests (a small slice).
Calibration (GPTQ / AWQ) reads the calibration split of the text, perplexity the test
split: no test tokens are seen while quantizing.
"""

from __future__ import annotations

import dataclasses
import os
import time
from collections.abc import Callable, Collection
from typing import Any

import torch

from edgecc.llm_eval import host as host_build
from edgecc.llm_eval import llamacpp_quant
from edgecc.llm_eval.perplexity import llamacpp_perplexity, program_perplexity, windows
from edgecc.llm_eval.text import opticks
from edgecc.llm_eval.tokenizer import build_tokenizer, encode, tokenizer_fields
from edgecc.program import Program

_SYM = dict(scheme="w4a16", group_size=32, weight_dtype="int4", weight_symmetric=True)
_ASYM = dict(scheme="w4a16", group_size=32)
_Q8 = dict(scheme="w8a16", group_size=32, weight_granularity="per-group",
           scale_dtype="float16")

# name -> (quantize options, or None for the float program; GGUF layout it is written as)
VARIANTS: dict[str, tuple[dict[str, Any] | None, str]] = {
    "fp32": (None, "F32"),
    "q8_0": (_Q8, "Q8_0"),
    "rtn_q4_0": (_SYM, "Q4_0"),
    "gptq_q4_0": ({**_SYM, "algorithm": "gptq"}, "Q4_0"),
    "awq_q4_0": ({**_SYM, "algorithm": "awq", "awq_fold": True}, "Q4_0"),
    "rtn_q4_1": (_ASYM, "Q4_1"),
    "gptq_q4_1": ({**_ASYM, "algorithm": "gptq"}, "Q4_1"),
    "awq_q4_1": ({**_ASYM, "algorithm": "awq", "awq_fold": True}, "Q4_1"),
    # llama.cpp's Q4_K_M per-tensor types (edgecc.llm.quantize_gguf_mix): GPTQ on Q4_K's
    # own grid where llama.cpp puts Q4_K, ggml's Q5_0 / Q8_0 / Q6_K where it puts those
    "gptq_q4_k": ({"mix": "Q4_K_M", "algorithm": "gptq"}, "Q4_K_M mix"),
}


@dataclasses.dataclass(frozen=True)
class Setup:
    ctx: int = 128
    windows: int = 8
    calib_seqs: int = 8
    calib_len: int = 128
    threads: int = 2
    awq_grid: int = 20
    awq_clip: bool = True  # AWQ's weight-clipping search (about half of AWQ's time)


def token_data(gguf_path: str, setup: Setup) -> tuple[list[list[int]], list[tuple[torch.Tensor]]]:
    """Test windows and calibration batches ``[(input_ids [1, calib_len],), ...]``."""
    tok = build_tokenizer(tokenizer_fields(gguf_path))
    test = windows(encode(tok, opticks("test")), setup.ctx, setup.windows)
    calib = windows(encode(tok, opticks("calibration")), setup.calib_len, setup.calib_seqs)
    return test, [(torch.tensor([w], dtype=torch.int64),) for w in calib]


def quantized(program: Program, options: dict[str, Any] | None,
              calibration: list[tuple[torch.Tensor]], setup: Setup) -> tuple[Program, dict]:
    from edgecc.pass_base import PassContext
    from edgecc.registry import default_pass_registry

    Quantize = default_pass_registry().get("quantize")  # noqa: N806 - the pass class

    if options is None:
        return program, {}
    opts = dict(options)
    if opts.get("algorithm") == "awq":
        opts["awq_grid"] = setup.awq_grid
        opts["awq_clip"] = setup.awq_clip
    if "mix" in opts:  # a GGUF type mix: quantize_gguf_mix (the quantize pass inside)
        from edgecc.llm.gguf_mix import quantize_gguf_mix

        mix, algorithm = opts.pop("mix"), opts.pop("algorithm")
        if algorithm == "awq":
            opts["awq_fold"] = True
        mixed, report = quantize_gguf_mix(program, mix, calibration=calibration,
                                          algorithm=algorithm, options=opts)
        return mixed, {"mix": report["counts"], **report["quantize"]}
    result = Quantize()(program.copy(), Quantize.Options(error_batches=1, **opts),
                        context=PassContext(calibration=calibration))
    return result.program, result.stats


def write_gguf(program: Program, folder: str, *, as_float: bool = False) -> tuple[str, dict]:
    from edgecc.registry import default_target_registry

    gguf_target = default_target_registry().get("gguf")
    os.makedirs(folder, exist_ok=True)
    lowered = gguf_target().lower(program, folder, gguf_target.Options(
        check=False, carry_quantization=not as_float))
    return os.path.join(folder, "model.gguf"), lowered.report["tensor_types"]


def run(gguf_path: str, workdir: str, setup: Setup, *, variants: list[str],
        llamacpp_ftypes: list[str], llamacpp: bool = True,
        on_row: Callable[[dict[str, Any]], None] | None = None,
        files: Collection[str] | None = None, base: Program | None = None,
        data: tuple[list[list[int]], list[tuple[torch.Tensor]]] | None = None,
        host: Collection[str] = ()) -> list[dict[str, Any]]:
    """Every row: ``{"name", "by", "layout", "program_ppl", "llamacpp_ppl", "bytes", ...}``.

    ``files``: the variants written as GGUF files (default all; a variant without its file
    has no ``bytes`` / ``tensor_types`` / ``llamacpp_ppl``); ``base``: ``edgecc.load`` of
    the file, ``data``: ``token_data`` (when the caller has them already); ``host``: the
    variants also built as edgecc host bundles (``host.host_bundle`` of the row's program,
    KV cache and prefill of ``setup.ctx``) and scored by them: ``host_ppl``,
    ``host_bytes``, ``host_transplanted``, ``host_check_max_abs``."""
    import edgecc

    unknown = sorted(set(host) - set(variants))
    if unknown:
        from edgecc.errors import EdgeccError

        raise EdgeccError(f"host build asked for '{unknown[0]}', which is not among the "
                          f"variants measured ({', '.join(variants) or 'none'})")
    test, calib = data or token_data(gguf_path, setup)
    if base is None:
        base = edgecc.load(gguf_path)
    rows: list[dict[str, Any]] = []

    def add(row: dict[str, Any]) -> None:
        rows.append(row)
        if on_row:
            on_row(row)

    def llamacpp_rows(f32_path: str) -> None:
        for ftype in llamacpp_ftypes:
            path = os.path.join(workdir, f"llamacpp_{ftype}.gguf")
            t0 = time.perf_counter()
            types = llamacpp_quant.quantize_gguf(f32_path, path, ftype)
            add({"name": f"llama.cpp {ftype}", "by": "llama.cpp (ggml_quantize_chunk)",
                 "layout": ftype, "tensor_types": types, "bytes": os.path.getsize(path),
                 "program_ppl": None,
                 "llamacpp_ppl": llamacpp_perplexity(path, test,
                                                     threads=setup.threads).perplexity,
                 "seconds": {"quantize_and_ppl": round(time.perf_counter() - t0, 1)}})

    f32_path = None
    if llamacpp_ftypes and "fp32" not in variants:
        f32_path, _ = write_gguf(base, os.path.join(workdir, "fp32"), as_float=True)
        llamacpp_rows(f32_path)
    for name in variants:
        options, layout = VARIANTS[name]
        t0 = time.perf_counter()
        program, stats = quantized(base, options, calib, setup)
        q_seconds = round(time.perf_counter() - t0, 1)
        path, types = None, None
        write = (files is None or name in files) or (options is None and llamacpp_ftypes)
        if write:
            path, types = write_gguf(program, os.path.join(workdir, name),
                                     as_float=options is None)
        if options is None:
            f32_path = path
        t1 = time.perf_counter()
        row = {"name": name, "by": "edgecc", "layout": layout, "tensor_types": types,
               "bytes": os.path.getsize(path) if path else None,
               "quantize_seconds": q_seconds,
               "program_ppl": program_perplexity(program, test).perplexity,
               "seconds": {"quantize": q_seconds, "write": round(t1 - t0 - q_seconds, 1),
                           "program_ppl": round(time.perf_counter() - t1, 1)}}
        if stats.get("awq"):
            row["awq"] = {k: v for k, v in stats["awq"].items() if k != "not_folded"}
        if llamacpp and path:
            row["llamacpp_ppl"] = llamacpp_perplexity(path, test,
                                                      threads=setup.threads).perplexity
        if name in host:
            t2 = time.perf_counter()
            built = host_build.host_bundle(program, os.path.join(workdir, f"{name}_host"),
                                           ctx=setup.ctx, model=gguf_path)
            t3 = time.perf_counter()
            row["host_ppl"] = host_build.host_perplexity(built["dir"], test).perplexity
            row["host_bytes"] = host_build.bundle_bytes(built["dir"])
            row["host_transplanted"] = built["transplanted"]
            row["host_check_max_abs"] = built["check_max_abs"]
            row["seconds"]["host_build"] = round(t3 - t2, 1)
            row["seconds"]["host_ppl"] = round(time.perf_counter() - t3, 1)
        add(row)
        del program
        if options is None and llamacpp_ftypes and path:
            llamacpp_rows(path)
    return rows
