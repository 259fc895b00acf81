"""The ``subp-fx`` command line. Every user-fixable error ends as one paragraph and exit status 2."""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import textwrap
from collections.abc import Callable
from pathlib import Path

from subp_fx.cli_argv import join_target_options
from subp_fx.codegen.defaults import DEFAULT_TARGET
from subp_fx.errors import ConfigError, SubpError
from subp_fx.quantize.precision import PRECISIONS
from subp_fx.tools.calibration_spec import DEFAULT_CALIBRATION_BATCH_SIZE, DEFAULT_CALIBRATION_BATCHES, CalibrationSpec

EXIT_USER_ERROR = 2


def _add_recipe_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("recipe", help="YAML recipe (see recipes/)")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a recipe key, e.g. --set train.epochs=2 --set sparsity.N=32 (repeatable)",
    )


def _cmd_prune(args: argparse.Namespace) -> int:
    from subp_fx.recipes.schema import load_recipe

    recipe = load_recipe(args.recipe, args.overrides)
    if args.dry_run:
        return _print_dry_run(recipe)
    if args.evaluate:
        from subp_fx.train.trainer import evaluate_checkpoint

        if not args.pretrained:
            raise SubpError("--evaluate needs --pretrained CHECKPOINT: the weights to evaluate")
        metrics = evaluate_checkpoint(recipe, args.pretrained)
        print(
            f" * Prec@1 {metrics['top1']:.3f} Prec@5 {metrics['top5']:.3f} Error@1 {100 - metrics['top1']:.3f} "
            f"Loss {metrics['loss']:.4f} ({metrics['samples']} images)"
        )
        return 0
    from subp_fx.train.trainer import train

    if args.pretrained:
        recipe = recipe.model_copy(update={"model": recipe.model.model_copy(update={"pretrained": args.pretrained})})
    result = train(recipe, resume=args.resume, force=args.force)
    verdict = "final and uniform at the target rate" if result.masks_final else f"NOT final: {result.mask_problems}"
    val = result.final.get("val", {})
    print(
        f"done: {result.epochs_run} epochs in {result.seconds:.1f}s; "
        f"final val top-1 {val.get('top1', float('nan')):.2f}% "
        f"top-5 {val.get('top5', float('nan')):.2f}%; best top-1 {result.best_top1:.2f}%; masks {verdict}; "
        f"outputs in {result.output_dir}"
    )
    return 0 if result.masks_final else 1


def _print_dry_run(recipe) -> int:
    from subp_fx.passes import dry_run, format_dry_run
    from subp_fx.recipes.model import nominal_input_shape, recipe_model

    model = recipe_model(recipe)
    print(format_dry_run(dry_run(model, recipe.sparsity, nominal_input_shape(recipe))))
    return 0


def _cmd_flops(args: argparse.Namespace) -> int:
    from subp_fx.passes import prepare
    from subp_fx.recipes.model import nominal_input_shape, recipe_model
    from subp_fx.recipes.schema import load_recipe
    from subp_fx.tools.flops import count_flops, format_flops_table

    recipe = load_recipe(args.recipe, args.overrides)
    shape = nominal_input_shape(recipe)
    gm = prepare(recipe_model(recipe), recipe.sparsity)
    # The paper scales a pruned layer by (1 - prune_rate); the compiled kernel runs
    # kept_per_row = C_in - int(prune_rate * C_in) blocks per row. Both are reported.
    paper = count_flops(gm, shape, sparse_density="prune_rate")
    kernel = count_flops(gm, shape, sparse_density="kept_per_row")
    if args.json:
        print(
            json.dumps(
                {
                    "input_shape": list(shape),
                    "paper": {
                        "macs": paper.macs,
                        "macs_dense": paper.macs_dense,
                        "params": paper.params,
                        "params_dense": paper.params_dense,
                    },
                    "kept_per_row": {
                        "macs": kernel.macs,
                        "macs_dense": kernel.macs_dense,
                        "params": kernel.params,
                        "params_dense": kernel.params_dense,
                    },
                }
            )
        )
        return 0
    print(format_flops_table(paper))
    print(
        f"as the compiled kernel runs it (kept_per_row = C_in - int(prune_rate * C_in)): "
        f"{kernel.macs / 1e9:.4f} G MACs, {kernel.params / 1e6:.3f} M params"
    )
    return 0


