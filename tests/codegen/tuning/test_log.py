"""The tuning log: timed tile choices survive the process and are reused, never re-timed; a
compile with a log writes it and the next compile reads it; a broken log is refused by name."""

from __future__ import annotations

import json

import numpy as np
import pytest

pytest.importorskip("tvm")
torch = pytest.importorskip("torch")

from subp_fx.codegen.api import compile  # noqa: E402
from subp_fx.codegen.kernels.spec import BlockSparseConvSpec, ConvTile  # noqa: E402
from subp_fx.codegen.target import parse_target  # noqa: E402
from subp_fx.codegen.tuning import build as kernel_build  # noqa: E402
from subp_fx.codegen.tuning.build import choose_tile  # noqa: E402
from subp_fx.codegen.tuning.log import TuningLog  # noqa: E402
from subp_fx.errors import ArtifactError  # noqa: E402
from subp_fx.models import build_model  # noqa: E402
from subp_fx.passes import impose_random_masks  # noqa: E402

NATIVE = parse_target("llvm -mcpu=native")
SPEC = BlockSparseConvSpec(1, 12, 12, 32, 32, 16, 16, 3, 1, 1, bias=True, activation="relu")


@pytest.fixture
def no_timing(monkeypatch):
    """Forget this process's choices and make any kernel compile (timing needs one) fail."""

    def refuse(*args, **kwargs):
        raise AssertionError("a kernel was compiled for timing although the log has its choice")

    def arm():
        monkeypatch.setattr(kernel_build, "_CHOSEN", {})
        monkeypatch.setattr(kernel_build, "compile_block_sparse_conv", refuse)

    return arm


def test_a_choice_is_recorded_saved_and_reused_without_timing(tmp_path, no_timing):
    path = tmp_path / "tiles.json"
    log = TuningLog.load(path)
    tile, timings = choose_tile(SPEC, NATIVE, log=log)
    assert log.added == 1 and timings[tile] == min(timings.values())
    log.save()
    content = json.loads(path.read_text())
    assert content["format"] == 1 and len(content["records"]) == 1

    no_timing()
    reloaded = TuningLog.load(path)
    assert choose_tile(SPEC, NATIVE, log=reloaded) == (tile, timings)
    assert reloaded.added == 0
    other_shape = BlockSparseConvSpec(1, 12, 12, 32, 32, 16, 8, 3, 1, 1)
    with pytest.raises(AssertionError, match="compiled for timing"):
        choose_tile(other_shape, NATIVE, log=reloaded)


def test_records_are_keyed_by_thread_count(tmp_path):
    log = TuningLog(tmp_path / "tiles.json")
    log.record(SPEC, str(NATIVE), 2, ConvTile(1, 4), {ConvTile(1, 4): 0.5})
    assert log.lookup(SPEC, str(NATIVE), 2) == (ConvTile(1, 4), {ConvTile(1, 4): 0.5})
    assert log.lookup(SPEC, str(NATIVE), 1) is None


def test_a_staged_tile_with_padded_pixels_survives_the_file(tmp_path):
    staged = ConvTile(1, 7, "stage", "pixels", pixel_pad=16)
    log = TuningLog(tmp_path / "tiles.json")
    log.record(SPEC, str(NATIVE), 2, staged, {staged: 0.25, ConvTile(1, 7): 0.4})
    log.save()
    assert TuningLog.load(tmp_path / "tiles.json").lookup(SPEC, str(NATIVE), 2) == (
        staged,
        {staged: 0.25, ConvTile(1, 7): 0.4},
    )


def test_a_tile_recorded_before_pixel_padding_existed_reads_as_unpadded(tmp_path):
    old_tile = {"rows": 1, "cols": 7, "padding": "inline", "parallel": "pixels"}
    log = TuningLog(tmp_path / "tiles.json")
    log.record(SPEC, str(NATIVE), 2, ConvTile(1, 7), {})
    (record,) = log.records.values()
    record["tile"] = old_tile
    log.save()
    tile, _ = TuningLog.load(tmp_path / "tiles.json").lookup(SPEC, str(NATIVE), 2)
    assert tile == ConvTile(1, 7, "inline", "pixels", pixel_pad=0)


@pytest.mark.parametrize(
    "content, fragment",
    [
        ("{not json", "cannot be read as JSON"),
        ('{"records": {}}', "not a subp-fx tuning log of format 1"),
        ('{"format": 1, "records": {"k": {"tile": {"rows": 0, "cols": 4}}}}', "tile is malformed"),
    ],
)
def test_a_broken_log_is_refused_naming_the_file(tmp_path, content, fragment):
    path = tmp_path / "tiles.json"
    path.write_text(content)
    with pytest.raises(ArtifactError, match=fragment) as caught:
        TuningLog.load(path)
    assert str(path) in str(caught.value)


def test_compile_with_a_log_writes_it_and_the_next_compile_times_nothing(tmp_path, no_timing):
    torch.manual_seed(0)
    model = impose_random_masks(build_model("small_cnn", num_classes=10, in_channels=1), 0.5, 16).eval()
    example = np.zeros((1, 1, 28, 28), np.float32)
    path = tmp_path / "logs" / "tiles.json"
    first = compile(model, example, tuning_log=path)
    recorded = json.loads(path.read_text())["records"]
    convs = [entry for entry in first.kernel_table if entry.op == "conv2d"]
    assert recorded and len(recorded) <= len(convs)

    no_timing()
    second = compile(model, example, tuning_log=path)
    assert [entry.tile for entry in second.kernel_table] == [entry.tile for entry in first.kernel_table]
    assert json.loads(path.read_text())["records"] == recorded
    x = np.random.default_rng(0).standard_normal((1, 1, 28, 28)).astype(np.float32)
    np.testing.assert_array_equal(first(x), second(x))
