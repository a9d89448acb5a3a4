"""The scoring service: the quality network as a Ray Serve application (``stedloop scoring
serve``), with dynamic batching across every daemon that sends frames.

Each replica loads the model once (``CNNScorer``: CUDA graphs on a GPU, oneDNN on a CPU) and
scores the frames that arrive within ``batch_wait_ms`` of each other as one batch of up to
``max_batch_size`` (``@serve.batch``). A frame the network refuses (constant, out of range,
too small) gets its own 400 reply; the rest of its batch is scored as usual.

Only this module imports Ray (the ``stedloop[ray]`` extra); the daemon's side
(``client.py``) never imports it.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np
from ray import serve
from starlette.requests import Request
from starlette.responses import JSONResponse, Response

from stedloop.errors import DataError
from stedloop.quality.scorer import CNNScorer
from stedloop.scoring_service.client import file_sha256
from stedloop.scoring_service.frames import MAX_SIDE_PX, decode_frame
from stedloop.scoring_service.options import APP_NAME, ROUTE, ServiceOptions, check_options
from stedloop.scoring_service.tokens import bearer_matches


def score_each(scorer: CNNScorer, images: list[np.ndarray]) -> list[float | str]:
    """The batch's scores; when the network refuses one frame, each frame on its own, so the
    refusal (its message) goes to that frame's request only."""
    try:
        return [float(s) for s in scorer.score(images)]
    except DataError:
        results: list[float | str] = []
        for image in images:
            try:
                results.append(float(scorer.score([image], names=["frame"])[0]))
            except DataError as exc:  # the client puts its own name for the frame first
                results.append(str(exc).removeprefix("frame: "))
        return results


@serve.deployment(name="QualityScoring")
class QualityScoring:
    """One replica: the network, batching, the token check."""

    def __init__(
        self,
        model_path: str | None,
        device: str,
        token_digest: str | None,
        max_batch_size: int,
        batch_wait_s: float,
        cpu_threads: int,
    ) -> None:
        import torch

        if cpu_threads:
            torch.set_num_threads(cpu_threads)
        self._scorer = CNNScorer.from_checkpoint(
            Path(model_path) if model_path else None, device=device, batch_size=max_batch_size
        )
        path = self._scorer.model_path
        self._model_sha256 = file_sha256(path) if path is not None else ""
        self._token_digest = token_digest
        self._max_batch_size = max_batch_size
        self.score_batch.set_max_batch_size(max_batch_size)  # type: ignore[attr-defined]
        self.score_batch.set_batch_wait_timeout_s(batch_wait_s)  # type: ignore[attr-defined]

    @serve.batch(max_batch_size=32, batch_wait_timeout_s=0.002)
    async def score_batch(self, images: list[np.ndarray]) -> list[tuple[float | str, int, float]]:
        """Per frame: its score (or why not), the size of its batch and the batch's time in
        the network, ms (the reply carries both: a site sees whether batching happens)."""
        started = time.perf_counter()
        results = score_each(self._scorer, images)
        batch_ms = (time.perf_counter() - started) * 1e3
        return [(result, len(images), batch_ms) for result in results]

    async def __call__(self, request: Request) -> Response:
        if self._token_digest is not None and not bearer_matches(
            request.headers.get("authorization"), self._token_digest
        ):
            return JSONResponse(
                {"error": "missing or wrong token (Authorization: Bearer <token>)"},
                status_code=401,
                headers={"www-authenticate": "Bearer"},
            )
        if request.method == "GET":
            return JSONResponse(self._info())
        if request.method != "POST":
            return JSONResponse({"error": "POST a frame or GET the description"}, 405)
        declared = int(request.headers.get("content-length") or 0)
        if declared > MAX_SIDE_PX * MAX_SIDE_PX * 4:
            return JSONResponse({"error": f"a body of {declared} bytes is too large"}, 413)
        try:
            image = decode_frame(await request.body(), request.headers)
        except DataError as exc:
            return JSONResponse({"error": str(exc)}, 400)
        result, batch_size, batch_ms = await self.score_batch(image)
        if isinstance(result, str):
            return JSONResponse({"error": result}, 400)
        return JSONResponse(
            {
                "score": result,
                "model_sha256": self._model_sha256,
                "batch_size": batch_size,
                "batch_ms": round(batch_ms, 3),
            }
        )

    def _info(self) -> dict[str, Any]:
        return {
            "service": APP_NAME,
            "model_path": str(self._scorer.model_path),
            "model_sha256": self._model_sha256,
            "device": self._scorer.device,
            "input_size_px": self._scorer.input_size_px,
            "max_batch_size": self._max_batch_size,
        }


def start_service(options: ServiceOptions) -> str:
    """Deploy on the Ray that ``ray.init`` connected to; returns the URL once it serves."""
    check_options(options)
    http: dict[str, Any] = {"host": options.host, "port": options.port}
    if options.tls_certfile is not None:
        http["ssl_certfile"] = str(options.tls_certfile)
        http["ssl_keyfile"] = str(options.tls_keyfile)
    serve.start(http_options=http)
    # @serve.deployment makes the class a Deployment; Ray's annotations do not say so.
    deployment = QualityScoring.options(  # type: ignore[attr-defined]
        num_replicas=options.replicas,
        # A batch forms only from requests a replica holds at once.
        max_ongoing_requests=max(8, 2 * options.max_batch_size),
        ray_actor_options={
            "num_cpus": options.cpus_per_replica,
            "num_gpus": options.gpus_per_replica,
        },
    )
    app = deployment.bind(
        str(options.model_path) if options.model_path is not None else None,
        options.device,
        options.token_digest,
        options.max_batch_size,
        options.batch_wait_ms / 1e3,
        options.cpu_threads,
    )
    serve.run(app, name=APP_NAME, route_prefix=ROUTE, blocking=False)
    return options.url


def stop_service() -> None:
    serve.delete(APP_NAME)
    serve.shutdown()  # type: ignore[no-untyped-call]
