"""x86 int8: a ResNet stride-2 block's 3x3 conv1 and its 1x1 stride-2 shortcut in ONE pooled
call (``edgecc_x86_qconv_pair``), each thread computing its band of output rows of both from
one copy of its input rows.

Why: both read the block's int8 input. conv1 (3x3, stride 2, pad 1) runs ``conv_direct4`` pooled
by bands of output rows on a column-phase copy (``pad_rows_c4s``, x86_int8_direct_source); the
shortcut (1x1, stride 2, unpadded) ran as a second, SERIAL call making its own copy, the caller
alone reading an input the two threads had written by halves (ResNet-20 at 2 threads on Zen 4:
4.09 / 2.45 us vs 2.63 / 1.90 us at 1 thread, s17). The shortcut's pixels are conv1's copy at
its centre tap: output (oy, ox) reads x[2oy][2ox] = padded row 2oy + 1, column phase 1, entry
ox — so in each band the shortcut's tiles read conv1's copy in place (their quad offsets
``qoff[cq]`` those of tap (1, 1)); no second copy, call, serial step or cross-core read::

    Before: y1 = qconv(x, W1 ... 3x3 s2 p1)          # pooled: bands, each its copy
            ys = qconv(x, Ws ... 1x1 s2)             # serial: its own copy of x
    After:  y1, ys = qconv_pair(x, W1 ... (8), Ws ... (8))
            per band: pad its rows (conv1's copy); conv1's tiles; the shortcut's tiles

The same tiles on the same bytes and the same write-backs: both outputs are the two calls'
bit for bit (tests/targets/tvm/test_x86_int8_pair.py, against them and the integer arithmetic).

The lowering order (``lower_shortcut``, called by ``integer_lowering`` after a conv was
emitted): the fx graph has conv1, conv2, then the shortcut, and a float-epilogue conv takes the
block's residual add into its write-back when the add's other operand is already lowered — so
the shortcut carried the add (conv2's plain float output its residual). ``REORDER``: the
shortcut is lowered right after conv1, as a plain float output, and conv2 takes the add (the
same float32 operations: ``y2 + ys`` for ``ys + y2``, IEEE addition commutes; the model's
outputs are the old order's bit for bit, tested; a shortcut the graph has before conv1 — an
add ``shortcut(x) + conv2(y)`` — is lowered at its own turn, plain, and paired as it is).
``FUSE_PAIR`` then pairs the two calls (``fuse``); the calls it replaces stay emitted, unused
(dead-code elimination drops them).

Measured (Zen 4 KVM, ResNet-20 w8a8, load 0.8-2.3: another helper's builds on the other vCPU
at times). 1 thread, per call alone (bench/x86_int8_calls_ab.py, knob 1 vs 0 interleaved, 60
rounds, CPU time): the pair 9.23 vs 9.73 us (16->32 @32x32) and 8.39 vs 8.77 us (32->64
@16x16), 0.95x each (the shortcut's copy and call saved, ~0.9 us a run: whole-model 1-thread
A/Bs, bench/x86_int8_pair.py, read 0.99-1.01x, under their noise). 2 threads in place
(bench/x86_int8_dw_threads.py --mode calls --compare edgecc_x86_int8_pair:0, 300 rounds, three
runs, load 0.8-1.1): the pair 6.05-6.36 us vs conv1 4.60 + shortcut (serial) 3.47-3.52 us, and
4.93-5.19 vs 4.41-4.56 + 1.55-1.66 us: ~2.8-3 us a run (~1.8% of ~155 us); the pair's worker
half 5.54 / 4.50 us (0.60 / 0.54 of the 1-thread call, as the other pooled convs'). Against
the old order (REORDER off: the serial shortcuts carrying the residual, 3.9 / 2.5 us at 2
threads), separate processes, runs where the worker took its half (pooled convs at 0.57 of 1
thread): sum of jobs 133.5 vs 137.7 us, whole run 153.5 vs 157.1 us (~0.975x); in a slow host
state 172.8 vs 178.1 / 224.2 vs 225.4 us; 1 thread 219.8 vs 220.6 us.

Switches: ``REORDER`` / ``FUSE_PAIR`` (build time, module constants; False: as before);
``edgecc_x86_int8_pair`` (library global, default 1; 0: the pair entry runs its two calls in
turn, the unpaired kernels: an A/B in one library and a --tune knob). Counter
``edgecc_x86_int8_pair_calls`` (query): pair calls that ran paired — the tests' proof. Where
the kernels cannot pair (no AVX-512 VBMI / VNNI, AMX, geometry, no layer table) the entry
runs the two calls in turn, uncounted. The pair always splits conv1 by ``conv_direct4``'s bands
(``edgecc_x86_int8_direct4_rows`` / ``_trace`` apply to unpaired calls only).
"""

