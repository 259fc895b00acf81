"""The compile API: compile() folds, converts, lowers and builds; CompiledModel runs, exports
atomically and reloads in a fresh process; threads are applied; bad input is refused."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pytest

tvm = pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

import torch.nn as nn  # noqa: E402

from subp_fx.algorithm.modules import SUBPConv2d  # noqa: E402
from subp_fx.codegen.api import CompiledModel, compile, load_compiled  # noqa: E402
from subp_fx.codegen.errors import ThreadConfigError  # noqa: E402
from subp_fx.codegen.kernels.spec import BlockSparseConvSpec  # noqa: E402
from subp_fx.codegen.runtime import compiled as compiled_module  # noqa: E402
from subp_fx.codegen.target import missing_host_features  # noqa: E402
from subp_fx.codegen.threads import get_num_threads, thread_pool_capacity  # noqa: E402
from subp_fx.codegen.tuning.build import choose_tile  # noqa: E402
from subp_fx.errors import ArtifactError, CompiledInputError, UnsupportedOpError  # noqa: E402
from subp_fx.models import build_model  # noqa: E402
from subp_fx.passes import impose_random_masks  # noqa: E402

REPO = Path(__file__).resolve().parents[3]
INPUT_SHAPE = (2, 1, 28, 28)
RELATIVE_TOLERANCE = 1e-4


def _masked_small_cnn() -> nn.Module:
    """SmallCNN with random uniform SUBP masks and random BN statistics, BN *not* folded."""
    torch.manual_seed(0)
    model = build_model("small_cnn", num_classes=10, in_channels=1).eval()
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.copy_(torch.rand(module.num_features, generator=generator) - 0.5)
                module.running_var.copy_(torch.rand(module.num_features, generator=generator) + 0.5)
    return impose_random_masks(model, 0.5, 16).eval()


@pytest.fixture(scope="module")
def masked() -> nn.Module:
    return _masked_small_cnn()


@pytest.fixture(scope="module")
def compiled(masked) -> CompiledModel:
    return compile(masked, torch.zeros(INPUT_SHAPE), threads=1)


def _input(seed: int = 0) -> torch.Tensor:
    return torch.randn(*INPUT_SHAPE, generator=torch.Generator().manual_seed(seed))


def test_compile_folds_and_converts_and_matches_the_masked_model(masked, compiled):
    x = _input()
    with torch.no_grad():
        expected = masked(x).numpy()
    actual = compiled(x)
    assert actual.shape == expected.shape == compiled.output_shape == (2, 10)
    assert np.abs(actual - expected).max() <= RELATIVE_TOLERANCE * np.abs(expected).max()
    np.testing.assert_array_equal(compiled(x.numpy()), actual)
    # compile worked on a copy: the user's model still has its SUBP convs and batch norms.
    assert any(isinstance(module, SUBPConv2d) for module in masked.modules())
    assert any(isinstance(module, nn.BatchNorm2d) for module in masked.modules())
    kinds = [entry.kind for entry in compiled.kernel_table]
    assert kinds == ["dense", "sparse", "sparse", "sparse", "sparse", "dense"]
    assert "stem" in compiled.report() and "fully connected" in compiled.report()


def test_an_input_of_another_shape_is_refused_naming_the_compiled_shape(compiled):
    with pytest.raises(CompiledInputError, match=r"\(1, 1, 28, 28\).*\(2, 1, 28, 28\)"):
        compiled(np.zeros((1, 1, 28, 28), np.float32))


_LOAD_AND_RUN = textwrap.dedent(
    """
    import sys
    import numpy as np
    from subp_fx.codegen.api import load_compiled
    from subp_fx.codegen.threads import get_num_threads

    model = load_compiled(sys.argv[1])
    np.save(sys.argv[3], model(np.load(sys.argv[2])))
    print(model.threads, get_num_threads())
    """
)


def test_export_then_load_in_a_fresh_process_gives_the_same_outputs(compiled, tmp_path):
    directory = compiled.export(tmp_path / "small_cnn")
    assert sorted(path.name for path in directory.iterdir()) == ["manifest.json", "model.so"]
    manifest = json.loads((directory / "manifest.json").read_text())
    assert manifest["input_shape"] == list(INPUT_SHAPE) and manifest["output_shape"] == [2, 10]
    assert (manifest["input_layout"], manifest["activation_layout"], manifest["threads"]) == ("NCHW", "NHWC", 1)
    assert manifest["target"]["kind"] == "llvm" and manifest["target"]["mcpu"] != "native"
    assert manifest["tvm_version"] == tvm.__version__
    assert [entry["layer"] for entry in manifest["kernels"]] == [entry.layer for entry in compiled.kernel_table]

    x = _input(seed=3).numpy()
    np.save(tmp_path / "x.npy", x)
    run = subprocess.run(
        [sys.executable, "-c", _LOAD_AND_RUN, str(directory), str(tmp_path / "x.npy"), str(tmp_path / "y.npy")],
        cwd=REPO,
        capture_output=True,
        text=True,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        timeout=120,
    )
    assert run.returncode == 0, run.stderr
    assert run.stdout.split() == ["1", "1"]  # the manifest's thread count, applied
    np.testing.assert_array_equal(np.load(tmp_path / "y.npy"), compiled(x))


def test_an_existing_directory_is_refused_unless_forced_and_never_left_half_written(compiled, tmp_path):
    directory = tmp_path / "model"
    compiled.export(directory)
    library = directory / "model.so"
    before = library.stat().st_mtime_ns
    with pytest.raises(ArtifactError, match="already exists.*force=True"):
        compiled.export(directory)
    assert library.stat().st_mtime_ns == before
    compiled.export(directory, force=True)
    assert library.stat().st_mtime_ns != before
    assert sorted(path.name for path in tmp_path.iterdir()) == ["model"]  # no staging left behind
    reloaded = load_compiled(directory)
    np.testing.assert_array_equal(reloaded(_input()), compiled(_input()))


def test_a_loaded_model_exports_again(compiled, tmp_path):
    first = load_compiled(compiled.export(tmp_path / "first"))
    second = load_compiled(first.export(tmp_path / "second"))
    np.testing.assert_array_equal(second(_input()), compiled(_input()))


def test_loading_refuses_what_export_did_not_write(tmp_path):
    with pytest.raises(ArtifactError, match="is not a directory"):
        load_compiled(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ArtifactError, match="cannot read .*manifest.json"):
        load_compiled(tmp_path / "empty")
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "manifest.json").write_text(json.dumps({"format": "something-else"}))
    with pytest.raises(ArtifactError, match="not a subp-fx compiled-model manifest"):
        load_compiled(tmp_path / "other")


def test_loading_refuses_a_model_compiled_for_instructions_this_cpu_lacks(compiled, tmp_path, monkeypatch):
    directory = compiled.export(tmp_path / "bf16-cpu")
    manifest = json.loads((directory / "manifest.json").read_text())
    manifest["target"]["mcpu"] = "sapphirerapids"  # as if compiled there (avx512_bf16, VNNI)
    (directory / "manifest.json").write_text(json.dumps(manifest))
    zen3 = frozenset({"sse4_2", "avx", "avx2", "fma"})
    monkeypatch.setattr(compiled_module, "missing_host_features", lambda t: missing_host_features(t, zen3))
    with pytest.raises(
        ArtifactError,
        match="-mcpu=sapphirerapids, whose avx512f, avx512bw, avx512vnni, avxvnni, avx512bf16 this CPU lacks",
    ):
        load_compiled(directory)


def test_calls_reuse_an_input_buffer_per_thread_and_never_mix_inputs(compiled):
    """Each call copies its input into the calling thread's own tensor and runs the thread's own
    VM (one shared VM crashed under concurrent calls): successive calls, and calls from several
    threads at once, each get the output of their own input."""
    import threading

    inputs = [_input(seed) for seed in range(4)]
    expected = [np.array(compiled(x)) for x in inputs]
    assert not np.array_equal(expected[0], expected[1])
    for x, wanted in zip(inputs + inputs[::-1], expected + expected[::-1]):
        np.testing.assert_array_equal(compiled(x), wanted)
    results: dict[int, list] = {}
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            results[index] = [np.array(compiled(inputs[(index + step) % 4])) for step in range(8)]
        except BaseException as error:  # noqa: BLE001 (re-raised in the test's thread below)
            errors.append(error)

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]
    assert sorted(results) == [0, 1, 2]
    for index, outputs in results.items():
        for step, output in enumerate(outputs):
            np.testing.assert_allclose(output, expected[(index + step) % 4], rtol=0, atol=1e-6)


def test_threads_are_applied_to_the_runtime(masked, compiled):
    if thread_pool_capacity() < 2:
        pytest.skip("the TVM pool has a single thread on this machine")
    two = compile(masked, torch.zeros(INPUT_SHAPE), threads=2)
    two(_input())
    assert get_num_threads() == 2
    compiled(_input())
    assert get_num_threads() == 1
    np.testing.assert_allclose(two(_input()), compiled(_input()), rtol=0, atol=1e-6)


def test_a_thread_count_the_pool_cannot_run_is_refused(masked):
    with pytest.raises(ThreadConfigError, match="n >= 1"):
        compile(masked, torch.zeros(INPUT_SHAPE), threads=0)
    with pytest.raises(ThreadConfigError, match="exceeds the TVM thread pool"):
        compile(masked, torch.zeros(INPUT_SHAPE), threads=thread_pool_capacity() + 1)


class OneSparseConv(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(32, 32, 3, padding=1)

    def forward(self, x):
        return torch.flatten(torch.relu(self.conv(x)), 1)


def test_tune_tiles_takes_the_timed_tile():
    model = impose_random_masks(OneSparseConv().eval(), 0.5, 16)
    compiled = compile(model, torch.zeros(1, 32, 12, 12), tune_tiles=True)
    spec = BlockSparseConvSpec(1, 12, 12, 32, 32, 16, 16, 3, 1, 1, bias=True, activation="relu")
    tile, _ = choose_tile(spec, compiled.target)
    (entry,) = compiled.kernel_table
    assert entry.tile.startswith(f"{tile.rows}x{tile.cols}px {tile.padding}-pad {tile.parallel}")
    x = torch.randn(1, 32, 12, 12)
    with torch.no_grad():
        expected = model(x).numpy()
    assert np.abs(compiled(x) - expected).max() <= RELATIVE_TOLERANCE * np.abs(expected).max()


def test_compile_refuses_unsupported_ops_before_building():
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ELU(), nn.Flatten()).eval()
    with pytest.raises(
        UnsupportedOpError, match=r"1 node\(s\).*node '_1' \(call_module 1, a torch.nn.modules.activation.ELU\)"
    ):
        compile(model, torch.zeros(1, 3, 8, 8))
