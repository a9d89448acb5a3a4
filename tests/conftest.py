"""Shared fixtures: an isolated data home for every test, so nothing touches the user's data."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture(autouse=True)
def isolated_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    home = tmp_path / "stedloop-home"
    home.mkdir()
    monkeypatch.setenv("STEDLOOP_HOME", str(home))
    monkeypatch.delenv("STEDLOOP_CONFIG", raising=False)
    for name in list(__import__("os").environ):
        if name.startswith("STEDLOOP_") and name not in (
            "STEDLOOP_HOME",
            "STEDLOOP_REQUIRE_BROWSER",
        ):
            monkeypatch.delenv(name, raising=False)
    return home
