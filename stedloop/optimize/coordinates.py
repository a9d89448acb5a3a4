"""The coordinates the optimizer searches in: the parameter box itself, or light dose.

The optimizer keeps every point in the box's [0, 1] coordinates (``SearchSpace``: log dwell
by default, linear excitation and depletion, grid indices). What the Gaussian process sees,
and where the warm-up design and the candidate points are spread, is a second set of [0, 1]
coordinates, the *inputs*:

* ``parameters``: the box coordinates as they are.
* ``light-dose``: excitation replaced by the excitation energy per pixel, dwell time ×
  excitation power, on a log scale. Photon counts and photobleaching both follow that dose,
  so the good settings lie along ridges of equal dose that run diagonally through the box
  (on the simulator, 1 µs at 9 µW scores like 19 µs at 0.5 µW). In (dwell, log dose,
  depletion) such a ridge is parallel to the dwell axis, which a GP with one length scale per
  axis learns from a few points, and a design spread evenly in log dose covers the decades of
  dose in which the sample neither stays dark nor bleaches away. Most of the linear box lies
  at high doses.

``from_inputs`` maps inputs back to box coordinates and says which rows lie in the box (a
dose that would need an excitation outside its range does not); the caps are checked later.
"""

from __future__ import annotations

from typing import Literal, Protocol

import numpy as np

from stedloop.optimize.space import SearchSpace

CoordinateKind = Literal["light-dose", "parameters"]
#: A range starting at zero dose (excitation off) is taken to start this far below its top.
ZERO_DOSE_DECADES = 4.0
DWELL, EXCITATION = 0, 1


class Coordinates(Protocol):
    def to_inputs(self, unit: np.ndarray) -> np.ndarray:
        """Box coordinates (n, 3) -> inputs (n, 3), every row of the box in [0, 1]."""
        ...

    def from_inputs(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Inputs (n, 3) -> (box coordinates (n, 3), mask of the rows inside the box)."""
        ...


class BoxCoordinates:
    """The box's own coordinates."""

    def to_inputs(self, unit: np.ndarray) -> np.ndarray:
        return np.atleast_2d(np.asarray(unit, dtype=float))

    def from_inputs(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inputs = np.atleast_2d(np.asarray(inputs, dtype=float))
        inside = np.all((inputs >= 0.0) & (inputs <= 1.0), axis=1)
        return inputs, inside


class LightDoseCoordinates:
    """(dwell, log excitation dose, depletion); dwell and depletion as the box has them."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        dwell, excitation = space.params.dwell_time_us, space.params.excitation_uw
        high = dwell.max * excitation.max
        low = max(dwell.min * excitation.min, high * 10.0**-ZERO_DOSE_DECADES)
        self._log_low, self._log_high = float(np.log(low)), float(np.log(high))
        self._excitation_range = (excitation.min, excitation.max)

    def to_inputs(self, unit: np.ndarray) -> np.ndarray:
        unit = np.atleast_2d(np.asarray(unit, dtype=float))
        values = self.space.unit_to_values(unit)
        dose = values[:, DWELL] * values[:, EXCITATION]
        inputs: np.ndarray = unit.copy()
        inputs[:, EXCITATION] = self._scaled_log_dose(dose)
        return inputs

    def from_inputs(self, inputs: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        inputs = np.atleast_2d(np.asarray(inputs, dtype=float))
        inside = np.all((inputs >= 0.0) & (inputs <= 1.0), axis=1)
        unit = np.clip(inputs, 0.0, 1.0)
        values = self.space.unit_to_values(unit)  # dwell and depletion; excitation follows
        log_dose = self._log_low + unit[:, EXCITATION] * (self._log_high - self._log_low)
        excitation = np.exp(log_dose) / values[:, DWELL]
        low, high = self._excitation_range
        # A relative margin: the round trip through exp/log must not drop the box's edges.
        inside &= (excitation >= low * (1 - 1e-9)) & (excitation <= high * (1 + 1e-9))
        values[:, EXCITATION] = np.clip(excitation, low, high)
        return self.space.values_to_unit(values), inside

    def _scaled_log_dose(self, dose: np.ndarray) -> np.ndarray:
        log_dose = np.log(np.maximum(dose, np.exp(self._log_low)))
        scaled: np.ndarray = (log_dose - self._log_low) / (self._log_high - self._log_low)
        return scaled


def make_coordinates(kind: CoordinateKind, space: SearchSpace) -> Coordinates:
    if kind == "light-dose":
        return LightDoseCoordinates(space)
    return BoxCoordinates()
