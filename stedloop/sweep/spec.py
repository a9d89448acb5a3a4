"""The sweep file (TOML): which simulated sessions to run and how to judge them.

Every problem with the file is a ``ConfigError`` of one line that names the key, what was
wrong and what is expected (the command prints it and exits 2).
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, cast

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from stedloop.config.loader import read_toml
from stedloop.config.schema import OptimizerSection
from stedloop.errors import ConfigError
from stedloop.sweep.judge import ObjectiveName, Sample, SpaceName


class SweepSettings(OptimizerSection):
    """One optimizer setting of the sweep: the ``[optimizer]`` keys of a session's config,
    plus the search space."""

    space: SpaceName = Field(
        "box",
        description="box: the default parameter box; durand: the 1,440-point grid of Durand "
        "et al. (2018)",
    )

    def optimizer(self) -> OptimizerSection:
        return OptimizerSection(**self.model_dump(exclude={"space"}))


class SweepSpec(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

    name: str = Field("sweep", min_length=1, description="A label for the table and plots.")
    # 900: a session's sample then has at most 31 x 31 fresh regions (the simulator's
    # largest sample `stedloop simulate` allows is 32 x 32).
    budget_frames: int = Field(30, ge=1, le=900, description="frames per simulated session")
    seeds: list[int] = Field(
        default_factory=lambda: list(range(5)),
        description="a count n (seeds 0..n-1) or a list of distinct integers; each seed is a "
        "simulated sample and the optimizer's seed",
    )
    objectives: list[ObjectiveName] = Field(
        default_factory=lambda: cast(list[ObjectiveName], ["expert"]),
        min_length=1,
        description="expert, expert-series, fidelity-survival or cnn",
    )
    samples: list[Sample] = Field(
        default_factory=lambda: cast(list[Sample], ["actin"]),
        min_length=1,
        description="simulator structures: actin, tubulin, puncta or beads",
    )
    reps: int = Field(3, ge=1, le=100, description="reference regions per judged point")
    dense_grid: tuple[int, int, int] = Field(
        (12, 10, 12),
        description="points along dwell, excitation and depletion of the grid that gives the "
        "best achievable value (each 2 to 100)",
    )
    threshold: float = Field(
        0.95, gt=0, le=1, description="the share of the best achievable value frames count to"
    )
    grid_chunk_points: int = Field(
        48, ge=1, le=100_000, description="dense-grid points per job (one Ray task)"
    )
    settings: dict[str, SweepSettings] = Field(
        default_factory=lambda: {"defaults": SweepSettings()},
        min_length=1,
        description="named optimizer settings: [settings.NAME] tables of [optimizer] keys "
        "plus space",
    )

    @field_validator("seeds", mode="before")
    @classmethod
    def _seed_count(cls, value: Any) -> Any:
        if isinstance(value, int) and not isinstance(value, bool):
            if not 1 <= value <= 100_000:
                raise ValueError("a seed count must be 1 to 100000")
            return list(range(value))
        return value

    @field_validator("seeds", "objectives", "samples")
    @classmethod
    def _distinct(cls, value: list[Any]) -> list[Any]:
        if not value:
            raise ValueError("must not be empty")
        if len(set(value)) != len(value):
            raise ValueError("must not repeat an entry")
        return value

    @field_validator("dense_grid")
    @classmethod
    def _grid(cls, value: tuple[int, int, int]) -> tuple[int, int, int]:
        if not all(2 <= n <= 100 for n in value):
            raise ValueError("each of the three counts must be 2 to 100")
        return value


def load_sweep(path: Path) -> SweepSpec:
    """Read and check a sweep file; a ``ConfigError`` of one line when it is not right."""
    table = read_toml(Path(path), "sweep file")
    try:
        return SweepSpec.model_validate(table)
    except ValidationError as exc:
        raise ConfigError(f"sweep file {path}: {explain(exc)}") from None


def explain(exc: ValidationError) -> str:
    """The first problem in one line (and how many more there are)."""
    errors = exc.errors()
    first = errors[0]
    loc = tuple(str(p) for p in first["loc"])
    key = ".".join(loc) or "(top level)"
    if first["type"] == "extra_forbidden":
        allowed = _allowed_keys(loc[:-1])
        close = difflib.get_close_matches(loc[-1], allowed, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        message = f"unknown key {key!r}{hint}; known keys here: {', '.join(allowed)}"
    else:
        reason = str(first["msg"]).removeprefix("Value error, ")
        described = _description(loc)
        expected = f"; expected {described}" if described else ""
        message = f"key {key!r}: {reason} (got {first.get('input')!r}){expected}"
    more = len(errors) - 1
    return message + (f" (and {more} more problem{'s' * (more > 1)})" if more else "")


def _field_path(loc: tuple[str, ...]) -> list[tuple[type[BaseModel], str]]:
    """(model, field) pairs along a location: settings.NAME.key goes through SweepSettings."""
    pairs: list[tuple[type[BaseModel], str]] = []
    model: type[BaseModel] = SweepSpec
    index = 0
    while index < len(loc):
        name = loc[index]
        if name not in model.model_fields:
            break
        pairs.append((model, name))
        if model is SweepSpec and name == "settings" and index + 1 < len(loc):
            model, index = SweepSettings, index + 2  # skip the setting's own name
            continue
        index += 1
    return pairs


def _allowed_keys(parent: tuple[str, ...]) -> list[str]:
    if parent[:1] == ("settings",) and len(parent) == 2:
        return sorted(SweepSettings.model_fields)
    return sorted(SweepSpec.model_fields) if not parent else []


def _description(loc: tuple[str, ...]) -> str:
    pairs = _field_path(loc)
    if not pairs:
        return ""
    model, name = pairs[-1]
    return model.model_fields[name].description or ""
