"""Which torchvision classification CNNs compile: one line per family, sparse (SUBP layers at 50%,
N=16, wherever a layer is eligible), lowered for this CPU (no build, no timing).

For each model: build it (random weights, 10 classes), ``impose_random_masks(0.5, N=16)``, fold,
convert, fold static shapes, fuse channel shuffles and lower at SIZE px (``inference_graph``);
record "lowers" or the refusal (the distinct reasons, with counts).
Writes ``torchvision_coverage.json`` / ``.md`` under ``--out`` (default benchmarks/results).
Numerics of the families that lower are tested against eager in
``tests/codegen/lowering/test_more_ops.py`` and ``test_lower.py``.

``--precision int8``: the masks keep input channels in aligned groups of 4, and each model is
compiled in int8 (calibrated on 2 batches of 4 standard-normal images) and run on one such image
beside the eager fake-quant reference of its plan (``quantize.fake_quant_reference``): how many of
its conv / linear layers run int8, and the largest difference as a share of the largest |logit|
(0 where every uint8 code agrees; an op left in fp32 -- a grouped conv, a batch norm that follows
a concat -- rounds differently from torch's and can flip a code of the tensor it feeds now and
then). Writes ``torchvision_coverage_int8.{json,md}``.

``--precision bf16`` (CPUs with avx512_bf16): the same masks, each model compiled in bf16 and run
beside the eager bf16 reference of its plan (``quantize.bf16_reference`` of
``lowering.lower.bf16_plan``): how many layers run bf16 and the largest difference as a share of
the largest |logit| over 3 inputs, beside the reference against itself with its convs summed in float64
(``float64_conv_sums``): in a deep bf16 model a last-bit difference moves a rounding of a stored
tensor now and then and the models amplify it, so two valid bf16 computations differ by ~1e-3 of
the largest logit (ResNet-18 at 64 px: 1.7e-3), and the compiled model is right when its
difference is of that order. Writes ``torchvision_coverage_bf16.{json,md}``.

Usage: ``python benchmarks/torchvision_coverage.py [--size 64] [--precision fp32|int8|bf16] [--out DIR] [NAME ...]``.
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import json
import re
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paper_configs import RESULTS, describe_machine  # noqa: E402

FAMILIES = [
    "alexnet", "vgg11_bn", "resnet18", "resnet152", "resnext50_32x4d", "wide_resnet50_2", "squeezenet1_0",
    "densenet121", "googlenet", "inception_v3", "mobilenet_v2", "mobilenet_v3_small", "mobilenet_v3_large",
    "mnasnet0_5", "shufflenet_v2_x1_0", "efficientnet_b0", "efficientnet_v2_s", "regnet_x_400mf", "regnet_y_400mf",
    "convnext_tiny",
]  # fmt: skip
# inception_v3 needs at least 75 px.
MIN_SIZE = {"inception_v3": 96}


def _reasons(message: str) -> dict[str, int]:
    """The distinct refusals in an UnsupportedOpError, with how many nodes each."""
    listing = message.split(" have no lowering: ", 1)[-1].split(". Supported are ", 1)[0]
    reasons = re.split(r"; \(\d+\) ", listing.removeprefix("(1) "))
    kinds = [re.sub(r"node '[^']*' ", "", reason) for reason in reasons]
    kinds = [re.sub(r"\(call_module [\w.]+, ", "(call_module ", kind) for kind in kinds]
    return dict(collections.Counter(kinds).most_common())


def _family(name: str, size: int):
    """The family's model (random weights, seed 0, 10 classes, eval) and the input size it runs at."""
    import torch
    import torchvision

    torch.manual_seed(0)
    kwargs = {"aux_logits": False, "init_weights": False} if name in ("inception_v3", "googlenet") else {}
    return getattr(torchvision.models, name)(num_classes=10, **kwargs).eval(), max(size, MIN_SIZE.get(name, 0))


def _refusal(name: str, size: int, error: Exception, reasons: dict[str, int]) -> dict:
    return {"model": name, "size": size, "lowers": False, "error": type(error).__name__, "reasons": reasons}


