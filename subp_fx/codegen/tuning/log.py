"""A JSON file of timed tile choices, so that ``--tune-tiles`` times each conv shape once.

Why: timing tiles costs a second or more per distinct conv shape (ResNet-50 has about 25), and
the answer depends only on the kernel spec, the target and the thread count. A log written by
one compile is read by the next: shapes it has are not timed again, new ones are timed and
added. Each record keeps every timed candidate's best time and the CPU it was measured on, so a
log carried to another machine can be recognised (records are keyed by target, and a
``-mcpu=native`` target resolves to the host's CPU name, so another CPU model does not reuse them).

Format: ``{"format": 1, "records": {key: record}}`` with ``key`` the spec, target and threads as
canonical JSON, written atomically (temporary file, then rename).
"""

from __future__ import annotations

import dataclasses
import json
import os
import platform
import time
from pathlib import Path

from subp_fx.codegen.kernels.spec import BlockSparseConvSpec, ConvTile
from subp_fx.errors import ArtifactError
from subp_fx.fileio import atomic_file

FORMAT = 1


def _key(spec: BlockSparseConvSpec, target: str, threads: int) -> str:
    return json.dumps({"spec": dataclasses.asdict(spec), "target": target, "threads": threads}, sort_keys=True)


def _tile_from(record: dict, path: Path) -> ConvTile:
    try:
        return ConvTile(**record["tile"])
    except (KeyError, TypeError, ValueError) as error:
        raise ArtifactError(
            f"tuning log {path}: a record's tile is malformed ({error}); delete the file to re-tune"
        ) from None


class TuningLog:
    """Timed tile choices by (spec, target, threads), loaded from and saved to ``path``."""

    def __init__(self, path: str | os.PathLike, records: dict[str, dict] | None = None):
        self.path = Path(path)
        self.records: dict[str, dict] = {} if records is None else records
        self.added = 0

    @classmethod
    def load(cls, path: str | os.PathLike) -> TuningLog:
        """The log at ``path``; an empty one if the file does not exist yet."""
        path = Path(path)
        if not path.exists():
            return cls(path)
        try:
            content = json.loads(path.read_text())
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
            raise ArtifactError(
                f"tuning log {path} cannot be read as JSON ({error}); delete it or pass another path"
            ) from None
        if (
            not isinstance(content, dict)
            or content.get("format") != FORMAT
            or not isinstance(content.get("records"), dict)
        ):
            raise ArtifactError(
                f"tuning log {path} is not a subp-fx tuning log of format {FORMAT} "
                '(expected {"format": 1, "records": {...}}); delete it or pass another path'
            )
        log = cls(path, content["records"])
        for record in log.records.values():
            _tile_from(record, path)
        return log

    def lookup(
        self, spec: BlockSparseConvSpec, target: str, threads: int
    ) -> tuple[ConvTile, dict[ConvTile, float]] | None:
        """The recorded (tile, timings in ms) for this spec, target and thread count, or None."""
        record = self.records.get(_key(spec, target, threads))
        if record is None:
            return None
        timings = {ConvTile(**entry["tile"]): float(entry["ms"]) for entry in record.get("timings", [])}
        return _tile_from(record, self.path), timings

    def record(
        self, spec: BlockSparseConvSpec, target: str, threads: int, tile: ConvTile, timings: dict[ConvTile, float]
    ) -> None:
        self.records[_key(spec, target, threads)] = {
            "tile": dataclasses.asdict(tile),
            "timings": [{"tile": dataclasses.asdict(candidate), "ms": ms} for candidate, ms in timings.items()],
            "measured": {
                "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
                "host": platform.node(),
                "cpu": platform.processor(),
            },
        }
        self.added += 1

    def save(self) -> None:
        """Write the log atomically (the directory is created if needed)."""
        with atomic_file(self.path, "w") as stream:
            json.dump({"format": FORMAT, "records": self.records}, stream, indent=1, sort_keys=True)
