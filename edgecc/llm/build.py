"""Build a decoder's prefill and decode steps for a TVM target into one bundle.

    dec = edgecc.llm.export_decoder(model, max_seq_len=256)
    built = edgecc.llm.build_decoder(dec, "host", "out/", prefill_len=32)
    gen = built.generator()                       # edgecc.llm.Generator (host bundles)

Bundle::

    out/decoder.json        format, DecoderConfig, prefill_len, target, per-phase compile
                            seconds and verification, tokenizer folder
    out/prefill/            edgecc.compile of the step with T = prefill_len (model.so,
                            manifest.json, README.txt)
    out/decode/             edgecc.compile of the step with T = 1
    out/tokenizer/          the tokenizer (transformers' save_pretrained: JSON, no pickle)
    out/generate.py         (arm64) the numpy + TVM runtime generator, ``runtime.py``

Each phase is verified by ``edgecc.compile`` as any program is (the artifact against the
program on fresh inputs). Everything is written to a staging folder and moved into place
at the end: a failure leaves nothing behind. The weights are in both libraries (each
``model.so`` binds its constants): a bundle is twice the weight bytes.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
import time
from typing import Any

from edgecc.errors import EdgeccError
from edgecc.llm import runtime
from edgecc.llm.decoder import DecoderPrograms
from edgecc.output_dir import StagedOutput, check_output_dir
from edgecc.target import split_target_spec

FORMAT = "edgecc-decoder/1"
TARGETS = ("host", "arm64")
TOKENIZER_DIR = "tokenizer"
BOARD_RUNNER = "generate.py"


@dataclasses.dataclass
class DecoderBuild:
    output_dir: str
    report: dict[str, Any]

    def generator(self, num_threads: int = 0) -> runtime.Generator:
        if self.report["target"] != "host":
            raise EdgeccError(f"a {self.report['target']} bundle runs on its device (or "
                              "under qemu: edgecc generate); Generator runs host bundles")
        return runtime.Generator(self.output_dir, num_threads)


def build_decoder(decoder: DecoderPrograms, target: str = "host", output_dir: str = "",
                  *, prefill_len: int = 32, target_options: dict[str, Any] | None = None,
                  force: bool = False, verify: bool = True, progress: bool | None = None
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
    stage = StagedOutput(output_dir)
    with stage as staging:
        for phase, tokens in (("prefill", prefill_len), ("decode", 1)):
            program = decoder.prefill(tokens) if phase == "prefill" else decoder.decode()
            t0 = time.perf_counter()
            result = edgecc.compile(program, target=target, pipeline="",
                                    output_dir=os.path.join(staging, phase),
                                    target_options=target_options, verify=verify,
                                    progress=progress)
            phases[phase] = {"dir": phase, "tokens": tokens,
                             "compile_seconds": round(time.perf_counter() - t0, 2),
                             "verification": result.report["verification"]}
        tokenizer = None
        if decoder.tokenizer is not None:
            decoder.tokenizer.save_pretrained(os.path.join(staging, TOKENIZER_DIR))
            tokenizer = TOKENIZER_DIR
        if name != "host":
            shutil.copyfile(runtime.__file__, os.path.join(staging, BOARD_RUNNER))
        report = {"format": FORMAT, "target": name, "target_spec": target,
                  "config": config.to_json(), "prefill_len": prefill_len,
                  "tokenizer": tokenizer, "phases": phases,
                  "source": (decoder.gguf_meta or {}).get("source", decoder.program.source)}
        with open(os.path.join(staging, runtime.CONFIG_FILE), "w") as f:
            json.dump(report, f, indent=2)
        stage.commit()
    return DecoderBuild(os.path.abspath(output_dir), report)


def load_tokenizer(bundle: str) -> Any:
    """The bundle's tokenizer (transformers), or None when it was built without one."""
    report = runtime.read_config(bundle)
    if not report.get("tokenizer"):
        return None
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(os.path.join(bundle, report["tokenizer"]))
