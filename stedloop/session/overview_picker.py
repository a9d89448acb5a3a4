"""Where the structure is: regions picked from a confocal overview.

The overview is smoothed (3 x 3 pixels), its background level and noise are estimated from
its dimmer pixels (the 25th percentile; Poisson noise), and a pixel is foreground when it lies
``threshold_sigma`` noise sigmas above the background. The overview is cut into candidate
fields (the frame's field, every half field), and each gets two numbers:

- ``foreground_fraction``: its share of foreground pixels (empty fields have ~0, fields full
  of debris or a cell body ~1);
- ``structure_content``: the mean brightness above background of its foreground pixels,
  relative to the overview's bright, well-labelled structure (1: the 90th percentile of its
  foreground pixels; sparse labelling is dimmer, aggregates brighter).

A candidate is kept when both lie within their configured bands and it keeps ``margin_um``
from every region exposed before (bleaching reaches past a field's edge); the kept ones are
taken greedily, most foreground first, never overlapping each other.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass

import numpy as np
import scipy.ndimage

from stedloop.frame import Overview, Region

#: Percentile of the smoothed overview taken as the background level (assumes that at least
#: a quarter of an overview is background, as on a coverslip with sparse structure).
BACKGROUND_PERCENTILE = 25.0
#: Percentile of the overview's foreground brightness (above background) taken as its
#: typical structure: the bright, well-labelled structure (most foreground pixels are the dim
#: edges of structures and stray labels).
TYPICAL_PERCENTILE = 90.0
#: Smallest noise level assumed, counts per smoothed pixel (an overview of near-zero counts).
MIN_NOISE_COUNTS = 0.5


@dataclass(frozen=True)
class Bands:
    foreground_fraction: tuple[float, float]
    structure_content: tuple[float, float]
    threshold_sigma: float = 4.0
    margin_um: float = 1.0


@dataclass(frozen=True)
class PickedRegion:
    region: Region
    foreground_fraction: float
    structure_content: float

    def as_dict(self) -> dict[str, float]:
        return {
            **self.region.as_dict(),
            "foreground_fraction": round(self.foreground_fraction, 4),
            "structure_content": round(self.structure_content, 4),
        }


@dataclass(frozen=True)
class Picks:
    """What one overview gave: the regions in imaging order, and how many were looked at."""

    regions: list[PickedRegion]
    candidates: int
    in_band: int
    threshold_counts: float


def foreground_mask(
    image: np.ndarray, threshold_sigma: float
) -> tuple[np.ndarray, np.ndarray, float]:
    """(smoothed image, foreground mask, threshold) of an overview image."""
    smoothed = scipy.ndimage.uniform_filter(image.astype(np.float64), size=3, mode="nearest")
    background = float(np.percentile(smoothed, BACKGROUND_PERCENTILE))
    noise = math.sqrt(max(background, MIN_NOISE_COUNTS) / 9.0)  # a mean of 9 Poisson pixels
    threshold = background + threshold_sigma * noise
    return smoothed - background, smoothed > threshold, threshold


def pick_regions(
    overview: Overview,
    field_px: tuple[int, int],
    frame_pixel_size_nm: float,
    bands: Bands,
    exposed: Iterable[Region] = (),
) -> Picks:
    """The regions of ``overview`` to image next (see the module's docstring)."""
    excess, foreground, threshold = foreground_mask(overview.image, bands.threshold_sigma)
    width_px, height_px = field_px
    field_w_um = width_px * frame_pixel_size_nm / 1000
    field_h_um = height_px * frame_pixel_size_nm / 1000
    scale = 1000.0 / overview.pixel_size_nm  # overview pixels per µm
    cw, ch = max(1, round(field_w_um * scale)), max(1, round(field_h_um * scale))
    rows, columns = foreground.shape
    typical = (
        float(np.percentile(excess[foreground], TYPICAL_PERCENTILE)) if foreground.any() else 0.0
    )
    # Sums over every window by an integral image: cheap for any number of candidates.
    fg_sum = _window_sums(foreground.astype(np.float64), ch, cw)
    signal_sum = _window_sums(np.where(foreground, excess, 0.0), ch, cw)
    step_y, step_x = max(1, ch // 2), max(1, cw // 2)
    blocked = [grown_box_um(r, bands.margin_um, frame_pixel_size_nm) for r in exposed]
    kept: list[PickedRegion] = []
    candidates = 0
    for top in range(0, rows - ch + 1, step_y):
        for left in range(0, columns - cw + 1, step_x):
            candidates += 1
            count = fg_sum[top, left]
            fraction = count / (cw * ch)
            content = signal_sum[top, left] / count / typical if count and typical > 0 else 0.0
            if not _within(fraction, bands.foreground_fraction) or not _within(
                content, bands.structure_content
            ):
                continue
            # Never past the overview's far edge (the field rounds to whole overview pixels).
            x_um = min(overview.x_um + left / scale, overview.x_um + overview.width_um - field_w_um)
            y_um = min(overview.y_um + top / scale, overview.y_um + overview.height_um - field_h_um)
            region = Region(round(x_um, 6), round(y_um, 6), width_px, height_px)
            kept.append(PickedRegion(region, float(fraction), float(content)))
    in_band = len(kept)
    chosen: list[PickedRegion] = []
    for pick in sorted(kept, key=lambda p: (-p.foreground_fraction, -p.structure_content)):
        box = box_um(pick.region, frame_pixel_size_nm)
        if any(overlaps(box, other) for other in blocked):
            continue
        chosen.append(pick)
        # Picked regions keep the margin from each other too: each will be exposed.
        blocked.append(grown_box_um(pick.region, bands.margin_um, frame_pixel_size_nm))
    return Picks(chosen, candidates, in_band, threshold)


def _within(value: float, band: tuple[float, float]) -> bool:
    return band[0] <= value <= band[1]


def _window_sums(values: np.ndarray, height: int, width: int) -> np.ndarray:
    """Sum of ``values`` over the window whose top-left pixel is (row, column)."""
    integral = np.zeros((values.shape[0] + 1, values.shape[1] + 1))
    integral[1:, 1:] = values.cumsum(0).cumsum(1)
    sums: np.ndarray = (
        integral[height:, width:]
        - integral[:-height, width:]
        - integral[height:, :-width]
        + integral[:-height, :-width]
    )
    return sums


Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in µm


def box_um(region: Region, pixel_size_nm: float) -> Box:
    return (
        region.x_um,
        region.y_um,
        region.x_um + region.width_px * pixel_size_nm / 1000,
        region.y_um + region.height_px * pixel_size_nm / 1000,
    )


def grown_box_um(region: Region, margin_um: float, pixel_size_nm: float) -> Box:
    x0, y0, x1, y1 = box_um(region, pixel_size_nm)
    return x0 - margin_um, y0 - margin_um, x1 + margin_um, y1 + margin_um


def overlaps(a: Box, b: Box) -> bool:
    tolerance = 1e-9  # regions that only touch do not overlap
    return (
        a[0] < b[2] - tolerance
        and b[0] < a[2] - tolerance
        and a[1] < b[3] - tolerance
        and (b[1] < a[3] - tolerance)
    )
