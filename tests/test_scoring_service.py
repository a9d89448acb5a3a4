"""The scoring service for real: `stedloop scoring serve` starts a local Ray (1 CPU, a 100 MB
object store, no dashboard) with the Serve deployment, and frames are scored over its HTTP
path: scores equal local scores, the token is checked, an unusable frame gets its own error,
and the daemon's scorer loader and a session score through it.

Marked ``ray`` (``-m 'not ray'`` leaves them out; `make test` runs them). Skipped where Ray is
not installed, unless ``STEDLOOP_REQUIRE_RAY=1`` (CI's .ci/run), where that is a failure.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pytest
import tifffile

from stedloop.config import load_config
from stedloop.errors import DataError, ScoringUnavailable
from stedloop.quality import shipped_model_path
from stedloop.quality.scorer import CNNScorer
from stedloop.scoring_service.client import RemoteScorer, ServiceUnreachable, file_sha256
from stedloop.server.scorer_loader import ScorerLoader
from stedloop.session import Session
from stedloop.store import SessionStore
from stedloop.store.frames import read_frame

if os.environ.get("STEDLOOP_REQUIRE_RAY") != "1":
    pytest.importorskip("ray.serve", reason="Ray Serve is not installed (stedloop[ray])")

pytestmark = [pytest.mark.ray, pytest.mark.timeout(600)]

TOKEN = "s3cret-token-for-the-scoring-test"
#: Generous: on 2 shared cores a local Ray and one replica take ~20 s to come up.
START_TIMEOUT_S = 240.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def cli_env(**extra: str) -> dict[str, str]:
    return {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        **extra,
    }


@pytest.fixture(scope="module")
def service(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """The URL of a scoring service the test started, on loopback, with a token."""
    home = tmp_path_factory.mktemp("service-home")
    log_path = home / "serve.log"
    port = free_port()
    command = [
        "stedloop", "scoring", "serve", "--port", str(port), "--device", "cpu",
        "--num-cpus", "1", "--object-store-mb", "100", "--threads", "1",
        "--max-batch-size", "8", "--batch-wait-ms", "5", "--token-env", "SCORING_TOKEN",
    ]  # fmt: skip
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            command,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=cli_env(SCORING_TOKEN=TOKEN, STEDLOOP_HOME=str(home)),
            start_new_session=True,
        )
    url = f"http://127.0.0.1:{port}/score"
    probe = RemoteScorer(url, token=TOKEN, timeout_s=5.0)
    deadline = time.monotonic() + START_TIMEOUT_S
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(f"the service exited ({process.returncode}): {log_path.read_text()}")
            try:
                probe.info()
                break
            except ScoringUnavailable:
                if time.monotonic() > deadline:
                    pytest.fail(f"the service did not come up: {log_path.read_text()[-3000:]}")
                time.sleep(0.5)
        yield url
    finally:
        probe.close()
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
            raise
    assert code == 0, log_path.read_text()[-3000:]


def images(n: int, seed: int = 1) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    out: list[np.ndarray] = []
    for i in range(n):
        counts = rng.poisson(3 + 4 * i, (240, 256))
        # uint16 counts, and simulator-like float photon counts
        out.append(counts.astype(np.uint16) if i % 2 == 0 else counts * 0.5)
    return out


def test_service_scores_equal_local_scores_with_clients_at_once(service: str) -> None:
    local = CNNScorer.from_checkpoint(None, device="cpu")
    frames = images(8)
    expected = local.score(frames)
    clients = [RemoteScorer(service, token=TOKEN) for _ in range(4)]
    # Four clients at once: the replica batches what arrives together (up to 8).
    with ThreadPoolExecutor(4) as pool:
        got = list(pool.map(lambda i: clients[i % 4].score_one(frames[i]), range(len(frames))))
    np.testing.assert_allclose(got, expected, atol=1e-4)
    info = clients[0].info()
    assert info["device"] == "cpu" and info["max_batch_size"] == 8
    assert info["model_sha256"] == file_sha256(shipped_model_path())
    assert clients[0].model_sha256 == info["model_sha256"]


def test_the_token_is_required_and_checked(service: str) -> None:
    for token in (None, TOKEN + "-wrong"):
        scorer = RemoteScorer(service, token=token)
        with pytest.raises(ScoringUnavailable, match="refused this daemon's token") as caught:
            scorer.score(images(1))
        # A refused token is a configuration error, never "unreachable": no local fallback.
        assert not isinstance(caught.value, ServiceUnreachable)
    import httpx

    reply = httpx.get(service, timeout=10)
    assert reply.status_code == 401 and "token" in reply.json()["error"]


def test_an_unusable_frame_gets_its_own_error_and_its_batch_is_scored(service: str) -> None:
    good = images(2)
    constant = np.full((240, 240), 7, np.uint16)
    batch = [good[0], constant, good[1]]
    clients = [RemoteScorer(service, token=TOKEN) for _ in batch]

    def score(i: int) -> float | str:
        try:
            return clients[i].score_one(batch[i], name=f"frame {i}")
        except DataError as exc:
            return str(exc)

    with ThreadPoolExecutor(3) as pool:
        got = list(pool.map(score, range(3)))
    assert got[1] == "frame 1: image is constant (7); nothing to score"
    local = CNNScorer.from_checkpoint(None, device="cpu").score(good)
    np.testing.assert_allclose([got[0], got[2]], local, atol=1e-4)


def test_the_daemons_scorer_and_a_session_score_through_the_service(
    service: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stedloop.drivers import create_driver

    monkeypatch.setenv("SCORING_TOKEN", TOKEN)
    loaded = load_config(
        overrides={
            "session": {"budget_frames": 2, "retry_delay_s": 0.0},
            "optimizer": {"random_seed": 3, "n_candidates": 300},
            "objectives": {"names": ["quality"]},
            "quality": {"endpoint": service, "token_env": "SCORING_TOKEN"},
            "drivers": {"simulator": {"sample_fields": 4, "field_px": 224}},
        }
    )
    loader = ScorerLoader(loaded.config.quality)  # what the daemon's session engine uses
    loader.start()
    assert loader.wait(60) == "ready"
    assert loader.snapshot()["device"] == f"service {service}"
    scorer = loader.scorer_for(["quality"])
    driver = create_driver(loaded.config)
    driver.connect()
    store = SessionStore(tmp_path / "sessions")
    session = Session.start(loaded, driver, store=store, scorer=scorer)
    summary = session.run()
    session.close()
    assert summary.state == "finished" and summary.frames == 2
    local = CNNScorer.from_checkpoint(None, device="cpu")
    for record in store.open(session.id).history().frames.values():
        assert record.status == "told"
        sted = np.asarray(read_frame(session.folder / str(record.tiff)).sted)
        assert record.values["quality"] == pytest.approx(local.score_one(sted), abs=1e-4)


def test_stedloop_score_through_the_service_prints_the_local_scores(
    service: str, tmp_path: Path
) -> None:
    paths = []
    for i, image in enumerate(images(3, seed=5)):
        paths.append(tmp_path / f"f{i}.tif")
        tifffile.imwrite(paths[-1], np.asarray(image, dtype=np.uint16))
    config = tmp_path / "site.toml"
    config.write_text(f'[quality]\nendpoint = "{service}"\ntoken_env = "SCORING_TOKEN"\n')
    results = {}
    for mode in ("--endpoint", "--local"):
        extra = [mode, service] if mode == "--endpoint" else [mode]
        result = subprocess.run(
            ["stedloop", "score", "--config", str(config), *extra, *map(str, paths)],
            capture_output=True,
            text=True,
            timeout=180,
            env=cli_env(SCORING_TOKEN=TOKEN),
        )
        assert result.returncode == 0, result.stderr
        results[mode] = [json.loads(line)["score"] for line in result.stdout.splitlines()]
    assert len(results["--local"]) == 3
    np.testing.assert_allclose(results["--endpoint"], results["--local"], atol=1e-4)


def test_doctor_checks_the_service_and_the_local_fallbacks_model(
    service: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stedloop.cli.doctor_cmd import _Failed, check_service

    monkeypatch.setenv("SCORING_TOKEN", TOKEN)
    quality = {"endpoint": service, "token_env": "SCORING_TOKEN", "fallback": "local"}
    report = check_service(load_config(overrides={"quality": quality}).config)
    assert report.startswith(f"{service} answers: model sha256 ") and "on cpu" in report
    other = tmp_path / "other.pt"
    other.write_bytes(shipped_model_path().read_bytes() + b"\0")  # another file
    with pytest.raises(_Failed, match="the fallback would pause"):
        check_service(
            load_config(overrides={"quality": {**quality, "model_path": str(other)}}).config
        )
