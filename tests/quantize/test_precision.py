"""The precision registry: the three names, and a refusal that lists them."""

from __future__ import annotations

import pytest

from subp_fx.errors import ConfigError
from subp_fx.quantize.precision import DEFAULT_PRECISION, PRECISIONS, check_precision


def test_every_registered_precision_is_accepted_and_fp32_is_the_default():
    assert PRECISIONS == ("fp32", "bf16", "int8")
    assert [check_precision(name) for name in PRECISIONS] == list(PRECISIONS)
    assert DEFAULT_PRECISION == "fp32"


@pytest.mark.parametrize("name", ["INT8", "fp16", "", None, 8])
def test_an_unknown_precision_is_refused_naming_it_and_the_valid_ones(name):
    with pytest.raises(ConfigError) as error:
        check_precision(name)
    assert repr(name) in str(error.value) and "fp32, bf16, int8" in str(error.value)