from __future__ import annotations

from typing import Any

SYMBOL = "edgecc_x86_qconv_pair"
CALLS = "edgecc_x86_int8_pair_calls"  # () -> paired calls run in this process
KNOB = "edgecc_x86_int8_pair"  # int64 library global: 1 paired (default), 0 two calls in turn
SYMBOLS = (SYMBOL, CALLS)

# build-time switches: REORDER lowers a stride-2 block's 1x1 shortcut right after its conv1
# (conv2 then takes the residual add); FUSE_PAIR (with REORDER) makes the two one call
REORDER = True
FUSE_PAIR = True

_CONV = "edgecc_x86_qconv"
_IN = 9  # a plain qconv call's inputs: x + packed, meta, off, mult, add, shift, scale, bias

PAIR_KERNELS = r"""
// ---- conv1 + 1x1 stride-2 shortcut as one pooled job (targets/tvm/x86_int8_pair.py) --------
extern "C" __attribute__((visibility("default"))) int64_t edgecc_x86_int8_pair = 1;
int64_t pair_calls = 0;  // pair calls run paired (a test's)
constexpr int64_t PAIR_MAX_QUADS = 64;

// the pair entry's state: qconv's conv_direct4 branch hands it conv1's Direct4 (stage 0 -> 1,
// not run), then runs the shortcut's with it (1 -> 2: conv_direct4_pair)
struct D4Pair {
  int stage = 0;
  Direct4 first{};
  int64_t work = 0;
};
static thread_local D4Pair* d4_pair = nullptr;

// conv1 3x3 stride 2 pad 1 and the shortcut 1x1 stride 2 unpadded on the same map, same output
static bool d4_pair_fits(const Direct4& a, const Direct4& b) {
  return a.sh == 2 && a.sw == 2 && a.kh == 3 && a.kw == 3 && a.ph == 1 && a.pw == 1 &&
         b.sh == 2 && b.sw == 2 && b.kh == 1 && b.kw == 1 && b.ph == 0 && b.pw == 0 &&
         a.x == b.x && a.c == b.c && a.h == b.h && a.w == b.w && a.oh == b.oh &&
         a.ow == b.ow && a.c_real >= a.c && b.c_real >= b.c && a.c % 4 == 0 &&
         a.c / 4 <= PAIR_MAX_QUADS && b.kq == a.c / 4;
}

// conv_direct4's bands of conv1 (a), each thread's copy then read by the shortcut's tiles too
// (b: its quads at conv1's centre tap (1, 1) of the column-phase copy)
static void conv_direct4_pair(const Direct4& a, const Direct4& b0, int64_t threads,
                              int64_t job_work) {
  Direct4 b = b0;
  int64_t qoff[PAIR_MAX_QUADS];
  for (int64_t cq = 0; cq < a.c / 4; ++cq) qoff[cq] = ((cq * a.hp + 1) * 2 + 1) * a.wq * 4;
  b.qoff = qoff;
  b.hp = a.hp, b.wp = a.wp, b.wq = a.wq, b.ph = a.ph, b.pw = a.pw;
  const int64_t halo = a.kh - 1;
  const int64_t unit = a.ow == 8 ? 2 : 1, units = a.oh / unit;
  const int64_t per = std::max<int64_t>(1, edgecc_x86_int8_direct4_bands);
  const int64_t bands = threads > 1 && job_work >= serial_work()
      ? std::min(units, std::max(threads, std::min(per * threads, a.oh / (2 * halo)))) : 1;
  const int64_t bytes = a.c * a.hp * a.row_bytes() / 4 + 64;
  parallel_for(bands, [&](int64_t i0, int64_t i1) {
    uint8_t* own = static_cast<uint8_t*>(scratch(1, bytes));
    for (int64_t i = i0; i < i1; ++i) {
      const int64_t r0 = i * units / bands * unit, r1 = (i + 1) * units / bands * unit;
      direct4_band(a, own, r0, r1);
      direct4_tiles(b, own, r0, r1);
    }
  }, job_work);
  count_direct4_tiles();  // x86_int8_direct_source
}

// qconv's conv_direct4 branch under a pair entry: true where it took the call (conv1 held,
// needing its layer tables: nothing of it in the call's scratch; or the shortcut run paired)
static bool d4_pair_take(const Direct4& d, int64_t job_work, int64_t threads, bool tables) {
  D4Pair& p = *d4_pair;
  if (p.stage == 0) {
    if (!tables || d.sh != 2 || d.kh != 3 || d.kw != 3) return false;
    p.first = d, p.work = job_work, p.stage = 1;
    return true;
  }
  if (p.stage != 1 || !d4_pair_fits(p.first, d)) return false;
  conv_direct4_pair(p.first, d, threads, direct4_job(p.work + job_work, false, true, threads));
  p.stage = 2;
  return true;
}
"""

