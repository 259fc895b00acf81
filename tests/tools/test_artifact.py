"""tools.artifact.load_compile_source: a recipe's random weights and masks depend only on the seed."""

from __future__ import annotations

from pathlib import Path

import torch

from subp_fx.tools.artifact import load_compile_source

DEMO_RECIPE = str(Path(__file__).resolve().parents[2] / "recipes" / "fashion-mnist-demo.yaml")


def _state(seed: int, global_seed: int) -> dict[str, torch.Tensor]:
    torch.manual_seed(global_seed)  # the caller's generator state must not matter
    return load_compile_source(DEMO_RECIPE, seed=seed).model.state_dict()


def test_a_recipe_source_is_the_same_for_the_same_seed_and_differs_for_another():
    first, again, other = _state(0, global_seed=1), _state(0, global_seed=2), _state(1, global_seed=1)
    assert first.keys() == again.keys() == other.keys()
    assert all(torch.equal(first[name], again[name]) for name in first)
    weights = [name for name in first if name.endswith("weight") and first[name].dim() == 4]
    assert weights and not all(torch.equal(first[name], other[name]) for name in weights)


def test_loading_a_source_leaves_the_callers_random_state_alone():
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    load_compile_source(DEMO_RECIPE, seed=0)
    assert torch.equal(torch.rand(3), expected)
