"""A compiled model in a real serving process: torchvision preprocessing in torch before each call.

For each model (random weights, random uniform 1x16 masks at the paper's rate, 224 px, batch 1,
2 threads): the model's own latency per call (i) called back to back ("alone") and (ii) called
after preprocessing one 375x500 uint8 image with torchvision's Resize(256) / CenterCrop(224) /
ToDtype / Normalize in torch ("serving"), each with subp-fx's default (torch's spinning OpenMP
threads put to sleep before each call, ``codegen.runtime.torch_threads``) and without it (what
every version before did). Variants interleaved in blocks in one process. Goal (issue 10): serving
within 5% of alone, the user changing nothing.

    python benchmarks/serving.py [--models resnet18 resnet50] [--rounds 6] [--calls 15]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from paper_configs import RESULTS, describe_machine, machine_line  # noqa: E402

PRUNE_RATES = {"resnet18": 60 / 128, "resnet34": 59 / 128, "resnet50": 66 / 128}


def measure(name: str, rounds: int, calls: int) -> dict:
    import torch
    import torchvision
    from torchvision.transforms import v2

    import subp_fx
    from subp_fx.codegen.runtime.torch_threads import quiet_torch_threads

    torch.manual_seed(0)
    model = subp_fx.impose_random_masks(getattr(torchvision.models, name)().eval(), PRUNE_RATES[name], 16).eval()
    compiled = subp_fx.compile(model, (1, 3, 224, 224), threads=2)
    preprocess = v2.Compose(
        [
            v2.Resize(256, antialias=True),
            v2.CenterCrop(224),
            v2.ToDtype(torch.float32, scale=True),
            v2.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225]),
        ]
    )
    image = torch.randint(0, 256, (3, 375, 500), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))

    def loop(serving: bool, quiet: bool) -> tuple[list[float], list[float]]:
        quiet_torch_threads.enabled = quiet
        model_ms, preprocess_ms = [], []
        batch = preprocess(image)[None].numpy()
        for _ in range(calls):
            if serving:
                started = time.perf_counter()
                batch = preprocess(image)[None].numpy()
                preprocess_ms.append(1000 * (time.perf_counter() - started))
            started = time.perf_counter()
            compiled(batch)
            model_ms.append(1000 * (time.perf_counter() - started))
        return model_ms, preprocess_ms

    variants = {
        "alone": (False, True),
        "serving": (True, True),
        "alone_without_quieting": (False, False),
        "serving_without_quieting": (True, False),
    }
    try:
        for serving, quiet in variants.values():
            loop(serving, quiet)
        model_ms = {name: [] for name in variants}
        preprocess_ms = {name: [] for name in variants}
        names = list(variants)
        for index in range(rounds):
            for variant in names[index % len(names) :] + names[: index % len(names)]:
                time.sleep(0.2)
                timed, pre = loop(*variants[variant])
                model_ms[variant].extend(timed)
                preprocess_ms[variant].extend(pre)
    finally:
        quiet_torch_threads.enabled = True
    medians = {variant: statistics.median(values) for variant, values in model_ms.items()}
    return {
        "model": name,
        "prune_rate": PRUNE_RATES[name],
        "model_median_ms": medians,
        "preprocess_median_ms": {k: statistics.median(v) for k, v in preprocess_ms.items() if v},
        "serving_over_alone": medians["serving"] / medians["alone"],
        "serving_over_alone_without_quieting": medians["serving_without_quieting"] / medians["alone_without_quieting"],
        "goal_met": medians["serving"] <= 1.05 * medians["alone"],
    }


def markdown(rows: list[dict], machine: dict) -> str:
    lines = [
        "# A compiled model in a serving process (torchvision preprocessing in torch before each call)",
        "",
        machine_line(machine),
        "",
        "Batch 1, 224 px, 2 threads; median ms of the model call alone (the preprocessing is not counted). "
        "'quieting': subp-fx puts torch's spinning OpenMP threads to sleep before each call (the default).",
        "",
        "| model | alone | serving | serving / alone | alone, no quieting | serving, no quieting "
        "| serving / alone, no quieting | preprocess | goal (<= 1.05) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        m = row["model_median_ms"]
        lines.append(
            f"| {row['model']} {row['prune_rate'] * 128:.0f}/128 | {m['alone']:.2f} | {m['serving']:.2f} "
            f"| {row['serving_over_alone']:.3f} | {m['alone_without_quieting']:.2f} "
            f"| {m['serving_without_quieting']:.2f} | {row['serving_over_alone_without_quieting']:.3f} "
            f"| {row['preprocess_median_ms']['serving']:.2f} | {'met' if row['goal_met'] else 'MISSED'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["resnet18", "resnet50"], choices=list(PRUNE_RATES))
    parser.add_argument("--rounds", type=int, default=6)
    parser.add_argument("--calls", type=int, default=15)
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args()
    machine = describe_machine()
    rows = [measure(name, args.rounds, args.calls) for name in args.models]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "serving.json").write_text(json.dumps({"machine": machine, "rows": rows}, indent=2) + "\n")
    (args.out / "serving.md").write_text(markdown(rows, machine))
    print(markdown(rows, machine))
    return 0


if __name__ == "__main__":
    sys.exit(main())
