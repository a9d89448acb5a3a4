"""What the daemon and its clients share: the wire protocol, endpoint addresses, CURVE keys.

``stedloop.server`` (the daemon) and ``stedloop.client`` (and the CLI through it) both import
this package; neither imports the other. See docs/protocol.md and docs/architecture.md.
"""
