"""subp_fx.fileio: every artefact is written whole or not at all."""

from __future__ import annotations

import pytest

from subp_fx.fileio import atomic_file, staged_directory


def test_atomic_file_replaces_the_destination_only_when_the_block_ends(tmp_path):
    path = tmp_path / "sub" / "log.json"
    with atomic_file(path, "w") as stream:
        stream.write("new")
        assert not path.exists()
    assert path.read_text() == "new"
    assert [p.name for p in path.parent.iterdir()] == ["log.json"]


def test_atomic_file_leaves_the_old_file_and_no_litter_on_an_error(tmp_path):
    path = tmp_path / "state.pt"
    path.write_bytes(b"old")
    with pytest.raises(RuntimeError, match="crash"), atomic_file(path) as stream:
        stream.write(b"half")
        raise RuntimeError("crash")
    assert path.read_bytes() == b"old"
    assert [p.name for p in tmp_path.iterdir()] == ["state.pt"]


def test_atomic_file_refuses_append_and_read_modes(tmp_path):
    with pytest.raises(ValueError, match="mode must be 'wb' or 'w'"), atomic_file(tmp_path / "x", "a"):
        pass


def test_staged_directory_publishes_complete_and_replaces_an_old_one(tmp_path):
    destination = tmp_path / "artefact"
    destination.mkdir()
    (destination / "stale.txt").write_text("old")
    with staged_directory(destination) as staging:
        (staging / "model.so").write_text("new")
        assert (destination / "stale.txt").exists()
    assert sorted(p.name for p in destination.iterdir()) == ["model.so"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artefact"]


def test_staged_directory_removes_the_staging_and_keeps_the_old_one_on_an_error(tmp_path):
    destination = tmp_path / "artefact"
    destination.mkdir()
    (destination / "kept.txt").write_text("old")
    with pytest.raises(KeyboardInterrupt), staged_directory(destination) as staging:
        (staging / "half.so").write_text("x")
        raise KeyboardInterrupt
    assert sorted(p.name for p in destination.iterdir()) == ["kept.txt"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["artefact"]
