"""A deployment host loads and runs an exported model with numpy and TVM only: no torch."""

import subprocess
import sys
import textwrap

import numpy as np
import torch

import subp_fx
from subp_fx.models import build_model


def test_exported_model_runs_where_torch_cannot_be_imported(tmp_path):
    model = subp_fx.impose_random_masks(
        build_model("small_cnn", num_classes=10, in_channels=1), prune_rate=0.5, N=16
    ).eval()
    example = torch.randn(2, 1, 28, 28, generator=torch.Generator().manual_seed(0))
    compiled = subp_fx.compile(model, example, threads=1)
    compiled.export(tmp_path / "artefact")
    np.save(tmp_path / "input.npy", example.numpy())
    with torch.no_grad():
        np.save(tmp_path / "expected.npy", model(example).numpy())
    script = textwrap.dedent(
        f"""
        import sys
        sys.modules["torch"] = None  # importing torch now raises ImportError
        import numpy as np
        from subp_fx import load_compiled
        model = load_compiled({str(tmp_path / "artefact")!r})
        logits = model(np.load({str(tmp_path / "input.npy")!r}))
        expected = np.load({str(tmp_path / "expected.npy")!r})
        assert np.abs(logits - expected).max() <= 1e-4 * np.abs(expected).max(), np.abs(logits - expected).max()
        assert "torch" not in {{name.split(".")[0] for name, module in sys.modules.items() if module is not None}}
        print("ok")
        """
    )
    completed = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120)
    assert completed.returncode == 0 and completed.stdout.strip() == "ok", completed.stderr[-2000:]
