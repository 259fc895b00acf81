"""Which precisions a target can compile: checked before any work, with the reason when not.

The precision names themselves are ``quantize.precision.PRECISIONS`` (one registry); this module
only knows what each needs from a CPU. int8 builds on every CPU (VNNI where the target has it, a
plain widening int32 path elsewhere: the kernel table says which). bf16 needs avx512_bf16 and
kernels that do not exist yet, so it is refused on every target, for the first reason that
applies.
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
        f"--precision bf16 is not built yet: the target ({cpu}) has avx512_bf16, but subp-fx has no bf16 kernels "
        "in this version; valid: fp32 or int8"
    )
