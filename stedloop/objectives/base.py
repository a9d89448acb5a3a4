"""What an objective is: a named, unit-bearing measure of one frame, to maximise or minimise.

Objectives are plugins in the entry-point group ``stedloop.objectives``. A plugin class
declares ``API_VERSION``, ``name``, ``unit``, ``direction`` and ``evaluate(frame)``; it may
declare ``bounds`` (the range used to normalise it, see ``scalarise``) and a classmethod
``from_config(config, scorer=None)``; without one it is built with no arguments.

``evaluate`` may raise or return NaN for a frame it cannot judge: the session records that
frame as failed and never tells the optimizer a number for it.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Literal, Protocol, runtime_checkable

import numpy as np
from scipy import ndimage

from stedloop import PLUGIN_API_VERSION
from stedloop.errors import DataError
from stedloop.frame import Frame

Direction = Literal["maximize", "minimize"]


@runtime_checkable
class Objective(Protocol):
    API_VERSION: ClassVar[str]
    name: str
    unit: str
    direction: Direction

    def evaluate(self, frame: Frame) -> float:
        """The objective's value for ``frame`` (NaN or an exception: the frame failed)."""
        ...


class BaseObjective(ABC):
    """Optional helper base class with the shared attributes and a description.

    ``evaluate`` is abstract: a subclass without one is refused when the plugin is loaded
    (it used to fail every frame with NotImplementedError)."""

    API_VERSION: ClassVar[str] = PLUGIN_API_VERSION
    name: str = ""
    unit: str = ""
    direction: Direction = "maximize"
    #: Values mapped to 0 and 1 by the normaliser (worst and best ends are set by direction).
    bounds: tuple[float, float] = (0.0, 1.0)

    @abstractmethod
    def evaluate(self, frame: Frame) -> float: ...

    def describe(self) -> dict[str, object]:
        return describe(self)


def describe(objective: Objective) -> dict[str, object]:
    """Name, unit, direction and bounds of any objective, JSON-ready (stored in the ledger)."""
    bounds = getattr(objective, "bounds", None)
    return {
        "name": objective.name,
        "unit": objective.unit,
        "direction": objective.direction,
        "bounds": list(bounds) if bounds is not None else None,
    }


def otsu_threshold(image: np.ndarray, bins: int = 256) -> float:
    """Otsu's threshold (maximal between-class variance) of a 2-D image."""
    values = np.asarray(image, dtype=float).ravel()
    lo, hi = float(values.min()), float(values.max())
    if hi <= lo:
        raise DataError("image is constant: no foreground can be separated")
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    centres = (edges[:-1] + edges[1:]) / 2
    weight_low = np.cumsum(counts)
    weight_high = weight_low[-1] - weight_low
    sum_low = np.cumsum(counts * centres)
    mean_low = sum_low / np.maximum(weight_low, 1)
    mean_high = (sum_low[-1] - sum_low) / np.maximum(weight_high, 1)
    between = weight_low * weight_high * (mean_low - mean_high) ** 2
    return float(centres[int(np.argmax(between))])


def foreground_mask(confocal: np.ndarray, smoothing_px: float = 1.0) -> np.ndarray:
    """Foreground of a (low-count) confocal image: Otsu on a lightly smoothed copy.

    Photon-count confocals have means of a few counts, so Otsu on the raw counts cuts through
    shot noise; a 1-pixel Gaussian first (below the ~11-pixel confocal PSF) removes most of it.
    """
    smooth: np.ndarray = ndimage.gaussian_filter(np.asarray(confocal, dtype=float), smoothing_px)
    mask = smooth > otsu_threshold(smooth)
    if not mask.any() or mask.all():
        raise DataError("no foreground/background split in the confocal image")
    return mask
