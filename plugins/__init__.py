"""Example plugins (import name ``stedloop.plugins``), written the way a lab would write its own.

Each one is registered through an entry point exactly like a separate package's plugin; see
docs/plugins.md.
"""
