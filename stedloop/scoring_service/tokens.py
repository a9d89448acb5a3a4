"""The scoring service's shared token: read from an environment variable or a file, never from
the configuration itself (the configuration is recorded in every session's ledger)."""

from __future__ import annotations

import hashlib
import hmac
import os
from pathlib import Path

from stedloop.errors import ConfigError

#: Shorter tokens are refused: a guessable token is no access control.
MIN_TOKEN_CHARS = 16


def read_token(token_env: str | None, token_file: Path | None, what: str) -> str | None:
    """The token named by ``token_env`` or ``token_file`` (None when neither is set);
    ConfigError naming ``what`` (the setting) when it is named but missing or too short."""
    if token_env is not None:
        token = os.environ.get(token_env, "").strip()
        source = f"environment variable {token_env} (from {what})"
    elif token_file is not None:
        try:
            token = Path(token_file).expanduser().read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise ConfigError(
                f"cannot read the scoring token file {token_file} (from {what}): "
                f"{exc.strerror or exc}"
            ) from None
        source = f"file {token_file} (from {what})"
    else:
        return None
    if not token:
        raise ConfigError(f"the scoring token {source} is empty or not set")
    if len(token) < MIN_TOKEN_CHARS:
        raise ConfigError(
            f"the scoring token in {source} has {len(token)} characters; use at least "
            f"{MIN_TOKEN_CHARS} (e.g. `python -c 'import secrets; print(secrets.token_urlsafe())'`)"
        )
    return token


def token_digest(token: str) -> str:
    """What the service keeps of its token (the token never enters Ray's object store)."""
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def bearer_matches(authorization: str | None, digest: str) -> bool:
    """True when an ``Authorization: Bearer <token>`` header carries the token of ``digest``."""
    scheme, _, token = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        return False
    return hmac.compare_digest(token_digest(token.strip()), digest)
