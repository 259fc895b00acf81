"""The ``subp-fx`` command line. Every user-fixable error ends as one paragraph and exit status 2."""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
from typing import Callable

from subp_fx.errors import SubpError

EXIT_USER_ERROR = 2


def _add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="YAML recipe (see recipes/)")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override a recipe key, e.g. --set train.epochs=2 --set sparsity.N=32 (repeatable)",
    )


def _cmd_prune(args: argparse.Namespace) -> int:
    from subp_fx.recipe import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    if args.dry_run:
        return _print_dry_run(recipe)
    if args.evaluate:
        from subp_fx.train.trainer import evaluate_checkpoint

        if not args.pretrained:
            raise SubpError("--evaluate needs --pretrained CHECKPOINT: the weights to evaluate")
        metrics = evaluate_checkpoint(recipe, args.pretrained)
        print(f" * Prec@1 {metrics['top1']:.3f} Prec@5 {metrics['top5']:.3f} Error@1 {100 - metrics['top1']:.3f} Loss {metrics['loss']:.4f} ({metrics['samples']} images)")
        return 0
    from subp_fx.train.trainer import train

    if args.pretrained:
        recipe = recipe.model_copy(update={"model": recipe.model.model_copy(update={"pretrained": args.pretrained})})
    result = train(recipe, resume=args.resume, force=args.force)
    verdict = "final and uniform at the target rate" if result.masks_final else f"NOT final: {result.mask_problems}"
    val = result.final.get("val", {})
    print(
        f"done: {result.epochs_run} epochs in {result.seconds:.1f}s; final val top-1 {val.get('top1', float('nan')):.2f}% "
        f"top-5 {val.get('top5', float('nan')):.2f}%; best top-1 {result.best_top1:.2f}%; masks {verdict}; "
        f"outputs in {result.output_dir}"
    )
    return 0 if result.masks_final else 1


def _print_dry_run(recipe) -> int:
    from subp_fx.passes import dry_run, format_dry_run
    from subp_fx.recipe_model import nominal_input_shape, recipe_model

    model = recipe_model(recipe)
    print(format_dry_run(dry_run(model, recipe.sparsity, nominal_input_shape(recipe))))
    return 0


def _cmd_flops(args: argparse.Namespace) -> int:
    from subp_fx.flops import count_flops, format_flops_table
    from subp_fx.passes import prepare
    from subp_fx.recipe import load_recipe
    from subp_fx.recipe_model import nominal_input_shape, recipe_model

    recipe = load_recipe(args.recipe, args.overrides)
    shape = nominal_input_shape(recipe)
    gm = prepare(recipe_model(recipe), recipe.sparsity)
    # The paper scales a pruned layer by (1 - prune_rate); the compiled kernel runs
    # kept_per_row = C_in - int(prune_rate * C_in) blocks per row. Both are reported.
    paper = count_flops(gm, shape, sparse_density="prune_rate")
    kernel = count_flops(gm, shape, sparse_density="kept_per_row")
    if args.json:
        print(json.dumps({
            "input_shape": list(shape),
            "paper": {"macs": paper.macs, "macs_dense": paper.macs_dense, "params": paper.params, "params_dense": paper.params_dense},
            "kept_per_row": {"macs": kernel.macs, "macs_dense": kernel.macs_dense, "params": kernel.params, "params_dense": kernel.params_dense},
        }))
        return 0
    print(format_flops_table(paper))
    print(
        f"as the compiled kernel runs it (kept_per_row = C_in - int(prune_rate * C_in)): "
        f"{kernel.macs / 1e9:.4f} G MACs, {kernel.params / 1e6:.3f} M params"
    )
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="subp-fx",
        description="Train 1xN block-sparse CNNs with SUBP (Soft Uniform Block Pruning) and compile them for multi-core CPUs.",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    prune = commands.add_parser("prune", help="train a model with SUBP from a YAML recipe")
    _add_recipe_arguments(prune)
    prune.add_argument("--dry-run", action="store_true", help="print what every conv would become, train nothing")
    prune.add_argument("--resume", action="store_true", help="continue the run in the recipe's output dir from last.pt")
    prune.add_argument("--force", action="store_true", help="start over in an output dir that already holds a run")
    prune.add_argument("--evaluate", action="store_true", help="evaluate --pretrained on the recipe's validation set")
    prune.add_argument("--pretrained", metavar="CHECKPOINT", help="weights to evaluate (with --evaluate) or to start training from")
    prune.set_defaults(handler=_cmd_prune)

    flops = commands.add_parser("flops", help="MACs and params as the paper counts them (dense and at the target sparsity)")
    _add_recipe_arguments(flops)
    flops.add_argument("--json", action="store_true", help="print totals as JSON (paper convention and kept-per-row)")
    flops.set_defaults(handler=_cmd_flops)
    return parser


def _report(error: BaseException) -> None:
    message = str(error).strip()
    paragraphs = message.split("\n")
    wrapped = "\n".join(textwrap.fill(line, width=100, subsequent_indent="  ") for line in paragraphs)
    print(f"subp-fx: error: {wrapped}", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except SubpError as error:
        _report(error)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("subp-fx: interrupted; the last completed epoch's checkpoint is intact (continue with --resume)", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
