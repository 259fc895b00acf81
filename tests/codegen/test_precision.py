"""Which precisions a target can compile (``codegen.precision``): the refusals and their reasons."""

from __future__ import annotations

import pytest

pytest.importorskip("tvm")

from subp_fx.codegen.errors import TargetError  # noqa: E402
from subp_fx.codegen.precision import check_precision_target  # noqa: E402
from subp_fx.codegen.target import parse_target  # noqa: E402


@pytest.mark.parametrize("precision", ["fp32", "int8"])
@pytest.mark.parametrize("cpu", ["haswell", "icelake-server", "sapphirerapids"])
def test_fp32_and_int8_build_for_every_cpu(precision, cpu):
    check_precision_target(precision, parse_target(f"llvm -mcpu={cpu}"))


@pytest.mark.parametrize("cpu", ["haswell", "skylake-avx512", "icelake-server"])
def test_bf16_without_avx512_bf16_names_the_missing_feature(cpu):
    reason = f"needs a CPU with avx512_bf16.*\\({cpu}\\) has none.*valid here: fp32 or int8"
    with pytest.raises(TargetError, match=reason):
        check_precision_target("bf16", parse_target(f"llvm -mcpu={cpu}"))


@pytest.mark.parametrize("cpu", ["sapphirerapids", "znver4"])
def test_bf16_builds_for_a_cpu_with_avx512_bf16(cpu):
    check_precision_target("bf16", parse_target(f"llvm -mcpu={cpu}"))
