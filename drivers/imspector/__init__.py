"""The Abberior Imspector driver (registered as ``imspector`` in ``stedloop.drivers``).

specpy is imported only when the driver connects, so stedloop installs and runs without it;
``stedloop.drivers.imspector.fake_specpy`` stands in for it in tests and dry runs.
"""

from stedloop.drivers.imspector.driver import ImspectorDriver
from stedloop.drivers.imspector.options import Calibration, ImspectorOptions
from stedloop.drivers.imspector.paths import PROFILES, ParameterPaths, resolve_paths

__all__ = [
    "PROFILES",
    "Calibration",
    "ImspectorDriver",
    "ImspectorOptions",
    "ParameterPaths",
    "resolve_paths",
]
