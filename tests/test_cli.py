"""The command line: bad input ends in one paragraph, exit status 2, no traceback, outputs intact."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch.nn as nn

from subp_fx.cli import main
from tests.conftest import REPO, small_recipe, write_recipe


def run_cli(capsys, *argv):
    status = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_user_error(status, err, *fragments):
    assert status == 2
    assert err.startswith("subp-fx: error:") and "Traceback" not in err
    flowed = " ".join(err.split())  # the CLI wraps long lines
    for fragment in fragments:
        assert fragment in flowed, (fragment, err)


@pytest.fixture
def recipe_path(tmp_path):
    return write_recipe(tmp_path / "recipe.yaml", small_recipe(tmp_path / "out"))


def test_malformed_yaml(capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("model: {name: small_cnn\n")
    assert_user_error(*run_cli(capsys, "prune", path)[::2], "not valid YAML", "line")


@pytest.mark.parametrize(
    "override, fragments",
    [
        ("sparsity.prune_rat=0.5", ["sparsity.prune_rat", "unknown key"]),
        ("sparsity.prune_rate=1.0", ["sparsity.prune_rate", "less than 1"]),
        ("sparsity.decay_end=7", ["decay_end", "train.epochs=3"]),
        ("sparsity.N=48", ["N=48", "divide"]),
        ("data.kind=imagefolder", ["data.root"]),
    ],
)
def test_bad_recipe_values(capsys, recipe_path, override, fragments):
    status, _, err = run_cli(capsys, "prune", recipe_path, "--set", override)
    assert_user_error(status, err, *fragments)
    assert not (recipe_path.parent / "out").exists()


def test_missing_and_empty_data_dirs(capsys, recipe_path, tmp_path):
    status, _, err = run_cli(
        capsys, "prune", recipe_path, "--set", "data.kind=imagefolder", "--set", f"data.root={tmp_path / 'nowhere'}"
    )
    assert_user_error(status, err, "nowhere")
    empty = tmp_path / "empty"
    (empty / "train").mkdir(parents=True)
    (empty / "val").mkdir()
    status, _, err = run_cli(
        capsys, "prune", recipe_path, "--set", "data.kind=imagefolder", "--set", f"data.root={empty}"
    )
    assert_user_error(status, err, "train")
    assert not (recipe_path.parent / "out").exists()


def test_corrupt_checkpoint_for_evaluate_and_resume(capsys, recipe_path, tmp_path):
    corrupt = tmp_path / "corrupt.pt"
    corrupt.write_bytes(b"\x00garbage")
    status, _, err = run_cli(capsys, "prune", recipe_path, "--evaluate", "--pretrained", corrupt)
    assert_user_error(status, err, "corrupt.pt")
    out = tmp_path / "out"
    out.mkdir()
    (out / "last.pt").write_bytes(b"\x00garbage")
    (out / "metrics.jsonl").write_text('{"epoch": 1}\n')
    status, _, err = run_cli(capsys, "prune", recipe_path, "--resume")
    assert_user_error(status, err, "last.pt")
    assert (out / "last.pt").read_bytes() == b"\x00garbage" and (out / "metrics.jsonl").read_text() == '{"epoch": 1}\n'


def test_untraceable_model(capsys, recipe_path, monkeypatch):
    class Branchy(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 16, 3)

        def forward(self, x):
            if x.sum() > 0:
                return self.conv(x)
            return self.conv(-x)

    monkeypatch.setattr("subp_fx.models.registry.build_model", lambda *args, **kwargs: Branchy())
    monkeypatch.setattr("subp_fx.models.build_model", lambda *args, **kwargs: Branchy())
    status, _, err = run_cli(capsys, "prune", recipe_path, "--dry-run", "--set", "sparsity.capture=symbolic_trace")
    assert_user_error(status, err, "could not trace", "if x.sum() > 0", "leaf_modules")
    # By default prepare falls back to swapping convs in place, and the dry run says why.
    status, out, _ = run_cli(capsys, "prune", recipe_path, "--dry-run")
    assert status == 0 and "capture: module_swap (symbolic_trace failed" in out and "if x.sum() > 0" in out


def test_dry_run_lists_every_conv(capsys, recipe_path):
    status, out, _ = run_cli(capsys, "prune", recipe_path, "--dry-run")
    assert status == 0
    for name in ("stem.0", "features.0.0", "features.3.0"):
        assert name in out
    assert "C_in=3 < min_in_channels" in out and "4 of 5 convs selected" in out
    assert not (recipe_path.parent / "out").exists()


def test_flops_json_matches_the_paper_table(capsys):
    status, out, _ = run_cli(capsys, "flops", REPO / "recipes" / "resnet18-n16.yaml", "--json")
    assert status == 0
    paper = json.loads(out)["paper"]
    assert paper["macs"] == pytest.approx(1.0301e9, rel=5e-3) and paper["macs_dense"] == pytest.approx(
        1.8166e9, rel=5e-3
    )
    assert paper["params"] == pytest.approx(6.540e6, rel=5e-3)


def test_prune_then_evaluate_through_the_console_script(tmp_path):
    recipe = write_recipe(tmp_path / "r.yaml", small_recipe(tmp_path / "out", train={"epochs": 2, "threads": 1}))
    script = Path(sys.executable).parent / "subp-fx"
    command = [str(script)] if script.exists() else [sys.executable, "-m", "subp_fx.cli"]
    trained = subprocess.run(command + ["prune", str(recipe)], capture_output=True, text=True, timeout=300)
    assert trained.returncode == 0, trained.stderr
    assert "masks final and uniform" in trained.stdout
    evaluated = subprocess.run(
        command + ["prune", str(recipe), "--evaluate", "--pretrained", str(tmp_path / "out" / "best.pt")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert evaluated.returncode == 0 and "* Prec@1" in evaluated.stdout
    again = subprocess.run(command + ["prune", str(recipe)], capture_output=True, text=True, timeout=300)
    assert again.returncode == 2 and "already holds a run" in again.stderr and "Traceback" not in again.stderr