def _cannot_write_in(directory: Path) -> str | None:
    """Why no file can be created in ``directory`` (an existing directory), or None: tried for real
    with a temporary file, so permissions, read-only mounts and pseudo file systems all count."""
    try:
        with tempfile.TemporaryFile(dir=directory, prefix=".subp-fx-write-check-"):
            pass
    except OSError as error:
        return error.strerror or type(error).__name__
    return None


def check_output_file(value: str | os.PathLike | None, option: str, work: str) -> None:
    """Refuse, before any work, an output file that could not be written when the work is done: its
    folder must exist and be writable, and the path must not be a directory. ``work``: what would
    have been lost, for the message (e.g. "nothing was evaluated")."""
    if value is None:
        return
    path = Path(value)
    folder = path.parent
    if path.is_dir():
        raise SubpError(
            f"{option} {str(value)!r} is a directory; give a file name, e.g. {str(path / 'result.json')!r} ({work})"
        )
    if not folder.is_dir():
        state = "is not a directory" if folder.exists() else "does not exist"
        raise SubpError(
            f"{option} {str(value)!r}: its folder {str(folder)!r} {state}; create it or choose another path ({work})"
        )
    problem = _cannot_write_in(folder)
    if problem is not None:
        raise SubpError(
            f"{option} {str(value)!r}: cannot create a file in {str(folder)!r} ({problem}); "
            f"choose a writable folder ({work})"
        )


def check_output_location(value: str | os.PathLike | None, option: str, work: str, directory: bool) -> None:
    """Refuse, before any work, an output (a ``directory`` or a file) whose missing parent folders
    could not be created: the nearest existing ancestor must be a writable directory, and an
    existing output must be of the right kind."""
    if value is None:
        return
    path = Path(value)
    if path.exists() and path.is_dir() != directory:
        kind = "a file" if directory else "a directory"
        raise SubpError(f"{option} {str(value)!r} is {kind}; choose another path ({work})")
    ancestor = path.absolute().parent
    while not ancestor.exists():
        ancestor = ancestor.parent
    if not ancestor.is_dir():
        raise SubpError(
            f"{option} {str(value)!r}: {str(ancestor)!r} is a file, not a folder; choose another path ({work})"
        )
    problem = _cannot_write_in(ancestor)
    if problem is not None:
        raise SubpError(
            f"{option} {str(value)!r}: cannot create anything in {str(ancestor)!r} ({problem}); "
            f"choose a writable folder ({work})"
        )


def _write_json(path: str, result: dict) -> None:
    from subp_fx.fileio import atomic_file

    with atomic_file(path, "w") as stream:
        stream.write(json.dumps(result, indent=2) + "\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be >= 1, got {value}")
    return value


def _cmd_compile(args: argparse.Namespace) -> int:
    from subp_fx.codegen.precision import check_precision_target
    from subp_fx.codegen.target import compile_target
    from subp_fx.tools.artifact import compile_to_directory, load_compile_source
    from subp_fx.tools.progress import terminal_progress

    nothing = "nothing was compiled"
    target = compile_target(args.target)  # a target we cannot build is refused before the model is even loaded
    check_precision_target(args.precision, target)
    if args.sub_batch is not None and args.batch % args.sub_batch:
        from subp_fx.codegen.lowering.sub_batches import batch_divisors

        divisors = ", ".join(map(str, batch_divisors(args.batch)))
        raise ConfigError(f"--sub-batch {args.sub_batch} does not divide --batch {args.batch} (valid: {divisors})")
    calibration = CalibrationSpec.from_argv(args.precision, args.calibration_data, args.calibration_batches)
    check_output_location(args.output, "-o", nothing, directory=True)
    check_output_location(args.tuning_log, "--tuning-log", nothing, directory=False)
    source = load_compile_source(
        args.source, batch=args.batch, image_size=args.image_size, impose_sparsity=args.impose_sparsity, seed=args.seed
    )
    compiled = compile_to_directory(
        source,
        args.output,
        target=args.target,
        threads=args.threads,
        force=args.force,
        dense_baseline=not args.no_dense_baseline,
        tune_tiles=args.tune_tiles,
        tuning_log=args.tuning_log,
        progress=terminal_progress(args.quiet),
        precision=args.precision,
        calibration=calibration,
        sub_batch=args.sub_batch,
        winograd=not args.no_winograd,
    )
    print(
        f"compiled {source.origin} in {args.precision}"
        + (
            f" with random uniform masks at prune rate {source.imposed_prune_rate}"
            if source.imposed_prune_rate is not None
            else ""
        )
    )
    print(compiled.report())
    print(
        f"wrote {args.output}/ (model.so, manifest.json{', dense/' if not args.no_dense_baseline else ''}, "
        "pytorch_model.pt, subp_model.pt, source.json)"
    )
    return 0


