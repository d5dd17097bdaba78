"""The end-to-end stage of ``--tune`` on a machine that runs the build: the whole model is
built and timed, with what MetaSchedule measured kernel by kernel and with the choices of
edgecc's hand-written kernels that no kernel-by-kernel search can see, and the build keeps
whichever is fastest — the untuned build being one of the candidates, and the one kept
unless another is faster beyond the measured noise (the rule below), so a tuned build is not
slower than the default one.

    module, database, stats = tune_host(module, target, trials=64)   # tuning.tune, then this
    lowering.build(module, target, "model.so", database=database)    # what was measured best

Candidates (each a library built from ``module``, timed in interleaved rounds in this
process with the target's thread count):

* ``default``: edgecc's default schedule and kernel settings — the measured-default record
  (always the real untuned build, never a stand-in);
* ``tuned``: MetaSchedule's records (only when some kernel took a tuned schedule);
* ``tuned`` (or ``default``) with other ``KernelSettings`` of the x86 kernels, one value for
  the whole model (``x86_kernel_ffi``: the work under which a ``parallel_for`` runs serially,
  scaled by 2^k, k in ``SERIAL_SHIFTS``; and half the pool's tasks per parallel job where
  the pool has more than two workers) — only when the model calls those kernels;
* per call site: each call of an x86 kernel gets its own settings (every job serial, every
  job on the pool, or the default), found by ``site_search`` — the model is run with each
  option at every site while a wrapper times each call site, and a site takes the option
  that made *its* calls faster (per-run medians; ``SITE_GAIN``, in all but one of
  ``SITE_ROUNDS`` rounds);
  the table is then one more whole-model candidate;
* per call site, kernel variants (``end_to_end_sites.site_knob_search``): each knob of
  ``SITE_KNOBS`` (the ``KNOBS`` a kernel reads per call, with nothing cached under its value)
  set at every site its kernel serves, value by value, while the wrappers time each site; a
  site takes the value that made its own calls faster (``SITE_GAIN``, all rounds but one,
  one knob per site) — a knob's best value differs by layer (Winograd or not, the same-size
  3x3 modes, 1x1 pairs, the depthwise row blocks), so one model-wide value loses on some
  layers what it gains on others; the table (``KernelSettings.site_knobs``) is one more
  whole-model candidate, named in the manifest per site
  (``per-call-site kernel variants (2 of 23 calls: site 3 edgecc_x86_fp32_winograd=0, ..)``);
* kernel variants (``KNOBS``): each variant switch of the kernels the model calls (the fp32
  convolution's Winograd path ``edgecc_x86_fp32_winograd``, its same-size 3x3 tiles,
  per-task padded windows and stride-2 phase planes; the int8 convolution's pool splits and
  depthwise bands; the thread pool's per-site serial/pooled choice and inline threshold),
  one candidate per value other than the library's default — a knob whose symbol the library lacks is skipped (``knob_candidates``);
  the chosen value is linked as a load-time constructor that writes the knob
  (``settings_module``), and the manifest names it (``kernel variant <symbol> = <value>``).
* the combination (``combination``, a greedy step after the screening): every compatible
  setting of the candidates the rule found faster than the default there (Winograd together with a serial
  threshold, the call-site table and another knob's value, ...) in one candidate, timed in a
  combining pass with the default and the best single candidate; it takes that candidate's
  place in the confirming pass when the rule finds it faster than the default with a lower
  bound. The tuned build links every setting it holds, and the manifest names each.

Per call site works by routing: the build's Relax module calls ``edgecc_site_<i>`` instead
of the kernel ``edgecc_x86_<kind>`` at site ``i`` (``route_call_sites``, the last step of
``lowering.hand_written_kernels`` when the module carries a table); ``settings_module`` links
the wrappers, which set the kernels' setting symbols for the call and restore them::

    before:  lv3 = R.call_dps_packed("edgecc_x86_sconv", (x, w, b), ...)
    after:   lv3 = R.call_dps_packed("edgecc_site_2", (x, w, b), ...)
             # edgecc_site_2: serial_work_log2 = table[2]; each knob k of SITE_KNOBS with
             # site_knob[2][k] set: k = it; edgecc_x86_sconv(...); restore them all

The rule (``verdict``) that keeps the default. Each timed pass runs every candidate once
per round (order reversed every other round, each block after one untimed call), so rounds
pair the candidates. Per round a candidate's statistic is the median of its block; its ratio
to the default's in that round is one sample. Over the ``n`` rounds: ``ratio`` = the median
of those ratios, ``noise`` = 1.4826 x their median absolute deviation (a robust standard
deviation), ``bound = ratio + NOISE_Z x 1.2533 x noise / sqrt(n)`` (an upper bound on the
median ratio; 1.2533 / sqrt(n) is the median's standard error per unit deviation). A candidate
is *faster* when ``bound < 1 - MARGIN`` and it was faster in at least n - 1 of the rounds.
A candidate other than the default is kept only when it is faster in the screening pass over
all candidates (``ROUNDS`` rounds) and again in a confirming pass of the two alone
(``CONFIRM_ROUNDS`` rounds), so the margin it must clear grows with the noise of the
measurement: on a quiet machine 3%, under load more; a candidate whose gain is inside the
noise is not applied. The state guard (``state_guard``, where ``host_state``'s probe runs
and the pool has 2+ threads): the confirming pass reads the host before each round (how much
of a second core the pool's threads get), and the candidate must also be faster over the
rounds read at ``host_state.PARALLEL_STATE`` or more — at least ``PARALLEL_ROUNDS`` of them,
found in up to ``STATE_PASSES`` confirming passes, else it is not applied. On a 2-vCPU guest
whose vCPUs share one core for seconds at a time, 'every kernel job serial' won ResNet-20's
int8 confirming pass (0.949x, 10 of 10 rounds; the probe read 1.02x as that run began) and
the bench then ran that build at 1.55x of the untuned one: a setting that wins only while the
threads share a core is not the target's. (The rule it replaces — the pooled median 2% below
the default's, twice — applied a candidate to BERT's int8 build that the bench later
measured at 1.12x of untuned.)

The budget, stated in the manifest: builds of at most three libraries (default, tuned, the
call-site wrappers: ``library_for``; both Winograd knob values run on the same builds, the
kernels packing a build's Winograd weights at their first call), ``SITE_ROUNDS`` x (options + 1) blocks for the site search,
``end_to_end_sites.SITE_KNOB_ROUNDS`` x (values + 1) blocks per knob for the per-site kernel
variants (at most ``SITE_KNOB_SECONDS``; ResNet-20 fp32: 9 knobs, 138 blocks), ``ROUNDS`` x
candidates blocks for the screening and ``CONFIRM_ROUNDS`` x 2 for the confirmation, a block
being ~``ROUND_SECONDS`` of calls (``MIN_CALLS`` to ``MAX_CALLS``); the record's ``seconds`` is
what it took (about 10 s for a 1 ms model, ~40 s for a 100 ms one, plus the builds). The
kernel variants add ``ROUNDS`` blocks each to the screening (~0.8 s per value): on a CNN with
the fp32 convolution, 5 values, ~4 s; with the int8 one, 2 values, ~1.6 s; none on a model
without them. The combining pass, when the rule found two or more faster: ``ROUNDS`` x
3 blocks (~2.4 s for a 1 ms model).

The choice is recorded in the tuning cache beside MetaSchedule's records (``end_to_end.json``,
keyed by the model, the target, the kernels' sources and the rule's version), so a second
compile of the same model measures nothing. Chosen settings are linked into the library as a
small object that defines the kernels' setting symbols (``with_kernel_settings``).
"""

from __future__ import annotations

import contextvars
import ctypes
import dataclasses
import hashlib
import json
import math
import os
import statistics
import tempfile
import time
from collections.abc import Callable
from typing import Any

from edgecc.errors import LoweringError
from edgecc.instruments import record_stage_part
from edgecc.targets.tvm import host_state

MARGIN = 0.03  # a candidate's bound on its median ratio to the default must be under 1 - this
NOISE_Z = 2.0  # standard errors of the median ratio added to it (the bound; rule above)
SERIAL_SHIFTS = (-2, 2, 4, 63)  # SERIAL_WORK x 2^k; 63: every kernel job serial
ROUNDS, CONFIRM_ROUNDS = 8, 10  # even: the order of the candidates alternates per round
SITE_ROUNDS = 4
SITE_GAIN = 0.05  # a call site takes an option that made its calls this much faster
ROUND_SECONDS = 0.1  # timed calls per candidate and round: about this long, 3 to 200 calls
MIN_CALLS, MAX_CALLS = 3, 200
CACHE_FILE = "end_to_end.json"
RULE_VERSION = 8  # in the cache key: choices made by an older rule are measured again
# the state guard (module docstring): rounds of the confirming pass probed at or above
# host_state.PARALLEL_STATE that a candidate must win; confirming passes run to find them
PARALLEL_ROUNDS, STATE_PASSES = 4, 3
KERNEL_SOURCES = ("x86_fp32_source", "x86_int8_source", "x86_wonly_source",
                  "x86_attention_source", "x86_amx_source")
