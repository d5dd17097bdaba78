"""x86 int8 inverted residual blocks in one kernel call: the expand 1x1 ``edgecc_x86_qconv``,
the depthwise ``edgecc_x86_qdwconv`` and the project 1x1 ``edgecc_x86_qconv`` (+ its fused
residual write-back) of a w8a8 MobileNetV2 block as ONE ``edgecc_x86_qblock`` call, so the VM
dispatches one packed call instead of three (MobileNetV2-32: ~1 us of VM dispatch and argument
marshalling per call beside 2-7 us of kernel on its small planes)::

    Before: ye = qconv(x, We...);  yd = qdwconv(ye, Wd...);  y.. = qconv(yd, Wp..., post, res)
    After:  y.. = qblock(x, We... (8), Wd... (8), Wp..., post, res)

The call's arguments are the three calls' own (their constants unchanged, the two int8
intermediates left out): ``x`` and the expand's 8 constants, the depthwise's 8, the project's
inputs after its ``x`` and its outputs. The C entry (``BLOCK_FFI``, spliced into
``x86_int8_source.SOURCE``) runs the three packed entries in turn on per-thread int8
intermediates, so the outputs are the unfused build's bit for bit by construction (tested
against it and the integer simulator, ``tests/targets/tvm/test_x86_int8_block.py``).

Where (``fuse``, called by ``integer_lowering`` after a 1x1 stride-1 project's call was
emitted): the project's input is a requantized (plain int8) ``qdwconv`` call whose input is a
requantized ``qconv`` 1x1 stride-1 unpadded call, each int8 intermediate used by the next layer
only, the expand's output at most ``MAX_EXPAND_PIXELS`` pixels a channel. The calls it replaces
stay emitted, unused (the lowering's dead-code elimination drops them). ``FUSE_BLOCK`` False:
none (the build-time A/B switch). ``edgecc_x86_int8_block_calls`` counts the fused calls run
(``edgecc_x86_int8_block`` query: the tests' proof the fused call ran).
"""

from __future__ import annotations

from typing import Any

SYMBOL = "edgecc_x86_qblock"
CALLS = "edgecc_x86_int8_block"  # () -> fused block calls run in this process
SYMBOLS = (SYMBOL, CALLS)

# build-time switch: False, every block as its three calls
FUSE_BLOCK = True
# blocks whose expand output map (OH x OW of the expand) is larger run as three calls
MAX_EXPAND_PIXELS = 32 * 32

_EXPAND_ARGS = 9  # x + packed, meta, off, mult, add, shift, scale, bias
_CONSTS = 8

BLOCK_FFI = r"""
// ---- a whole inverted residual block in one call (targets/tvm/x86_int8_block.py) --------
// args: x, the expand's 8 constants, the depthwise's 8, the project's inputs after its x
// (8 constants (, post (, residual))) and outputs; the three packed entries run in turn on
// per-thread int8 intermediates (the same kernels, the same outputs)
int64_t block_calls = 0;

static int8_t* qblock_mid(size_t bytes) {
  static thread_local int8_t* buf = 0;
  static thread_local size_t size = 0;
  if (size < bytes) {
    free(buf);
    size = (bytes + 4095) / 4096 * 4096;
    buf = static_cast<int8_t*>(aligned_alloc(64, size));
  }
  return buf;
}

static inline TVMFFIAny int8_tensor_arg(DLTensor& t, void* ptr, int64_t* shape) {
  t = DLTensor{};
  t.data = ptr;
  t.device.device_type = kDLCPU;
  t.ndim = 4;
  t.dtype.code = kDLInt; t.dtype.bits = 8; t.dtype.lanes = 1;
  t.shape = shape;
  TVMFFIAny arg{};
  arg.type_index = kTVMFFIDLTensorPtr;
  arg.v_ptr = &t;
  return arg;
}

__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_qblock(void*, const TVMFFIAny* args, int32_t num_args,
                                 TVMFFIAny* result) {
  if (num_args < 26 || num_args > 29) {
    TVMFFIErrorSetRaisedFromCStr("ValueError", "edgecc_x86_qblock: expected 26-29 arguments");
    return -1;
  }
  const int64_t* m1 = data<int64_t>(args, 2);   // the expand's meta (qconv's)
  const int64_t* m2 = data<int64_t>(args, 10);  // the depthwise's (qdwconv's)
  int64_t s1[4] = {m1[5], m1[9], m1[18], m1[19]};
  int64_t s2[4] = {m2[5], m2[6], m2[17], m2[18]};
  const size_t b1 = (size_t)(s1[0] * s1[1] * s1[2] * s1[3] + 63) / 64 * 64;
  const size_t b2 = (size_t)(s2[0] * s2[1] * s2[2] * s2[3]);
  int8_t* buf = qblock_mid(b1 + b2 + 64);
  DLTensor t1, t2;
  const TVMFFIAny mid1 = int8_tensor_arg(t1, buf, s1), mid2 = int8_tensor_arg(t2, buf + b1, s2);
  TVMFFIAny a[16];
  for (int i = 0; i < 9; ++i) a[i] = args[i];
  a[9] = mid1;
  if (__tvm_ffi_edgecc_x86_qconv(0, a, 10, result)) return -1;
  a[0] = mid1;
  for (int i = 1; i < 9; ++i) a[i] = args[8 + i];
  a[9] = mid2;
  if (__tvm_ffi_edgecc_x86_qdwconv(0, a, 10, result)) return -1;
  a[0] = mid2;
  for (int i = 17; i < num_args; ++i) a[i - 16] = args[i];
  if (__tvm_ffi_edgecc_x86_qconv(0, a, num_args - 16, result)) return -1;
  __atomic_fetch_add(&block_calls, 1, __ATOMIC_RELAXED);
  return 0;
}

// how many fused block calls ran in this process (the tests' proof)
__attribute__((visibility("default")))
int __tvm_ffi_edgecc_x86_int8_block(void*, const TVMFFIAny*, int32_t, TVMFFIAny* result) {
  result->type_index = kTVMFFIInt; result->zero_padding = 0;
  result->v_int64 = __atomic_load_n(&block_calls, __ATOMIC_RELAXED);
  return 0;
}
"""


