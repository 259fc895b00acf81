"""In-model profiles of paper configurations: where each build's time goes, call by call.

For each configuration (random weights, random uniform masks at the recipe's prune rate; with
``--precision int8|bf16`` or ``--input-group 4|16`` in aligned groups of that many input channels),
compile the sparse model and run ``codegen.runtime.profile.profile_model``: every kernel call of
a real run timed through the VM's instrument hook, matched to its layer, and the sum checked
against the uninstrumented latency.
Writes ``benchmarks/results/profile_<config>_<precision>.{md,json}`` (``..._fp32_g4`` for fp32
builds of G=4 masks).

    python benchmarks/profile_models.py --configs resnet50-2.0g-n16 --precision int8

Run it on an otherwise idle machine.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from paper_configs import (  # benchmarks/ is on sys.path
    CONFIGS,
    REPO,
    RESULTS,
    default_input_group,
    describe_machine,
    input_group_suffix,
    machine_line,
)


def profile_config(
    name: str, precision: str, runs: int, input_group: int, target: str | None = None, winograd: bool = True
) -> tuple[dict, str]:
    from subp_fx.codegen.api import compile as compile_model
    from subp_fx.codegen.runtime.profile import format_profile, profile_model
    from subp_fx.tools.artifact import load_compile_source
    from subp_fx.tools.calibration_spec import CalibrationSpec

    int8 = precision == "int8"
    overrides = (f"sparsity.input_group={input_group}",) if input_group > 1 else ()
    source = load_compile_source(str(REPO / "recipes" / CONFIGS[name]), recipe_overrides=overrides)
    options = {}
    if int8:
        calibration = CalibrationSpec("synthetic")
        options = {
            "precision": "int8",
            "calibration": calibration.batches_for(source.input_shape),
            "calibration_info": calibration.to_json(),
        }
    elif precision != "fp32":
        options = {"precision": precision}
    options["winograd"] = winograd
    if target is not None:
        options["target"] = target
    compiled = compile_model(source.model, source.input_shape, **options)
    profile = profile_model(compiled, runs=runs)
    return profile.to_json(), format_profile(profile)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--configs", nargs="+", default=["resnet50-2.0g-n16"], choices=list(CONFIGS))
    parser.add_argument("--precision", choices=("fp32", "int8", "bf16"), default="fp32")
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument(
        "--input-group", type=int, choices=(1, 4, 16), help="G of the masks (default: 4 for int8 and bf16, 1 for fp32)"
    )
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--target", help="compile target (default: this CPU), e.g. 'llvm -mcpu=znver3' for AVX2 code")
    parser.add_argument("--no-winograd", action="store_true", help="every conv on the direct kernel")
    parser.add_argument("--suffix", default="", help="appended to the file names (e.g. _zen4)")
    args = parser.parse_args()
    input_group = args.input_group or default_input_group(args.precision)
    machine = describe_machine()
    for name in args.configs:
        record, text = profile_config(
            name, args.precision, args.runs, input_group, args.target, winograd=not args.no_winograd
        )
        record.update(target=args.target or "native", winograd=not args.no_winograd)
        # config names hold dots: no with_suffix
        stem = f"profile_{name}_{args.precision}" + input_group_suffix(args.precision, input_group) + args.suffix
        (args.out / f"{stem}.json").write_text(json.dumps({"machine": machine, "config": name, **record}, indent=2))
        masks = f", masks in groups of {input_group} input channels" if input_group > 1 else ""
        built = f", target {args.target}" if args.target else ""
        built += ", every conv direct" if args.no_winograd else ", 3x3 stride-1 convs by Winograd F(4x4,3x3)"
        title = f"# In-model profile: {name}, {args.precision}{masks}, batch 1, sparse build{built}"
        header = f"{title}\n\n{machine_line(machine)}\n\n"
        (args.out / f"{stem}.md").write_text(header + "```\n" + text + "\n```\n")
        print(header + text, flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
