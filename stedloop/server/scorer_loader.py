"""The quality network, loaded once per daemon in the background (torch import takes seconds).

The request loop never waits for it: a session that needs the ``quality`` objective while the
model is loading gets a ``busy`` reply (retry shortly), and one whose model failed to load
gets ``unavailable`` with the reason, while sessions with other objectives run as usual.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Any

from stedloop.config.schema import QualitySection
from stedloop.logs import get_logger
from stedloop.quality.scorer_protocol import Scorer
from stedloop.wire.protocol import ProtocolError

log = get_logger(__name__)

QUALITY_OBJECTIVE = "quality"


class ScorerLoader:
    """States: ``idle`` (never asked), ``loading``, ``ready``, ``failed``."""

    def __init__(self, quality: QualitySection) -> None:
        self._quality = quality
        self._lock = threading.Lock()
        self._state = "idle"
        self._scorer: Scorer | None = None
        self._error = ""
        self._load_s: float | None = None
        self._thread: threading.Thread | None = None

    def start(self) -> None:
        """Begin loading in a background thread (once; later calls do nothing)."""
        with self._lock:
            if self._state != "idle":
                return
            self._state = "loading"
        self._thread = threading.Thread(target=self._load, name="stedloop-scorer", daemon=True)
        self._thread.start()

    def wait(self, timeout_s: float | None = None) -> str:
        if self._thread is not None:
            self._thread.join(timeout_s)
        return self._state

    def _load(self) -> None:
        started = time.perf_counter()
        try:
            from stedloop.scoring_service.configured import configured_scorer

            # The local network, or the scoring service (quality.endpoint), whose local
            # fallback loads the network here only when the service is unreachable.
            scorer = configured_scorer(self._quality, load_local=self._load_local)
        except Exception as exc:  # any failure: report it, keep other objectives usable
            with self._lock:
                self._state, self._error = "failed", f"{type(exc).__name__}: {exc}"
            log.warning("quality_model_unavailable", error=self._error)
            return
        with self._lock:
            self._scorer, self._state = scorer, "ready"
            self._load_s = time.perf_counter() - started
        log.info(
            "quality_model_loaded",
            device=getattr(scorer, "device", "?"),
            path=str(getattr(scorer, "model_path", "")),
            load_s=round(self._load_s, 2),
        )

    def _load_local(self) -> Scorer:
        import torch

        from stedloop.quality.scorer import CNNScorer

        # On a small acquisition PC the network would take every core and starve the
        # request loop: leave it one (quality.cpu_threads overrides).
        cores = os.cpu_count() or 2
        torch.set_num_threads(self._quality.cpu_threads or max(1, cores - 1))
        return CNNScorer.from_config(self._quality)

    def scorer_for(self, objective_names: list[str] | tuple[str, ...]) -> Scorer | None:
        """The scorer if these objectives need it (None otherwise); ``ProtocolError`` if not
        available yet (``busy``) or at all (``unavailable``)."""
        if QUALITY_OBJECTIVE not in objective_names:
            return None
        self.start()
        with self._lock:
            state, scorer, error = self._state, self._scorer, self._error
        if state == "ready":
            return scorer
        if state == "failed":
            raise ProtocolError(
                "unavailable",
                f"the quality objective needs the quality model, which could not be loaded "
                f"({error}); choose other objectives (e.g. resolution, signal_ratio) or fix "
                "quality.model_path and restart the daemon",
            )
        raise ProtocolError("busy", "the quality model is still loading; retry in a few seconds")

    def snapshot(self) -> dict[str, Any]:
        with self._lock:
            return {
                "state": self._state,
                "device": getattr(self._scorer, "device", None),
                "model_path": str(getattr(self._scorer, "model_path", "") or "") or None,
                "load_s": self._load_s,
                "error": self._error or None,
            }