def _cmd_eval(args: argparse.Namespace) -> int:
    from subp_fx.tools.evaluate import evaluate_compiled

    check_output_file(args.json, "--json", "nothing was evaluated")
    result = evaluate_compiled(
        args.artefact,
        kind=args.data,
        root=args.root,
        val_subset=args.val_subset,
        threads=args.threads,
        compare_pytorch=args.compare_pytorch,
    )
    labels = {"compiled": f"compiled ({result['precision']})", "pytorch": "pytorch (fp32)"}
    for name in ("compiled", "pytorch"):
        if name in result:
            metrics = result[name]
            print(
                f"{labels[name]:>16}: * Prec@1 {metrics['top1']:.3f} Prec@5 {metrics['top5']:.3f} "
                f"Error@1 {100 - metrics['top1']:.3f} "
                f"Loss {metrics['loss']:.4f} ({metrics['samples']} images)"
            )
    if "pytorch" in result:
        print(
            f"top-1 difference {abs(result['compiled']['top1'] - result['pytorch']['top1']):.3f} points; "
            f"max |logit difference| {result['max_abs_logit_diff']:.2e} (max |logit| {result['max_abs_logit']:.2f})"
        )
    if args.json:
        _write_json(args.json, result)
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from subp_fx.tools.benchmark import BENCH_FIELDS, bench_compiled, format_bench
    from subp_fx.tools.progress import terminal_progress

    if args.explain:
        for field, meaning in BENCH_FIELDS.items():
            print(f"{field}: {meaning}")
        return 0
    if not args.artefact:
        raise SubpError("bench needs the directory written by `subp-fx compile`")
    check_output_file(args.json, "--json", "nothing was benchmarked")
    result = bench_compiled(
        args.artefact,
        threads=args.threads,
        warmup=args.warmup,
        iters=args.iters,
        torch_compile=not args.no_torch_compile,
        batch=args.batch,
        allow_mismatch=args.allow_mismatch,
        peers=not args.no_peers,
        progress=terminal_progress(args.quiet),
    )
    print(format_bench(result))
    if args.json:
        _write_json(args.json, result)
        print(f"wrote {args.json} (fields: subp-fx bench --explain)")
    return 0


def _cmd_profile(args: argparse.Namespace) -> int:
    from subp_fx.codegen.api import load_compiled
    from subp_fx.codegen.runtime.profile import format_profile, profile_model
    from subp_fx.tools.artifact import DENSE_DIR

    check_output_file(args.json, "--json", "nothing was profiled")
    directory = Path(args.artefact) / DENSE_DIR if args.dense else Path(args.artefact)
    compiled = load_compiled(directory, threads=args.threads)
    profile = profile_model(compiled, runs=args.runs)
    print(f"{directory} ({compiled.manifest.precision}, {compiled.threads} threads, input {compiled.input_shape})")
    print(format_profile(profile, top=args.top))
    if args.json:
        _write_json(args.json, profile.to_json())
    return 0


