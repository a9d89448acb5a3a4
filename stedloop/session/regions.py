"""Fresh regions for a session: tiles of the sample, each imaged at most once.

Imaging a region bleaches it, so a region is never used twice in a session, not even for a
retry. Tiles are taken in raster order from the origin; a driver that reports its sample
extent bounds the supply, and when it is used up the session stops with that reason.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from stedloop.driver import DriverDescription
from stedloop.errors import StedloopError
from stedloop.frame import Region


class SampleExhausted(StedloopError):
    """Every region of the sample has been imaged."""


class RegionTiler:
    def __init__(
        self,
        description: DriverDescription,
        used: Iterable[Region] = (),
        gap_um: float = 0.0,
        unbounded_columns: int = 10,
    ) -> None:
        width_px, height_px = description.field_of_view_px
        self.width_px, self.height_px = int(width_px), int(height_px)
        self.step_x_um = self.width_px * description.pixel_size_nm / 1000 + gap_um
        self.step_y_um = self.height_px * description.pixel_size_nm / 1000 + gap_um
        extent = description.sample_extent_um
        tolerance = 1e-9
        if extent is None:
            self.columns, self.rows = unbounded_columns, None
        else:
            field_x = self.width_px * description.pixel_size_nm / 1000
            field_y = self.height_px * description.pixel_size_nm / 1000
            self.columns = max(
                0, math.floor((extent[0] - field_x + tolerance) / self.step_x_um) + 1
            )
            self.rows = max(0, math.floor((extent[1] - field_y + tolerance) / self.step_y_um) + 1)
            if extent[0] < field_x - tolerance or extent[1] < field_y - tolerance:
                self.columns = self.rows = 0
        self._used = {self._key(r) for r in used}
        self._next = 0

    @property
    def capacity(self) -> int | None:
        return None if self.rows is None else self.columns * self.rows

    def _key(self, region: Region) -> tuple[int, int]:
        return round(region.x_um / self.step_x_um), round(region.y_um / self.step_y_um)

    def _region(self, index: int) -> Region:
        row, column = divmod(index, self.columns)
        return Region(
            round(column * self.step_x_um, 9),
            round(row * self.step_y_um, 9),
            self.width_px,
            self.height_px,
        )

    def remaining(self) -> int | None:
        if self.capacity is None:
            return None
        return self.capacity - len(self._used)

    def take(self) -> Region:
        """The next region never imaged in this session (it is marked used)."""
        while self.capacity is None or self._next < self.capacity:
            region = self._region(self._next)
            self._next += 1
            if self._key(region) not in self._used:
                self._used.add(self._key(region))
                return region
        raise SampleExhausted(
            f"the sample is used up: all {self.capacity} regions have been imaged "
            f"({self.columns} x {self.rows} fields)"
        )
