"""The daemon's side of the scoring service: a ``Scorer`` that sends each frame over HTTP
(httpx, one kept-alive connection, bounded waits), and the local fallback around it.

Failures are told apart, because they call for different things:

* the service cannot be reached (refused or timed-out connection, no reply in time, a 5xx
  reply): ``ServiceUnreachable`` -- ``quality.fallback`` decides (score here, or pause);
* the service refused the token (401/403): ``ScoringUnavailable`` -- never scored elsewhere
  in silence: the configuration is wrong, and the session pauses with that message;
* the frame is unusable (400): ``DataError``, exactly as the local network says it, so the
  frame fails as it would have locally.
"""

from __future__ import annotations

import hashlib
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from stedloop.errors import DataError, ScoringUnavailable
from stedloop.logs import get_logger
from stedloop.quality.scorer_protocol import Scorer
from stedloop.scoring_service.frames import encode_frame

if TYPE_CHECKING:
    import httpx
    import numpy as np

log = get_logger(__name__)

#: After the service was unreachable, frames are scored locally (fallback ``local``) for this
#: long before the service is tried again: a dead host costs one connect timeout, not one per
#: frame.
RETRY_SERVICE_AFTER_S = 30.0


class ServiceUnreachable(ScoringUnavailable):
    """No answer from the scoring service (connection, time-out or a 5xx reply)."""


class RemoteScorer:
    """Scores frames with the scoring service at ``endpoint``, one request per frame."""

    name = "remote"

    def __init__(
        self,
        endpoint: str,
        token: str | None = None,
        timeout_s: float = 10.0,
        connect_timeout_s: float = 2.0,
    ) -> None:
        import httpx

        self.endpoint = endpoint
        self.device = f"service {endpoint}"  # what the daemon's status shows as the device
        #: The sha256 of the service's model file, once it has answered.
        self.model_sha256: str | None = None
        self.model_path: str = endpoint
        #: The last score reply: score, model_sha256, batch_size, batch_ms (the batch's time
        #: in the network).
        self.last_reply: dict[str, Any] = {}
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self._httpx = httpx
        self._client = httpx.Client(
            timeout=httpx.Timeout(timeout_s, connect=connect_timeout_s),
            headers=headers,
            follow_redirects=False,
        )

    def score(self, images: Sequence[np.ndarray], names: Sequence[str] | None = None) -> np.ndarray:
        import numpy as np

        scores = np.empty(len(images), dtype=np.float64)
        for i, image in enumerate(images):
            name = names[i] if names is not None else f"image {i}"
            scores[i] = self._score_one(image, name)
        return scores

    def score_one(self, image: np.ndarray, name: str = "image") -> float:
        return self._score_one(image, name)

    def _score_one(self, image: np.ndarray, name: str) -> float:
        body, headers = encode_frame(image, name)
        reply = self._request("POST", content=body, headers=headers)
        payload = _json(reply)
        if reply.status_code == 400:
            raise DataError(f"{name}: {payload.get('error', reply.text)}")
        self._check_status(reply, payload)
        self.model_sha256 = str(payload.get("model_sha256") or "") or self.model_sha256
        self.last_reply = payload
        try:
            return float(payload["score"])
        except (KeyError, TypeError, ValueError):
            raise ScoringUnavailable(
                f"the scoring service at {self.endpoint} sent no score ({reply.text[:200]!r})"
            ) from None

    def info(self) -> dict[str, Any]:
        """The service's description (``GET``): model sha256, device, batching."""
        reply = self._request("GET")
        payload = _json(reply)
        self._check_status(reply, payload)
        self.model_sha256 = str(payload.get("model_sha256") or "") or self.model_sha256
        return payload

    def close(self) -> None:
        self._client.close()

    def _request(self, method: str, **kwargs: Any) -> httpx.Response:
        httpx = self._httpx
        try:
            return self._client.request(method, self.endpoint, **kwargs)
        except httpx.TimeoutException as exc:
            raise ServiceUnreachable(
                f"the scoring service at {self.endpoint} did not answer in time "
                f"({type(exc).__name__})"
            ) from None
        except httpx.HTTPError as exc:  # refused, reset, DNS, TLS: the service is not there
            raise ServiceUnreachable(
                f"the scoring service at {self.endpoint} is unreachable ({type(exc).__name__}: "
                f"{exc})"
            ) from None

    def _check_status(self, reply: httpx.Response, payload: dict[str, Any]) -> None:
        status = reply.status_code
        if status in (401, 403):
            raise ScoringUnavailable(
                f"the scoring service at {self.endpoint} refused this daemon's token (HTTP "
                f"{status}); set quality.token_env or quality.token_file to the service's token"
            )
        if status >= 500:
            raise ServiceUnreachable(
                f"the scoring service at {self.endpoint} failed (HTTP {status}: "
                f"{payload.get('error', reply.text[:200])})"
            )
        if status != 200:
            raise ScoringUnavailable(
                f"the scoring service at {self.endpoint} answered HTTP {status} "
                f"({reply.text[:200]!r}); is quality.endpoint the service's /score URL?"
            )


class LocalFallbackScorer:
    """The service while it answers; the local network (the same model file) while it does not.

    The local network loads at the first fallback (torch takes seconds to import). If the
    service has said which model it scores with and the local file is another, frames are not
    scored here: scores of two models must not mix in one session."""

    name = "remote+local"

    def __init__(
        self,
        remote: RemoteScorer,
        load_local: Callable[[], Scorer],
        local_model_path: Callable[[], Path | None],
    ) -> None:
        self.remote = remote
        self.device = remote.device
        self.model_path = remote.model_path
        self._load_local = load_local
        self._local_model_path = local_model_path
        self._local: Scorer | None = None
        self._lock = threading.Lock()
        self._service_down_until = 0.0

    def score(self, images: Sequence[np.ndarray], names: Sequence[str] | None = None) -> np.ndarray:
        if time.monotonic() >= self._service_down_until:
            try:
                scores = self.remote.score(images, names)
            except ServiceUnreachable as exc:
                self._service_down_until = time.monotonic() + RETRY_SERVICE_AFTER_S
                log.warning("scoring_service_unreachable", error=str(exc), fallback="local")
            else:
                return scores
        return self._local_scorer().score(images, names)

    def _local_scorer(self) -> Scorer:
        with self._lock:
            if self._local is None:
                self._check_same_model()
                self._local = self._load_local()
                log.info("scoring_locally", model_path=str(self._local_model_path()))
            return self._local

    def _check_same_model(self) -> None:
        served = self.remote.model_sha256
        path = self._local_model_path()
        if served is None or path is None:
            return
        try:
            local = file_sha256(path)
        except OSError:
            return  # loading it names the problem
        if local != served:
            raise ScoringUnavailable(
                f"the scoring service is unreachable and this machine's model ({path}, sha256 "
                f"{local[:12]}) is not the service's (sha256 {served[:12]}): not scoring "
                "frames of one session with two models; bring the service back or set "
                "quality.model_path to the service's model file"
            )


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _json(reply: httpx.Response) -> dict[str, Any]:
    try:
        payload = reply.json()
    except ValueError:
        return {}
    return payload if isinstance(payload, dict) else {}