KERNEL_PREFIX = "edgecc_x86_"
SITE_PREFIX = "edgecc_site_"
SITES_ATTR = "edgecc_kernel_sites"  # a module's per-call-site table (JSON), for the build
SERIAL, POOL = 63, -62  # serial_work_log2 values: every job serial / every job on the pool


@dataclasses.dataclass(frozen=True)
class KernelSettings:
    """The run-time choices of edgecc's hand-written x86 kernels (``x86_kernel_ffi``):
    ``serial_work_log2`` scales each kernel set's serial threshold by 2^k (63: all serial,
    -62: none); ``num_tasks`` caps the pool tasks of a parallel job (0: every worker);
    ``sites``: per call site of an x86 kernel (``call_sites`` order), its own
    ``(serial_work_log2, num_tasks)`` for that call, ``(0, 0)`` = the model's values."""

    serial_work_log2: int = 0
    num_tasks: int = 0
    sites: tuple[tuple[int, int], ...] = ()
    knobs: tuple[tuple[str, int], ...] = ()  # (symbol, value) of ``KNOBS``: kernel variants
    # (call site, symbol, value) of ``SITE_KNOBS``: a kernel variant for that site's calls
    # alone (the wrapper sets it for the call and restores it; ``end_to_end_sites``)
    site_knobs: tuple[tuple[int, str, int], ...] = ()

    def __post_init__(self) -> None:  # JSON gives lists: the same value as tuples
        object.__setattr__(self, "sites", tuple((int(a), int(b)) for a, b in self.sites))
        object.__setattr__(self, "knobs", tuple((str(a), int(b)) for a, b in self.knobs))
        object.__setattr__(self, "site_knobs", tuple(sorted(
            (int(i), str(s), int(v)) for i, s, v in self.site_knobs)))

    @property
    def routed(self) -> bool:
        """Whether a build with these settings routes its kernel calls through the call-site
        wrappers (a per-call-site table of either kind)."""
        return bool(self.sites or self.site_knobs)

    @property
    def is_default(self) -> bool:
        return self == KernelSettings()

    def describe(self) -> str:
        if self.is_default:
            return "default kernel settings"
        parts = []
        if self.serial_work_log2 >= 62:
            parts.append("every kernel job serial")
        elif self.serial_work_log2:
            parts.append(f"serial threshold x2^{self.serial_work_log2}")
        if self.num_tasks:
            parts.append(f"{self.num_tasks} tasks per parallel job")
        parts.extend(f"kernel variant {symbol} = {value}" for symbol, value in self.knobs)
        changed = [s for s in self.sites if s != (0, 0)]
        if changed:
            serial = sum(s[0] >= 62 for s in changed)
            pool = sum(s[0] <= -62 for s in changed)
            tasks = len(changed) - serial - pool
            parts.append(f"per-call-site settings ({len(changed)} of {len(self.sites)} calls: "
                         f"{serial} serial, {pool} always on the pool"
                         + (f", {tasks} other" if tasks else "") + ")")
        if self.site_knobs:
            touched = len({i for i, _, _ in self.site_knobs})
            of = f" of {len(self.sites)}" if self.sites else ""
            parts.append(f"per-call-site kernel variants ({touched}{of} calls: " + ", ".join(
                f"site {i} {symbol}={value}" for i, symbol, value in self.site_knobs) + ")")
        return ", ".join(parts)


@dataclasses.dataclass(frozen=True)
class Knob:
    """A kernel-variant switch of an x86 kernel set: a global the kernels read on every call
    (so a loaded library runs either variant: the tuner sets it between candidates) with a
    default compiled into the kernels; a tuned build that chose another value links an
    object whose constructor writes it (``settings_module``). ``values``: the values it
    may take (the library's own default among them is not measured again); ``kernels``: the calls it changes (measured only
    when the model makes one of them; ``ANY_KERNEL``: a switch of the thread pool every kernel runs on, measured
    whenever the model calls one); ``ctype``: the global's C type, as the kernel source
    declares it."""

    symbol: str
    ctype: str  # "int64_t" or "int32_t"
    values: tuple[int, ...]
    kernels: tuple[str, ...]

    @property
    def ctypes_type(self) -> Any:
        return {"int64_t": ctypes.c_int64, "int32_t": ctypes.c_int32}[self.ctype]


