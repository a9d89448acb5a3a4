"""What the optimizer learns from a frame: the values the instrument applied.

A driver returns in ``Frame.params`` what the instrument reports as applied (read back),
which can differ from the request by the instrument's resolution (a laser power set in
0.1 % steps, a dwell time rounded to the pixel clock). The score belongs to what the sample
saw, so that point is told to the optimizer. It must lie in the optimizer's space: a value
just past a bound of the box is put on that bound, a gridded value on the nearest grid value.
The laser caps are not involved: the session refuses a frame whose applied values exceed
them before it is scored (``Session._check_applied``), and nothing here is ever sent.
"""

from __future__ import annotations

import math

from stedloop.errors import ParameterRejected
from stedloop.params import ImagingParams, ParamSpace


def told_params(
    space: ParamSpace, requested: ImagingParams, applied: ImagingParams
) -> ImagingParams:
    """The point the optimizer is told for a frame asked with ``requested``.

    ``requested`` itself when it lies outside ``space`` (only after a forced resume with
    another space: the optimizer refuses it as before) or when ``applied`` is not finite."""
    try:
        space.validate_point(requested)
    except ParameterRejected:
        return requested
    values: dict[str, float] = {}
    for name, rng in space.ranges():
        value = float(getattr(applied, name))
        if not math.isfinite(value):
            return requested
        value = min(max(value, rng.min), rng.max)
        if rng.grid is not None:
            value = min(rng.grid, key=lambda g: abs(g - value))
        values[name] = value
    return ImagingParams.from_mapping(values)
