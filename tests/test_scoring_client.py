"""The daemon's side of the scoring service, without Ray: frames on the wire, tokens, the
configured scorer, the fallbacks on an unreachable endpoint (a closed loopback port), the
session pausing without dropping the frame, and stedloop importing no Ray."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tifffile
from cli_helpers import run_stedloop

from stedloop import events as ev
from stedloop.config import load_config
from stedloop.errors import ConfigError, DataError, ScoringUnavailable
from stedloop.objectives.quality import QualityObjective
from stedloop.quality.scorer import CNNScorer
from stedloop.scoring_service.client import (
    LocalFallbackScorer,
    RemoteScorer,
    ServiceUnreachable,
    file_sha256,
)
from stedloop.scoring_service.configured import configured_scorer
from stedloop.scoring_service.frames import decode_frame, encode_frame
from stedloop.scoring_service.tokens import bearer_matches, read_token, token_digest
from stedloop.session import Session, SessionControl
from stedloop.store import SessionStore
from stedloop.store.frames import read_frame

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "s3cret-token-for-the-scoring-test"


def closed_port_url() -> str:
    """A loopback URL nothing listens on: connections are refused at once."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"http://127.0.0.1:{port}/score"


def frames(n: int = 3, size: int = 240, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.poisson(5 + 10 * i, (size, size)).astype(np.uint16) for i in range(n)]


# -- frames on the wire ---------------------------------------------------------------------
def test_frames_travel_as_raw_bytes_with_shape_and_dtype_headers() -> None:
    image = frames(1, size=7)[0][:, :5]
    body, headers = encode_frame(image)
    assert headers["x-stedloop-dtype"] == "uint16" and headers["x-stedloop-shape"] == "7,5"
    assert len(body) == 7 * 5 * 2  # raw uint16, not a JSON list
    assert np.array_equal(decode_frame(body, headers), image)
    # Simulator photon counts (float64) go as float32: what the network reads them as.
    counts = np.linspace(0.0, 3.7, 12).reshape(3, 4)
    body, headers = encode_frame(counts)
    assert headers["x-stedloop-dtype"] == "float32"
    assert np.array_equal(decode_frame(body, headers), counts.astype(np.float32))
    # Other integer types within 16-bit counts go as uint16, losslessly.
    wide = np.array([[0, 65535], [7, 9]], dtype=np.int64)
    assert np.array_equal(decode_frame(*encode_frame(wide)), wide)


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.zeros((2, 2, 2), np.uint16), "2-D"),
        (np.array([[-1, 3]], np.int32), "16-bit count range"),
        (np.array([[True, False]]), "dtype"),
    ],
)
def test_frames_the_network_could_not_score_are_refused_before_sending(
    image: np.ndarray, message: str
) -> None:
    with pytest.raises(DataError, match=message):
        encode_frame(image)


def test_malformed_requests_are_refused_with_what_is_wrong() -> None:
    body, headers = encode_frame(np.ones((4, 4), np.uint16))
    with pytest.raises(DataError, match="bytes"):
        decode_frame(body[:-2], headers)
    with pytest.raises(DataError, match="x-stedloop-dtype"):
        decode_frame(body, {**headers, "x-stedloop-dtype": "int8"})
    with pytest.raises(DataError, match="H,W"):
        decode_frame(body, {**headers, "x-stedloop-shape": "4x4"})
    with pytest.raises(DataError, match="outside"):
        decode_frame(body, {**headers, "x-stedloop-shape": "0,32"})


# -- tokens ---------------------------------------------------------------------------------
def test_tokens_come_from_an_environment_variable_or_a_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SCORING_TOKEN", TOKEN)
    assert read_token("SCORING_TOKEN", None, "quality.token_env") == TOKEN
    file = tmp_path / "token"
    file.write_text(TOKEN + "\n")
    assert read_token(None, file, "quality.token_file") == TOKEN
    assert read_token(None, None, "-") is None
    monkeypatch.setenv("SHORT_TOKEN", "abc")
    with pytest.raises(ConfigError, match="at least 16"):
        read_token("SHORT_TOKEN", None, "quality.token_env")
    with pytest.raises(ConfigError, match="UNSET_TOKEN.*not set"):
        read_token("UNSET_TOKEN", None, "quality.token_env")
    with pytest.raises(ConfigError, match="cannot read"):
        read_token(None, tmp_path / "missing", "quality.token_file")
    digest = token_digest(TOKEN)
    assert bearer_matches(f"Bearer {TOKEN}", digest)
    assert not bearer_matches(f"Bearer {TOKEN}x", digest)
    assert not bearer_matches(TOKEN, digest) and not bearer_matches(None, digest)


def test_the_quality_section_checks_endpoint_and_token_source(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="http"):
        load_config(overrides={"quality": {"endpoint": "gpu-server:8470"}})
    with pytest.raises(ConfigError, match="not both"):
        load_config(overrides={"quality": {"token_env": "A", "token_file": str(tmp_path / "t")}})


