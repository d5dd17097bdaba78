"""llama.cpp's own quantization of a GGUF file, as the baseline edgecc's files are held to.

xllamacpp does not expose ``llama_model_quantize``, but its library exports ggml's
quantizer, ``ggml_quantize_chunk`` (the function ``llama_model_quantize`` calls for every
tensor, incl. the K-quants' ``make_qkx`` fits), which this module calls through ctypes
on every 2-D weight of an F32 GGUF. The tensor types follow ``llama_tensor_get_type`` of
llama.cpp for the Llama architecture, restated here:

* the output matrix (``output``, or ``token_embd`` when the embeddings are tied): Q6_K,
  Q8_0 for ftype Q8_0;
* Q4_K_M: ``attn_v`` and ``ffn_down`` of the layers ``use_more_bits`` picks (the first and
  last eighth, and every third in between) Q6_K; the rest Q4_K;
* Q4_0 / Q4_1 / Q8_0: the rest of that type;
* a K-quant on rows that are not a multiple of 256 falls back as llama.cpp does
  (Q4_K -> Q5_0, Q6_K -> Q8_0); 1-D tensors (norms) stay F32.
"""

from __future__ import annotations

import ctypes
import functools
import os
import re
from typing import Any

import numpy as np

from edgecc.errors import EdgeccError

FTYPES = ("Q8_0", "Q4_0", "Q4_1", "Q4_K_M")
_FALLBACK = {"Q4_K": "Q5_0", "Q5_K": "Q5_1", "Q6_K": "Q8_0"}
_FILE_TYPE = {"Q8_0": 7, "Q4_0": 2, "Q4_1": 3, "Q4_K_M": 15}


@functools.lru_cache(maxsize=1)
def _ggml() -> Any:
    import importlib.util

    spec = importlib.util.find_spec("xllamacpp")
    if spec is None or not spec.submodule_search_locations:
        raise EdgeccError("llama.cpp's quantizer comes from xllamacpp: pip install -c "
                          "constraints.txt xllamacpp")
    folder = list(spec.submodule_search_locations)[0]
    lib = ctypes.CDLL(os.path.join(folder, next(f for f in os.listdir(folder)
                                               if f.startswith("xllamacpp") and
                                               f.endswith(".so"))))
    fn = lib.ggml_quantize_chunk
    fn.restype = ctypes.c_size_t
    fn.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p, ctypes.c_int64,
                   ctypes.c_int64, ctypes.c_int64, ctypes.c_void_p]
    return fn


def quantize_rows(x: np.ndarray, ggml_type: str) -> np.ndarray:
    """ggml's quantization of a float matrix ``[rows, cols]`` -> bytes ``[rows, row bytes]``."""
    import gguf

    qt = gguf.GGMLQuantizationType[ggml_type]
    block, size = gguf.GGML_QUANT_SIZES[qt]
    src = np.ascontiguousarray(x, dtype=np.float32)
    rows, cols = src.shape
    dst = np.zeros((rows, cols // block * size), np.uint8)
    written = _ggml()(int(qt), src.ctypes.data, dst.ctypes.data, 0, rows, cols, None)
    if written != dst.nbytes:
        raise EdgeccError(f"ggml_quantize_chunk wrote {written} bytes, expected {dst.nbytes}")
    return dst


def _use_more_bits(i: int, n: int) -> bool:
    return i < n // 8 or i >= 7 * n // 8 or (i - n // 8) % 3 == 2


def tensor_type(name: str, cols: int, ftype: str, n_layer: int, has_output: bool) -> str:
    """The type llama.cpp gives tensor ``name`` (rows of ``cols``) under ``ftype``."""
    base = {"Q4_K_M": "Q4_K"}.get(ftype, ftype)
    layer = re.match(r"blk\.(\d+)\.", name)
    if name == "output.weight" or (not has_output and name == "token_embd.weight"):
        kind = "Q8_0" if ftype == "Q8_0" else "Q6_K"
    elif ftype == "Q4_K_M" and layer and (".attn_v." in name or ".ffn_down." in name) \
            and _use_more_bits(int(layer.group(1)), n_layer):
        kind = "Q6_K"
    else:
        kind = base
    if kind in _FALLBACK and cols % 256:
        kind = _FALLBACK[kind]
    return kind


def quantize_gguf(src: str, dst: str, ftype: str) -> dict[str, int]:
    """Write ``dst``: the F32 GGUF ``src`` quantized as llama.cpp's ``ftype`` would; returns
    the count of each tensor type."""
    import gguf

    if ftype not in FTYPES:
        raise EdgeccError(f"ftype must be one of {', '.join(FTYPES)}")
    reader = gguf.GGUFReader(src)
    arch = str(reader.fields["general.architecture"].contents())
    n_layer = int(reader.fields[f"{arch}.block_count"].contents())
    names = {t.name for t in reader.tensors}
    writer = gguf.GGUFWriter(dst, arch=arch)
    counts: dict[str, int] = {}
    try:
        for key, field in reader.fields.items():
            if key.startswith("GGUF.") or key in ("general.architecture", "general.file_type"):
                continue
            types = field.types
            writer.add_key_value(key, field.contents(), types[0],
                                 sub_type=types[-1] if len(types) > 1 else None)
        writer.add_file_type(_FILE_TYPE[ftype])
        for t in reader.tensors:
            if t.tensor_type.name != "F32":
                raise EdgeccError(f"'{src}': tensor '{t.name}' is {t.tensor_type.name}; the "
                                  "source must be an F32 GGUF")
            data = np.asarray(t.data)
            shape = tuple(int(s) for s in reversed(t.shape))
            if len(shape) != 2:
                kind, out = "F32", data.reshape(shape)
                writer.add_tensor(t.name, np.ascontiguousarray(out))
            else:
                kind = tensor_type(t.name, shape[1], ftype, n_layer, "output.weight" in names)
                out = quantize_rows(data.reshape(shape), kind)
                writer.add_tensor(t.name, out, raw_dtype=gguf.GGMLQuantizationType[kind])
            counts[kind] = counts.get(kind, 0) + 1
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
    finally:
        writer.close()
    return counts
