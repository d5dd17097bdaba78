"""Quality of decoder LLMs: perplexity of edgecc programs and of GGUF files run by llama.cpp,
on real English text that ships offline (``text``: Newton's *Opticks*), same windows.

``edgecc eval-ppl MODEL_OR_OUT --ctx 128`` (``cli``) and the Python API::

    from edgecc.llm_eval import evaluate_gguf, program_perplexity, windows
    ids = encode(build_tokenizer(tokenizer_fields("model.gguf")), opticks("test"))
    wins = windows(ids, 128, max_windows=8)
    program_perplexity(program, wins).perplexity
    host_perplexity(host_bundle(program, "out/", ctx=128)["dir"], wins)  # the host build
"""

from edgecc.llm_eval.perplexity import (
    Perplexity, llamacpp_perplexity, module_perplexity, program_perplexity, windows,
)
from edgecc.llm_eval.host import host_bundle, host_perplexity, transplant_weights
from edgecc.llm_eval.text import SOURCE, opticks, read_text
from edgecc.llm_eval.tokenizer import build_tokenizer, encode, tokenizer_fields

__all__ = ["Perplexity", "SOURCE", "build_tokenizer", "encode", "host_bundle",
           "host_perplexity", "llamacpp_perplexity",
           "module_perplexity", "opticks", "program_perplexity", "read_text",
           "tokenizer_fields", "transplant_weights", "windows"]
