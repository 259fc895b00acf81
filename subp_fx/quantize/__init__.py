"""int8 quantisation, the torch half (no TVM): calibrate activation ranges on an inference graph,
plan which convs and linears run in int8, pack their weights for the int8 kernel, and build the eager
fake-quant reference the compiled model is checked against (and the bf16 build's eager reference,
``bf16_reference``). See README.md here.

Names are imported on first use, so ``subp_fx.quantize.precision`` (the precision registry) stays
importable without torch.
"""

from __future__ import annotations

from subp_fx.lazy import lazy_exports

# public name -> module that defines it
_EXPORTS = {
    "PRECISIONS": "subp_fx.quantize.precision",
    "DEFAULT_PRECISION": "subp_fx.quantize.precision",
    "check_precision": "subp_fx.quantize.precision",
    "ActivationQuant": "subp_fx.quantize.params",
    "weight_scales": "subp_fx.quantize.params",
    "quantize_weight": "subp_fx.quantize.params",
    "output_scales": "subp_fx.quantize.params",
    "ActivationRanges": "subp_fx.quantize.calibration",
    "calibrate": "subp_fx.quantize.calibration",
    "CALIBRATION_SOURCES": "subp_fx.quantize.precision",
    "calibration_batches": "subp_fx.quantize.calibration_data",
    "Int8Plan": "subp_fx.quantize.plan",
    "plan_int8": "subp_fx.quantize.plan",
    "Int8KernelWeights": "subp_fx.quantize.packing",
    "quantize_kernel_weights": "subp_fx.quantize.packing",
    "DepthwiseInt8Weights": "subp_fx.quantize.packing_depthwise",
    "quantize_depthwise_weights": "subp_fx.quantize.packing_depthwise",
    "Quantize": "subp_fx.quantize.modules",
    "Dequantize": "subp_fx.quantize.modules",
    "Int8Conv2dReference": "subp_fx.quantize.modules",
    "Int8LinearReference": "subp_fx.quantize.modules",
    "fake_quant_reference": "subp_fx.quantize.reference",
    "bf16_reference": "subp_fx.quantize.bf16_reference",
    "round_to_bf16": "subp_fx.quantize.bf16_reference",
    "CalibrationError": "subp_fx.errors",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports("subp_fx.quantize", globals(), _EXPORTS)
