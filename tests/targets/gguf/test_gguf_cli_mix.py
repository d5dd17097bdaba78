"""`edgecc compile model.gguf -t gguf --target-option mix=Q4_K_M`: llama.cpp's Q4_K_M mix
from the command line (the gguf-mix pass after the pipeline), on a tiny random Llama GGUF
(rows of 256 and 320); an unknown mix is a one-line error, exit 2, nothing written, and a
calibrated algorithm without --calib is refused before any pass runs."""

import contextlib
import io
import json

import gguf
import numpy as np
import pytest

from edgecc.targets.gguf import GgufOptions, GgufTarget
from tests.targets.gguf import tiny


@pytest.fixture(scope="module")
def f32_gguf(tmp_path_factory):
    folder = tmp_path_factory.mktemp("f32")
    GgufTarget().lower(tiny.trace(tiny.llama_256(layers=1)), str(folder),
                       GgufOptions(check=False))
    return folder / "model.gguf"


def _cli(*args):
    from edgecc.cli import main

    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(args))
        except SystemExit as exc:
            code = exc.code
    return code, out.getvalue(), err.getvalue()


def test_mix_option_writes_llamacpps_q4_k_m_types(f32_gguf, tmp_path):
    out = tmp_path / "q4km"
    code, _, err = _cli("compile", str(f32_gguf), "-t", "gguf", "--target-option",
                        "mix=Q4_K_M", "--target-option", "check=false", "-o", str(out),
                        "--no-verify", "--json")
    assert code == 0, err
    types = {t.name: t.tensor_type.name for t in gguf.GGUFReader(str(out / "model.gguf")).tensors}
    # layer 0 is one use_more_bits picks: attn_v / ffn_down Q6_K (ffn_down's rows of 320:
    # Q8_0, llama.cpp's fallback); the other projections Q4_K (Q4_K's own grid); output Q6_K
    assert types["blk.0.attn_q.weight"] == types["blk.0.ffn_up.weight"] == "Q4_K"
    assert types["blk.0.attn_v.weight"] == types["output.weight"] == "Q6_K"
    assert types["blk.0.ffn_down.weight"] == "Q8_0"
    manifest = json.loads((out / "manifest.json").read_text())
    text = json.dumps(manifest)
    assert "gguf-mix" in text and '"algorithm": "rtn"' in text  # no --calib: RTN
    # a Q4_K tensor of the file decodes (gguf, llama.cpp's reader); bit-exactness and
    # llama.cpp running such files: test_q4k.py, test_gguf_mix.py (check=false here: CI time)
    reader = gguf.GGUFReader(str(out / "model.gguf"))
    q4k = next(t for t in reader.tensors if t.name == "blk.0.ffn_up.weight")
    values = gguf.quants.dequantize(np.asarray(q4k.data), q4k.tensor_type)
    assert np.isfinite(values).all() and values.std() > 0


def test_unknown_mix_is_one_line_exit_2_nothing_written(f32_gguf, tmp_path):
    out = tmp_path / "o"
    code, _, err = _cli("compile", str(f32_gguf), "-t", "gguf", "--target-option",
                        "mix=Q5_K_M", "-o", str(out))
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and "Q4_K_M" in lines[0] and "Traceback" not in err
    assert not out.exists()


def test_a_calibrated_algorithm_without_calibration_is_refused_before_any_pass_runs():
    # the pipeline validates every pass before the first runs: compile stops with this one
    # line (an OptionError: exit 2), nothing written
    from edgecc.errors import OptionError
    from edgecc.llm.gguf_mix import GgufMix, GgufMixOptions
    from edgecc.pass_base import PassContext

    with pytest.raises(OptionError, match="needs calibration data"):
        GgufMix().validate(None, GgufMixOptions(algorithm="gptq"), PassContext())
    GgufMix().validate(None, GgufMixOptions(), PassContext())  # auto: RTN without data
