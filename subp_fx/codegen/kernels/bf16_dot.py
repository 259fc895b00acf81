"""The bf16 kernel's inner step (``vdpbf16ps``) and bf16 rounding, as TIR.

TVM 0.27 cannot type a value as LLVM's ``bfloat``: its TIR pipeline legalises every bf16 value to
float32 or uint16 before codegen, and ``llvm.x86.avx512bf16.dpbf16ps.512`` takes ``<32 x
bfloat>`` operands in LLVM 22 (``benchmarks/probes/bf16_intrinsic.py`` shows each way TIR can
type them failing). So the step is a three-line LLVM function, :data:`DOT_IR`, that takes the
words as ``<16 x i32>`` and bitcasts them: the kernel imports it with TVM's
``pragma_import_llvm`` attribute (:func:`importing_dot`), which links it into the kernel's LLVM
module before optimisation, marked always-inline, and calls it as an external function
(:func:`dot`). After inlining the call is one ``vdpbf16ps`` (checked in the assembly by the
tests), exactly the instruction a native bf16 type would give.

Rounding a float32 to bf16 (the kernel's bf16 store) is integer arithmetic on its bits, round to
nearest even (:func:`rounded_bf16_bits`): the same as ``torch.Tensor.to(torch.bfloat16)`` for
every finite value and infinity (a NaN may become infinity; the fp32 convs it came from would
have made the whole output NaN anyway).
"""

from __future__ import annotations

from tvm import DataType, tirx

DOT_FUNCTION = "subp_fx_dpbf16ps_512"
ROUND_FUNCTION = "subp_fx_cvtneps2bf16_512"
LANES = 16
DOT_IR = f"""
define <16 x float> @{DOT_FUNCTION}(<16 x float> %acc, <16 x i32> %pairs_a, <16 x i32> %pairs_b) {{
  %a = bitcast <16 x i32> %pairs_a to <32 x bfloat>
  %b = bitcast <16 x i32> %pairs_b to <32 x bfloat>
  %sum = call <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float> %acc, <32 x bfloat> %a, <32 x bfloat> %b)
  ret <16 x float> %sum
}}
declare <16 x float> @llvm.x86.avx512bf16.dpbf16ps.512(<16 x float>, <32 x bfloat>, <32 x bfloat>)

define <16 x i16> @{ROUND_FUNCTION}(<16 x float> %value) {{
  %rounded = fptrunc <16 x float> %value to <16 x bfloat>
  %bits = bitcast <16 x bfloat> %rounded to <16 x i16>
  ret <16 x i16> %bits
}}
"""
_VECTOR = f"float32x{LANES}"


def dot(acc, activation_pairs, weight_pairs):
    """``acc`` (float32x16) plus, in lane j, ``a[2j] * b[2j] + a[2j + 1] * b[2j + 1]`` of the bf16
    pairs in the int32x16 ``activation_pairs`` and ``weight_pairs`` (one ``vdpbf16ps``)."""
    return tirx.call_pure_extern(_VECTOR, DOT_FUNCTION, acc, activation_pairs, weight_pairs)


def rounded_vector(value):
    """float32x16 ``value`` rounded to bf16 as uint16x16 bits: one ``vcvtneps2bf16`` (round to
    nearest even; unlike :func:`rounded_bf16_bits`, float32 denormals become zero, as the
    instruction does)."""
    return tirx.call_pure_extern(f"uint16x{LANES}", ROUND_FUNCTION, value)


def importing_dot(body: tirx.Stmt) -> tirx.Stmt:
    """``body`` with :data:`DOT_IR` linked into the LLVM module it is compiled to (every function
    that calls :func:`dot` wraps its body so; a module of many such functions links it once
    each, LLVM keeps one definition)."""
    from tvm import ir

    return tirx.AttrStmt(tirx.const(1, "int32"), "pragma_import_llvm", ir.StringImm(DOT_IR), body)


def rounded_bf16_bits(value):
    """The 16 bits of float32 ``value`` rounded to bf16 (to nearest, ties to even) as uint16:
    ``(bits + 0x7FFF + ((bits >> 16) & 1)) >> 16``."""
    bits = tirx.reinterpret("uint32", value)
    odd = tirx.bitwise_and(tirx.shift_right(bits, tirx.const(16, "uint32")), tirx.const(1, "uint32"))
    rounded = tirx.shift_right(bits + tirx.const(0x7FFF, "uint32") + odd, tirx.const(16, "uint32"))
    return tirx.Cast("uint16", rounded)


def widened_bf16(bits):
    """The float32 value(s) of the bf16 ``bits`` (uint16, or a uint16 vector): the bits moved to the
    top half."""
    ty = getattr(bits, "ty", None)  # a TE tensor element (TensorSlice) is a scalar without one
    lanes = DataType(str(ty)).lanes if ty is not None else 1
    word, value = ("uint32", "float32") if lanes == 1 else (f"uint32x{lanes}", f"float32x{lanes}")
    sixteen = tirx.const(16, "uint32")
    shift = sixteen if lanes == 1 else tirx.Broadcast(sixteen, lanes)
    return tirx.reinterpret(value, tirx.shift_left(tirx.Cast(word, bits), shift))
