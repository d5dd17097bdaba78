"""Intel AMX (``tdpbusd`` / ``tdpbsud`` tile products) for the x86 int8 kernels: C++ spliced
into ``x86_int8_source.SOURCE`` at two points, so the int8 kernel set stays one library.

- ``AMX_KERNELS`` goes inside the kernels' namespace after ``gemm_panels_dot``; it defines
  ``bool amx_gemm(const GemmDot& g, bool urows)``: the whole product of ``g`` (every panel,
  ``write_tile`` write-back) on AMX tiles, returning false — nothing written — where AMX
  cannot run (no AMX-INT8, the OS refuses the tile state, ``EDGECC_X86_INT8_ISA`` narrowed
  the choice), and the caller then runs its VNNI / AVX2 path. ``urows``: the rows are the
  unsigned operand (linear: activations + 128), else the panels are (conv: im2col + 128).
- ``AMX_FFI`` goes inside the ``extern "C"`` block; ``AMX_SYMBOLS`` names what it exports.

Until the AMX kernels land, ``amx_gemm`` declines every product.
"""

AMX_SYMBOLS: tuple[str, ...] = ()

AMX_KERNELS = r"""
// ---- AMX (targets/tvm/x86_amx_source.py) -------------------------------------------------
__attribute__((unused)) bool amx_gemm(const GemmDot&, bool) { return false; }
"""

AMX_FFI = r"""
"""
