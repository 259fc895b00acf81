"""The numeric precisions a model can be compiled in, and int8's calibration sources: one registry
each, read by the API and the CLI.

Pure Python (no torch, no TVM), so the command line can validate ``--precision`` before it
imports anything heavy.
"""

from __future__ import annotations

from subp_fx.errors import ConfigError

# fp32: today's kernels. bf16: needs a CPU with avx512_bf16. int8: uint8 activations x int8
# weights (VNNI), calibrated; see subp_fx/quantize/README.md.
PRECISIONS: tuple[str, ...] = ("fp32", "bf16", "int8")
DEFAULT_PRECISION = "fp32"
# Where int8 calibration images come from (``calibration_data.calibration_batches``); here so the
# command line can check ``--calibration-data`` before importing torch.
CALIBRATION_SOURCES: tuple[str, ...] = ("fashion-mnist", "imagefolder", "synthetic")


def check_precision(name: object) -> str:
    """``name`` when it is one of ``PRECISIONS``; otherwise ``ConfigError`` naming the value given
    and listing the valid names (compared exactly: ``"INT8"`` is refused, not guessed)."""
    if isinstance(name, str) and name in PRECISIONS:
        return name
    raise ConfigError(f"precision {name!r} is not known; valid precisions are {', '.join(PRECISIONS)}.")
