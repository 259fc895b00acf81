"""Snapshot of everything the compile half generates for a few models: for refactors that must not
change the generated code.

For each model (random weights and random uniform masks at the paper's rates, fixed seeds, batch
1, 224 px, heuristic tiles: no timing, so the output is deterministic) it writes, under OUT/NAME/:

- ``relax.py``: the lowered Relax module as TVMScript (the TIR of every kernel and ``main``,
  weights elided), before any Relax pass;
- ``kernels.txt``: the kernel table;
- ``asm.s``: the x86 assembly LLVM emitted for the whole built module (built as ``compile``
  builds it: ``codegen.pipeline.build`` where the tree has it).

Usage: ``python benchmarks/dump_codegen.py OUT [--target "llvm -mcpu=native"]``, then
``diff -r OUT_before OUT_after``. The assembly is the byte-for-byte check; ``relax.py`` shows
where a difference comes from.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

import torch

MODELS = {
    # name: (recipe, prune rate)
    "resnet18": ("recipes/resnet18-n16.yaml", 60 / 128),
    "resnet50": ("recipes/resnet50-2.0g-n16.yaml", 66 / 128),
    "mobilenet_v1": ("recipes/mobilenetv1-n16.yaml", 69 / 128),
}


def _built_asm(executable) -> str:
    libraries = [module for module in executable.mod.imports if module.kind == "llvm"]
    return "".join(library.inspect_source("asm") for library in libraries)


def _import(*candidates: str, name: str):
    """``name`` from the first module of ``candidates`` that exists (the script must run on the
    tree before and after a move)."""
    import importlib

    for module in candidates:
        try:
            return getattr(importlib.import_module(module), name)
        except ModuleNotFoundError:
            continue
    raise ImportError(f"{name} not found in {candidates}")


def dump(name: str, recipe_path: str, rate: float, target: str, out: Path) -> dict[str, str]:
    import tvm

    import subp_fx
    from subp_fx.codegen.api import format_kernel_table, lower_graph

    load_recipe = _import("subp_fx.recipes.schema", "subp_fx.recipes.schema", name="load_recipe")
    recipe_model = _import("subp_fx.recipes.model", "subp_fx.recipes.model", name="recipe_model")
    recipe = load_recipe(recipe_path)
    torch.manual_seed(0)
    gm = subp_fx.prepare(recipe_model(recipe), recipe.sparsity)
    gm = subp_fx.impose_random_masks(gm, prune_rate=rate, N=recipe.sparsity.N, seed=0).eval()
    lowered = lower_graph(subp_fx.convert(subp_fx.fold_batchnorm(gm)), (1, 3, 224, 224), target)
    try:  # the pinned Relax pass list, where the tree has one
        from subp_fx.codegen.pipeline import build

        executable = build(lowered)
    except ModuleNotFoundError:
        executable = tvm.compile(lowered.module, target=lowered.target)
    texts = {
        "relax.py": lowered.module.script(show_meta=False),
        "kernels.txt": format_kernel_table(lowered.kernel_table) + "\n",
        "asm.s": _built_asm(executable),
    }
    out.mkdir(parents=True, exist_ok=True)
    for file, text in texts.items():
        (out / file).write_text(text)
    return {file: hashlib.sha256(text.encode()).hexdigest()[:16] for file, text in texts.items()}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", type=Path)
    parser.add_argument("--target", default="llvm -mcpu=native")
    args = parser.parse_args()
    for name, (recipe, rate) in MODELS.items():
        digests = dump(name, recipe, rate, args.target, args.out / name)
        print(name, " ".join(f"{file}={digest}" for file, digest in digests.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
