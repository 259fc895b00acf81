import torch
import torch.nn as nn

from subp_fx import impose_random_masks
from subp_fx.algorithm.modules import SUBPConv2d
from subp_fx.passes.strip_masks import strip_masks
from tests.toy_models import ToyNet, seeded, toy_input


def test_strip_masks_gives_stock_convs_with_identical_outputs():
    gm = impose_random_masks(seeded(ToyNet), prune_rate=0.5, N=16, seed=1)
    gm.eval()
    stripped = strip_masks(gm)
    assert not any(isinstance(m, SUBPConv2d) for m in stripped.modules())
    assert sum(isinstance(m, SUBPConv2d) for m in gm.modules()) > 0  # input untouched
    assert len(stripped.graph.nodes) == len(gm.graph.nodes)
    x = toy_input(2)
    with torch.no_grad():
        assert torch.equal(stripped(x), gm(x))
    for name, module in gm.named_modules():
        if isinstance(module, SUBPConv2d):
            dense = stripped.get_submodule(name)
            assert type(dense) is nn.Conv2d
            pruned = module.weight_mask == 0
            assert pruned.any() and torch.all(dense.weight[pruned] == 0)
