"""The sparsity configuration: what ``prepare`` needs to know, validated where it is built.

The same model is the ``sparsity:`` section of a recipe, so a dict written in Python and a YAML
recipe are checked by the same rules and fail with the same messages.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from subp_fx.errors import ConfigError


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=False, validate_assignment=True)


class LayerSelection(_Strict):
    """Which convs become sparse.

    Each entry is an exact module name (``layer1.0.conv1``) or a regular expression prefixed with
    ``re:`` (``re:.*downsample.*``), matched against the whole name. Precedence, first match
    wins: (1) exact name in ``exclude``; (2) exact name in ``include``; (3) regex in ``exclude``;
    (4) regex in ``include``; (5) when ``include`` is empty, every conv the default rule accepts
    (``groups == 1``, ``C_in >= min_in_channels``, ``C_out % N == 0``, ``C_in % input_group == 0``);
    otherwise none.
    A conv named exactly in ``include`` bypasses ``min_in_channels`` (a regex match does not, so
    ``re:.*`` leaves RGB stems dense); no rule bypasses the structural requirements (ungrouped
    conv, N dividing C_out, input_group dividing C_in).
    """

    include: list[str] = Field(default_factory=list)
    exclude: list[str] = Field(default_factory=list)
    min_in_channels: int = Field(default=4, ge=1)

    @field_validator("include", "exclude")
    @classmethod
    def _regexes_compile(cls, patterns: list[str]) -> list[str]:
        import re

        for pattern in patterns:
            if pattern.startswith("re:"):
                try:
                    re.compile(pattern[3:])
                except re.error as exc:
                    raise ValueError(f"{pattern!r} is not a valid regular expression ({exc})") from None
            elif not pattern:
                raise ValueError("an empty layer name matches nothing; use a module name or 're:<regex>'")
        return patterns


class SparsityConfig(_Strict):
    """SUBP settings for every selected conv (defaults: the paper's)."""

    N: int = Field(default=16, ge=1, description="block height: consecutive output channels per block")
    input_group: int = Field(
        default=1,
        ge=1,
        description=(
            "block width G: aligned consecutive input channels per block (1: the published 1xN SUBP; 4: kept "
            "channels in aligned runs of 4, one 32-bit load for int8 VNNI kernels; 16: runs of 16, one 128-bit load "
            "for the grouped int8 1x1 kernel); must divide C_in of a layer for it to be selected"
        ),
    )
    prune_rate: float = Field(
        default=0.5, ge=0.0, lt=1.0, description="final fraction of input channels pruned per block-row"
    )
    criterion: Literal["L1", "L2", "BPAR"] = "BPAR"
    alpha: float = Field(default=1.0, ge=0.0, description="weight of BPAR's angular-redundancy term")
    tau: float = Field(default=1.0, gt=0.0, description="softmax temperature of regrowth sampling")
    schedule: Literal["linear", "exp", "cos", "cubic"] = "cubic"
    decay_start: int = Field(default=10, ge=0, description="epoch at which pruning starts to ramp up")
    decay_end: int = Field(default=180, ge=0, description="epoch from which the final mask holds")
    mode: Literal["soft", "hard"] = Field(
        default="soft", description="soft: straight-through gradient to pruned blocks; hard: masked gradient"
    )
    pruned_weight_decay: float = Field(
        default=2e-4, ge=0.0, description="extra decay pulling pruned weights to zero each step"
    )
    layers: LayerSelection = Field(default_factory=LayerSelection)
    leaf_modules: list[str] = Field(
        default_factory=list,
        description=(
            "module class names (or qualified names) fx must not trace into, "
            "for models with data-dependent control flow inside a submodule"
        ),
    )
    capture: Literal["auto", "symbolic_trace", "module_swap"] = Field(
        default="auto",
        description=(
            "how prepare captures the model: symbolic_trace (a torch.fx graph), module_swap (convs replaced in "
            "place, no graph: for forwards fx cannot trace), auto (symbolic_trace, else module_swap)"
        ),
    )

    @model_validator(mode="after")
    def _decay_window(self) -> SparsityConfig:
        if self.decay_end < self.decay_start:
            raise ValueError(
                f"decay_end ({self.decay_end}) is before decay_start ({self.decay_start}); "
                "pruning must ramp up forwards (set decay_start <= decay_end, or both to 0 to prune from the start)"
            )
        return self


def as_sparsity_config(config: SparsityConfig | dict) -> SparsityConfig:
    """Accept a ``SparsityConfig`` or a plain dict with the same keys; raise ``ConfigError`` naming
    the bad key."""
    if isinstance(config, SparsityConfig):
        return config
    if not isinstance(config, dict):
        raise ConfigError(f"sparsity config must be a SparsityConfig or a dict, got {type(config).__name__}")
    try:
        return SparsityConfig.model_validate(config)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc, prefix="sparsity")) from None


def format_validation_error(exc: ValidationError, prefix: str = "") -> str:
    """One line per problem: key path, offending value, what is allowed."""
    lines = []
    for problem in exc.errors():
        path = ".".join(str(part) for part in ((prefix,) if prefix else ()) + tuple(problem["loc"]))
        message = problem["msg"]
        if problem["type"] == "extra_forbidden":
            message = "unknown key (check the spelling; see the recipe reference in README.md)"
        value = problem.get("input")
        shown = "" if problem["type"] in ("missing", "extra_forbidden") else f" (got {value!r})"
        lines.append(f"{path or '<root>'}: {message}{shown}")
    return "\n".join(lines)
