"""Issue 17's quality acceptance on the real SmolLM2-135M (a small slice of the text, to fit
CI time; bench/llm_quality.py measures the full table):

* GPTQ and AWQ int4 (g32, Q4_0 layout) have lower perplexity than round-to-nearest;
* edgecc's Q4_0 file (GPTQ), run by llama.cpp, is at least as good as llama.cpp's own Q4_0
  quantization of the same float weights, run the same way.

Calibration: 4 x 64 tokens of Opticks Book 1; perplexity: 2 x 64 tokens of Books 2-3.
AWQ here searches scales only (no clipping search), to fit CI time.
"""

import os

import pytest

from edgecc.llm_eval import llamacpp_perplexity, quality

pytestmark = pytest.mark.slow

# AWQ without its clipping search here (CI time; bench/llm_quality.py runs the full AWQ)
SETUP = quality.Setup(ctx=64, windows=2, calib_seqs=4, calib_len=64, threads=1, awq_grid=10,
                      awq_clip=False)


@pytest.fixture(scope="module")
def data(smollm2_gguf):
    return quality.token_data(smollm2_gguf, SETUP)


@pytest.fixture(scope="module")
def rows(smollm2_gguf, data, tmp_path_factory):
    work = str(tmp_path_factory.mktemp("quality"))
    # only the GPTQ file is read (tensor types, llama.cpp's perplexity): RTN / AWQ are
    # measured as programs and not written (CI time)
    rows = quality.run(smollm2_gguf, work, SETUP, variants=["rtn_q4_0", "gptq_q4_0", "awq_q4_0"],
                       llamacpp_ftypes=["Q4_0"], llamacpp=False, files=["gptq_q4_0"],
                       data=data)
    print({r["name"]: r.get("seconds") for r in rows})
    return work, {r["name"]: r for r in rows}


def test_gptq_and_awq_int4_beat_round_to_nearest(rows):
    _, by_name = rows
    rtn = by_name["rtn_q4_0"]["program_ppl"]
    print({k: r.get("program_ppl") for k, r in by_name.items()})
    assert by_name["gptq_q4_0"]["program_ppl"] < rtn
    assert by_name["awq_q4_0"]["program_ppl"] < rtn
    assert by_name["gptq_q4_0"]["tensor_types"]["Q4_0"] == 210  # 30 layers x 7 linears


def test_edgecc_q4_0_file_is_at_least_as_good_as_llamacpps(rows, data):
    work, by_name = rows
    test, _ = data
    ours = llamacpp_perplexity(os.path.join(work, "gptq_q4_0", "model.gguf"), test, threads=1)
    theirs = by_name["llama.cpp Q4_0"]["llamacpp_ppl"]
    print(f"llama.cpp running edgecc GPTQ Q4_0: {ours.perplexity:.4f}, "
          f"llama.cpp's Q4_0: {theirs:.4f}")
    assert ours.perplexity <= theirs
    assert by_name["llama.cpp Q4_0"]["bytes"] >= os.path.getsize(
        os.path.join(work, "gptq_q4_0", "model.gguf")) * 0.99
