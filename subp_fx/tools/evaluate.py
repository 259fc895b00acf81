"""``subp-fx eval``: accuracy of a compiled artefact on a validation set, optionally beside the same
weights in PyTorch eager."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from subp_fx.recipes.schema import Recipe
from subp_fx.tools.artifact import load_pytorch_model, read_source


def _val_loader(
    out_dir: Path, input_shape: tuple[int, ...], kind: str | None, root: str | None, val_subset: int | None
):
    from subp_fx.data import build_datasets

    recipe = Recipe.model_validate(read_source(out_dir)["recipe"])
    updates = {
        key: value for key, value in (("kind", kind), ("root", root), ("val_subset", val_subset)) if value is not None
    }
    data = recipe.data.model_copy(update=updates)
    if kind is not None and root is None and kind != recipe.data.kind:
        data = data.model_copy(update={"root": None})
    bundle = build_datasets(data, image_size=input_shape[2], in_channels=input_shape[1])
    return torch.utils.data.DataLoader(bundle.val, batch_size=input_shape[0], shuffle=False)


def _padded_batch(images: torch.Tensor, batch: int) -> np.ndarray:
    """The compiled model has a static batch: the last, short batch is zero-padded."""
    array = np.zeros((batch, *images.shape[1:]), dtype=np.float32)
    array[: images.shape[0]] = images.numpy()
    return array


def evaluate_compiled(
    out_dir: str | Path,
    kind: str | None = None,
    root: str | None = None,
    val_subset: int | None = None,
    threads: int | None = None,
    compare_pytorch: bool = False,
) -> dict:
    """Top-1 / top-5 / loss of the compiled model on a validation set (the recipe's, unless
    ``kind`` / ``root`` say otherwise); with ``compare_pytorch`` also of the same weights in
    PyTorch eager (fp32, whatever the artefact's precision: for an int8 artefact the difference is
    what quantisation costs), and the largest logit difference between the two."""
    from subp_fx.codegen.api import load_compiled
    from subp_fx.train.metrics import RunningSums

    out_dir = Path(out_dir)
    compiled = load_compiled(out_dir, threads=threads)
    loader = _val_loader(out_dir, compiled.input_shape, kind, root, val_subset)
    reference = load_pytorch_model(out_dir) if compare_pytorch else None
    criterion = torch.nn.CrossEntropyLoss()
    sums, reference_sums, max_logit_diff, max_logit = RunningSums(), RunningSums(), 0.0, 0.0
    for images, targets in loader:
        count = images.shape[0]
        logits = torch.from_numpy(compiled(_padded_batch(images, compiled.input_shape[0]))[:count])
        sums.add(float(criterion(logits, targets)), logits, targets)
        if reference is not None:
            with torch.inference_mode():
                expected = reference(images)
            reference_sums.add(float(criterion(expected, targets)), expected, targets)
            max_logit_diff = max(max_logit_diff, float((expected - logits).abs().max()))
            max_logit = max(max_logit, float(expected.abs().max()))
    result = {
        "compiled": RunningSums.summary(sums.as_list()),
        "threads": compiled.threads,
        "precision": compiled.manifest.precision,
    }
    if reference is not None:
        result["pytorch"] = RunningSums.summary(reference_sums.as_list())
        result["max_abs_logit_diff"] = max_logit_diff
        result["max_abs_logit"] = max_logit
    return result
