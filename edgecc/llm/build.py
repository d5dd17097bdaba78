"""Build a decoder's prefill and decode steps for a TVM target into one bundle.

    dec = edgecc.llm.export_decoder(model, max_seq_len=256)
    built = edgecc.llm.build_decoder(dec, "host", "out/", prefill_len=32)
    gen = built.generator()                       # edgecc.llm.Generator (host bundles)

Bundle::

    out/decoder.json        format, DecoderConfig, prefill_len, target, per-phase function
                            (or folder), compile seconds and verification, tokenizer folder
    out/model.so            host: ONE TVM library with two functions, prefill (T =
                            prefill_len) and decode (T = 1), the weights stored once
                            (``host_library``)
    out/prefill/, decode/   arm64 (and host with tune_trials): edgecc.compile of each step
                            (model.so, manifest.json, README.txt), weights in each
    out/generate.py         arm64: the board-side generator (numpy + TVM runtime;
                            targets/arm/generate.py)
    out/tokenizer/          the tokenizer (transformers' save_pretrained: JSON, no pickle)
    out/README.txt          what the bundle holds and how to generate with it

Host: both phases are lowered into one Relax module and built once; TVM keeps one copy of
equal constants, so the bundle holds the weights once (measured: a 2-layer Llama, hidden
576, vocabulary 8192, 66.1 MB of fp32 weights, prefill 16: two libraries 132.9 MB, one
library 66.8 MB). Each function is verified against its program on fresh inputs
(``host_library.verify_phase``). arm64 bundles (run under qemu a phase at a time) and
tuned host builds keep one ``edgecc.compile`` a phase, verified as any artifact, with the
weights in both libraries. Everything is written to a staging folder and moved into place
at the end: a failure leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any

from edgecc.errors import EdgeccError
from edgecc.llm import host_library, runtime
from edgecc.llm.decoder import DecoderPrograms
from edgecc.output_dir import StagedOutput, check_output_dir
from edgecc.recipe import VerifyOptions
from edgecc.target import split_target_spec

FORMAT = "edgecc-decoder/1"
# Each phase's artifact against its program on fresh inputs (random caches): float32 error
# grows with depth and with the logits' size; SmolLM2-135M (30 layers, logits ~20)
# measured max-abs 1.15e-3, tiny 2-layer models 2e-7. A wrong kernel is off by O(1).
VERIFY = VerifyOptions(atol=5e-3, rtol=1e-3, samples=1)
TARGETS = ("host", "arm64")
TOKENIZER_DIR = "tokenizer"
README = "README.txt"


@dataclasses.dataclass
class DecoderBuild:
    output_dir: str
    report: dict[str, Any]
    # the static programs each library was compiled from ({"prefill": ..., "decode": ...})
    programs: dict[str, Any] = dataclasses.field(default_factory=dict, repr=False)

    def generator(self) -> runtime.Generator:
        """A ``Generator`` over this bundle (host: TVM here; arm64: under qemu)."""
        return runtime.Generator(self.output_dir)


def build_decoder(decoder: DecoderPrograms, target: str = "host", output_dir: str = "",
                  *, prefill_len: int = 32, target_options: dict[str, Any] | None = None,
                  force: bool = False, verify: bool = True,
                  verify_options: VerifyOptions = VERIFY, progress: bool | None = None
                  ) -> DecoderBuild:
    """Compile ``decoder``'s prefill (``prefill_len`` tokens a step) and decode steps for
    ``target`` (``host`` or ``arm64[:PRESET]``) into ``output_dir``."""
    import edgecc

    name, _ = split_target_spec(target)
    if name not in TARGETS:
        raise EdgeccError(f"decoder bundles are built for {', '.join(TARGETS)}, not '{name}' "
                          "(for llama.cpp: edgecc compile MODEL -t gguf)")
    if not output_dir:
        raise EdgeccError("build_decoder needs an output_dir")
    config = decoder.config
    if not 1 <= prefill_len <= config.max_seq_len:
        raise EdgeccError(f"prefill_len={prefill_len}: must be between 1 and max_seq_len "
                          f"({config.max_seq_len})")
    check_output_dir(output_dir, force=force)
    phases: dict[str, Any] = {}
    programs: dict[str, Any] = {}
    library: dict[str, Any] | None = None
    shared = name == "host" and not (target_options or {}).get("tune_trials")
    stage = StagedOutput(output_dir)
    with stage as staging:
        for phase, tokens in (("prefill", prefill_len), ("decode", 1)):
            if phase == "prefill" and prefill_len == 1:
                continue  # a one-token prefill is the decode step: built once, below
            programs[phase] = decoder.prefill(tokens) if phase == "prefill" \
                else decoder.decode()
        if shared:  # one library, the weights once (host_library)
            library = host_library.lower_phases(programs, staging, target, target_options)
            steps = host_library.load_steps(staging, library["functions"],
                                            library["num_threads"])
            for i, (phase, program) in enumerate(programs.items()):
                phases[phase] = {"function": phase, "tokens": program.input_specs[0].shape[1],
                                 "compile_seconds": library["compile_seconds"],
                                 "verification": (host_library.verify_phase(
                                     steps[phase], program, verify_options, seed=i)
                                     if verify else {"passed": None, "skipped": True})}
            del steps  # the library is moved into place below
        else:
            for phase, program in programs.items():
                t0 = time.perf_counter()
                result = edgecc.compile(program, target=target, pipeline="",
                                        output_dir=os.path.join(staging, phase),
                                        target_options=target_options, verify=verify,
                                        verify_options=verify_options, progress=progress)
                phases[phase] = {"dir": phase, "tokens": program.input_specs[0].shape[1],
                                 "compile_seconds": round(time.perf_counter() - t0, 2),
                                 "verification": result.report["verification"]}
        if name == "arm64":  # the board-side generator (numpy + TVM runtime)
            from edgecc.registry import default_target_registry

            default_target_registry().get(name)().install_generator(staging)
        if prefill_len == 1:
            phases["prefill"] = dict(phases["decode"], compile_seconds=0.0)
            programs["prefill"] = programs["decode"]
        tokenizer = None
        if decoder.tokenizer is not None:
            decoder.tokenizer.save_pretrained(os.path.join(staging, TOKENIZER_DIR))
            tokenizer = TOKENIZER_DIR
        report = {"format": FORMAT, "target": name, "target_spec": target,
                  "target_options": dict(target_options or {}),
                  "config": config.to_json(), "prefill_len": prefill_len,
                  "tokenizer": tokenizer, "phases": phases, "library": library,
                  "source": (decoder.gguf_meta or {}).get("source", decoder.program.source)}
        with open(os.path.join(staging, runtime.CONFIG_FILE), "w") as f:
            json.dump(report, f, indent=2)
        with open(os.path.join(staging, README), "w") as f:
            f.write(_readme(report))
        stage.commit()
    return DecoderBuild(os.path.abspath(output_dir), report, programs)


def _readme(report: dict[str, Any]) -> str:
    c = report["config"]
    lines = [
        f"edgecc decoder bundle ({report['target']}): {report['source']}, {c['family']}, "
        f"{c['n_layer']} layers, {c['n_head']} query / {c['n_kv_head']} KV heads, "
        f"vocabulary {c['vocab_size']}, KV cache of {c['max_seq_len']} positions, prefill "
        f"{report['prefill_len']} tokens a step.",
        "",
        ("model.so: two functions, prefill and decode (the weights once)"
         if report.get("library") else "prefill/model.so and decode/model.so")
        + ": step(input_ids, input_pos, k_cache, v_cache) -> (logits, k_new, v_new), "
        "k/v_cache float32[layers, kv_heads, max_seq_len, head_dim], k/v_new the step's "
        "tokens' entries (written into the cache at input_pos by the caller); "
        "decoder.json: the shapes and how the bundle was built.",
        "",
        "Generate here:",
        "    edgecc generate . --prompt \"Hello\" -n 64 [--temperature 0.8 --top-k 40 "
        "--top-p 0.95 --seed 0]",
    ]
    if report["target"] != "host":
        lines += ["", "On the board (numpy + TVM runtime; tokenizers for --prompt text):",
                  "    python3 generate.py . --prompt \"Hello\" -n 64 [--temperature 0.8 "
                  "--top-k 40 --top-p 0.95 --seed 0]",
                  "Here, edgecc generate runs generate.py under qemu-aarch64 (one emulator "
                  "launch; the tokens/s are the emulator's, not the chip's). Each phase "
                  "also runs as any arm64 artifact: prefill/run_model.py, decode/run_model.py."]
    return "\n".join(lines) + "\n"


def load_tokenizer(bundle: str) -> Any:
    """The bundle's tokenizer (transformers), or None when it was built without one."""
    report = runtime.read_config(bundle)
    if not report.get("tokenizer"):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(os.path.join(bundle, report["tokenizer"]))
