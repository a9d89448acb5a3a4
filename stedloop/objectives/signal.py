"""Signal ratio: how much of the confocal signal the STED image keeps (PHYSICS.md)."""

from __future__ import annotations

import numpy as np

from stedloop.frame import Frame
from stedloop.objectives.base import BaseObjective, foreground_mask


class SignalRatioObjective(BaseObjective):
    """(75th percentile of STED foreground − mean STED background) / 75th percentile of the
    confocal-before foreground, with the foreground from Otsu on the confocal-before image."""

    name = "signal_ratio"
    unit = "ratio"
    direction = "maximize"
    bounds = (0.0, 1.0)

    def evaluate(self, frame: Frame) -> float:
        mask = foreground_mask(frame.confocal_before)
        sted = np.asarray(frame.sted, dtype=float)
        confocal_p75 = float(np.percentile(np.asarray(frame.confocal_before, float)[mask], 75))
        if confocal_p75 <= 0:
            return float("nan")
        signal = float(np.percentile(sted[mask], 75)) - float(sted[~mask].mean())
        return signal / confocal_p75