# The fp32 convolution's variants (x86_fp32_source.py: every value computes the same sums,
# except Winograd, which is within 1e-5 relative) and the int8 convolution's pool splits
# (x86_int8_source.py: bit-identical). Each knob lists every value it may take: the
# library's default among them is not measured again, so a knob whose default changes keeps
# the other value as a candidate. A knob whose symbol the library lacks (an older kernel
# set, a build without the x86 kernels) is skipped. Not here: switches read from environment
# variables per call (EDGECC_X86_CONV_BANDS ...), which a build cannot link; the fp32
# A/B-only switches (unpadded, im2col_tiles, dw_channels_width, dw_flat_once) are the same
# tiles with a slower copy or setup, never measured faster; likewise the int8 switches back to a former, slower
# path (dw_vbmi, dw_write_hi, dw_block16, tile_post, tile_tied, tile_post_resf, tile_plain,
# tile_two, pad_vbmi, pad_inline, pad_wide32, pad_skip, pad_fast: each measured slower or
# equal off, kept for the tests' A/B).
FP32_CONV, INT8_CONV = ("edgecc_x86_sconv",), ("edgecc_x86_qconv",)
INT8_PAIR, INT8_BLOCK = ("edgecc_x86_qconv_pair",), ("edgecc_x86_qblock",)
INT8_DEPTHWISE, FP32_LINEAR = ("edgecc_x86_qdwconv",), ("edgecc_x86_linear",)
FP32_DEPTHWISE = ("edgecc_x86_sdwconv",)
FP32_EXPAND_DW, ATTENTION = ("edgecc_x86_sexpdw",), ("edgecc_x86_attention",)
ANY_KERNEL = ("*",)  # the pool's switches (x86_kernel_ffi.py): every kernel's jobs
KNOBS = (
    Knob("edgecc_x86_fp32_winograd", "int32_t", (0, 1), FP32_CONV),
    # 5: the stem's (< 8 input channels) per-panel masks instead of the padded copy
    Knob("edgecc_x86_fp32_same3x3", "int64_t", (0, 1, 2, 5), FP32_CONV),
    Knob("edgecc_x86_fp32_same3x3_window", "int64_t", (0, 1), FP32_CONV),
    Knob("edgecc_x86_fp32_s2_phases", "int64_t", (0, 1), FP32_CONV),
    # one 16-tile Winograd panel per pool item (1, the default: its V in L1) or 2 / 4 (fewer,
    # larger items): x86_fp32_winograd.py
    Knob("edgecc_x86_fp32_wg_group_panels", "int32_t", (1, 2, 4), FP32_CONV),
    # Winograd F(4x4,3x3) (4, the default) or F(2x2,3x3) (2) for <= 64-channel layers:
    # x86_fp32_winograd4.py
    Knob("edgecc_x86_fp32_winograd_tile", "int32_t", (4, 2), FP32_CONV),
    # Winograd on 8x8 / 16x16 maps with output channels in the lanes (1, the default) or the
    # tiles (0); F(4x4) items of 2 panels (1, the default) or 1; stride-2 maps of one panel
    # group in halves on 2+ threads (1, the default) or one group: x86_fp32_winograd_oc.py,
    # x86_fp32_winograd4.py, x86_fp32_source.py (each bit-identical either way)
    Knob("edgecc_x86_fp32_wg_oc", "int64_t", (1, 0), FP32_CONV),
    Knob("edgecc_x86_fp32_wg4_pairs", "int64_t", (1, 0), FP32_CONV),
    Knob("edgecc_x86_fp32_s2_halves", "int64_t", (1, 0), FP32_CONV),
    # 1x1 convolutions on large maps: panel pairs per pool item (path 23; 4 the default)
    Knob("edgecc_x86_fp32_conv_pairs", "int32_t", (1, 2, 4, 8), FP32_CONV),
    # depthwise 3x3: output rows per block at stride 2 (x86_fp32_dws2.py, 0: the former
    # path; 2 the default) and from which width; at stride 1 on 65-256-wide planes
    # (x86_fp32_dws1.py; 0: one row)
    Knob("edgecc_x86_fp32_dw_s2_wide", "int32_t", (0, 1, 2, 4), FP32_DEPTHWISE),
    Knob("edgecc_x86_fp32_dw_s2_min_width", "int32_t", (16, 64), FP32_DEPTHWISE),
    Knob("edgecc_x86_fp32_dw_s1_wide", "int32_t", (0, 2, 4), FP32_DEPTHWISE),
    Knob("edgecc_x86_int8_full_work", "int64_t", (0, 1), INT8_CONV),
    Knob("edgecc_x86_int8_oc_split", "int64_t", (0, 1), INT8_CONV),
    # small int8 convolutions serial (1, the default) or on the pool (0): x86_int8_pool_source
    Knob("edgecc_x86_int8_conv_pool_log2", "int64_t", (0, 1), INT8_CONV),
    # conv_direct4's bands of output rows per thread (1, the default; 2 the former):
    # x86_int8_direct_source.py, bit-identical
    Knob("edgecc_x86_int8_direct4_bands", "int64_t", (1, 2, 3), INT8_CONV),
    # a pooled conv_direct4 call as min(units, v x threads) pieces of output rows (v; 0 the
    # default: one band a thread): x86_int8_direct_source.py, bit-identical; ResNet-20 1.00-1.02x
    Knob("edgecc_x86_int8_direct4_rows", "int64_t", (0, 2), INT8_CONV),
    # oc_split items channel-major (1, the default: each thread reads its share of the
    # weights; 0 panel-major) and 1x1 convolutions of >= 4 panels a thread pooled by rows on
    # the unhalved threshold (1; 0 the default): x86_int8_source.py, bit-identical
    Knob("edgecc_x86_int8_oc_major", "int64_t", (1, 0), INT8_CONV),
    Knob("edgecc_x86_int8_conv_pool_rows", "int64_t", (0, 1), INT8_CONV),
    # a 3-channel stem's conv_direct4 serial below this job work (1 << 20; 0, the default:
    # pooled by the threshold) and stride-2 1x1 shortcuts pooled by bands (1; 0 the default,
    # serial): x86_int8_stem_source.py, bit-identical; the stem pooled is 0.61-0.77x of serial
    # in place on a quiet host, 1.04-1.08x with the other vCPU busy
    Knob("edgecc_x86_int8_stem_serial", "int64_t", (0, 1 << 20), INT8_CONV),
    Knob("edgecc_x86_int8_s2_pool", "int64_t", (0, 1), INT8_CONV),
    # a stride-2 block's conv1 and 1x1 shortcut as one pooled call (1, the default) or the two
    # calls in turn (0): x86_int8_pair.py, bit-identical
    Knob("edgecc_x86_int8_pair", "int64_t", (1, 0), INT8_PAIR),
    # an inverted-residual block pooled by bands of output rows (1, the default) or chained
    # (0), and the depthwise output sizes banded (min / max pixels): x86_int8_block.py,
    # bit-identical; banded wins only when the other vCPU is free
    Knob("edgecc_x86_int8_block_band", "int64_t", (1, 0), INT8_BLOCK),
    Knob("edgecc_x86_int8_block_band_min", "int64_t", (64, 256), INT8_BLOCK),
    # the fp32 linear's rows packed in L2-sized groups (bytes; 0: all rows first) and the
    # fewest row blocks a thread takes before columns are split: x86_linear_source.py,
    # bit-identical
    Knob("edgecc_x86_linear_group_bytes", "int64_t", (262144, 0, 131072), FP32_LINEAR),
    Knob("edgecc_x86_linear_min_items", "int64_t", (32, 0, 22), FP32_LINEAR),
    # each 12x32 tile prefetches its output (and residual) lines: spread over its k loop in
    # calls with a residual, at its start otherwise (1, the default); 2 all at its start; 0
    # not; and its panels' line this many k steps ahead (8, the default; 0 not):
    # x86_linear_source.py, bit-identical
    Knob("edgecc_x86_linear_prefetch", "int64_t", (1, 2, 0), FP32_LINEAR),
    Knob("edgecc_x86_linear_panel_prefetch", "int64_t", (8, 0), FP32_LINEAR),
    # int8 depthwise dw_rows pooled by bands of output rows (0, the default: by channel
    # groups): x86_int8_dwrows_source.py, bit-identical
    Knob("edgecc_x86_int8_dw_rows_bands", "int64_t", (0, 1), INT8_DEPTHWISE),
    # int8 depthwise calls of fewer outputs than this run serially (20000 the default; 0: all
    # pooled) and 4x4 maps written back 4 channels a store (1; 0 per channel):
    # x86_int8_dw_source.py, bit-identical
    Knob("edgecc_x86_int8_dw_serial_outputs", "int64_t", (20000, 0, 30000), INT8_DEPTHWISE),
    Knob("edgecc_x86_int8_dw_pack", "int64_t", (1, 0), INT8_DEPTHWISE),
    # depthwise on planes of rows over 64 bytes by dw_rows_t on column strips (1, the default;
    # 0: the padded copy + int32 sums of dw_perm): x86_int8_band_dw_source.py, bit-identical.
    # Not here: edgecc_x86_int8_dw_band_rows (the strips pooled by row bands: 1.04-1.48x slower)
    Knob("edgecc_x86_int8_dw_band", "int64_t", (1, 0), INT8_DEPTHWISE),
    # the expand 1x1 + depthwise 3x3 pair as one call on row bands (1; 0: the two kernels in
    # turn), its band height, and from how many MiB of output its depthwise stores are
    # non-temporal (0: never): x86_fp32_expand_dw.py, bit-identical
    Knob("edgecc_x86_fp32_expand_dw", "int32_t", (1, 0), FP32_EXPAND_DW),
    Knob("edgecc_x86_fp32_expand_dw_rows", "int32_t", (28, 14, 56), FP32_EXPAND_DW),
    Knob("edgecc_x86_fp32_expand_dw_stream", "int32_t", (12, 8, 0), FP32_EXPAND_DW),
    # the whole inverted residual block (expand + depthwise + project + residual) as that
    # call (1; 0: the fused pair, then the project), its band and step heights, and the
    # expand output below which the three kernels run in turn (KiB; 0 the default: never):
    # x86_fp32_block.py, bit-identical
    Knob("edgecc_x86_fp32_block", "int32_t", (1, 0), FP32_EXPAND_DW),
    Knob("edgecc_x86_fp32_block_rows", "int32_t", (28, 16, 56), FP32_EXPAND_DW),
    Knob("edgecc_x86_fp32_block_step", "int32_t", (8, 4, 16), FP32_EXPAND_DW),
    Knob("edgecc_x86_fp32_block_min_kib", "int32_t", (0, 4096, 8192), FP32_EXPAND_DW),
    # the attention's pool task prefetches the next head's q / k / v rows (1; 0 not):
    # x86_attention_source.py, bit-identical
    Knob("edgecc_x86_attention_prefetch", "int64_t", (1, 0), ATTENTION),
    # softmax exp from the score tile's registers where the keys fit one tile (1, the default;
    # 0: a second pass), bit-identical. Not here: edgecc_x86_attention_fast_math (a cheaper
    # exp, within 2e-6 of the largest output; off): the attention also writes the next int8
    # layer's input, which must stay the simulator's, and it is ~0.3% of MiniLM
    Knob("edgecc_x86_attention_fuse_exp", "int64_t", (1, 0), ATTENTION),
    # the pool: each job site timed serial and pooled, the faster kept (1; 0 the default),
    # and TVM loops shorter than this many ns run on the caller alone (1000 the default; 0 off):
    # x86_kernel_ffi.py, bit-identical
    Knob("edgecc_pool_adaptive", "int32_t", (0, 1), ANY_KERNEL),
    Knob("edgecc_pool_inline_ns", "int64_t", (0, 1000, 4000), ANY_KERNEL),
    # a claim takes remaining / (parts x threads) items (2, the default; 1: larger claims), and
    # a worker adds to the job's done counter once as it leaves (1; 0 the default: per chunk)
    Knob("edgecc_pool_chunk_parts", "int32_t", (2, 1), ANY_KERNEL),
    Knob("edgecc_pool_done_once", "int32_t", (0, 1), ANY_KERNEL),
)


# Per call site (``KernelSettings.site_knobs``, searched by ``end_to_end_sites``): every knob
# a kernel reads at each call from its calling thread, or copies into the pool job it starts,
# with nothing cached under the knob's value. Safe among them: the Winograd switches
# (``edgecc_x86_fp32_winograd``, ``_winograd_tile``): a site's U is packed at its first Winograd
# call into the library's cache, keyed by the weight tensor and the form (F(2x2) / F(4x4)), so
# a site that runs direct never packs, and one whose value changes between runs packs once
# (x86_fp32_winograd.wg_cached); the int8 depthwise plan cache (dw_direct) is keyed by the
# shape and read by no knob here; the pool's chunk_parts / done_once are copied into each job
# by the thread that starts it (the wrapper's). Not per site:
NOT_PER_SITE = {
    # read by TVM's generated parallel loops, which run outside the call-site wrappers
    "edgecc_pool_inline_ns": "TVM's own loops read it, not the wrapped kernels",
    # its per-job-site samples learn serial vs pooled across calls: the per-site serial /
    # pool choice of ``site_search`` again, with state that outlives the call
    "edgecc_pool_adaptive": "per-job-site state learned across calls (site_search's choice)",
}
SITE_KNOBS = tuple(k for k in KNOBS if k.symbol not in NOT_PER_SITE)
UNSET = -(2 ** 63)  # a call site's knob entry: the model's value (INT64_MIN in the wrappers)


