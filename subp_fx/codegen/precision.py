"""Which precisions a target can compile: checked before any work, with the reason when not.

The precision names themselves are ``quantize.precision.PRECISIONS`` (one registry); this module
only knows what each needs from a CPU. int8 builds on every CPU (VNNI where the target has it, a
plain widening int32 path elsewhere: the kernel table says which). bf16 needs avx512_bf16 and
kernels that TVM 0.27 cannot build: its TIR pipeline legalises every bf16 value to float32 or
uint16 before LLVM sees it, so a call of ``vdpbf16ps`` (LLVM 22 takes ``<32 x bfloat>``) fails
LLVM's verifier, and with the legalisation off TVM's codegen crashes
(``benchmarks/probes/bf16_intrinsic.py``, 2026-11-30). So it is refused on every target, for the
first reason that applies.
"""

from __future__ import annotations

from tvm.target import Target
from tvm.target import codegen as llvm_codegen

from subp_fx.codegen.errors import TargetError


def check_precision_target(precision: str, target: Target) -> None:
    """Raise ``TargetError`` when ``target`` cannot run a ``precision`` build."""
    if precision != "bf16":
        return
    cpu = target.attrs.get("mcpu", "") or "the default CPU"
    if target.kind.name != "llvm" or not llvm_codegen.llvm_cpu_has_features("avx512bf16", target):
        raise TargetError(
            f"--precision bf16 needs a CPU with avx512_bf16 (vdpbf16ps), and the target ({cpu}) has none; "
            "valid here: fp32 or int8 (int8 uses VNNI where the CPU has it)"
        )
    raise TargetError(
        f"--precision bf16 is not built: the target ({cpu}) has avx512_bf16, but TVM 0.27, which subp-fx "
        "generates its kernels with, cannot emit vdpbf16ps (benchmarks/probes/bf16_intrinsic.py); "
        "valid: fp32 or int8"
    )
