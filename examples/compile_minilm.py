"""The main job: all-MiniLM-L6-v2 (real weights, offline) compressed and compiled for this
machine's CPU, with sizes, latency and embedding fidelity on text it was not calibrated on.

Three builds of the same sentence encoder for the host target (TVM), each verified by
``edgecc.compile`` against the program it was compiled from:

* ``fp32``   — lossless graph optimizations only (the ``optimize`` recipe);
* ``w8a8``   — SmoothQuant (α = 0.8) then static INT8 weights and activations, run by the
  integer kernels where this CPU has them (x86 with AVX2: ``targets/tvm/x86_int8``, int8
  GEMMs with the requantization fused; elsewhere the float simulation with int8 weights);
* ``w4a16``  — 4-bit weights in groups of 32, GPTQ, activations float.

Every build and PyTorch eager run with the same 2 threads (``THREADS``: TVM's own default
is half the logical CPUs, one thread on a 2-CPU machine, which once made the fp32 build look
3x slower than eager). ``compile s`` is the manifest's ``compile_seconds`` total; its stages
(load, passes, lowering — TVM relax passes, codegen, link — verification, writing) are in
the summary JSON.

Calibration: 128 sentences of the Python language reference; fidelity: 64 held-out
sentences from scikit-learn's dataset descriptions and the model card (cosine of the
sentence embeddings to the fp32 PyTorch model). Writes ``examples/out/minilm-*/`` and
``examples/out/minilm-summary.json``.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time

import torch

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.dirname(HERE))

import edgecc  # noqa: E402
from edgecc.cli import human_bytes, table  # noqa: E402
from edgecc.logs import quiet_third_party_warnings  # noqa: E402
from edgecc.recipe import load_recipe  # noqa: E402
from examples.minilm import load_minilm, tokenize  # noqa: E402
from examples.text_corpus import calibration_sentences, heldout_sentences  # noqa: E402

OPTIMIZE = load_recipe("optimize").pipeline
BUILDS = {
    "fp32": OPTIMIZE,
    "w8a8": OPTIMIZE + ",smooth-quant{alpha=0.8},quantize{scheme=w8a8},dce",
    "w4a16": OPTIMIZE + ",quantize{scheme=w4a16,group_size=32,algorithm=gptq},dce",
}


def latency_ms(run, batch, repeats: int = 10) -> float:
    run(*batch)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        run(*batch)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


THREADS = 2


def host_options(name: str) -> dict:
    """The host target's options for a build: THREADS TVM workers; for w8a8, the integer
    kernels when this CPU has the x86 ones (AVX2)."""
    options: dict = {"num_threads": THREADS}
    if name == "w8a8":
        from edgecc.targets.tvm import lowering, x86_int8

        options["integer_kernels"] = x86_int8.supported(lowering.llvm_target(None, None))
    return options


def main() -> int:
    torch.set_num_threads(THREADS)
    model, tokenizer = load_minilm()
    calib = tokenize(tokenizer, calibration_sentences(128), batch_size=16)
    held = tokenize(tokenizer, heldout_sentences(64), batch_size=16)
    with torch.no_grad():
        refs = [model(*b) for b in held]
    program = edgecc.trace(model, calib[0])
    print(f"all-MiniLM-L6-v2: {len(calib)} calibration batches, {len(held)} held-out batches "
          f"of 16 sentences x 64 tokens\n")
    eager_ms = latency_ms(lambda *b: model(*b), held[0])
    rows, summary = [], {}
    out = os.path.join(HERE, "out")
    os.makedirs(out, exist_ok=True)
    for name, pipeline in BUILDS.items():
        t0 = time.perf_counter()
        options = host_options(name)
        res = edgecc.compile(program, target="host", pipeline=pipeline, calibration=calib,
                             output_dir=os.path.join(out, f"minilm-{name}"), force=True,
                             target_options=options)
        seconds = time.perf_counter() - t0
        cos = torch.cat([torch.nn.functional.cosine_similarity(res.run(*b), r)
                         for b, r in zip(held, refs)])
        before, after = res.report["model"]["before"], res.report["model"]["after"]
        ms = latency_ms(res.run, held[0])
        v = res.report["verification"]
        summary[name] = {"pipeline": pipeline, "bytes_before": before["bytes"],
                         "bytes_after": after["bytes"], "latency_ms": round(ms, 2),
                         "heldout_mean_cosine": round(cos.mean().item(), 5),
                         "heldout_min_cosine": round(cos.min().item(), 5),
                         "verified": v["passed"], "target_options": options,
                         "compile_seconds": res.report["compile_seconds"],
                         "compile_wall_seconds": round(seconds, 1)}
        rows.append((name, human_bytes(before["bytes"]), human_bytes(after["bytes"]),
                     f"{before['bytes'] / after['bytes']:.2f}x", f"{ms:.1f}",
                     f"{cos.mean().item():.4f}", f"{cos.min().item():.4f}",
                     f"{res.report['compile_seconds']['total']:.1f}",
                     "PASSED" if v["passed"] else "FAILED"))
    print(table(rows, ("build", "bytes before", "after", "smaller", "host ms",
                       "held-out cos", "min cos", "compile s", "verified")))
    int8 = ("integer kernels (x86: AMX tiles, AVX-512 VNNI, AVX-VNNI or AVX2, whichever this "
            "CPU has, picked at run time)") if summary["w8a8"]["target_options"].get(
        "integer_kernels") else "float simulation, int8 weights (no x86 AVX2 here)"
    print(f"\nPyTorch eager fp32: {eager_ms:.1f} ms per batch ({THREADS} threads); host latency "
          f"is the TVM artifact, {THREADS} threads, median of 10; w8a8 runs {int8}.")
    print("held-out cos: cosine of each sentence embedding to fp32 PyTorch, on text the "
          "calibration never saw.")
    with open(os.path.join(out, "minilm-summary.json"), "w") as f:
        json.dump({"eager_ms": round(eager_ms, 2), "builds": summary}, f, indent=2)
    return 0 if all(s["verified"] for s in summary.values()) else 1


if __name__ == "__main__":
    with quiet_third_party_warnings():  # torch's / transformers' deprecation notices
        sys.exit(main())