def _add_quiet_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-q",
        "--quiet",
        action="store_true",
        help="no progress lines on the terminal (they are shown only when stderr is a terminal anyway)",
    )


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="subp-fx",
        description=(
            "Train 1xN block-sparse CNNs with SUBP (Soft Uniform Block Pruning) and compile them for multi-core CPUs."
        ),
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    prune = commands.add_parser("prune", help="train a model with SUBP from a YAML recipe")
    _add_recipe_arguments(prune)
    prune.add_argument("--dry-run", action="store_true", help="print what every conv would become, train nothing")
    prune.add_argument("--resume", action="store_true", help="continue the run in the recipe's output dir from last.pt")
    prune.add_argument("--force", action="store_true", help="start over in an output dir that already holds a run")
    prune.add_argument("--evaluate", action="store_true", help="evaluate --pretrained on the recipe's validation set")
    prune.add_argument(
        "--pretrained", metavar="CHECKPOINT", help="weights to evaluate (with --evaluate) or to start training from"
    )
    prune.set_defaults(handler=_cmd_prune)

    flops = commands.add_parser(
        "flops", help="MACs and params as the paper counts them (dense and at the target sparsity)"
    )
    _add_recipe_arguments(flops)
    flops.add_argument("--json", action="store_true", help="print totals as JSON (paper convention and kept-per-row)")
    flops.set_defaults(handler=_cmd_flops)

    compile_ = commands.add_parser(
        "compile", help="compile a checkpoint (or a recipe's model) to a TVM program with 1xN block-sparse kernels"
    )
    compile_.add_argument(
        "source", help="checkpoint from `subp-fx prune` (last.pt / best.pt) or a recipe YAML (random weights)"
    )
    compile_.add_argument(
        "-o", "--output", required=True, help="artefact directory to write (refused if it exists, unless --force)"
    )
    compile_.add_argument(
        "--target",
        default=DEFAULT_TARGET,
        metavar="KIND [-OPTION=VALUE ...]",
        help=(
            f"TVM target, as TVM users type it: --target llvm -mcpu=native -num-cores=2, quoted "
            f'(--target "llvm -mcpu=znver3"), or a JSON object. CPU (llvm) targets of this machine\'s '
            f'architecture only; checked before any work (default "{DEFAULT_TARGET}": this CPU)'
        ),
    )
    compile_.add_argument("--batch", type=_positive_int, default=1, help="static batch size (default 1)")
    compile_.add_argument(
        "--sub-batch",
        type=_positive_int,
        metavar="N",
        help="run the layers on N samples at a time, a divisor of --batch (default: chosen so that the "
        "largest activation stays in the caches; --sub-batch equal to --batch: the whole batch at once)",
    )
    compile_.add_argument("--image-size", type=_positive_int, help="input height = width (default: the recipe's)")
    compile_.add_argument("--threads", type=_positive_int, help="TVM runtime threads (default: all cores)")
    compile_.add_argument(
        "--impose-sparsity",
        type=float,
        metavar="P",
        help="replace the masks by random uniform ones at prune rate P (measure speed before training)",
    )
    compile_.add_argument("--seed", type=int, default=0, help="seed of imposed random masks")
    compile_.add_argument(
        "--tune-tiles", action="store_true", help="time a few register tiles per conv shape at compile time"
    )
    compile_.add_argument(
        "--no-winograd",
        action="store_true",
        help="run fp32 3x3 stride-1 convs on the direct kernel, not by Winograd F(4x4,3x3) (which does 4x fewer "
        "multiply-adds, with rounding differences of about 1e-6 relative)",
    )
    compile_.add_argument(
        "--tuning-log",
        metavar="FILE",
        help="JSON file of tile timings: shapes it has are not timed again, new ones are added (implies --tune-tiles)",
    )
    compile_.add_argument(
        "--precision",
        default="fp32",
        choices=PRECISIONS,
        help="what the convs compute in (default fp32); int8 needs --calibration-data; bf16 needs avx512_bf16",
    )
    compile_.add_argument(
        "--calibration-data",
        nargs="+",
        metavar="SOURCE",
        help="int8 only: images whose activation ranges set the quantisation: "
        "fashion-mnist | imagefolder ROOT | synthetic",
    )
    compile_.add_argument(
        "--calibration-batches",
        type=_positive_int,
        default=DEFAULT_CALIBRATION_BATCHES,
        help=f"int8 only: batches of {DEFAULT_CALIBRATION_BATCH_SIZE} images to calibrate on "
        f"(default {DEFAULT_CALIBRATION_BATCHES})",
    )
    compile_.add_argument(
        "--no-dense-baseline", action="store_true", help="skip compiling the dense twin used by `subp-fx bench`"
    )
    compile_.add_argument("--force", action="store_true", help="replace an existing output directory")
    _add_quiet_argument(compile_)
    compile_.set_defaults(handler=_cmd_compile)

    evaluate = commands.add_parser("eval", help="top-1 / top-5 of a compiled model on a validation set")
    evaluate.add_argument("artefact", help="directory written by `subp-fx compile`")
    evaluate.add_argument(
        "--data", choices=["imagefolder", "fashion-mnist", "synthetic"], help="dataset kind (default: the recipe's)"
    )
    evaluate.add_argument("--root", help="dataset root (default: the recipe's)")
    evaluate.add_argument("--val-subset", type=_positive_int, help="first k validation images only")
    evaluate.add_argument("--threads", type=_positive_int, help="TVM runtime threads")
    evaluate.add_argument(
        "--compare-pytorch",
        action="store_true",
        help="also evaluate the same weights in PyTorch eager and report the difference",
    )
    evaluate.add_argument("--json", metavar="FILE", help="write the metrics as JSON")
    evaluate.set_defaults(handler=_cmd_eval)

    bench = commands.add_parser(
        "bench",
        help="latency of a compiled model beside our dense build, PyTorch's dense paths, ONNX Runtime and OpenVINO",
    )
    bench.add_argument("artefact", nargs="?", help="directory written by `subp-fx compile`")
    bench.add_argument(
        "--threads", type=_positive_int, help="threads for every contender (TVM and torch; default: the artefact's)"
    )
    bench.add_argument(
        "--batch",
        type=_positive_int,
        help="batch size (default: the artefact's; another one recompiles both builds for it)",
    )
    bench.add_argument("--warmup", type=int, default=10, help="warm-up runs per contender (default 10)")
    bench.add_argument(
        "--iters", type=_positive_int, default=50, help="timed runs per contender, interleaved (default 50)"
    )
    bench.add_argument(
        "--no-torch-compile",
        action="store_true",
        help="skip the torch.compile baseline (it compiles for a minute or more)",
    )
    bench.add_argument(
        "--no-peers",
        action="store_true",
        help="skip ONNX Runtime and OpenVINO (timed by default where installed: pip install 'subp-fx[peers]')",
    )
    bench.add_argument(
        "--allow-mismatch",
        action="store_true",
        help="time contenders whose output disagrees with PyTorch eager too (flagged MISMATCH) instead of refusing",
    )
    bench.add_argument("--json", metavar="FILE", help="write every number as JSON")
    bench.add_argument("--explain", action="store_true", help="print what every JSON field means and exit")
    _add_quiet_argument(bench)
    bench.set_defaults(handler=_cmd_bench)

    profile = commands.add_parser(
        "profile", help="where a compiled model's time goes: every kernel call timed inside a real run"
    )
    profile.add_argument("artefact", help="directory written by `subp-fx compile`")
    profile.add_argument("--dense", action="store_true", help="profile the artefact's dense build instead")
    profile.add_argument("--threads", type=_positive_int, help="TVM runtime threads (default: the artefact's)")
    profile.add_argument("--runs", type=_positive_int, default=20, help="timed runs, medians reported (default 20)")
    profile.add_argument("--top", type=_positive_int, help="only the K slowest calls (default: every call, in order)")
    profile.add_argument("--json", metavar="FILE", help="write every call and the totals as JSON")
    profile.set_defaults(handler=_cmd_profile)
    return parser


