"""Scoring as a service: the quality network on a shared (GPU) machine, reached over HTTP.

Two sides, one-way: ``server`` (the Ray Serve deployment, ``stedloop scoring serve``; imports
Ray, torch and the network) and the light client side the daemon and ``stedloop score`` use
(``client``, ``configured``, ``tokens``; the standard library, numpy and httpx only). Both
speak ``frames``: one frame per request as raw bytes, its shape and dtype in headers.
Importing this package costs nothing: Ray is imported by ``server`` alone (docs/scoring_service.md).
"""
