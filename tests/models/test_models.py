"""Model construction, small-input stems, torchvision compatibility, state-dict files, fx tracing."""

from __future__ import annotations

import math
import re

import pytest
import torch
import torch.fx
import torch.nn as nn
import torchvision

from subp_fx.algorithm.config import LayerSelection
from subp_fx.errors import CheckpointError, ConfigError
from subp_fx.models import (
    BUILTIN_MODELS,
    PAPER_LAYER_SELECTION,
    PAPER_MODELS,
    available_models,
    build_model,
    load_state_dict_file,
)

TORCHVISION_SAMPLES = (
    "torchvision.mobilenet_v2",
    "torchvision.mobilenet_v3_small",
    "torchvision.regnet_y_400mf",
    "torchvision.efficientnet_b0",
)


@pytest.fixture(autouse=True)
def _seeded():
    torch.manual_seed(0)


def _eval_output(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(x)


# --- shapes ---------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_paper_model_classifies_an_imagenet_sized_image(name):
    model = build_model(name)
    assert _eval_output(model, torch.randn(1, 3, 224, 224)).shape == (1, 1000)


@pytest.mark.parametrize("name", PAPER_MODELS)
@pytest.mark.parametrize("in_channels, size", [(1, 28), (3, 32)])
def test_small_input_stem_takes_small_images(name, in_channels, size):
    model = build_model(name, num_classes=10, in_channels=in_channels, small_input=True)
    assert _eval_output(model, torch.randn(1, in_channels, size, size)).shape == (1, 10)


def _final_feature_map(model: nn.Module, layer: nn.Module, x: torch.Tensor) -> tuple[int, ...]:
    seen = []
    handle = layer.register_forward_hook(lambda module, inputs, output: seen.append(tuple(output.shape)))
    try:
        _eval_output(model, x)
    finally:
        handle.remove()
    return seen[0]


def test_small_input_resnet_keeps_resolution_until_the_first_stride():
    standard = build_model("resnet18", num_classes=10)
    small = build_model("resnet18", num_classes=10, small_input=True)
    x = torch.randn(1, 3, 32, 32)
    # ImageNet stem: 32 -> 16 (conv) -> 8 (max-pool); small stem: 32 all the way to layer1.
    assert _final_feature_map(standard, standard.layer1, x)[-2:] == (8, 8)
    assert _final_feature_map(small, small.layer1, x)[-2:] == (32, 32)
    assert small.conv1.kernel_size == (3, 3) and small.conv1.stride == (1, 1)
    assert isinstance(small.maxpool, nn.Identity)


def test_small_input_mobilenet_downsamples_16x_instead_of_32x():
    standard = build_model("mobilenet_v1", num_classes=10)
    small = build_model("mobilenet_v1", num_classes=10, small_input=True)
    x = torch.randn(1, 3, 32, 32)
    assert _final_feature_map(standard, standard.features, x)[-2:] == (1, 1)
    assert _final_feature_map(small, small.features, x)[-2:] == (2, 2)
    # Only a stride changes: the same weights fit both stems.
    small.load_state_dict(standard.state_dict())


def test_in_channels_feeds_the_stem_directly():
    with torch.device("meta"):
        resnet = build_model("resnet50", num_classes=10, in_channels=1)
    assert resnet.conv1.in_channels == 1 and resnet.conv1.kernel_size == (7, 7)
    mobilenet = build_model("mobilenet_v1", num_classes=10, in_channels=1)
    assert mobilenet.stem.conv.in_channels == 1


# --- architecture details that other code relies on -----------------------------------------


def test_mobilenet_v1_is_the_standard_network():
    model = build_model("mobilenet_v1")
    assert sum(p.numel() for p in model.parameters()) == 4_231_976
    pointwise_widths = [block.pointwise.out_channels for block in model.features]
    assert pointwise_widths == [64, 128, 128, 256, 256] + [512] * 6 + [1024, 1024]
    assert model.stem.conv.stride == (2, 2) and model.stem.conv.out_channels == 32


def test_mobilenet_v1_names_say_which_conv_is_which():
    model = build_model("mobilenet_v1")
    convs = {name: module for name, module in model.named_modules() if isinstance(module, nn.Conv2d)}
    depthwise = {name for name in convs if re.fullmatch(r"features\.\d+\.depthwise", name)}
    pointwise = {name for name in convs if re.fullmatch(r"features\.\d+\.pointwise", name)}
    assert len(depthwise) == len(pointwise) == 13
    assert set(convs) == depthwise | pointwise | {"stem.conv"}
    assert all(convs[name].groups == convs[name].in_channels for name in depthwise)
    assert all(convs[name].groups == 1 and convs[name].kernel_size == (1, 1) for name in pointwise)


def test_paper_layer_selection_covers_every_paper_model_and_is_a_valid_layers_section():
    assert set(PAPER_LAYER_SELECTION) == set(PAPER_MODELS)
    for selection in PAPER_LAYER_SELECTION.values():
        LayerSelection.model_validate(selection)


def test_resnet_keys_and_shapes_are_torchvision_s():
    with torch.device("meta"):  # shapes only, no weight initialisation to pay for
        ours = build_model("resnet50").state_dict()
        theirs = torchvision.models.resnet50(weights=None).state_dict()
    assert {key: value.shape for key, value in ours.items()} == {key: value.shape for key, value in theirs.items()}


# --- state-dict files -----------------------------------------------------------------------


def test_a_torchvision_state_dict_file_loads_with_equal_numerics(tmp_path):
    reference = torchvision.models.resnet18(weights=None)
    path = tmp_path / "resnet18.pth"
    torch.save(reference.state_dict(), path)
    ours = build_model("resnet18")
    load_state_dict_file(ours, path)
    x = torch.randn(2, 3, 64, 64)
    assert torch.equal(_eval_output(ours, x), _eval_output(reference, x))


@pytest.mark.parametrize(
    "wrap",
    [
        lambda state: {"state_dict": state, "epoch": 3},
        lambda state: {"model": state},
        lambda state: {f"module.{key}": value for key, value in state.items()},
        lambda state: {"state_dict": {f"module.{key}": value for key, value in state.items()}},
    ],
    ids=["state_dict", "model", "ddp-prefix", "wrapped-ddp"],
)
def test_wrapped_and_ddp_files_load(tmp_path, wrap):
    source = build_model("mobilenet_v1", num_classes=10)
    path = tmp_path / "wrapped.pth"
    torch.save(wrap(source.state_dict()), path)
    target = build_model("mobilenet_v1", num_classes=10)
    load_state_dict_file(target, path)
    assert torch.equal(target.fc.weight, source.fc.weight)
    assert torch.equal(target.features[3].pointwise_bn.running_var, source.features[3].pointwise_bn.running_var)


def test_missing_file_is_a_checkpoint_error_naming_it(tmp_path):
    path = tmp_path / "nowhere.pth"
    with pytest.raises(CheckpointError, match="nowhere.pth.*does not exist"):
        load_state_dict_file(build_model("mobilenet_v1"), path)


@pytest.mark.parametrize("damage", ["garbage", "truncated"])
def test_corrupt_file_is_a_checkpoint_error(tmp_path, damage):
    path = tmp_path / "broken.pth"
    if damage == "garbage":
        path.write_bytes(b"this is not a torch file\x00\x01" * 10)
    else:
        torch.save(build_model("mobilenet_v1", num_classes=10).state_dict(), path)
        path.write_bytes(path.read_bytes()[:4096])
    with pytest.raises(CheckpointError, match="broken.pth.*cannot read|cannot read.*broken.pth"):
        load_state_dict_file(build_model("mobilenet_v1", num_classes=10), path)


def test_file_without_tensors_is_a_checkpoint_error(tmp_path):
    path = tmp_path / "meta.pth"
    torch.save({"epoch": 3, "best_acc": 71.5}, path)
    with pytest.raises(CheckpointError, match="not a state dict"):
        load_state_dict_file(build_model("mobilenet_v1"), path)


def test_keys_of_another_architecture_are_listed(tmp_path):
    path = tmp_path / "resnet18.pth"
    torch.save(build_model("resnet18").state_dict(), path)
    with pytest.raises(CheckpointError) as caught:
        load_state_dict_file(build_model("resnet34"), path)
    message = str(caught.value)
    assert "resnet18.pth" in message
    assert "missing key(s): layer1.2.conv1.weight" in message
    assert "strict=False" in message


def test_shape_mismatch_is_named_even_when_not_strict(tmp_path):
    path = tmp_path / "thousand_classes.pth"
    torch.save(build_model("mobilenet_v1").state_dict(), path)
    model = build_model("mobilenet_v1", num_classes=10)
    before = model.stem.conv.weight.clone()
    with pytest.raises(
        CheckpointError, match=r"fc\.weight is \(1000, 1024\) in the file but \(10, 1024\) in the model"
    ):
        load_state_dict_file(model, path, strict=False)
    assert torch.equal(model.stem.conv.weight, before)  # nothing half-loaded


def test_non_strict_load_reports_what_it_skipped(tmp_path):
    source = build_model("mobilenet_v1", num_classes=10)
    state = {key: value for key, value in source.state_dict().items() if not key.startswith("fc.")}
    path = tmp_path / "headless.pth"
    torch.save(state, path)
    model = build_model("mobilenet_v1", num_classes=10)
    result = load_state_dict_file(model, path, strict=False)
    assert sorted(result.missing_keys) == ["fc.bias", "fc.weight"]
    assert torch.equal(model.stem.conv.weight, source.stem.conv.weight)


# --- fx ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", PAPER_MODELS)
def test_paper_models_trace_with_fx_to_the_same_function(name):
    model = build_model(name, num_classes=10)
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(1, 3, 32, 32)
    assert torch.equal(_eval_output(traced, x), _eval_output(model, x))


def test_traced_mobilenet_calls_its_convs_by_readable_names():
    traced = torch.fx.symbolic_trace(build_model("mobilenet_v1"))
    targets = {node.target for node in traced.graph.nodes if node.op == "call_module"}
    assert {"features.0.depthwise", "features.0.pointwise", "features.12.pointwise", "stem.conv", "fc"} <= targets


# --- torchvision models -------------------------------------------------------------------------


@pytest.mark.parametrize("name", TORCHVISION_SAMPLES)
def test_torchvision_models_build_run_and_trace(name):
    model = build_model(name, num_classes=10)
    traced = torch.fx.symbolic_trace(model)
    x = torch.randn(1, 3, 32, 32)
    assert torch.allclose(_eval_output(traced, x), _eval_output(model, x))
    assert _eval_output(model, x).shape == (1, 10)


def test_torchvision_model_takes_one_channel_input():
    model = build_model("torchvision.mobilenet_v2", num_classes=10, in_channels=1)
    assert _eval_output(model, torch.randn(1, 1, 32, 32)).shape == (1, 10)


def test_small_cnn_is_built_in():
    model = build_model("small_cnn", num_classes=10, in_channels=1, small_input=True)
    assert _eval_output(model, torch.randn(2, 1, 28, 28)).shape == (2, 10)


def test_available_models_lists_built_in_and_torchvision_names():
    names = available_models()
    assert set(PAPER_MODELS) < set(BUILTIN_MODELS)
    assert names[: len(BUILTIN_MODELS)] == list(BUILTIN_MODELS)
    assert set(TORCHVISION_SAMPLES) <= set(names)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (
            {"name": "resnet19"},
            r"unknown model 'resnet19'; valid names: resnet18, resnet34, resnet50, mobilenet_v1, small_cnn",
        ),
        ({"name": "torchvision.resnet19"}, r"no classification model 'resnet19'; valid torchvision names: .*resnet18"),
        (
            {"name": "torchvision.resnet18", "small_input": True},
            r"small_input=True is not available for 'torchvision.resnet18'",
        ),
        ({"name": "resnet18", "num_classes": 0}, r"num_classes must be a positive integer, got 0"),
        ({"name": "resnet18", "in_channels": 2.0}, r"in_channels must be a positive integer, got 2.0"),
    ],
)
def test_bad_model_arguments_are_config_errors_saying_what_is_valid(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        build_model(**kwargs)


def test_mobilenet_v1_init_follows_the_authors():
    """Convs He-normal over fan_out (std sqrt(2 / (k * k * C_out))), BN identity, and the classifier
    at PyTorch's default nn.Linear init: uniform in +-1/sqrt(1024) for weight and bias (not a
    small normal with zero bias)."""
    torch.manual_seed(0)
    model = build_model("mobilenet_v1")
    bound = 1 / math.sqrt(1024)
    weight, bias = model.fc.weight.detach(), model.fc.bias.detach()
    assert weight.abs().max() <= bound and bias.abs().max() <= bound
    assert weight.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.01)
    assert bias.abs().min() > 0 and bias.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.1)
    pointwise = model.features[12].pointwise.weight.detach()  # 1x1, C_out 1024
    assert pointwise.std().item() == pytest.approx(math.sqrt(2 / 1024), rel=0.01)
    depthwise = model.features[12].depthwise.weight.detach()  # 3x3, C_out 1024
    assert depthwise.std().item() == pytest.approx(math.sqrt(2 / (9 * 1024)), rel=0.05)
    bn = model.features[12].pointwise_bn
    assert torch.equal(bn.weight, torch.ones_like(bn.weight)) and torch.equal(bn.bias, torch.zeros_like(bn.bias))
