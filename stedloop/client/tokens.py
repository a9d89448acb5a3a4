"""Session tokens kept by the CLI, so `stedloop stop` works from the terminal that started.

Stored in ``<data dir>/client/tokens.json`` (mode 0600), keyed by daemon address and session
id. Anyone who can read this file can control those sessions: that is the point of a token.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from stedloop.paths import data_dir


def tokens_path(root: Path | None = None) -> Path:
    return (root or data_dir()) / "client" / "tokens.json"


def _read(path: Path) -> dict[str, str]:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}


def save_token(address: str, session_id: str, token: str, root: Path | None = None) -> Path:
    path = tokens_path(root)
    path.parent.mkdir(parents=True, exist_ok=True)
    tokens = _read(path)
    tokens[f"{address} {session_id}"] = token
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as handle:
        json.dump(tokens, handle, indent=1)
    tmp.replace(path)
    return path


def load_token(address: str, session_id: str, root: Path | None = None) -> str | None:
    return _read(tokens_path(root)).get(f"{address} {session_id}")
