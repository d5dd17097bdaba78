"""C++ text of the int8 library's path-counter queries (spliced into ``x86_int8_source``).

Each ``edgecc_x86_int8_<name>`` packed function takes no arguments and returns how many calls
in this process took one kernel path (a relaxed atomic load of the counter the kernels bump);
tests use them to prove a path ran (and did not silently fall back). Generated from
``COUNTERS`` so that a new counter is one line.

The kernels bump every counter through ``EDGECC_COUNT`` and take their per-call path flags
through ``EDGECC_COUNT_SEEN`` (``x86_int8_source``): both do nothing unless the library global
``edgecc_x86_int8_counters`` (``COUNTING``) is set — at load from ``EDGECC_KERNEL_COUNTERS=1``
(tests/conftest.py and the int8 A/B benches set it), or through the symbol. Off, as users
run the kernels, a query reads what was counted while on (0 when never).
"""

COUNTING = "edgecc_x86_int8_counters"  # library int64: 1 counting, 0 not (the default)

# (exported name after ``edgecc_x86_int8_``, the C++ counter it reads, what it counts)
COUNTERS = (
    ("dw_perm", "dw_perm_calls",
     "how many depthwise convolutions ran on dw_perm (vpermt2b + vpdpbusd) in this process"),
    ("dw_direct", "dw_direct_calls",
     "how many of them ran without the padded copy (dw_direct: small planes)"),
    ("dw_direct_hi", "dw_direct_hi_calls",
     "how many of them wrote their int8 outputs from registers (dw_write_hi: hi32 epilogues)"),
    ("perm_panels", "perm_panels",
     "how many convolution calls built panels by perm_panel (VBMI byte shuffles, not gathers)"),
    ("post16", "post16_calls",
     "how many convolution calls ran their fused float write-back by post16 (AVX-512)"),
    ("vbmi_interleave", "vbmi_interleave",
     "how many convolution calls built 16-byte-run panels by interleave_panel_vbmi"),
    ("post_rows", "post_rows_calls",
     "how many convolution calls wrote back by post16_rows (a tile's rows a call)"),
    ("oc_split", "oc_split_calls",
     "how many convolution calls were pooled by (panel, 8 output channels) items"),
    ("oc_major", "oc_major_calls",
     "how many of them ran their items channel-major (edgecc_x86_int8_oc_major)"),
    ("conv_rows", "conv_rows_calls",
     "how many 1x1 convolution calls were pooled by panels because of conv_pool_rows"),
    ("flip_copies", "flip_copies",
     "how many convolution calls padded their input by pad_rows (vector rows, not the byte loop)"),
    ("conv_bands", "conv_bands",
     "how many convolution calls were pooled by bands of output rows (each its own padded rows)"),
    ("off_folded", "fold_calls",
     "how many of them took the accumulators without adding off (fold_off's table)"),
    ("hi32", "hi32_calls",
     "how many convolutions (and depthwise) wrote back with requant16_hi in this process"),
    ("hi32_ymm", "hi32_ymm_calls",
     "how many convolutions (and depthwise) wrote back with requant8_hi (256-bit) in this process"),
    ("dw_split2", "dw_split2_calls",
     "how many per-channel depthwise calls split stride-2 rows by split_columns2 (shuffles)"),
    ("dw_blocked", "dw_blocked_calls",
     "how many depthwise convolutions ran channel-blocked (dw_block16) in this process"),
)


def _query(name: str, counter: str, what: str) -> str:
    return f"""
// {what}
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_int8_{name}(void*, const TVMFFIAny*, int32_t, TVMFFIAny* result) {{
  result->type_index = kTVMFFIInt; result->zero_padding = 0;
  result->v_int64 = __atomic_load_n(&{counter}, __ATOMIC_RELAXED);
  return 0;
}}
"""


COUNTERS_FFI = "".join(_query(*c) for c in COUNTERS)