def _report(error: BaseException) -> None:
    message = str(error).strip()
    paragraphs = message.split("\n")
    wrapped = "\n".join(textwrap.fill(line, width=100, subsequent_indent="  ") for line in paragraphs)
    print(f"subp-fx: error: {wrapped}", file=sys.stderr)


def _short_options(parser: argparse.ArgumentParser) -> set[str]:
    """Every one-letter option (``-o``, ``-h``, ...) of ``parser`` and its subcommands."""
    found: set[str] = set()
    for action in parser._actions:
        found |= {option for option in action.option_strings if len(option) == 2 and option[1] != "-"}
        if isinstance(action, argparse._SubParsersAction):
            for subparser in action.choices.values():
                found |= _short_options(subparser)
    return found


def parse_args(argv: list[str]) -> argparse.Namespace:
    """``argv`` (without the program name) as the subcommand's arguments; ``--target`` may be
    followed by TVM's target options unquoted (``cli_argv``). Exits with status 2 on a usage error."""
    parser = build_parser()
    return parser.parse_args(join_target_options(argv, _short_options(parser)))


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else list(argv))
    handler: Callable[[argparse.Namespace], int] = args.handler
    try:
        return handler(args)
    except SubpError as error:
        _report(error)
        return EXIT_USER_ERROR
    except KeyboardInterrupt:
        print(
            "subp-fx: interrupted; the last completed epoch's checkpoint is intact (continue with --resume)",
            file=sys.stderr,
        )
        return 130


if __name__ == "__main__":
    sys.exit(main())
