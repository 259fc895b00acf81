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
from subp_fx.codegen.progress import STAGES, CompileProgress  # noqa: E402
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
    assert graph.passes == GraphPassReport(
        folded_batchnorms=5,
        unfolded_batchnorms={},
        converted_convs=4,
        capture="symbolic_trace",
        capture_reason="the model is already a GraphModule",
        folded_pads=0,
    )


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
    passes = GraphPassReport(2, {"bn": "why"}, 3, modularized_calls=4, functional_left={"conv2d": "a reason"})
    manifest = Manifest((1, 3, 8, 8), (1, 4), {"kind": "llvm"}, 1, graph_passes=passes)
    again = Manifest.from_json(manifest.to_json(), "test")
    assert again.graph_passes == manifest.graph_passes
    lines = passes.lines()
    assert "4 functional batch norm / conv / linear call(s) made module calls" in lines[1]
    assert "1 functional batch norm / conv / linear call(s) left as they are:" in lines
    assert "  conv2d: a reason" in lines
    assert Manifest.from_json(
        {k: v for k, v in manifest.to_json().items() if k != "graph_passes"}, "old"
    ).graph_passes == (GraphPassReport())


# --- the target is checked first; the stages are reported in order ------------------------------


@pytest.mark.parametrize("target", ["cuda", "c", "llvm -mcpu=notacpu", {"kind": "opencl"}])
def test_compile_refuses_a_target_it_cannot_build_before_any_work(target, monkeypatch):
    from subp_fx.codegen import pipeline
    from subp_fx.codegen.errors import TargetError

    def must_not_start(*args, **kwargs):
        raise AssertionError("the compile started although its target should have been refused")

    monkeypatch.setattr(pipeline, "inference_graph", must_not_start)
    monkeypatch.setattr(pipeline, "lower_graph", must_not_start)
    with pytest.raises(TargetError, match="llvm -mcpu=native"):
        compile(_UnfoldableBatchNorm().eval(), (1, 3, 8, 8), target=target, threads=1)


class _Recorder(CompileProgress):
    def __init__(self):
        self.events: list[tuple] = []

    def stage_started(self, stage, note=""):
        self.events.append(("started", stage, note))

    def stage_total(self, total, unit):
        self.events.append(("total", total, unit))

    def advance(self, steps=1):
        self.events.append(("advance", steps))

    def stage_finished(self, stage, seconds, failed=False):
        self.events.append(("finished", stage, seconds, failed))


def test_compile_reports_every_stage_in_order_to_its_observer():
    recorder = _Recorder()
    compile(_UnfoldableBatchNorm().eval(), (1, 3, 8, 8), target=TARGET, threads=1, progress=recorder)
    stages = [event for event in recorder.events if event[0] in ("started", "finished")]
    assert [(event[0], event[1]) for event in stages] == [
        (kind, name) for name in STAGES for kind in ("started", "finished")
    ]
    assert all(event[2] >= 0 and event[3] is False for event in stages if event[0] == "finished")
    # lowering counts its graph's nodes and advances once per node, between its start and finish
    lowering = recorder.events.index(("started", "lower_graph", ""))
    finished = next(i for i, event in enumerate(recorder.events) if event[:2] == ("finished", "lower_graph"))
    inside = recorder.events[lowering + 1 : finished]
    assert inside[0][0] == "total" and inside[0][2] == "nodes"
    assert sum(event[1] for event in inside[1:] if event[0] == "advance") == inside[0][1] > 3
    # the opaque build says how many kernels it compiles: one per distinct kernel in the module
    build_note = next(event[2] for event in recorder.events if event[:2] == ("started", "build"))
    count, word = build_note.split()
    assert word == "kernels" and int(count) >= 4  # input transpose, conv, pool, batch norm, pool, linear


def test_a_failing_stage_is_reported_as_failed():
    recorder = _Recorder()
    with pytest.raises(UnsupportedOpError):
        compile(_Unsupported().eval(), (1, 3, 8, 8), target=TARGET, threads=1, progress=recorder)
    assert recorder.events[-1][:2] == ("finished", "lower_graph") and recorder.events[-1][3] is True


class _Unsupported(nn.Module):
    def forward(self, x):
        return torch.sort(x, dim=-1).values
