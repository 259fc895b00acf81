"""Which precisions a target can compile: checked before any work, with the reason when not.

The precision names themselves are ``quantize.precision.PRECISIONS`` (one registry); this module
only knows what each needs from a CPU. int8 builds on every CPU (VNNI where the target has it, a
plain widening int32 path elsewhere: the kernel table says which). bf16 needs avx512_bf16
(``vdpbf16ps``: Zen 4, Sapphire Rapids and later): there is no fallback, as an emulated bf16
(fp32 FMAs on widened values) would only be slower than the fp32 build.
"""

from __future__ import annotations

from tvm.target import Target

from subp_fx.codegen.errors import TargetError
from subp_fx.codegen.kernels.isa import bf16_path


def check_precision_target(precision: str, target: Target) -> None:
    """Raise ``TargetError`` when ``target`` cannot run a ``precision`` build."""
    if precision != "bf16" or bf16_path(target) is not None:
        return
    cpu = target.attrs.get("mcpu", "") or "the default CPU"
    raise TargetError(
        f"--precision bf16 needs a CPU with avx512_bf16 (vdpbf16ps), and the target ({cpu}) has none; "
        "valid here: fp32 or int8 (int8 uses VNNI where the CPU has it)"
    )