# -- the configured scorer and its fallbacks ------------------------------------------------
def test_without_an_endpoint_the_configured_scorer_is_the_local_network() -> None:
    quality = load_config(overrides={"quality": {"device": "cpu"}}).config.quality
    assert isinstance(configured_scorer(quality), CNNScorer)


def test_an_unreachable_service_pauses_by_default_and_never_scores_elsewhere() -> None:
    quality = load_config(overrides={"quality": {"endpoint": closed_port_url()}}).config.quality
    scorer = configured_scorer(quality)
    assert isinstance(scorer, RemoteScorer)
    with pytest.raises(ServiceUnreachable, match="unreachable"):
        scorer.score(frames(1))


def test_fallback_local_scores_an_unreachable_services_frames_with_the_same_model() -> None:
    quality = load_config(
        overrides={"quality": {"endpoint": closed_port_url(), "fallback": "local", "device": "cpu"}}
    ).config.quality
    scorer = configured_scorer(quality)
    assert isinstance(scorer, LocalFallbackScorer)
    images = frames(3)
    expected = CNNScorer.from_checkpoint(None, device="cpu").score(images)
    np.testing.assert_allclose(scorer.score(images), expected, atol=1e-6)


def test_fallback_local_refuses_a_local_model_other_than_the_services() -> None:
    quality = load_config(
        overrides={"quality": {"endpoint": closed_port_url(), "fallback": "local", "device": "cpu"}}
    ).config.quality
    scorer = configured_scorer(quality)
    assert isinstance(scorer, LocalFallbackScorer)
    scorer.remote.model_sha256 = "0" * 64  # the service answered earlier, with another model
    with pytest.raises(ScoringUnavailable, match="not the service's"):
        scorer.score(frames(1))
    from stedloop.quality import shipped_model_path

    scorer.remote.model_sha256 = file_sha256(shipped_model_path())
    assert scorer.score(frames(1)).shape == (1,)


# -- the session pauses, keeps the frame, and scores it on resume ---------------------------
def session_config(endpoint: str, **quality: Any) -> Any:
    return load_config(
        overrides={
            "session": {"budget_frames": 3, "retry_delay_s": 0.0},
            "optimizer": {"random_seed": 7, "n_candidates": 300},
            "objectives": {"names": ["quality"]},
            "quality": {"endpoint": endpoint, "device": "cpu", **quality},
            "drivers": {"simulator": {"sample_fields": 4, "field_px": 224}},
        }
    )


