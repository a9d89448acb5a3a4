"""Fresh regions from confocal overviews: image where the structure is.

Used instead of the plain tiling (``RegionTiler``) when ``[session.overview] enabled`` and the
driver can take overviews (``stedloop.driver.takes_overviews``). Overview areas cover the
sample in raster order (``size_um`` squares, clipped to the sample's extent). When the
session needs a region and none is left from the last overview, the next area is scanned
(before the first frame, and whenever the good regions run out), and
``stedloop.session.overview_picker`` picks the regions to image from it, keeping the margin
from every region exposed so far. Each overview is recorded (its TIFF and an ``overview``
event) by the session, so a resume continues with the regions the last one left.

An overview the driver fails to take (not a cap refusal: that ends the session) hands over to
the tiling; so does the end of the overview areas or of ``max_overviews``. Tiles that would
overlap a region exposed before (with the margin) are skipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

from stedloop import events as ev
from stedloop.config.schema import OverviewSection
from stedloop.driver import DriverDescription, OverviewRequest
from stedloop.errors import StedloopError
from stedloop.frame import Overview, Region
from stedloop.session.overview_picker import (
    Bands,
    Picks,
    box_um,
    grown_box_um,
    overlaps,
    pick_regions,
)
from stedloop.session.regions import RegionTiler


class OverviewRefused(StedloopError):
    """An overview was refused by the safety caps: the session ends (as for a frame)."""


#: Takes the overview (``None``: the driver failed; the session recorded why).
TakeOverview = Callable[[int, OverviewRequest], Overview | None]
#: Records an overview and what was picked from it (TIFF and ledger event).
RecordOverview = Callable[[int, OverviewRequest, Overview, Picks], None]
#: Says something to people (level, message).
Say = Callable[[str, str], None]


class OverviewRegions:
    """The session's region supply from overviews (see the module's docstring); ``take`` and
    ``remaining`` as ``RegionTiler``'s."""

    def __init__(
        self,
        description: DriverDescription,
        section: OverviewSection,
        tiler: RegionTiler,
        used: Iterable[Region],
        recorded: Iterable[ev.OverviewTaken],
        take: TakeOverview,
        record: RecordOverview,
        say: Say,
        unbounded_columns: int = 10,
    ) -> None:
        self.description = description
        self.section = section
        self.tiler = tiler
        self._take, self._record, self._say = take, record, say
        self._pixel_nm = description.pixel_size_nm
        self._field_px = (
            int(description.field_of_view_px[0]),
            int(description.field_of_view_px[1]),
        )
        self._bands = Bands(
            section.foreground_fraction,
            section.structure_content,
            section.threshold_sigma,
            section.margin_um,
        )
        self._used: list[Region] = list(used)
        self._queue: list[Region] = []
        self._next_overview = 0
        self._tiling = False  # handed over to the tiling for the rest of the session
        self._columns, self._rows = self._area_grid(unbounded_columns)
        for event in recorded:  # a resume: continue after the last overview, with its regions
            self._next_overview = max(self._next_overview, event.overview + 1)
            self._queue = [Region.from_dict(r) for r in event.regions]
        self._queue = [r for r in self._queue if not self._blocked(r)]

    # -- the region supply ---------------------------------------------------------------------
    def remaining(self) -> int | None:
        """Unknown until the overviews are taken."""
        return None

    def take(self) -> Region:
        """The next region to image (it is marked used); ``SampleExhausted`` at the end."""
        while True:
            while self._queue:
                region = self._queue.pop(0)
                if not self._blocked(region):  # e.g. a retry exposed a neighbour meanwhile
                    return self._use(region)
            if self._tiling:
                return self._use(self._tile())
            index = self._next_overview
            request = self._area(index)
            if request is None:
                self._hand_over(
                    "the overview areas are used up (the sample's extent or "
                    "session.overview.max_overviews)"
                )
                continue
            self._next_overview += 1
            if not self._holds_a_field(request):  # a sliver at the sample's edge
                continue
            overview = self._take(index, request)
            if overview is None:
                self._hand_over(f"overview {index} could not be taken")
                continue
            picks = pick_regions(overview, self._field_px, self._pixel_nm, self._bands, self._used)
            self._record(index, request, overview, picks)
            self._queue = [p.region for p in picks.regions]
            if not self._queue:
                self._say("info", f"overview {index} has no region within the bands; next area")

    # -- internals -----------------------------------------------------------------------------
    def _use(self, region: Region) -> Region:
        self._used.append(region)
        return region

    def _blocked(self, region: Region) -> bool:
        box = box_um(region, self._pixel_nm)
        return any(
            overlaps(box, grown_box_um(u, self.section.margin_um, self._pixel_nm))
            for u in self._used
        )

    def _tile(self) -> Region:
        while True:
            region = self.tiler.take()  # SampleExhausted ends the session
            if not self._blocked(region):
                return region

    def _hand_over(self, why: str) -> None:
        self._tiling = True
        self._say("warning", f"{why}: the remaining regions come from the tiling")

    def _area_grid(self, unbounded_columns: int) -> tuple[int, int | None]:
        extent = self.description.sample_extent_um
        size = self.section.size_um
        if extent is None:
            return unbounded_columns, None
        return max(1, math.ceil(extent[0] / size - 1e-9)), max(
            1, math.ceil(extent[1] / size - 1e-9)
        )

    def _area(self, index: int) -> OverviewRequest | None:
        """The request of overview ``index`` (raster order); None past the last one."""
        section = self.section
        if index >= section.max_overviews:
            return None
        row, column = divmod(index, self._columns)
        if self._rows is not None and row >= self._rows:
            return None
        size = section.size_um
        x_um, y_um = column * size, row * size
        width_um = height_um = size
        extent = self.description.sample_extent_um
        if extent is not None:  # the last row and column end at the sample's edge
            width_um, height_um = min(size, extent[0] - x_um), min(size, extent[1] - y_um)
        return OverviewRequest(
            round(x_um, 9),
            round(y_um, 9),
            round(width_um, 9),
            round(height_um, 9),
            section.pixel_size_nm,
            section.dwell_time_us,
            section.excitation_uw,
        )

    def _holds_a_field(self, request: OverviewRequest) -> bool:
        field_w = self._field_px[0] * self._pixel_nm / 1000
        field_h = self._field_px[1] * self._pixel_nm / 1000
        return request.width_um >= field_w - 1e-9 and request.height_um >= field_h - 1e-9
