"""The package's public names: every one resolves, lazily."""

from __future__ import annotations

import subp_fx.quantize as quantize


def test_every_public_name_resolves_to_the_object_its_module_defines():
    for name in quantize.__all__:
        value = getattr(quantize, name)
        assert value is not None
    assert quantize.plan_int8.__module__ == "subp_fx.quantize.plan"
    assert issubclass(quantize.CalibrationError, ValueError)