def _packed(bb: Any, var: Any, symbol: str) -> Any | None:
    """The ``call_dps_packed`` of ``symbol`` bound to ``var`` in ``bb``, else None."""
    from tvm import relax

    value = bb.lookup_binding(var) if isinstance(var, relax.Var) else None
    if not isinstance(value, relax.Call) or value.op != _DPS() \
            or not isinstance(value.args[0], relax.ExternFunc) \
            or str(value.args[0].global_symbol) != symbol:
        return None
    return value


def _DPS() -> Any:
    import tvm

    return tvm.ir.Op.get("relax.call_dps_packed")


def _meta(arg: Any) -> list[int] | None:
    data = getattr(arg, "value", None)  # a Relax constant (its tensor)
    if data is None or not hasattr(data, "numpy"):
        return None
    return [int(v) for v in data.numpy().reshape(-1)]


def _plain_int8(call: Any) -> bool:
    """A requantized call with one int8 output and no fused write-back (10 arguments)."""
    from tvm import relax

    ty = call.ty_args[0] if call.ty_args else None
    return len(call.args[1].fields) == _EXPAND_ARGS and isinstance(
        ty, relax.TensorType) and str(ty.dtype) == "int8"


def _pointwise(meta: list[int] | None) -> bool:
    """qconv meta of a 1x1 stride-1 unpadded undilated convolution."""
    return meta is not None and meta[0] == 2 and meta[10:18] == [1, 1, 1, 1, 0, 0, 1, 1]


def fuse(bb: Any, outs: list[Any]) -> list[Any] | None:
    """``outs`` (a project 1x1 ``qconv`` call's outputs, just emitted) as the outputs of one
    ``edgecc_x86_qblock`` call with the expand and depthwise calls before it, or None where
    it is not such a block (module docstring). The caller checked the intermediates' uses."""
    from tvm import relax

    if not FUSE_BLOCK or not outs:
        return None
    head = bb.lookup_binding(outs[0]) if isinstance(outs[0], relax.Var) else None
    tuple_out = isinstance(head, relax.TupleGetItem)
    if tuple_out:
        project = _packed(bb, head.tuple_value, "edgecc_x86_qconv")
    else:
        if len(outs) != 1:
            return None
        project = _packed(bb, outs[0], "edgecc_x86_qconv")
    if project is None or not _pointwise(_meta(project.args[1].fields[2])):
        return None
    dw = _packed(bb, project.args[1].fields[0], "edgecc_x86_qdwconv")
    if dw is None or not _plain_int8(dw):
        return None
    expand = _packed(bb, dw.args[1].fields[0], "edgecc_x86_qconv")
    if expand is None or not _plain_int8(expand):
        return None
    m1 = _meta(expand.args[1].fields[2])
    if not _pointwise(m1) or m1[18] * m1[19] > MAX_EXPAND_PIXELS:
        return None
    args = [*expand.args[1].fields, *dw.args[1].fields[1:], *project.args[1].fields[1:]]
    out_ty = project.ty_args[0]  # the project's output type(s), as it was emitted
    out_ty = list(out_ty.fields) if tuple_out else out_ty
    new = bb.emit(relax.call_dps_packed(relax.ExternFunc(SYMBOL), args, out_ty))
    if not tuple_out:
        return [new]
    return [bb.emit(relax.TupleGetItem(new, bb.lookup_binding(o).index)) for o in outs]