def test_an_unreachable_service_pauses_the_session_with_one_message_and_keeps_the_frame(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from stedloop.drivers import create_driver

    monkeypatch.setenv("SCORING_TOKEN", TOKEN)
    loaded = session_config(closed_port_url(), token_env="SCORING_TOKEN")
    driver = create_driver(loaded.config)
    driver.connect()
    store = SessionStore(tmp_path / "sessions")
    # No scorer given: the quality objective builds the configured one (the service).
    session = Session.start(loaded, driver, store=store)
    control = SessionControl()
    events: list[ev.SessionEvent] = []
    paused = threading.Event()

    def on_event(event: ev.SessionEvent) -> None:
        events.append(event)
        if isinstance(event, ev.Paused):
            paused.set()

    thread = threading.Thread(target=lambda: session.run(control, on_event))
    thread.start()
    assert paused.wait(60)
    assert control.state == "paused"
    errors = [e.message for e in events if isinstance(e, ev.Log) and e.level == "error"]
    assert len(errors) == 1
    assert "frame 0 could not be scored" in errors[0] and "unreachable" in errors[0]
    assert "resume" in errors[0]
    assert not any(isinstance(e, (ev.Scored, ev.FrameOutcome)) for e in events)  # not dropped
    # Resumed while the service is still down: paused again, with the message again.
    paused.clear()
    control.resume()
    assert paused.wait(30)
    control.request_stop()
    thread.join(30)
    assert not thread.is_alive()
    session.close()
    history = store.open(session.id).history()
    assert history.state == "stopped" and "frame 0 is kept" in (history.stop_reason or "")
    assert history.frames[0].status == "acquired" and not history.frames[0].done
    tiff = session.folder / str(history.frames[0].tiff)
    # The token is named in the ledger (token_env), never recorded itself.
    ledger_bytes = b"".join(p.read_bytes() for p in session.folder.rglob("*") if p.is_file())
    assert TOKEN.encode() not in ledger_bytes

    # Resumed with a working scorer: frame 0 is scored from its TIFF, then frames 1 and 2.
    local = CNNScorer.from_checkpoint(None, device="cpu")
    resumed = Session.resume(
        session.id, loaded, driver, store=store, objectives=[QualityObjective(local)]
    )
    summary = resumed.run()
    resumed.close()
    assert summary.state == "finished" and summary.frames == 3
    told = store.open(session.id).history().frames
    assert [told[i].status for i in range(3)] == ["told"] * 3
    sted = np.asarray(read_frame(tiff).sted)
    assert told[0].values["quality"] == pytest.approx(local.score_one(sted), abs=1e-6)


def test_stedloop_score_against_an_unreachable_service_says_so_in_one_line(
    tmp_path: Path,
) -> None:
    path = tmp_path / "frame.tif"
    tifffile.imwrite(path, frames(1)[0])
    result = run_stedloop("score", "--endpoint", closed_port_url(), str(path), timeout_s=120)
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "unreachable" in lines[0], result.stderr
    assert result.stdout == ""


def test_scoring_serve_refuses_a_non_loopback_address_without_a_token() -> None:
    started = time.monotonic()
    result = run_stedloop("scoring", "serve", "--host", "0.0.0.0", "--device", "cpu", timeout_s=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "without a token" in lines[0], result.stderr
    assert time.monotonic() - started < 60  # refused before any Ray starts


# -- stedloop without Ray -------------------------------------------------------------------
NO_RAY = """
import sys
class _NoRay:
    def find_spec(self, name, path=None, target=None):
        if name == "ray" or name.startswith("ray."):
            raise ImportError("No module named 'ray' (hidden by the test)")
        return None
sys.meta_path.insert(0, _NoRay())
"""


def test_the_core_imports_no_ray_and_works_without_it(tmp_path: Path) -> None:
    check = (
        "import sys\n"
        "import stedloop.cli.main, stedloop.server.daemon, stedloop.server.engine\n"
        "import stedloop.session.runner, stedloop.objectives.quality, stedloop.client\n"
        "from stedloop.config import load_config\n"
        "from stedloop.scoring_service.configured import configured_scorer\n"
        "q = load_config(overrides={'quality': {'endpoint': 'http://127.0.0.1:9/score'}})\n"
        "configured_scorer(q.config.quality)\n"
        "assert not [m for m in sys.modules if m == 'ray' or m.startswith('ray.')], 'ray'\n"
        "print('ok')\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", check], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    assert result.returncode == 0 and result.stdout.strip() == "ok", result.stderr
    # With Ray hidden: the service command says what to install, in one line.
    site = tmp_path / "site"
    site.mkdir()
    (site / "sitecustomize.py").write_text(NO_RAY)
    env = {**os.environ, "PYTHONPATH": f"{site}{os.pathsep}{ROOT}"}
    result = subprocess.run(
        [sys.executable, "-m", "stedloop.cli.main", "scoring", "serve", "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
        cwd=ROOT,
    )
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: the scoring service needs Ray Serve, which is not installed: pip install "
        "'stedloop[ray]' (the daemons that use the service do not need it)"
    ]


DAEMON_SITE = """
[drivers.simulator]
sample_fields = 4
field_px = 224
[objectives]
names = ["quality"]
[quality]
endpoint = "{endpoint}"
fallback = "pause"
[session]
budget_frames = 2
"""


def test_a_daemons_session_pauses_while_its_scoring_service_is_unreachable(
    tmp_path: Path, isolated_home: Path
) -> None:
    from stedloop.client import Client
    from stedloop.client.local_daemon import start_daemon, stop_daemon
    from tests.worker_helpers import wait_for

    site = tmp_path / "site.toml"
    site.write_text(DAEMON_SITE.format(endpoint=closed_port_url()))
    process, ready = start_daemon(isolated_home, {"STEDLOOP_CONFIG": str(site)})
    try:
        with Client(ready["request_address"], timeout_s=10) as client:
            started = client.call_when_ready("session.start", 60)
            sid, token = started["session_id"], started["token"]
            wait_for(
                lambda: (client.call("status")["session"] or {}).get("state") == "paused",
                60,
                "the session to pause",
            )
            status = client.call("status")
            assert status["session"]["frames"] == 0  # frame 0 is neither told nor failed
            # The one message, on the daemon's event stream (`stedloop watch` shows it).
            published = client.call("events.since", seq=0, limit=1000)["events"]
            messages = [
                e["data"]["message"]
                for e in published
                if e["topic"] == "log" and e.get("session_id") == sid
            ]
            assert len(messages) == 1 and "frame 0 could not be scored" in messages[0]
            assert "unreachable" in messages[0] and "resume" in messages[0]
            assert status["scorer"]["device"].startswith("service http://127.0.0.1:")
            client.call("session.stop", session_id=sid, token=token)
            wait_for(
                lambda: (client.call("status")["session"] or {}).get("state") != "paused",
                60,
                "the session to stop",
            )
    finally:
        stop_daemon(process)
    record = SessionStore(isolated_home / "sessions").open(sid, readonly=True)
    history = record.history()
    assert history.state == "stopped" and "frame 0 is kept" in (history.stop_reason or "")
    assert history.frames[0].status == "acquired"  # kept: scored when the session resumes


def test_doctor_says_when_the_scoring_service_does_not_answer() -> None:
    from stedloop.cli.doctor_cmd import _Failed, check_service

    config = load_config(overrides={"quality": {"endpoint": closed_port_url()}}).config
    with pytest.raises(_Failed, match="unreachable") as caught:
        check_service(config)
    assert "stedloop scoring serve" in caught.value.fix and "'pause'" in caught.value.fix
