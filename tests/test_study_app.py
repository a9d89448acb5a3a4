"""The study web app through FastAPI's TestClient: flow, resume, and what the browser gets."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from study_helpers import DEFAULT_ROWS, make_study_set

from stedloop.study.app import create_app
from stedloop.study.store import StudyStore
from stedloop.study.studyset import load_study_set

#: Words that would unblind if they reached the browser in study mode.
LEAK_WORDS = ("prediction", "network", "random", "system", "target", "expert", "actin")


@pytest.fixture
def setup(tmp_path: Path):
    study = load_study_set(make_study_set(tmp_path / "set", DEFAULT_ROWS))
    store = StudyStore(tmp_path / "answers.sqlite")
    client = TestClient(create_app(mode="study", study=study, store=store))
    yield client, store, study
    store.close()


def _assert_blind(text: str) -> None:
    lowered = text.lower()
    for word in LEAK_WORDS:
        found = re.search(rf"(?<![\w-]){word}(?![\w-])", lowered)
        assert found is None, (
            f"{word!r} reached the browser: {lowered[max(0, found.start() - 80) : found.end() + 80]}"
        )
    for _target, prediction, _, _ in DEFAULT_ROWS:
        assert f"{prediction}" not in text  # the full-precision value never leaves the server
    assert ".tif" not in lowered


def test_study_flow_is_blind_and_resumes(setup) -> None:
    client, store, study = setup
    page = client.get("/")
    assert page.status_code == 200 and "Image quality study" in page.text
    _assert_blind(page.text)
    for asset in ("/static/study.js", "/static/style.css"):
        _assert_blind(client.get(asset).text)

    start = client.post("/api/study/start", json={"name": "Alice"})
    assert start.status_code == 200
    token = start.json()["session"]
    assert start.cookies.get("stedloop_tester") == token
    # With the cookie, / sends the tester back to their session.
    again = client.get("/", follow_redirects=False)
    assert again.status_code == 303 and again.headers["location"] == f"/t/{token}"

    seen_first_positions = []
    for step in range(len(DEFAULT_ROWS)):
        view = client.get(f"/api/study/{token}/trial")
        _assert_blind(view.text)
        data = view.json()
        assert data["answered"] == step and data["total"] == 8 and not data["done"]
        trial = data["trial"]
        assert set(trial) == {"token", "image", "scores"}
        assert re.fullmatch(r"/img/[A-Za-z0-9_-]{20,}\.png", trial["image"])
        assert all(re.fullmatch(r"\d\.\d\d", s) for s in trial["scores"])
        image = client.get(trial["image"])
        assert image.headers["content-type"] == "image/png"
        assert image.content.startswith(b"\x89PNG")
        assert "content-disposition" not in image.headers
        assert b".tif" not in image.content and b"actin" not in image.content
        # Which shown score is the network's (server-side truth) — for checking order varies.
        stored = store.trial_by_token(trial["token"])
        row = study.rows[stored.row_index]
        expected = (row.target, row.prediction)
        if stored.first_shown == "prediction":
            expected = expected[::-1]
        assert trial["scores"] == [f"{v:.2f}" for v in expected]
        seen_first_positions.append(stored.first_shown)
        if step == 3:
            # Reload half-way: same trial comes back.
            assert client.get(f"/api/study/{token}/trial").json()["trial"] == trial
        answer = client.post(
            f"/api/study/{token}/answer", json={"trial": trial["token"], "choice": "first"}
        )
        assert answer.status_code == 200
        _assert_blind(answer.text)

    final = client.get(f"/api/study/{token}/trial").json()
    assert final["done"] and final["answered"] == 8 and final["trial"] is None
    records = store.answers()
    assert len(records) == 8
    assert [r.choice for r in records] == seen_first_positions


def test_stale_and_bad_answers(setup) -> None:
    client, _, _ = setup
    token = client.post("/api/study/start", json={"name": "Bob"}).json()["session"]
    trial = client.get(f"/api/study/{token}/trial").json()["trial"]
    ok = client.post(
        f"/api/study/{token}/answer", json={"trial": trial["token"], "choice": "second"}
    )
    assert ok.status_code == 200
    stale = client.post(
        f"/api/study/{token}/answer", json={"trial": trial["token"], "choice": "second"}
    )
    assert stale.status_code == 409
    assert stale.json()["answered"] == 1 and "not the current one" in stale.json()["error"]
    bad = client.post(
        f"/api/study/{token}/answer",
        json={"trial": stale.json()["trial"]["token"], "choice": "prediction"},
    )
    assert bad.status_code == 422
    assert client.get("/api/study/nosuchtoken/trial").status_code == 404
    assert client.get("/t/nosuchtoken").status_code == 404
    assert client.get("/img/nosuchtoken.png").status_code == 404
    assert client.post("/api/study/start", json={"name": "<b>"}).status_code == 400
    assert client.get("/static/..%2Fapp.py").status_code == 404


def test_score_order_is_not_fixed(tmp_path: Path) -> None:
    # Many testers on one set: the network's score appears both first and second.
    study = load_study_set(make_study_set(tmp_path / "set", DEFAULT_ROWS[:2]))
    store = StudyStore(tmp_path / "a.sqlite")
    client = TestClient(create_app(mode="study", study=study, store=store))
    firsts = set()
    for i in range(12):
        token = client.post("/api/study/start", json={"name": f"t{i}"}).json()["session"]
        trial = client.get(f"/api/study/{token}/trial").json()["trial"]
        firsts.add(store.trial_by_token(trial["token"]).first_shown)
    assert firsts == {"target", "prediction"}  # fails with probability 2^-11