PAIR_FFI = r"""
// ---- the pair entry (targets/tvm/x86_int8_pair.py) ----
// args: x, conv1's 8 constants, the shortcut's 8, conv1's output, the shortcut's output
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_qconv_pair(void*, const TVMFFIAny* args, int32_t num_args,
                                     TVMFFIAny* result) {
  if (num_args != 19) {
    TVMFFIErrorSetRaisedFromCStr("ValueError", "edgecc_x86_qconv_pair: expected 19 arguments");
    return -1;
  }
  TVMFFIAny a[10], b[10];
  for (int i = 0; i < 9; ++i) a[i] = args[i];
  a[9] = args[17];
  b[0] = args[0];
  for (int i = 0; i < 8; ++i) b[1 + i] = args[9 + i];
  b[9] = args[18];
  if (!edgecc_x86_int8_pair) {  // the two calls in turn (A/B)
    if (__tvm_ffi_edgecc_x86_qconv(0, a, 10, result)) return -1;
    return __tvm_ffi_edgecc_x86_qconv(0, b, 10, result);
  }
  D4Pair p;
  d4_pair = &p;
  int rc = __tvm_ffi_edgecc_x86_qconv(0, a, 10, result);  // held (stage 1) or run
  if (rc || p.stage != 1) d4_pair = nullptr;
  if (!rc) rc = __tvm_ffi_edgecc_x86_qconv(0, b, 10, result);  // run paired (stage 2) or alone
  d4_pair = nullptr;
  if (rc) return -1;
  if (p.stage == 1) return __tvm_ffi_edgecc_x86_qconv(0, a, 10, result);  // conv1 alone
  if (p.stage == 2) {
    EDGECC_COUNT(direct4_calls, 2);
    EDGECC_COUNT(direct4_s2_calls, 2);
    EDGECC_COUNT(pair_calls, 1);
  }
  return 0;
}

// how many pair calls ran paired in this process (the tests' proof)
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_int8_pair_calls(void*, const TVMFFIAny*, int32_t, TVMFFIAny* result) {
  result->type_index = kTVMFFIInt; result->zero_padding = 0;
  result->v_int64 = __atomic_load_n(&pair_calls, __ATOMIC_RELAXED);
  return 0;
}
"""


def _packed(bb: Any, var: Any) -> Any | None:
    """The plain ``edgecc_x86_qconv`` call (9 inputs, one tensor output) bound to ``var``."""
    from tvm import relax

    from edgecc.targets.tvm.x86_int8_block import _packed as packed

    call = packed(bb, var, _CONV)
    if call is None or len(call.args[1].fields) != _IN or not call.ty_args \
            or not isinstance(call.ty_args[0], relax.TensorType):
        return None
    return call


