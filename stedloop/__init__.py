"""stedloop: a STED microscope that tunes itself.

The loop: a driver acquires a frame, the quality network and other objectives score it,
a Bayesian optimizer proposes the next imaging parameters, and a ledger records it all.

The public Python surface is short; everything else may move between versions:

- ``stedloop.plugin_api``: all a driver, objective or scorer plugin needs (versioned by
  ``PLUGIN_API_VERSION``), and ``stedloop.testing.check_driver`` to test a driver with it;
- ``stedloop.client.Client``: talk to a running daemon (requests and events);
- ``stedloop.events``: the typed events a session emits, the ledger records and the daemon
  publishes;
- the ``stedloop`` command (``stedloop --help``) and the ZeroMQ protocol (docs/protocol.md).
"""

__all__ = ["PLUGIN_API_VERSION", "__version__"]

__version__ = "0.1.0"

#: Version of the plugin API (drivers, objectives, scorers). A plugin declares the version it
#: was written for in its ``API_VERSION`` attribute; the major number must match.
PLUGIN_API_VERSION = "2.0"
