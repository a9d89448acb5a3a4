"""The exceptions stedloop raises on purpose.

Every error a user can cause (bad config, bad file, bad parameter) derives from
``StedloopError`` so the CLI can print it as one line and exit with code 2.
"""

from __future__ import annotations


class StedloopError(Exception):
    """Base class: an error whose message is fit to show a user as is."""


class ConfigError(StedloopError):
    """The configuration (file, environment or overrides) is invalid."""


class ParameterRejected(StedloopError):
    """Imaging parameters were refused (out of range, NaN, beyond a safety cap)."""


class SafetyCapExceeded(ParameterRejected):
    """A laser setting or light dose is beyond a hard safety cap. Never clipped."""


class DriverError(StedloopError):
    """The microscope backend failed."""


class DriverDisconnected(DriverError):
    """The backend is not reachable (never connected, or the connection was lost)."""


class RegionError(DriverError):
    """A requested region lies outside what the backend can image."""


class AcquisitionAborted(DriverError):
    """An acquisition was interrupted on purpose (abort request)."""


class PluginError(StedloopError):
    """A plugin could not be found, imported, or declares an incompatible API version."""


class DataError(StedloopError):
    """An input file or image is unusable (corrupt, wrong dtype/shape, NaN, constant...)."""


class StorageError(StedloopError):
    """Session data could not be written: the disk is full, read-only, or failing."""


class ScoringUnavailable(StedloopError):
    """The scoring service could not score a frame (unreachable, refused the token, failing).

    A session pauses on it (the frame is kept and scored on resume) rather than failing the
    frame: the frame is fine, only its scorer is missing."""