def pairs(m1: list[int] | None, m2: list[int] | None) -> bool:
    """qconv metas of a conv1 (3x3, stride 2, pad 1) and a shortcut (1x1, stride 2, unpadded)
    on one batch-1 map of channel quads (tap-major rows), of one output size that
    ``conv_direct4``'s stride-2 path takes (16-column rows, or 8 columns and even rows)."""
    if m1 is None or m2 is None or len(m1) < 24 or len(m2) < 24:
        return False
    oh, ow = m1[18], m1[19]
    return (m1[0] == m2[0] == 2 and m1[5] == 1 and m1[5:9] == m2[5:9] and m1[6] % 4 == 0
            and m1[10:18] == [3, 3, 2, 2, 1, 1, 1, 1] and m2[10:18] == [1, 1, 2, 2, 0, 0, 1, 1]
            and m1[18:21] == m2[18:21] and m1[23] == m2[23] == 1 and m1[8] <= 62
            and m1[6] // 4 <= 64 and (ow % 16 == 0 or (ow == 8 and oh % 2 == 0)))


def fuse(bb: Any, first: Any, second: Any) -> tuple[Any, Any] | None:
    """``first`` (a conv1 ``qconv`` call's output) and ``second`` (its shortcut's, on the same
    input) as the two outputs of one ``edgecc_x86_qconv_pair`` call, or None where they are
    not such a pair (``pairs``) or ``FUSE_PAIR`` is off."""
    from tvm import relax

    from edgecc.targets.tvm.x86_int8_block import _meta

    if not FUSE_PAIR:
        return None
    a, b = _packed(bb, first), _packed(bb, second)
    if a is None or b is None:
        return None
    fa, fb = a.args[1].fields, b.args[1].fields
    if not fa[0].same_as(fb[0]) or not pairs(_meta(fa[2]), _meta(fb[2])):
        return None
    new = bb.emit(relax.call_dps_packed(relax.ExternFunc(SYMBOL), [*fa, *fb[1:]],
                                        [a.ty_args[0], b.ty_args[0]]))
    return bb.emit(relax.TupleGetItem(new, 0)), bb.emit(relax.TupleGetItem(new, 1))


def _conv_geometry(node: Any, const: Any) -> tuple[tuple[int, ...], list, list, list, int] | None:
    """(weight shape, stride, padding, dilation, groups) of an fx convolution whose weight is
    a dequantized constant, else None."""
    from edgecc.quant import is_dequantize

    if getattr(node, "op", None) != "call_function" or getattr(
            node.target, "__name__", "") not in ("convolution.default", "conv_act.default") \
            or len(node.args) < 9 or not is_dequantize(node.args[1]):
        return None
    wq = const(node.args[1].args[0])
    stride, padding, dilation, transposed, _, groups = node.args[3:9]
    if wq is None or wq.ndim != 4 or transposed:
        return None
    return tuple(wq.shape), list(stride), list(padding), list(dilation), int(groups)


def shortcut_of(node: Any, xq: Any, const: Any) -> Any | None:
    """The fx 1x1 stride-2 unpadded convolution that reads ``xq`` (the quantize ``node`` — a
    3x3 stride-2 pad-1 convolution — reads) through a dequantize, with ``node``'s input
    channels, if ``REORDER`` and there is exactly one; else None. ``const``: name -> value."""
    from edgecc.quant import is_dequantize

    g = _conv_geometry(node, const) if REORDER else None
    if g is None or g[0][2:] != (3, 3) or g[1:] != ([2, 2], [1, 1], [1, 1], 1):
        return None
    found = []
    for d in getattr(xq, "users", ()):
        if not is_dequantize(d):
            continue
        for u in d.users:
            s = _conv_geometry(u, const) if u is not node and u.args and u.args[0] is d \
                else None
            if s is not None and s[0][1:] == (g[0][1], 1, 1) \
                    and s[1:] == ([2, 2], [0, 0], [1, 1], 1):
                found.append(u)
    return found[0] if len(found) == 1 else None