def check(name: str, size: int) -> dict:

    import subp_fx
    from subp_fx.codegen.lowering.lower import lower_graph
    from subp_fx.codegen.pipeline import inference_graph
    from subp_fx.errors import SubpError

    model, size = _family(name, size)
    started = time.perf_counter()
    try:
        gm = subp_fx.impose_random_masks(model, 0.5, 16).eval()
        shape = (1, 3, size, size)
        lowered = lower_graph(inference_graph(gm, shape).gm, shape)
    except SubpError as error:
        reasons = _reasons(str(error)) if "no lowering" in str(error) else {str(error)[:300]: 1}
        return _refusal(name, size, error, reasons)
    sparse = sum(entry.kind == "sparse" for entry in lowered.kernel_table)
    return {
        "model": name,
        "size": size,
        "lowers": True,
        "sparse_layers": sparse,
        "layers": len(lowered.kernel_table),
        "seconds": round(time.perf_counter() - started, 1),
    }


def _varied_batch_norms(model, seed: int = 0):
    """Batch norms with running statistics and affine parameters away from their identity init:
    with the init, several families (MobileNets, MNASNet, EfficientNets) output logits of 0 or
    1e-8 at random weights, which makes a comparison of logits say nothing."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5, generator=generator)
                module.running_var.uniform_(0.5, 1.5, generator=generator)
                module.weight.uniform_(0.5, 1.5, generator=generator)
                module.bias.uniform_(-0.5, 0.5, generator=generator)
    return model


BF16_INPUTS = 3


@contextlib.contextmanager
def float64_conv_sums():
    """Every ``F.conv2d`` summed in float64 and rounded to float32 once: another valid order of
    the same float32 arithmetic. In a bf16 model, where each stored tensor is rounded to 8 bits,
    a last-bit difference in a sum moves a rounding now and then, and deep models amplify it;
    the reference against itself so computed is the scale any two bf16 builds differ by."""
    import torch.nn.functional as F

    original = F.conv2d

    def conv2d(data, weight, bias=None, *args, **kwargs):
        bias = None if bias is None else bias.double()
        return original(data.double(), weight.double(), bias, *args, **kwargs).float()

    F.conv2d = conv2d
    try:
        yield
    finally:
        F.conv2d = original


def check_reduced(name: str, size: int, precision: str) -> dict:
    """Compile family ``name`` in ``precision`` (int8 or bf16) and compare it with its eager reference."""
    import numpy as np
    import torch

    import subp_fx
    from subp_fx.codegen.lowering.lower import bf16_plan
    from subp_fx.codegen.pipeline import compile as compile_model
    from subp_fx.codegen.pipeline import inference_graph
    from subp_fx.errors import SubpError
    from subp_fx.quantize import bf16_reference, calibrate, fake_quant_reference, plan_int8

    model, size = _family(name, size)
    model = _varied_batch_norms(model).eval()
    shape = (1, 3, size, size)
    batches = [torch.randn(4, 3, size, size) for _ in range(2)]
    options = {"calibration": batches, "calibration_info": {"source": "randn"}} if precision == "int8" else {}
    started = time.perf_counter()
    try:
        gm = subp_fx.impose_random_masks(model, 0.5, 16, G=4).eval()
        compiled = compile_model(gm, shape, threads=2, precision=precision, **options)
    except SubpError as error:
        return _refusal(name, size, error, {str(error)[:300]: 1})
    graph = inference_graph(gm, shape).gm
    if precision == "int8":
        reference = fake_quant_reference(graph, plan_int8(graph, calibrate(graph, batches, example_shape=shape)))
    else:
        plan = bf16_plan(graph, shape)
        reference = bf16_reference(graph, plan.layers, plan.stored)
    # int8: one input; bf16: the largest over BF16_INPUTS inputs, as a moved rounding is a chance event
    inputs = [torch.randn(shape) for _ in range(1 if precision == "int8" else BF16_INPUTS)]
    largest = difference = 0.0
    spread = None if precision == "int8" else 0.0
    for x in inputs:
        with torch.no_grad():
            expected = reference(x).numpy()
        largest = max(largest, float(np.abs(expected).max()))
        difference = max(difference, float(np.abs(compiled(x) - expected).max()))
        if spread is not None:
            with float64_conv_sums(), torch.no_grad():
                spread = max(spread, float(np.abs(reference(x).numpy() - expected).max()))
    precisions = [entry.precision for entry in compiled.kernel_table]
    return {
        "precision": precision,
        "model": name,
        "size": size,
        "lowers": True,
        f"{precision}_layers": sum(entry.startswith(precision) for entry in precisions),
        "layers": len(precisions),
        "largest_logit": largest,
        "difference": difference / largest if largest else difference,
        "reference_spread": None if spread is None else (spread / largest if largest else spread),
        "seconds": round(time.perf_counter() - started, 1),
    }


def _spread_cell(row: dict) -> str:
    spread = row.get("reference_spread")
    return "-" if spread is None else f"{spread:.1e}"


def markdown_reduced(rows: list[dict], machine: dict, precision: str) -> str:
    lines = [
        f"# Which torchvision CNNs compile in {precision} (sparse, 50% at N=16 in groups of 4), against the reference",
        "",
        f"{machine['date']}; {machine['cpu']} ({machine['llvm_cpu']}); torch {machine['torch']}, TVM {machine['tvm']}. "
        f"{sum(row['lowers'] for row in rows)} of {len(rows)} families compile."
        + (
            " 'reference vs itself': the bf16 reference with every conv summed in float64 instead, against "
            "itself (`float64_conv_sums`): how far two valid bf16 computations of the model differ, as "
            "last-bit differences move roundings of stored bf16 tensors."
            if precision == "bf16"
            else ""
        ),
        "",
        f"| model | px | {precision} layers | max difference / max abs logit | reference vs itself | seconds |",
        "|---|---|---|---|---|---|",
    ]
    for row in rows:
        if row["lowers"]:
            lines.append(
                f"| {row['model']} | {row['size']} | {row[f'{precision}_layers']} of {row['layers']} | "
                f"{row['difference']:.1e} | {_spread_cell(row)} | {row['seconds']} |"
            )
        else:
            reason = "; ".join(row["reasons"]).replace("|", "/")
            lines.append(f"| {row['model']} | {row['size']} | refused: {reason} | - | - | - |")
    return "\n".join(lines) + "\n"


def markdown(rows: list[dict], machine: dict) -> str:
    lines = [
        "# Which torchvision CNNs compile (sparse, 50% at N=16, lowered only)",
        "",
        f"{machine['date']}; torch {machine['torch']}, TVM {machine['tvm']}. "
        f"{sum(row['lowers'] for row in rows)} of {len(rows)} families lower.",
        "",
        "| model | px | result |",
        "|---|---|---|",
    ]
    for row in rows:
        if row["lowers"]:
            result = f"lowers ({row['sparse_layers']} of {row['layers']} conv/linear layers sparse)"
        else:
            result = "refused: " + "; ".join(f"{reason} (x{count})" for reason, count in row["reasons"].items())
        lines.append(f"| {row['model']} | {row['size']} | {result.replace('|', '/')} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("models", nargs="*", default=FAMILIES)
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--precision", choices=("fp32", "int8", "bf16"), default="fp32")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    reduced = args.precision != "fp32"
    rows = []
    for name in args.models:
        rows.append(check_reduced(name, args.size, args.precision) if reduced else check(name, args.size))
        print(json.dumps(rows[-1])[:400], flush=True)
    machine = describe_machine()
    args.out.mkdir(parents=True, exist_ok=True)
    stem = "torchvision_coverage" + (f"_{args.precision}" if reduced else "")
    (args.out / f"{stem}.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    text = markdown_reduced(rows, machine, args.precision) if reduced else markdown(rows, machine)
    (args.out / f"{stem}.md").write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
