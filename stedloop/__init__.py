"""stedloop: a STED microscope that tunes itself.

The loop: a driver acquires a frame, the quality network and other objectives score it,
a Bayesian optimizer proposes the next imaging parameters, and a ledger records it all.
"""

__version__ = "0.1.0"

#: Version of the plugin API (drivers, objectives, scorers). A plugin declares the version it
#: was written for in its ``API_VERSION`` attribute; the major number must match.
PLUGIN_API_VERSION = "2.0"