SYMBOLS = {"serial_work_log2": ("edgecc_x86_serial_work_log2", ctypes.c_int64),
           "num_tasks": ("edgecc_x86_num_tasks", ctypes.c_int32)}

_SITES_SOURCE = r"""
#include <tvm/ffi/c_api.h>
#include <time.h>
namespace {
// per call site i: its settings (0: the model's), and its time and calls while timing is on
int64_t site_serial[@N@] = {@SERIAL@};
int32_t site_tasks[@N@] = {@TASKS@};
int64_t site_ns[@N@];
int64_t site_calls[@N@];
int64_t site_timing[1];
// per call site i and kernel-variant knob k (SITE_KNOBS order): the value for its calls, or
// UNSET (the model's); site_any[i]: whether row i sets any (the common call skips the row)
const int64_t UNSET = INT64_MIN;
const int K = @K@;
int64_t site_knob[@N@ * @K@] = {@SITE_KNOBS@};
int64_t site_any[@N@] = {@ANY@};
void* const knob_ptr[@K@] = {@KNOB_PTRS@};  // 0: not in this library (weak)
const int8_t knob_wide[@K@] = {@KNOB_WIDE@};  // int64_t (1) or int32_t (0)
inline int64_t knob_get(int k) {
  return knob_wide[k] ? *static_cast<int64_t*>(knob_ptr[k]) : *static_cast<int32_t*>(knob_ptr[k]);
}
inline void knob_put(int k, int64_t v) {
  if (knob_wide[k]) *static_cast<int64_t*>(knob_ptr[k]) = v;
  else *static_cast<int32_t*>(knob_ptr[k]) = static_cast<int32_t>(v);
}
typedef int (*Kernel)(void*, const TVMFFIAny*, int32_t, TVMFFIAny*);
inline int64_t now_ns() {
  timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1000000000LL + t.tv_nsec;
}
inline int run_site(int i, Kernel kernel, void* self, const TVMFFIAny* args, int32_t n,
                    TVMFFIAny* result) {
  const int64_t serial = edgecc_x86_serial_work_log2;
  const int32_t tasks = edgecc_x86_num_tasks;
  if (site_serial[i] != 0) edgecc_x86_serial_work_log2 = site_serial[i];
  if (site_tasks[i] != 0) edgecc_x86_num_tasks = site_tasks[i];
  const int64_t* row = site_knob + (int64_t)i * K;
  const bool knobs = site_any[i] != 0;
  int64_t saved[K];
  if (knobs)
    for (int k = 0; k < K; ++k)
      if (row[k] != UNSET && knob_ptr[k]) {
        saved[k] = knob_get(k);
        knob_put(k, row[k]);
      }
  const int64_t start = site_timing[0] ? now_ns() : 0;
  const int rc = kernel(self, args, n, result);
  if (site_timing[0]) {
    site_ns[i] += now_ns() - start;
    site_calls[i] += 1;
  }
  if (knobs)
    for (int k = 0; k < K; ++k)
      if (row[k] != UNSET && knob_ptr[k]) knob_put(k, saved[k]);
  edgecc_x86_serial_work_log2 = serial;
  edgecc_x86_num_tasks = tasks;
  return rc;
}
}  // namespace
extern "C" {
@DECLS@
@WRAPPERS@
// the tuner's handle on this library's tables (ctypes looks it up in this library)
void* edgecc_sites_state(int which) {
  switch (which) {
    case 0: return site_serial;
    case 1: return site_tasks;
    case 2: return site_ns;
    case 3: return site_calls;
    case 4: return site_timing;
    case 5: return site_knob;
    case 6: return site_any;
    default: return 0;
  }
}
int64_t edgecc_sites_count() { return @N@; }
// the knobs of site_knob's columns, comma-separated (the tuner maps its symbols by name)
const char* edgecc_sites_knob_names() { return "@KNOB_NAMES@"; }
}
"""


def settings_module(settings: KernelSettings, callees: tuple[str, ...] = ()) -> Any:
    """An object file defining the settings' symbols (the kernels' own are weak 0s) and,
    with ``callees`` (the kernel each call site calls), the call-site wrappers
    ``edgecc_site_<i>`` with ``settings.sites`` as their table, as a module TVM links into
    the library (compiled once per value, like the kernels)."""
    from edgecc.targets.tvm import x86_int8

    source = ("// edgecc kernel settings chosen by --tune (targets/tvm/end_to_end.py)\n"
              "#include <stdint.h>\n"
              'extern "C" {\n'
              f"int64_t edgecc_x86_serial_work_log2 = {int(settings.serial_work_log2)};\n"
              f"int32_t edgecc_x86_num_tasks = {int(settings.num_tasks)};\n"
              "}\n" + _knobs_source(settings.knobs))
    symbols: tuple[str, ...] = ()
    if callees:
        n = len(callees)
        sites = settings.sites or ((((0, 0),) * n) if settings.site_knobs else ())
        if n != len(sites):
            raise LoweringError(f"{len(sites)} call-site settings for "
                                f"{n} call sites: tune again (--tune)")
        rows = _site_knob_rows(settings.site_knobs, n)
        decls = "\n".join(f"int __tvm_ffi_{c}(void*, const TVMFFIAny*, int32_t, TVMFFIAny*);"
                          for c in sorted(set(callees)))
        wrappers = "\n".join(
            f"int __tvm_ffi_{SITE_PREFIX}{i}(void* s, const TVMFFIAny* a, int32_t n, "
            f"TVMFFIAny* r) {{ return run_site({i}, __tvm_ffi_{c}, s, a, n, r); }}"
            for i, c in enumerate(callees))
        source = source.replace('extern "C" {\n', 'extern "C" {\n' + "\n".join(
            f"__attribute__((weak)) extern {k.ctype} {k.symbol};" for k in SITE_KNOBS) + "\n", 1)
        source += (_SITES_SOURCE.replace("@N@", str(n)).replace("@K@", str(len(SITE_KNOBS)))
                   .replace("@SERIAL@", ", ".join(str(s) for s, _ in sites))
                   .replace("@TASKS@", ", ".join(str(t) for _, t in sites))
                   .replace("@SITE_KNOBS@", ", ".join(
                       "UNSET" if v == UNSET else f"{v}LL" for row in rows for v in row))
                   .replace("@ANY@", ", ".join(str(int(any(v != UNSET for v in row)))
                                               for row in rows))
                   .replace("@KNOB_PTRS@", ", ".join(f"(void*)&{k.symbol}" for k in SITE_KNOBS))
                   .replace("@KNOB_WIDE@", ", ".join(str(int(k.ctype == "int64_t"))
                                                     for k in SITE_KNOBS))
                   .replace("@KNOB_NAMES@", ",".join(k.symbol for k in SITE_KNOBS))
                   .replace("@DECLS@", decls).replace("@WRAPPERS@", wrappers))
        symbols = tuple(f"{SITE_PREFIX}{i}" for i in range(n))
    elif settings.site_knobs:
        raise LoweringError("per-call-site kernel variants without the call sites to route: "
                            "tune again (--tune)")
    return x86_int8.external_module(source, symbols, "x86_settings")


def _site_knob_rows(site_knobs: tuple[tuple[int, str, int], ...], n: int
                    ) -> list[list[int]]:
    """``site_knobs`` as the wrappers' table: per call site, per ``SITE_KNOBS`` column, the
    value or ``UNSET``. A site out of range, a knob not switched per site, or one site given
    two values of a knob raise (a table tuned for another build)."""
    column = {k.symbol: j for j, k in enumerate(SITE_KNOBS)}
    rows = [[UNSET] * len(SITE_KNOBS) for _ in range(n)]
    for i, symbol, value in site_knobs:
        if not 0 <= i < n:
            raise LoweringError(f"a per-call-site kernel variant for call site {i} of {n} call "
                                "sites: tune again (--tune)")
        if symbol not in column:
            raise LoweringError(f"{symbol} is not a per-call-site kernel variant knob "
                                f"({NOT_PER_SITE.get(symbol, 'unknown')}): tune again (--tune)")
        if rows[i][column[symbol]] != UNSET or value == UNSET:
            raise LoweringError(f"call site {i} has two values of {symbol}: tune again (--tune)")
        rows[i][column[symbol]] = value
    return rows


