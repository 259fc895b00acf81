"""Which images an int8 build calibrates on, as the command line and artefacts state it.

``CalibrationSpec`` (``--calibration-data`` / ``--calibration-batches``) is validated where it
enters and recorded in the artefact's ``source.json``, so ``bench`` rebuilds the same batches for
the int8 peers and the manifest says what the quantisation ranges came from. The batches
themselves come from ``quantize.calibration_batches`` (the real Fashion-MNIST IDX files, a
torchvision ImageFolder's val split, or seeded synthetic images). No torch at import: the CLI
checks its options before loading anything heavy.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Any

from subp_fx.errors import ConfigError
from subp_fx.quantize.precision import CALIBRATION_SOURCES

DEFAULT_CALIBRATION_BATCHES = 8
DEFAULT_CALIBRATION_BATCH_SIZE = 16


@dataclass(frozen=True)
class CalibrationSpec:
    """``batches`` batches of ``batch_size`` images from ``source`` (``root`` for imagefolder)."""

    source: str
    root: str | None = None
    batches: int = DEFAULT_CALIBRATION_BATCHES
    batch_size: int = DEFAULT_CALIBRATION_BATCH_SIZE
    seed: int = 0

    def __post_init__(self) -> None:
        if self.source not in CALIBRATION_SOURCES:
            raise ConfigError(
                f"--calibration-data {self.source!r} is not a calibration source; valid: "
                f"{' | '.join(CALIBRATION_SOURCES)} (imagefolder takes its ROOT)"
            )
        if (self.source == "imagefolder") != (self.root is not None):
            raise ConfigError(
                "--calibration-data imagefolder needs its ROOT (imagefolder ROOT) and the other sources take none; "
                f"got source {self.source!r} with root {self.root!r}"
            )
        for name in ("batches", "batch_size"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"calibration {name} must be a whole number >= 1, got {value!r}")

    @classmethod
    def from_argv(cls, precision: str, data: list[str] | None, batches: int) -> CalibrationSpec | None:
        """The spec from ``--calibration-data`` words, or None for a build that needs none;
        refuses calibration data for fp32 and its absence for int8."""
        if precision != "int8":
            if data:
                raise ConfigError(
                    f"--calibration-data is for --precision int8; this build is {precision}, which calibrates nothing"
                )
            return None
        if not data:
            raise ConfigError(
                "--precision int8 needs --calibration-data: fashion-mnist | imagefolder ROOT | synthetic "
                "(images like the ones the model will see; synthetic only measures speed)"
            )
        if len(data) > 2:
            raise ConfigError(f"--calibration-data takes a source and, for imagefolder, a ROOT; got {' '.join(data)}")
        return cls(data[0], data[1] if len(data) == 2 else None, batches)

    def batches_for(self, input_shape: tuple[int, ...]) -> list:
        """The calibration batches (NCHW float32 tensors) for a model of ``input_shape``."""
        from subp_fx.quantize import calibration_batches

        _, channels, height, width = input_shape
        return list(
            calibration_batches(
                self.source, self.root, (channels, height, width), self.batches, self.batch_size, self.seed
            )
        )

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> CalibrationSpec:
        return cls(**{key: data[key] for key in ("source", "root", "batches", "batch_size", "seed") if key in data})
