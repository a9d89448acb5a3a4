"""What one acquisition produces: a ``Frame`` of three images over a ``Region``."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from stedloop.errors import DataError, RegionError
from stedloop.params import ImagingParams

IMAGE_NAMES: tuple[str, ...] = ("confocal_before", "sted", "confocal_after")


@dataclass(frozen=True, slots=True)
class Region:
    """A field to image: top-left corner in sample coordinates (µm) and size in pixels."""

    x_um: float
    y_um: float
    width_px: int
    height_px: int

    def __post_init__(self) -> None:
        for name in ("x_um", "y_um"):
            value = getattr(self, name)
            if not isinstance(value, (int, float)) or not math.isfinite(value):
                raise RegionError(f"region {name} must be a finite number, got {value!r}")
        for name in ("width_px", "height_px"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise RegionError(f"region {name} must be a positive integer, got {value!r}")

    def as_dict(self) -> dict[str, float | int]:
        return {
            "x_um": self.x_um,
            "y_um": self.y_um,
            "width_px": self.width_px,
            "height_px": self.height_px,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Region:
        return cls(
            float(data["x_um"]), float(data["y_um"]), int(data["width_px"]), int(data["height_px"])
        )


@dataclass(frozen=True, slots=True)
class Frame:
    """Confocal-before, STED and confocal-after images of one region, as photon counts.

    Each image is 2-D, ``(region.height_px, region.width_px)`` (rows, columns), of an
    integer or float dtype holding whole counts in 0..65535 (frames are stored as uint16).

    ``params`` are the values as actually applied (read back from the instrument), which
    may differ slightly from what was asked. Times are seconds since the epoch.
    """

    confocal_before: np.ndarray
    sted: np.ndarray
    confocal_after: np.ndarray
    params: ImagingParams
    region: Region
    pixel_size_nm: float
    started_at_s: float
    finished_at_s: float
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        shapes = set()
        for name in IMAGE_NAMES:
            image = getattr(self, name)
            if not isinstance(image, np.ndarray) or image.ndim != 2:
                raise DataError(f"frame image {name} must be a 2-D numpy array")
            if not np.issubdtype(image.dtype, np.number):
                raise DataError(f"frame image {name} has non-numeric dtype {image.dtype}")
            shapes.add(image.shape)
        if len(shapes) != 1:
            raise DataError(f"frame images differ in shape: {sorted(shapes)}")
        if not (self.pixel_size_nm > 0):
            raise DataError(f"pixel_size_nm must be positive, got {self.pixel_size_nm!r}")

    @property
    def shape(self) -> tuple[int, int]:
        height, width = self.sted.shape
        return height, width

    @property
    def acquisition_time_s(self) -> float:
        return self.finished_at_s - self.started_at_s

    def facts(self) -> dict[str, Any]:
        """Everything but the images and metadata, JSON-ready (for files and messages)."""
        return {
            "params": self.params.as_dict(),
            "region": self.region.as_dict(),
            "pixel_size_nm": self.pixel_size_nm,
            "started_at_s": self.started_at_s,
            "finished_at_s": self.finished_at_s,
        }

    @classmethod
    def from_facts(
        cls, images: Sequence[np.ndarray], facts: Mapping[str, Any], metadata: dict[str, Any]
    ) -> Frame:
        """Rebuild a frame from its three images (``IMAGE_NAMES`` order) and ``facts()``.

        Raises KeyError/TypeError/ValueError or a StedloopError on malformed facts; callers
        turn those into an error naming their source (file, message)."""
        confocal_before, sted, confocal_after = images
        return cls(
            confocal_before=confocal_before,
            sted=sted,
            confocal_after=confocal_after,
            params=ImagingParams.from_mapping(facts["params"]),
            region=Region.from_dict(facts["region"]),
            pixel_size_nm=float(facts["pixel_size_nm"]),
            started_at_s=float(facts["started_at_s"]),
            finished_at_s=float(facts["finished_at_s"]),
            metadata=metadata,
        )

    def stack(self) -> np.ndarray:
        """The three images as one (3, H, W) array in ``IMAGE_NAMES`` order."""
        return np.stack([getattr(self, n) for n in IMAGE_NAMES])


@dataclass(frozen=True, slots=True)
class Overview:
    """A fast, low-dose confocal image of an area larger than one field, from which a session
    picks where to image (``stedloop.session.overview_regions``).

    ``image`` is 2-D (rows, columns) of whole counts; its pixel (0, 0) has its top-left corner
    at (``x_um``, ``y_um``) in sample coordinates, pixels are ``pixel_size_nm`` square.
    ``params`` are the values as applied (depletion 0: a confocal scan)."""

    image: np.ndarray
    x_um: float
    y_um: float
    pixel_size_nm: float
    params: ImagingParams
    started_at_s: float
    finished_at_s: float
    metadata: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        image = self.image
        if not isinstance(image, np.ndarray) or image.ndim != 2 or min(image.shape) < 1:
            raise DataError("an overview image must be a non-empty 2-D numpy array")
        if not np.issubdtype(image.dtype, np.number):
            raise DataError(f"overview image has non-numeric dtype {image.dtype}")
        if not (self.pixel_size_nm > 0):
            raise DataError(f"pixel_size_nm must be positive, got {self.pixel_size_nm!r}")

    @property
    def width_um(self) -> float:
        return float(self.image.shape[1] * self.pixel_size_nm / 1000)

    @property
    def height_um(self) -> float:
        return float(self.image.shape[0] * self.pixel_size_nm / 1000)

    def facts(self) -> dict[str, Any]:
        """Everything but the image and metadata, JSON-ready (for files and messages)."""
        return {
            "x_um": self.x_um,
            "y_um": self.y_um,
            "pixel_size_nm": self.pixel_size_nm,
            "params": self.params.as_dict(),
            "started_at_s": self.started_at_s,
            "finished_at_s": self.finished_at_s,
        }

    @classmethod
    def from_facts(
        cls, image: np.ndarray, facts: Mapping[str, Any], metadata: dict[str, Any]
    ) -> Overview:
        """Inverse of ``facts()``; KeyError/TypeError/ValueError or a StedloopError if bad."""
        return cls(
            image=image,
            x_um=float(facts["x_um"]),
            y_um=float(facts["y_um"]),
            pixel_size_nm=float(facts["pixel_size_nm"]),
            params=ImagingParams.from_mapping(facts["params"]),
            started_at_s=float(facts["started_at_s"]),
            finished_at_s=float(facts["finished_at_s"]),
            metadata=metadata,
        )
