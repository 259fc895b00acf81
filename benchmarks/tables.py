"""Markdown tables of `bench_compiled` results, shared by the benchmark scripts: one column per
contender with its precision in the header, and the ratios users ask about (sparse vs the fastest
dense engine of the same precision as ours, our dense build vs it, the FLOP-ratio ideal)."""

from __future__ import annotations

OURS = ("subp_sparse", "subp_dense")
# column order; contenders a result lacks print "-"
COLUMNS = (
    "subp_sparse",
    "subp_dense",
    "pytorch_eager_dense",
    "pytorch_compile_dense",
    "pytorch_torchscript_dense",
    "onnxruntime_fp32",
    "openvino_fp32",
)
TITLES = {
    "subp_sparse": "subp sparse",
    "subp_dense": "subp dense",
    "pytorch_eager_dense": "PyTorch eager",
    "pytorch_compile_dense": "torch.compile (freezing)",
    "pytorch_torchscript_dense": "TorchScript frozen",
    "onnxruntime_fp32": "ONNX Runtime",
    "openvino_fp32": "OpenVINO",
}


def our_precision(result: dict) -> str:
    return result.get("precision", {}).get("subp_sparse", "fp32")


def best_peer(result: dict, precision: str | None = None) -> tuple[str, float] | None:
    """(name, median ms) of the fastest dense engine that is not ours and computes in ``precision``
    (default: the precision our sparse build computed in)."""
    wanted = our_precision(result) if precision is None else precision
    computed = result.get("precision", {})
    peers = [
        (name, r["median_ms"])
        for name, r in result["results"].items()
        if name not in OURS and computed.get(name, "fp32") == wanted
    ]
    return min(peers, key=lambda pair: pair[1]) if peers else None


def reduced_precision_columns(rows: list[dict]) -> list[str]:
    """Contenders of any row that computed in another precision than fp32 (OpenVINO's bf16
    default, the int8 peers), ours excepted (they have their own columns)."""
    names = []
    for row in rows:
        for name, precision in row.get("precision", {}).items():
            if precision != "fp32" and name not in names and name not in OURS:
                names.append(name)
    return names


def _column_precision(rows: list[dict], name: str) -> str:
    seen = {row.get("precision", {}).get(name, "fp32") for row in rows if name in row["results"]}
    return "/".join(sorted(seen)) or "fp32"


def latency_table(rows: list[dict], label: str, label_of) -> str:
    """One line per result: ``label_of(row)`` in the first column (titled ``label``), then medians."""
    extra = reduced_precision_columns(rows)
    columns = [*COLUMNS, *extra]
    titles = [f"{TITLES.get(name, name)} ({_column_precision(rows, name)})" for name in columns]
    lines = [
        f"| {label} | batch | threads | "
        + " | ".join(titles)
        + " | fastest peer in our precision | sparse vs it | our dense vs it | sparse vs our dense | FLOP ideal |",
        "|" + "---|" * (len(columns) + 8),
    ]
    for row in rows:
        results = row["results"]
        cells = [f"{results[name]['median_ms']:.2f}" if name in results else "-" for name in columns]
        best = best_peer(row)
        sparse = results["subp_sparse"]["median_ms"]
        dense = results.get("subp_dense", {}).get("median_ms")
        if best:
            versus = [best[0], f"{best[1] / sparse:.2f}x", f"{best[1] / dense:.2f}x" if dense else "-"]
        else:
            versus = ["-", "-", "-"]
        lines.append(
            f"| {label_of(row)} | {row['batch']} | {row['threads']['tvm']} | "
            + " | ".join(cells)
            + f" | {' | '.join(versus)} | "
            + (f"{dense / sparse:.2f}x" if dense else "-")
            + f" | {row.get('flop_ideal_speedup', 0):.2f}x |"
        )
    return "\n".join(lines) + "\n"
