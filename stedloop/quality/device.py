"""Choosing where the network runs: CUDA when present (``auto``), else the CPU."""

from __future__ import annotations

from stedloop.errors import ConfigError


def resolve_device(requested: str = "auto") -> str:
    """``auto`` -> ``cuda`` when a GPU is usable, else ``cpu``; ``cuda`` without one is an error."""
    import torch

    if requested == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cpu":
        return "cpu"
    if requested == "cuda":
        if not torch.cuda.is_available():
            raise ConfigError("device 'cuda' was requested but no CUDA GPU is available")
        return "cuda"
    raise ConfigError(f"unknown device {requested!r}; expected auto, cpu or cuda")
