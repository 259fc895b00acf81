"""Images/s of the ImageFolder training pipeline per number of DataLoader workers.

Writes a folder of ImageNet-like JPEGs (500x375, smooth content, quality 90, i.e. about the size
and decode cost of an average ImageNet training image), builds the training loader exactly as
the trainer does (``build_datasets`` + ``build_loaders``: PIL decode, RandomResizedCrop(224),
flip, ToTensor, Normalize, batch collation), and times full batches after the workers have
started. Also times the pieces for one image in the main process (PIL decode; the transforms),
torchvision's libjpeg-turbo ``decode_jpeg`` on the CPU, and, where CUDA is available, nvJPEG
batch decoding on the GPU (``decode_jpeg(..., device="cuda")``).

    python benchmarks/data_loading.py --workers 0 1 2                # this machine's numbers
    python benchmarks/data_loading.py --workers 0 4 8 16 --json OUT/data_loading.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import cpu_model_name  # noqa: E402

from subp_fx.data import DataSpec, build_datasets, build_loaders  # noqa: E402

RESULTS = REPO / "benchmarks" / "results"


def write_jpegs(root: Path, count: int, width: int = 500, height: int = 375, classes: int = 4, seed: int = 0) -> dict:
    """``root/{train,val}/classK/*.jpg``: smooth random pictures (low-frequency colour fields plus
    a little grain), which compress and decode like photographs rather than like noise."""
    rng = np.random.default_rng(seed)
    sizes = []
    for split, n in (("train", count), ("val", max(classes, count // 10))):
        for index in range(n):
            coarse = rng.integers(0, 256, (height // 16, width // 16, 3), dtype=np.uint8)
            picture = np.asarray(Image.fromarray(coarse).resize((width, height), Image.BICUBIC), dtype=np.int16)
            picture = np.clip(picture + rng.integers(-12, 13, picture.shape), 0, 255).astype(np.uint8)
            path = root / split / f"class{index % classes}" / f"{index:05d}.jpg"
            path.parent.mkdir(parents=True, exist_ok=True)
            Image.fromarray(picture).save(path, quality=90)
            if split == "train":
                sizes.append(path.stat().st_size)
    return {"images": count, "width": width, "height": height, "mean_kib": statistics.mean(sizes) / 1024}


def loader_rate(root: Path, workers: int, batch: int, batches: int, skip: int, image_size: int) -> dict:
    """Steady-state images/s of the training loader: ``skip`` batches (worker start-up) untimed."""
    bundle = build_datasets(DataSpec(kind="imagefolder", root=str(root)), image_size, None)
    train_loader, _, sampler = build_loaders(bundle, batch, workers, False, 0)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(0)
    iterator = iter(train_loader)
    for _ in range(skip):
        next(iterator)
    started = time.perf_counter()
    images = 0
    for _ in range(batches):
        batch_images, _ = next(iterator)
        images += batch_images.shape[0]
    seconds = time.perf_counter() - started
    del iterator, train_loader
    rate = images / seconds
    return {
        "workers": workers,
        "images_per_s": rate,
        "images_per_s_per_worker": rate / workers if workers else None,
        "batches_timed": batches,
    }


def piece_rates(root: Path, image_size: int, samples: int = 40) -> dict:
    """Per-image throughput of the pieces, in this process (one core)."""
    from torchvision.io import decode_jpeg, read_file

    from subp_fx.data.imagefolder import CHANNEL_MODES, train_transform

    paths = sorted((root / "train").rglob("*.jpg"))[:samples]
    transform = train_transform(image_size, CHANNEL_MODES[3])

    def rate(function) -> float:
        started = time.perf_counter()
        for path in paths:
            function(path)
        return len(paths) / (time.perf_counter() - started)

    decoded = {}

    def pil_decode(path):
        with Image.open(path) as image:
            decoded[path] = image.convert("RGB")

    result = {"pil_decode_per_s": rate(pil_decode)}
    result["transforms_per_s"] = rate(lambda path: transform(decoded[path]))
    result["torchvision_decode_jpeg_cpu_per_s"] = rate(lambda path: decode_jpeg(read_file(str(path))))
    if torch.cuda.is_available():
        data = [read_file(str(path)) for path in paths] * 4
        decode_jpeg(data[:8], device="cuda")
        torch.cuda.synchronize()
        started = time.perf_counter()
        for _ in range(3):
            decode_jpeg(data, device="cuda")
        torch.cuda.synchronize()
        result["nvjpeg_batch_decode_cuda_per_s"] = 3 * len(data) / (time.perf_counter() - started)
    return result


def format_markdown(result: dict) -> str:
    machine, data = result["machine"], result["data"]
    lines = [
        "# ImageFolder training pipeline throughput",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores; torch {machine['torch']}, "
        f"Pillow {machine['pillow']}, Python {machine['python']}; 1-min load average before/after the run "
        f"{machine['load_average_1min_before_after']} (other processes compete with the workers when it exceeds "
        "the core count).",
        f"Data: {data['images']} JPEGs {data['width']}x{data['height']} (mean {data['mean_kib']:.0f} KiB), "
        f"RandomResizedCrop({result['image_size']}) + flip + ToTensor + Normalize, batch {result['batch']}.",
        "",
        "| workers | images/s | images/s per worker |",
        "|---|---|---|",
    ]
    for row in result["loaders"]:
        per_worker = f"{row['images_per_s_per_worker']:.0f}" if row["images_per_s_per_worker"] else "-"
        lines.append(f"| {row['workers']} | {row['images_per_s']:.0f} | {per_worker} |")
    pieces = result["pieces"]
    lines += ["", "One image, one core (main process):", ""]
    lines += [f"- {name}: {value:.0f} images/s" for name, value in pieces.items()]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--images", type=int, default=480)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--batches", type=int, default=8, help="timed batches per worker count")
    parser.add_argument("--skip", type=int, default=2, help="untimed batches first (worker start-up)")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--root", default=None, help="reuse / write the JPEGs here (default: a temporary folder)")
    parser.add_argument("--json", default=None)
    parser.add_argument("--markdown", default=None)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    needed = args.batch * (args.batches + args.skip)
    if args.images < needed:
        parser.error(f"--images must be at least batch * (batches + skip) = {needed}")
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as scratch:
        root = Path(args.root or scratch)
        data = write_jpegs(root, args.images)
        loaders = []
        for workers in args.workers:
            loaders.append(loader_rate(root, workers, args.batch, args.batches, args.skip, args.image_size))
            print(f"workers {workers}: {loaders[-1]['images_per_s']:.1f} images/s", flush=True)
        pieces = piece_rates(root, args.image_size)
    import PIL

    result = {
        "benchmark": "data_loading",
        "machine": {
            "cpu": cpu_model_name(),
            "cores": os.cpu_count(),
            "torch": torch.__version__,
            "pillow": PIL.__version__,
            "python": platform.python_version(),
            # other processes on the machine take cores from the workers: check these before trusting a run
            "load_average_1min_before_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        },
        "data": data,
        "image_size": args.image_size,
        "batch": args.batch,
        "loaders": loaders,
        "pieces": pieces,
    }
    markdown = format_markdown(result)
    print(markdown)
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(result, indent=2) + "\n")
    if args.markdown:
        Path(args.markdown).write_text(markdown)
    return result


if __name__ == "__main__":
    main()
