"""Everything a stedloop plugin needs, from one module: ``from stedloop.plugin_api import ...``.

A driver, objective or scorer package imports only this module (and numpy/pydantic); the
rest of stedloop may move between versions, this list changes only with
``PLUGIN_API_VERSION`` (a new minor version adds names, a new major version changes them).
The contract of each plugin group is written out in docs/plugins.md;
``stedloop.testing.check_driver`` checks a driver against it.
"""

from __future__ import annotations

from stedloop import PLUGIN_API_VERSION
from stedloop.driver import (
    AcquireRequest,
    BaseDriver,
    Driver,
    DriverDescription,
    NoOptions,
    RawOutput,
)
from stedloop.errors import (
    AcquisitionAborted,
    DataError,
    DriverDisconnected,
    DriverError,
    ParameterRejected,
    PluginError,
    RegionError,
    SafetyCapExceeded,
    StedloopError,
)
from stedloop.frame import IMAGE_NAMES, Frame, Region
from stedloop.objectives.base import BaseObjective, Direction, Objective
from stedloop.params import PARAM_NAMES, PARAM_UNITS, ImagingParams, SafetyCaps

__all__ = [
    "IMAGE_NAMES",
    "PARAM_NAMES",
    "PARAM_UNITS",
    "PLUGIN_API_VERSION",
    "AcquireRequest",
    "AcquisitionAborted",
    "BaseDriver",
    "BaseObjective",
    "DataError",
    "Direction",
    "Driver",
    "DriverDescription",
    "DriverDisconnected",
    "DriverError",
    "Frame",
    "ImagingParams",
    "NoOptions",
    "Objective",
    "ParameterRejected",
    "PluginError",
    "RawOutput",
    "Region",
    "RegionError",
    "SafetyCapExceeded",
    "SafetyCaps",
    "StedloopError",
]
