"""Photobleaching: the fraction of confocal signal lost over the STED frame (PHYSICS.md)."""

from __future__ import annotations

import numpy as np

from stedloop.frame import Frame
from stedloop.objectives.base import BaseObjective, foreground_mask


class BleachingObjective(BaseObjective):
    """(mean confocal-before foreground − mean confocal-after foreground) / mean
    confocal-before foreground; foreground from Otsu on the confocal-before image."""

    name = "bleaching"
    unit = "fraction"
    direction = "minimize"
    bounds = (0.0, 1.0)

    def evaluate(self, frame: Frame) -> float:
        mask = foreground_mask(frame.confocal_before)
        before = float(np.asarray(frame.confocal_before, dtype=float)[mask].mean())
        after = float(np.asarray(frame.confocal_after, dtype=float)[mask].mean())
        if before <= 0:
            return float("nan")
        return (before - after) / before
