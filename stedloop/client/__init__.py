"""Client side of the daemon protocol (docs/protocol.md): requests and live events."""

from stedloop.client.client import (
    Client,
    DaemonBusy,
    DaemonError,
    DaemonUnreachable,
    RemoteParameterRejected,
)

__all__ = ["Client", "DaemonBusy", "DaemonError", "DaemonUnreachable", "RemoteParameterRejected"]
