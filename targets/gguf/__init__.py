"""The ``gguf`` target: a GGUF file for llama.cpp, checked by running it with llama.cpp."""

from edgecc.targets.gguf.target import GgufOptions, GgufTarget

__all__ = ["GgufOptions", "GgufTarget"]
