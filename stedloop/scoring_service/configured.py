"""The scorer the ``[quality]`` section asks for: the local network, or the scoring service
(``quality.endpoint``) with its fallback (``quality.fallback``: ``local`` or ``pause``)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from stedloop.quality.scorer_protocol import Scorer
from stedloop.scoring_service.client import LocalFallbackScorer, RemoteScorer
from stedloop.scoring_service.tokens import read_token

if TYPE_CHECKING:
    from pathlib import Path

    from stedloop.config.schema import QualitySection


def local_scorer(quality: QualitySection) -> Scorer:
    """The network of ``quality.model_path`` (or the shipped one), here."""
    from stedloop.quality.scorer import CNNScorer

    return CNNScorer.from_config(quality)


def local_model_path(quality: QualitySection) -> Path:
    from stedloop.quality import shipped_model_path

    return quality.model_path if quality.model_path is not None else shipped_model_path()


def configured_scorer(
    quality: QualitySection,
    load_local: Callable[[], Scorer] | None = None,
    endpoint: str | None = None,
) -> Scorer:
    """The scorer of ``quality`` (``endpoint`` overrides ``quality.endpoint``). ``load_local``
    loads the local network (default ``local_scorer``); with a service and fallback
    ``local`` it runs at the first fallback only. ConfigError for a missing token."""
    endpoint = endpoint or quality.endpoint
    load = load_local or (lambda: local_scorer(quality))
    if endpoint is None:
        return load()
    token = read_token(
        quality.token_env,
        quality.token_file,
        "quality.token_env" if quality.token_env is not None else "quality.token_file",
    )
    remote = RemoteScorer(
        endpoint,
        token=token,
        timeout_s=quality.timeout_s,
        connect_timeout_s=quality.connect_timeout_s,
    )
    if quality.fallback == "local":
        return LocalFallbackScorer(remote, load, lambda: local_model_path(quality))
    return remote