def _knobs_source(knobs: tuple[tuple[str, int], ...]) -> str:
    """C++ that writes the chosen kernel variants when the library is loaded: the knobs are
    the kernels' own initialized globals (not weak), so a second definition cannot replace
    them; a constructor sets them instead, through weak references (a knob the kernel set
    lacks is left alone, the library still links)."""
    if not knobs:
        return ""
    types = {k.symbol: k.ctype for k in KNOBS}
    unknown = [symbol for symbol, _ in knobs if symbol not in types]
    if unknown:
        raise LoweringError(f"unknown kernel variant knob(s) {unknown}: tune again (--tune)")
    decls = "\n".join(f"__attribute__((weak)) extern {types[s]} {s};" for s, _ in knobs)
    sets = "\n".join(f"  if (&{s}) {s} = {int(v)};" for s, v in knobs)
    return (f'extern "C" {{\n{decls}\n}}\nnamespace {{\n'
            f"__attribute__((constructor)) void edgecc_set_kernel_variants() {{\n{sets}\n}}\n"
            "}  // namespace\n")


def with_kernel_settings(module: Any, settings: KernelSettings) -> Any:
    """``module`` with ``settings`` linked into the library it builds (unchanged for the
    default settings). Per-call-site settings are a module attribute that
    ``route_call_sites`` turns into the wrappers when the build has the kernel calls."""
    if settings.is_default:
        return module
    if settings.routed:
        return module.with_attr(SITES_ATTR, json.dumps(dataclasses.asdict(settings)))
    external = list((module.attrs or {}).get("external_mods") or [])
    return module.with_attr("external_mods", [*external, settings_module(settings)])


def build_module(module: Any, settings: KernelSettings) -> Any:
    """The module a build with ``settings`` compiles: ``with_kernel_settings``. The Winograd
    knob needs nothing more: a build's eligible convolutions are flagged as its constants and
    the kernels pack their Winograd weights once per library (``x86_fp32_winograd``), so the
    artifact carries W alone whichever value is chosen."""
    return with_kernel_settings(module, settings)


def library_for(libraries: dict[str, Any], base: str, settings: KernelSettings) -> Any:
    """The measured library that runs ``settings`` as its build would (``build_module``): the
    call-site wrappers' build for a table, else ``base``'s."""
    return libraries.get("sites") if settings.routed else libraries[base]


def _route(module: Any, rename: bool) -> tuple[Any, list[str]]:
    """The x86 kernel each call site calls, in site order (Relax functions by name, then
    the order the mutator visits them); with ``rename``, ``module`` with site ``i`` calling
    ``edgecc_site_<i>`` instead."""
    from tvm import relax

    callees: list[str] = []

    @relax.expr_functor.mutator
    class Router(relax.PyExprMutator):
        def visit_extern_func_(self, op: Any) -> Any:
            name = str(op.global_symbol)
            if not name.startswith(KERNEL_PREFIX):
                return op
            callees.append(name)
            if not rename:
                return op
            return relax.ExternFunc(f"{SITE_PREFIX}{len(callees) - 1}", op.ty)

    updates = {}
    for gvar, func in sorted(module.functions.items(), key=lambda kv: str(kv[0].name_hint)):
        if isinstance(func, relax.Function):
            new = Router(module).visit_expr(func)
            if rename:
                updates[gvar] = new
    if rename and updates:
        module = module.clone()
        for gvar, func in updates.items():
            module[gvar] = func
    return module, callees


def call_sites(module: Any) -> list[str]:
    """The x86 kernel each call site of ``module`` (after ``lowering.hand_written_kernels``)
    calls, in the order of ``KernelSettings.sites``."""
    return _route(module, rename=False)[1]


def route_call_sites(module: Any) -> Any:
    """When ``module`` carries per-call-site settings (``with_kernel_settings``): its kernel
    calls routed through the call-site wrappers, linked with their table (module docstring);
    else ``module`` as is. The last step of ``lowering.hand_written_kernels``."""
    text = (module.attrs or {}).get(SITES_ATTR) if module.attrs is not None else None
    if text is None:
        return module
    fields = json.loads(str(text))
    settings = KernelSettings(**fields)
    routed, callees = _route(module, rename=True)
    external = list((routed.attrs or {}).get("external_mods") or [])
    return routed.with_attr("external_mods",
                            [*external, settings_module(settings, tuple(callees))])


def uses_x86_kernels(module: Any) -> bool:
    """Whether ``module`` calls edgecc's hand-written x86 kernels (after
    ``lowering.hand_written_kernels``)."""
    return bool(call_sites(module))


