"""codegen.pipeline: the stages, the pinned Relax pass list and its op check, the compile report."""

from __future__ import annotations

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

import torch.nn as nn  # noqa: E402
from tvm import relax  # noqa: E402

from subp_fx.codegen.lowering.lower import lower_graph  # noqa: E402
from subp_fx.codegen.pipeline import EMITTED_RELAX_OPS, build, check_relax_ops, compile, inference_graph  # noqa: E402
from subp_fx.codegen.runtime.manifest import GraphPassReport, Manifest  # noqa: E402
from subp_fx.errors import UnsupportedOpError  # noqa: E402
from subp_fx.models import build_model  # noqa: E402
from subp_fx.passes import impose_random_masks  # noqa: E402

TARGET = "llvm -mcpu=native"


def _module_calling(op) -> tvm.IRModule:
    builder = relax.BlockBuilder()
    x = relax.Var("x", relax.TensorType((2, 3), "float32"))
    with builder.function("main", [x]):
        with builder.dataflow():
            output = builder.emit_output(builder.emit(op(x)))
        builder.emit_func_output(output)
    return builder.get()


def test_check_relax_ops_refuses_an_op_that_would_be_legalised_to_generic_code():
    with pytest.raises(UnsupportedOpError, match=r"relax\.add.*unscheduled generic code"):
        check_relax_ops(_module_calling(lambda x: relax.op.add(x, x)))


def test_check_relax_ops_passes_the_ops_the_lowering_emits():
    module = _module_calling(lambda x: relax.op.reshape(x, (3, 2)))
    assert check_relax_ops(module).same_as(module)
    assert EMITTED_RELAX_OPS == {"relax.call_tir", "relax.reshape"}


class _UnfoldableBatchNorm(nn.Module):
    """A batch norm fed by a pool cannot be folded: it stays, and the report says why."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 16, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.bn = nn.BatchNorm2d(16)
        self.fc = nn.Linear(16, 4)

    def forward(self, x):
        x = self.bn(self.pool(torch.relu(self.conv(x))))
        return self.fc(torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1))


def test_the_report_says_which_batch_norms_stayed_unfolded_and_why():
    torch.manual_seed(0)
    model = _UnfoldableBatchNorm().eval()
    compiled = compile(model, (1, 3, 8, 8), target=TARGET, threads=1)
    passes = compiled.manifest.graph_passes
    assert passes.folded_batchnorms == 0 and passes.converted_convs == 0
    assert list(passes.unfolded_batchnorms) == ["bn"]
    assert "not the output of a module call" not in passes.unfolded_batchnorms["bn"]
    report = compiled.report()
    assert "1 batch norm(s) left unfolded" in report and "  bn: " in report
    x = torch.randn(1, 3, 8, 8)
    with torch.no_grad():
        expected = model(x).numpy()
    np.testing.assert_allclose(compiled(x), expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_inference_graph_counts_what_fold_and_convert_did():
    model = impose_random_masks(build_model("small_cnn", num_classes=10, in_channels=1).eval(), 0.5, 16)
    graph = inference_graph(model, (1, 1, 28, 28))
    assert graph.passes == GraphPassReport(folded_batchnorms=5, unfolded_batchnorms={}, converted_convs=4)


def test_build_runs_the_pinned_passes_to_a_working_executable():
    model = impose_random_masks(build_model("small_cnn", num_classes=10, in_channels=1).eval(), 0.5, 16)
    graph = inference_graph(model, (1, 1, 28, 28))
    lowered = lower_graph(graph.gm, (1, 1, 28, 28), TARGET)
    for name, function in lowered.module.functions.items():
        if isinstance(function, tvm.tirx.PrimFunc):
            assert bool(function.attrs["tir.is_scheduled"]), name.name_hint
    vm = relax.VirtualMachine(build(lowered), tvm.cpu())
    x = torch.randn(1, 1, 28, 28)
    with torch.no_grad():
        expected = graph.gm(x).numpy()
    np.testing.assert_allclose(vm["main"](tvm.runtime.tensor(x.numpy())).numpy(), expected, rtol=1e-4, atol=1e-4)


def test_graph_pass_report_round_trips_through_the_manifest():
    manifest = Manifest((1, 3, 8, 8), (1, 4), {"kind": "llvm"}, 1, graph_passes=GraphPassReport(2, {"bn": "why"}, 3))
    again = Manifest.from_json(manifest.to_json(), "test")
    assert again.graph_passes == manifest.graph_passes
    assert Manifest.from_json(
        {k: v for k, v in manifest.to_json().items() if k != "graph_passes"}, "old"
    ).graph_passes == (GraphPassReport())
