"""Write the compact golden subset shipped with the tests, from the full golden data.

The full data (``../shared/golden`` beside the repository: 63 cases, 9 MB) is the paper authors'
reference implementation run once (see its README). A clone of this repository alone does not
have it, so the tests also carry this subset: 12 cases covering every criterion (L1, L2, BPAR),
N = 16 and 32, 3x3 and 1x1 kernels and the three prune rates, plus the four schedules, in about
400 KB. The arrays are copied bit for bit; ``tests/algorithm/test_masks.py`` checks the subset
against the full data whenever both are present.

Usage: ``python tests/algorithm/golden/make_subset.py [FULL_GOLDEN_DIR]``.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
DEFAULT_FULL = HERE.parents[3] / "shared" / "golden"
# One 3x3 N=16 case per criterion (each at another rate) and every 1x1 N=32 case.
SUBSET_KEYS = ["case45", "case49", "case53"] + [f"case{index}" for index in range(54, 63)]
ARRAYS = ("weight", "prior_block_mask", "score", "block_mask")


def main(full: Path = DEFAULT_FULL) -> None:
    meta = json.loads((full / "subp_golden.json").read_text())
    cases = [case for case in meta["cases"] if case["key"] in SUBSET_KEYS]
    assert [case["key"] for case in cases] == SUBSET_KEYS, "the full golden data lacks a subset case"
    with np.load(full / "subp_masks.npz") as npz:
        arrays = {f"{key}_{name}": npz[f"{key}_{name}"] for key in SUBSET_KEYS for name in ARRAYS}
    (HERE / "subp_golden_subset.json").write_text(
        json.dumps({"source": "subset of ../shared/golden", "cases": cases, "schedules": meta["schedules"]}) + "\n"
    )
    np.savez_compressed(HERE / "subp_masks_subset.npz", **arrays)


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_FULL)