def settings_candidates(threads: int) -> list[KernelSettings]:
    """The settings measured besides the default: thresholds scaled by ``SERIAL_SHIFTS``, and
    half the pool's tasks per job where the pool has more than two workers."""
    out = [KernelSettings(serial_work_log2=k) for k in SERIAL_SHIFTS]
    if threads > 2:
        out.append(KernelSettings(num_tasks=threads // 2))
    return out


def knob_candidates(library: Any, callees: list[str] | tuple[str, ...]
                    ) -> tuple[list[KernelSettings], dict[str, Any]]:
    """The kernel variants measured besides the default: each knob of ``KNOBS`` that
    changes a kernel the model calls, at each of its values other than the library's
    default — skipped where ``library`` (a loaded ``_Library``) lacks its symbol. Returns
    the candidates and what was measured / skipped, for the manifest."""
    out, measured, skipped = [], [], []
    for knob in KNOBS:
        if not callees or (knob.kernels != ANY_KERNEL and not set(knob.kernels) & set(callees)):
            continue
        if knob.symbol not in library.knobs:
            skipped.append(knob.symbol)
            continue
        default = library.knobs[knob.symbol][1]
        for value in knob.values:
            if value != default:
                out.append(KernelSettings(knobs=((knob.symbol, value),)))
                measured.append(f"{knob.symbol} = {value} (default {default})")
    return out, {"measured": measured, "skipped_missing_symbol": skipped}


def site_options(threads: int) -> list[tuple[int, int]]:
    """What a call site may take besides the model's settings: every job serial, every job
    on the pool, and half the pool's tasks where it has more than two workers."""
    out = [(SERIAL, 0), (POOL, 0)]
    if threads > 2:
        out.append((POOL, threads // 2))
    return out


# ---- the rule -----------------------------------------------------------------------------

def verdict(default: list[list[float]], candidate: list[list[float]]) -> dict[str, Any]:
    """Whether ``candidate`` is faster than ``default``, from their times in paired rounds
    (``[round][call]``, ms): the rule of the module docstring. Returns ``ratio``, ``noise``,
    ``bound``, ``wins`` (rounds it was faster in), ``rounds`` and ``faster``."""
    ratios = [statistics.median(c) / statistics.median(d) for d, c in zip(default, candidate)]
    n = len(ratios)
    ratio = statistics.median(ratios)
    noise = 1.4826 * statistics.median(abs(r - ratio) for r in ratios)
    bound = ratio + NOISE_Z * 1.2533 * noise / math.sqrt(n)
    wins = sum(r < 1 for r in ratios)
    return {"ratio": round(ratio, 4), "noise": round(noise, 4), "bound": round(bound, 4),
            "wins": wins, "rounds": n, "faster": bound < 1 - MARGIN and wins >= n - 1}


RULE = (f"a candidate replaces the untuned build only when, in the screening pass ({ROUNDS} "
        f"rounds) and in a confirming pass ({CONFIRM_ROUNDS} rounds) of the two alone, the "
        f"median of its per-round ratios to the untuned build plus {NOISE_Z:g} standard errors "
        f"(from their median absolute deviation) is under {1 - MARGIN:g} and it was faster in "
        "all rounds but at most one; on x86 with 2+ threads, also faster (bound under 1) in "
        f"at least {PARALLEL_ROUNDS} confirming rounds where the host gave the threads their "
        f"cores (host_state probe >= {host_state.PARALLEL_STATE:g}; up to {STATE_PASSES} "
        "confirming passes to find them)")


# ---- measuring ----------------------------------------------------------------------------

class _Library:
    """One built candidate library, loaded once: a VM to run, its setting symbols and, when
    it has call-site wrappers, their tables."""

    def __init__(self, path: str, threads: int):
        from edgecc.targets.tvm import runner

        self.vm = runner.VmRunner(path, threads)
        # the same file the VM loaded (dlopen returns its handle): its setting symbols
        handle = ctypes.CDLL(runner._private_copy(path))
        self.symbols = {}
        for field, (name, ctype) in SYMBOLS.items():
            try:
                self.symbols[field] = ctype.in_dll(handle, name)
            except ValueError:  # no x86 kernels linked: nothing to set
                pass
        self.knobs = {}  # symbol: (the global, its value at load: the build's default)
        for knob in KNOBS:
            try:
                value = knob.ctypes_type.in_dll(handle, knob.symbol)
            except ValueError:  # an older kernel set, or not linked: not a candidate
                continue
            self.knobs[knob.symbol] = (value, int(value.value))
        self.sites = 0
        try:
            state, count = handle.edgecc_sites_state, handle.edgecc_sites_count
        except AttributeError:  # no call-site wrappers
            return
        state.restype, state.argtypes, count.restype = ctypes.c_void_p, [ctypes.c_int], \
            ctypes.c_int64
        self.sites = n = int(count())
        self.table = [(ctypes.c_int64 * n).from_address(state(0)),
                      (ctypes.c_int32 * n).from_address(state(1))]
        self.ns = (ctypes.c_int64 * n).from_address(state(2))
        self.calls = (ctypes.c_int64 * n).from_address(state(3))
        self.timing = ctypes.c_int64.from_address(state(4))
        self.knob_columns: dict[str, int] = {}  # symbol: its column of the per-site table
        try:
            names = handle.edgecc_sites_knob_names
        except AttributeError:  # wrappers of an older rule: no per-site kernel variants
            return
        names.restype = ctypes.c_char_p
        self.knob_columns = {name: j for j, name in enumerate(names().decode().split(","))}
        self.site_knob = (ctypes.c_int64 * (n * len(self.knob_columns))).from_address(state(5))
        self.site_any = (ctypes.c_int64 * n).from_address(state(6))

    def set(self, settings: KernelSettings) -> None:
        for field, symbol in self.symbols.items():
            symbol.value = getattr(settings, field)
        chosen = dict(settings.knobs)
        for name, (value, default) in self.knobs.items():
            value.value = chosen.get(name, default)
        if self.sites:
            sites = settings.sites if len(settings.sites) == self.sites else \
                ((0, 0),) * self.sites
            for i, (serial, tasks) in enumerate(sites):
                self.table[0][i], self.table[1][i] = serial, tasks
            self._set_site_knobs(settings.site_knobs)

    def _set_site_knobs(self, site_knobs: tuple[tuple[int, str, int], ...]) -> None:
        """The per-site kernel variants' table (all ``UNSET`` but ``site_knobs``; none of
        them where one names a site or knob this library lacks: another build's table)."""
        if not self.knob_columns:
            return
        k = len(self.knob_columns)
        table, any_ = [UNSET] * (self.sites * k), [0] * self.sites
        if all(0 <= i < self.sites and s in self.knob_columns for i, s, _ in site_knobs):
            for i, symbol, value in site_knobs:
                table[i * k + self.knob_columns[symbol]] = value
                any_[i] = 1
        self.site_knob[:] = table
        self.site_any[:] = any_

    def site_times(self, on: bool) -> list[float]:
        """Each call site's mean us per call since the last call (timing ``on`` after)."""
        out = [self.ns[i] / max(1, self.calls[i]) / 1000 for i in range(self.sites)]
        for i in range(self.sites):
            self.ns[i] = self.calls[i] = 0
        self.timing.value = int(on)
        return out


def _inputs(module: Any) -> list[Any]:
    """Inputs of ``module``'s ``main`` (static shapes): ones for integers (valid token ids
    and masks), normal samples for floats."""
    import numpy as np
    import torch

    from tvm import relax

    out = []
    rng = np.random.default_rng(0)
    for param in module["main"].params:
        ty = param.ty
        if not isinstance(ty, relax.TensorType):
            raise ValueError(f"input {param.name_hint} is not a tensor")
        shape = [int(d) for d in ty.shape]
        dtype = str(ty.dtype)
        if dtype.startswith(("int", "uint")):
            value = np.ones(shape, dtype)
        elif dtype == "bool":
            value = np.ones(shape, bool)
        else:
            value = rng.standard_normal(shape).astype(dtype)
        out.append(torch.from_numpy(value))
    return out


Candidates = dict[str, tuple[Any, KernelSettings]]


def _time_rounds(candidates: Candidates, libraries: list[Any], inputs: list[Any],
                 rounds: int, block: int,
                 clock: Callable[[], float] = time.perf_counter,
                 probe: Callable[[], float] | None = None,
                 probes: list[float] | None = None) -> dict[str, list[list[float]]]:
    """Each candidate's ms per call, ``[round][call]``, over ``rounds`` interleaved rounds
    of ``block`` timed calls (after one untimed call; the order reversed every other round);
    every library gets the candidate's settings first. With ``probe`` (``host_state``'s
    ``scaling``), its reading at the start of each round is appended to ``probes``."""
    times: dict[str, list[list[float]]] = {k: [] for k in candidates}
    names = list(candidates)
    for r in range(rounds):
        if probe is not None and probes is not None:
            probes.append(probe())
        for name in names if r % 2 == 0 else names[::-1]:
            library, settings = candidates[name]
            for lib in libraries:
                lib.set(settings)
            library.vm.run(*inputs)
            calls = []
            for _ in range(block):
                t = clock()
                library.vm.run(*inputs)
                calls.append((clock() - t) * 1000)
            times[name].append(calls)
    for lib in libraries:
        lib.set(KernelSettings())
    return times


def _pooled(times: dict[str, list[list[float]]]) -> dict[str, float]:
    return {k: round(statistics.median(c for r in v for c in r), 4) for k, v in times.items()}


def combination(candidates: Candidates, verdicts: dict[str, dict[str, Any]], best: str,
                library_for: Callable[[KernelSettings], Any] | None = None
                ) -> tuple[str, tuple[Any, KernelSettings], list[str]] | None:
    """The greedy step after the screening: one candidate that takes every compatible
    setting of the candidates the rule found faster than the default there (``best`` among
    them), best bound first — not those faster only within the noise: under load (2 shared
    cores) 'every kernel job serial' read 0.81x (bound 0.976) in the screening of ResNet-20,
    joined Winograd, and the tuned build ran 1.16x of the untuned one in the bench; a candidate
    whose setting is already taken (another serial threshold, another value of the same
    knob, a second call-site table) is left out. The call-site table brings its library
    (the base build with wrappers, where the model-wide settings apply to the sites at
    (0, 0)); the others share the base build. Returns ``(name, (library, settings),
    components)``, or None when fewer than two candidates contribute. With ``library_for``
    (settings -> the library that runs them, None: none built) the combination runs there,
    and a candidate whose settings would leave it without a library is left out."""
    beat = sorted((k for k, v in verdicts.items() if k == best or v["faster"]),
                  key=lambda k: (verdicts[k]["bound"], k))
    fields: dict[str, Any] = {"serial_work_log2": 0, "num_tasks": 0, "sites": (),
                              "site_knobs": ()}
    knobs: dict[str, int] = {}
    base_lib = site_lib = None
    parts: list[str] = []
    for name in beat:
        library, s = candidates[name]
        if s.is_default:  # the tuned build alone: no setting to add (its library is the base)
            continue
        taken = [f for f in fields if getattr(s, f) and fields[f]]
        taken += [k for k, _ in s.knobs if k in knobs]
        # a knob switched both model-wide and per site: measured each against the default
        # alone, so not both
        per_site = {symbol for _, symbol, _ in (*s.site_knobs, *fields["site_knobs"])}
        taken += [k for k, _ in s.knobs if k in per_site]
        taken += [k for _, k, _ in s.site_knobs if k in knobs]
        if taken:
            continue
        if library_for is not None:
            merged = {f: getattr(s, f) or fields[f] for f in fields}
            if library_for(KernelSettings(**merged, knobs=tuple({**knobs, **dict(s.knobs)}
                                                                .items()))) is None:
                continue
        elif not s.routed and base_lib is not None and library is not base_lib:
            continue
        for f in fields:
            if getattr(s, f):
                fields[f] = getattr(s, f)
        knobs.update(s.knobs)
        if s.routed:
            site_lib = library
        else:
            base_lib = library
        parts.append(name)
    if len(parts) < 2:
        return None
    settings = KernelSettings(**fields, knobs=tuple(knobs.items()))
    name = f"{best.split(',')[0]}, {settings.describe()}"
    library = library_for(settings) if library_for is not None else site_lib or base_lib
    return name, (library, settings), parts


def select(candidates: Candidates, libraries: list[Any], inputs: list[Any], block: int,
           clock: Callable[[], float] = time.perf_counter,
           library_for: Callable[[KernelSettings], Any] | None = None,
           probe: Callable[[], float] | None = None) -> dict[str, Any]:
    """The rule (module docstring) over ``candidates`` (``"default"`` among them): the
    screening pass; the combining pass (``combination``: the winners' settings together,
    timed with the default and the best single candidate, ``ROUNDS`` rounds), where the
    combination replaces the best single candidate when the rule finds it faster than the
    default with a lower bound than that candidate's in the same pass; then the confirming
    pass of the one picked. Returns ``chosen`` and its ``settings``, ``ms`` / ``confirm_ms``
    (pooled medians; a combination's ``ms`` from the combining pass), ``verdicts`` (per
    candidate; a combination's from the combining pass), ``combined`` (the combining pass,
    None when there was nothing to combine) and ``confirm`` (the confirming pass's verdict;
    with ``probe``, its ``state_guard``: ``state_guard``'s record)."""
    times = _time_rounds(candidates, libraries, inputs, ROUNDS, block, clock)
    verdicts = {k: verdict(times["default"], v) for k, v in times.items() if k != "default"}
    ms = _pooled(times)
    faster = [k for k, v in verdicts.items() if v["faster"]]
    chosen, confirm, confirmed, combined = "default", None, None, None
    entries = dict(candidates)
    if faster:
        best = min(faster, key=lambda k: verdicts[k]["bound"])
        combo = combination(candidates, verdicts, best, library_for)
        if combo is not None:
            name, entry, parts = combo
            trial = _time_rounds({"default": candidates["default"], best: candidates[best],
                                  name: entry}, libraries, inputs, ROUNDS, block, clock)
            pair = {k: verdict(trial["default"], trial[k]) for k in (best, name)}
            won = pair[name]["faster"] and pair[name]["bound"] < pair[best]["bound"]
            combined = {"candidate": name, "components": parts, "ms": _pooled(trial),
                        "verdicts": pair, "replaces": best if won else None}
            if won:
                entries[name], verdicts[name], ms[name] = entry, pair[name], \
                    _pooled(trial)[name]
                best = name
        pair = {"default": entries["default"], best: entries[best]}
        probes: list[float] = []
        confirm = _time_rounds(pair, libraries, inputs, CONFIRM_ROUNDS, block, clock, probe,
                               probes)
        confirmed = verdict(confirm["default"], confirm[best])
        if confirmed["faster"] and probe is not None:
            confirmed["state_guard"] = guard = state_guard(
                confirm, probes, best, lambda p: _time_rounds(
                    pair, libraries, inputs, CONFIRM_ROUNDS, block, clock, probe, p))
            confirmed["faster"] = guard["faster"]
        if confirmed["faster"]:
            chosen = best
        confirmed["candidate"] = best
    return {"chosen": chosen, "settings": entries[chosen][1], "ms": ms,
            "confirm_ms": _pooled(confirm) if confirm else {},
            "verdicts": verdicts, "combined": combined, "confirm": confirmed}


def state_guard(confirm: dict[str, list[list[float]]], probes: list[float], best: str,
                more: Callable[[list[float]], dict[str, list[list[float]]]]
                ) -> dict[str, Any]:
    """Whether ``best``, found faster in the confirming pass (``confirm``, its rounds'
    host readings ``probes``), is also faster in the rounds where the host gave the pool's
    threads their cores (reading >= ``host_state.PARALLEL_STATE``): the rule's verdict over
    those rounds alone must have its bound under 1. Fewer than ``PARALLEL_ROUNDS`` such
    rounds: more confirming passes (``more(probes)`` times one and appends its
    readings), ``STATE_PASSES`` in all; still fewer, the candidate is not applied — its win
    may be the shared core's (a serial setting: the second thread gives nothing there). Returns
    ``faster``, the ``verdict`` over those rounds (None: too few), ``parallel_rounds``,
    ``rounds``, ``passes``, ``threshold`` and the readings' ``probe_median``."""
    threshold = host_state.PARALLEL_STATE
    times = {k: list(v) for k, v in confirm.items()}
    passes = 1
    while sum(p >= threshold for p in probes) < PARALLEL_ROUNDS and passes < STATE_PASSES:
        for k, v in more(probes).items():
            times[k].extend(v)
        passes += 1
    rounds = [r for r, p in enumerate(probes) if p >= threshold]
    judged = (verdict([times["default"][r] for r in rounds], [times[best][r] for r in rounds])
              if len(rounds) >= PARALLEL_ROUNDS else None)
    return {"faster": judged is not None and judged["bound"] < 1, "verdict": judged,
            "parallel_rounds": len(rounds), "rounds": len(probes), "passes": passes,
            "threshold": threshold,
            "probe_median": round(statistics.median(probes), 3) if probes else None}


def site_medians(library: Any, inputs: list[Any], block: int) -> list[float]:
    """Each call site's median us per call over ``block`` runs (after one untimed run):
    ``site_search`` and ``end_to_end_sites`` time by it."""
    library.vm.run(*inputs)
    library.site_times(on=True)
    runs = []  # [run][site] us: a preempted call spoils one run, not the block
    for _ in range(block):
        library.vm.run(*inputs)
        runs.append(library.site_times(on=True))
    library.site_times(on=False)
    return [statistics.median(run[i] for run in runs) for i in range(library.sites)]


def site_search(library: _Library, inputs: list[Any], block: int,
                threads: int) -> tuple[KernelSettings | None, dict[str, Any]]:
    """Per call site, the option (``site_options``) that made its own calls fastest: the
    model runs with each option at every site in ``SITE_ROUNDS`` interleaved rounds while
    the wrappers time each site; a site takes an option whose per-call median is
    ``SITE_GAIN`` below the default's and that was faster in all rounds but one. Returns
    the table (None when no site changed) and a summary."""
    n = library.sites
    options = [(0, 0), *site_options(threads)]
    per: dict[tuple[int, int], list[list[float]]] = {o: [[] for _ in range(n)]
                                                     for o in options}
    for r in range(SITE_ROUNDS):
        for option in options if r % 2 == 0 else options[::-1]:
            library.set(KernelSettings(sites=(option,) * n))
            for i, us in enumerate(site_medians(library, inputs, block)):
                per[option][i].append(us)
    library.set(KernelSettings())
    table, gain_us = [], 0.0
    for i in range(n):
        base = statistics.median(per[(0, 0)][i])
        best, best_us = (0, 0), base
        for option in options[1:]:
            us = statistics.median(per[option][i])
            wins = sum(a < b for a, b in zip(per[option][i], per[(0, 0)][i]))
            if us < base * (1 - SITE_GAIN) and wins >= SITE_ROUNDS - 1 and us < best_us:
                best, best_us = option, us
        table.append(best)
        gain_us += base - best_us
    settings = KernelSettings(sites=tuple(table))
    summary = {"sites": n, "changed": sum(s != (0, 0) for s in table),
               "default_us": round(sum(statistics.median(per[(0, 0)][i]) for i in range(n)), 1),
               "estimated_gain_us": round(gain_us, 1)}
    return (settings if summary["changed"] else None), summary


def block_size(call: Callable[[], Any], samples: int = 7,
               clock: Callable[[], float] = time.perf_counter) -> int:
    """Calls per candidate and round: ``ROUND_SECONDS`` of ``call`` at the median of
    ``samples`` timed calls, within ``MIN_CALLS`` .. ``MAX_CALLS``. (One timed call, as before,
    read a preempted call under load as the model's time: ResNet-20 got 18-call blocks, and
    the rule's bound on Winograd's 0.89x stayed above 0.97 from the noise of such blocks.)"""
    times = []
    for _ in range(samples):
        t = clock()
        call()
        times.append(clock() - t)
    return max(MIN_CALLS, min(MAX_CALLS, round(ROUND_SECONDS /
                                                max(statistics.median(times), 1e-6))))


def _build(module: Any, target: Any, database: Any, path: str) -> None:
    """``lowering.build`` outside the compile's stage clock (an empty context): the
    candidates' builds are part of the tuning stage, not the build's codegen."""
    from edgecc.targets.tvm import lowering

    contextvars.Context().run(lowering.build, module, target, path, database=database)


def _cache_key(module: Any, target: Any) -> str:
    import importlib

    import tvm_ffi

    sources = []
    for name in KERNEL_SOURCES:  # a kernel change invalidates the choice
        try:
            sources.append(importlib.import_module(f"edgecc.targets.tvm.{name}").SOURCE)
        except (ImportError, AttributeError):
            continue
    # the functions' structure and shapes (the kernels linked in as attributes cannot be
    # hashed; their sources are, below); the weights' values do not change the timing
    funcs = sorted((str(gvar.name_hint), tvm_ffi.structural_hash(func, skip_tensor_content=True))
                   for gvar, func in module.functions.items())
    text = "|".join([str(funcs), str(target), f"rule {RULE_VERSION}",
                     *(hashlib.sha256(s.encode()).hexdigest()[:16] for s in sources)])
    return hashlib.sha256(text.encode()).hexdigest()[:24]


def _read_cache(directory: str) -> dict[str, Any]:
    try:
        with open(os.path.join(directory, CACHE_FILE)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return {}


def _write_cache(directory: str, key: str, record: dict[str, Any]) -> None:
    cache = _read_cache(directory)
    cache[key] = record
    path = os.path.join(directory, CACHE_FILE)
    with open(path + ".tmp", "w") as f:
        json.dump(cache, f, indent=1)
    os.replace(path + ".tmp", path)


def _host_probe(threads: int) -> Callable[[], float] | None:
    """``host_state``'s reading for the state guard, None where it cannot run or the pool has
    one thread (0: every core)."""
    if (threads or os.cpu_count() or 1) < 2:
        return None
    found = host_state.probe()
    return found.scaling if found is not None else None


def measure(module: Any, target: Any, database: Any, tuned_kernels: bool,
            clock: Callable[[], float] = time.perf_counter,
            probe: Callable[[], float] | None | str = "host") -> dict[str, Any]:
    """Build and time the candidates (module docstring); returns the record: ``chosen``
    (a candidate's name), ``tuned_kernels`` / ``settings`` of it, every candidate's
    ``ms``, ``default_ms``, the rule's ``verdicts`` and ``confirm``, the call-site search's
    ``sites``, ``calls`` timed per candidate and ``seconds``. ``probe``: the host reading
    of the state guard (``"host"``: ``host_state``'s probe where it runs and the pool has 2+
    threads; None: no guard)."""
    from edgecc.targets.tvm.lowering import hand_written_kernels

    start = time.perf_counter()
    threads = int(target.attrs.get("num-cores", 0) or 0)
    if probe == "host":
        probe = _host_probe(threads)
    callees = call_sites(hand_written_kernels(module, target))
    if not (tuned_kernels or callees):  # one candidate: the default, nothing to compare
        return {"chosen": "default", "tuned_kernels": False,
                "settings": dataclasses.asdict(KernelSettings()), "ms": {}, "confirm_ms": {},
                "default_ms": None, "chosen_ms": None, "verdicts": {}, "confirm": None,
                "combined": None,
                "sites": None, "site_knobs": None, "variants": None, "rule": RULE,
                "calls": {"rounds": 0, "per_round": 0, "confirm_rounds": 0},
                "seconds": round(time.perf_counter() - start, 2)}
    inputs = _inputs(module)
    with tempfile.TemporaryDirectory() as d:
        base = "tuned" if tuned_kernels else "default"
        builds = {"default": (module, None),
                  **({"tuned": (module, database)} if tuned_kernels else {})}
        if callees:  # the base build with call-site wrappers, all sites at (0, 0)
            zeros = KernelSettings(sites=((0, 0),) * len(callees))
            builds["sites"] = (with_kernel_settings(module, zeros),
                               database if tuned_kernels else None)
        libraries = {}
        for name, (mod, db) in builds.items():
            path = os.path.join(d, f"{name}.so")
            _build(mod, target, db, path)
            libraries[name] = _Library(path, threads)
        candidates = {name: (libraries[name], KernelSettings())
                      for name in ("default", "tuned") if name in libraries}
        default = libraries["default"]
        for _ in range(2):  # warm: page faults, the pool's first wake
            default.vm.run(*inputs)
        block = block_size(lambda: default.vm.run(*inputs))
        sites = variants = site_knobs = None
        if callees:
            from edgecc.targets.tvm.end_to_end_sites import site_knob_search

            knobs, variants = knob_candidates(libraries[base], callees)
            table, sites = site_search(libraries["sites"], inputs, block, threads)
            knob_table, site_knobs = site_knob_search(libraries["sites"], callees, inputs,
                                                      block)
            for settings in [*settings_candidates(threads), *knobs,
                             *([table] if table is not None else []),
                             *([knob_table] if knob_table is not None else [])]:
                lib = library_for(libraries, base, settings)
                if lib is not None:
                    candidates[f"{base}, {settings.describe()}"] = (lib, settings)
        libs = list(libraries.values())
        picked = select(candidates, libs, inputs, block, clock,
                        lambda s: library_for(libraries, base, s), probe)
        chosen = picked["chosen"]
        settings = picked["settings"]
        for lib in libs:  # TVM keeps loaded libraries: leave their settings at default
            lib.set(KernelSettings())
    ms = picked["ms"]
    combined = picked["combined"]  # a chosen combination: both times from its pass
    same = combined["ms"] if combined and chosen == combined["candidate"] else ms
    return {"chosen": chosen, "tuned_kernels": chosen.startswith("tuned"),
            "settings": dataclasses.asdict(settings), "ms": ms,
            "confirm_ms": picked["confirm_ms"], "default_ms": same["default"],
            "chosen_ms": same[chosen], "verdicts": picked["verdicts"],
            "confirm": picked["confirm"], "combined": picked["combined"], "sites": sites,
            "site_knobs": site_knobs,
            "variants": variants, "rule": RULE,
            "calls": {"rounds": ROUNDS, "per_round": block, "site_rounds":
                      SITE_ROUNDS if sites else 0,
                      "site_knob_rounds": site_knobs["rounds"] if site_knobs else 0,
                      "combine_rounds": ROUNDS if picked["combined"] else 0, "confirm_rounds":
                      CONFIRM_ROUNDS if picked["confirm"] is not None else 0},
            "seconds": round(time.perf_counter() - start, 2)}


def tune_host(module: Any, target: Any, trials: int, *, root: str | None = None,
              progress: bool | None = None) -> tuple[Any, Any, dict[str, Any]]:
    """``tuning.tune`` (MetaSchedule, kernel by kernel), then the end-to-end stage for a
    build that runs here. Returns the module to build (with the chosen kernel settings),
    the database to build with (None when the untuned kernels were faster end to end) and
    the statistics for the manifest (``tuning.tune``'s, plus ``end_to_end``, with
    ``budget`` and ``outcome`` saying what was measured and what the build applies)."""
    from edgecc.targets.tvm import tuning

    database, stats = tuning.tune(module, target, trials, root=root, progress=progress)
    start = time.perf_counter()
    tuned_kernels = stats["kernels_with_record"] > stats["default_kept"]
    key = _cache_key(module, target)
    cached = _read_cache(stats["cache"]).get(key)
    if cached is not None and stats["trials_run"] == 0:
        record = {**cached, "from_cache": True}
    else:
        record = {**measure(module, target, database, tuned_kernels), "from_cache": False}
        _write_cache(stats["cache"], key, {k: v for k, v in record.items()
                                           if k != "from_cache"})
    record_stage_part("tvm tuning", time.perf_counter() - start)
    stats["end_to_end"] = record
    calls = record["calls"]
    sites = record.get("sites")
    sk = record.get("site_knobs")
    variants = record.get("variants")
    combined = record.get("combined")
    stats["budget"] += (
        f"; then the whole model end to end: {len(record['ms'])} candidate(s) (the untuned "
        f"build among them), {calls['rounds']} interleaved rounds of {calls['per_round']} "
        "calls each"
        + (f", after a call-site search over {sites['sites']} call sites "
           f"({calls['site_rounds']} rounds per option)" if sites else "")
        + (f" and a per-call-site kernel-variant search ({sk['values']} values of "
           f"{sk['knobs']} knobs, {sk['rounds']} rounds: {sk['blocks']} blocks of "
           f"{sk['calls_per_block']} runs, {sk['seconds']:.0f} s; {sk['changed']} of "
           f"{sk['sites']} call sites changed"
           + (f"; knobs skipped for the budget: {', '.join(sk['skipped_for_budget'])}"
              if sk["skipped_for_budget"] else "") + ")" if sk else "")
        + (f", a combining pass of {calls['combine_rounds']} rounds (the default, the best "
           f"single candidate and the combination of {len(combined['components'])} winners: "
           f"{'chosen over it' if combined['replaces'] else 'not faster'})"
           if calls.get("combine_rounds") and combined else "")
        + (f", {calls['confirm_rounds']} confirming rounds" if calls.get("confirm_rounds")
           else "")
        + (f" ({record['seconds']:.0f} s)" if record.get("seconds") else "")
        + (" (read from the cache)" if record["from_cache"] else "")
        + (f"; kernel variants among them: {len(variants['measured'])} "
           f"({', '.join(variants['measured'])})" if variants and variants["measured"] else "")
        + (f"; knobs skipped (not in this kernel set): "
           f"{', '.join(variants['skipped_missing_symbol'])}"
           if variants and variants["skipped_missing_symbol"] else ""))
    stats["outcome"] = tuning.outcome(stats)
    settings = KernelSettings(**record["settings"])
    if record["tuned_kernels"]:
        tuned = stats["kernels_with_record"] - stats["default_kept"]
        stats["applied"] = (f"MetaSchedule-tuned ({tuned}/{stats['kernels']} kernels), edgecc "
                            f"schedule for the rest, {settings.describe()}")
    elif settings.is_default:
        stats["applied"] = ("edgecc's default schedule and kernel settings (the untuned build: "
                            "no candidate was faster end to end)")
    else:
        stats["applied"] = f"edgecc's default schedule, {settings.describe()}"
    return (build_module(module, settings),
            database if record["tuned_kernels"] else None, stats)
