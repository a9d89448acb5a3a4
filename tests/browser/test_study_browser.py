"""End-to-end in headless Chromium: a tester goes through the study, reloads half-way,
finishes; answers, report numbers and blinding are checked from what the browser received."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
from browser_helpers import running_server
from study_helpers import DEFAULT_ROWS, make_study_set

from stedloop.metrics import bin_of
from stedloop.study.app import create_app
from stedloop.study.store import StudyStore
from stedloop.study.studyset import load_study_set

pytestmark = pytest.mark.browser

LEAK_WORDS = ("prediction", "network", "random", "system", "target", "expert", "actin")
# What the tester does for the 8 trials; a reload comes after the 4th answer.
ACTIONS = [
    ("key", "1"), ("click", "#btn-second"), ("key", "e"), ("key", "d"),
    ("key", "ArrowLeft"), ("key", "2"), ("click", "#btn-equivalent"), ("key", "0"),
]  # fmt: skip
RAW = ["first", "second", "equivalent", "discard"] * 2


class Recorder:
    """Every response the browser received: URL, headers and body."""

    def __init__(self) -> None:
        self.items: list[tuple[str, dict[str, str], bytes]] = []

    def __call__(self, response) -> None:  # type: ignore[no-untyped-def]
        try:
            body = response.body()
        except Exception:  # redirects have no body
            body = b""
        self.items.append((response.url, dict(response.headers), body))


def _wait_trial(page, number: int) -> None:  # type: ignore[no-untyped-def]
    page.wait_for_function(
        f"document.getElementById('count')?.textContent === 'Image {number} of 8'"
        " && document.getElementById('image')?.complete"
    )


def test_study_end_to_end_with_reload(tmp_path: Path, new_page, screenshot_dir: Path) -> None:  # type: ignore[no-untyped-def]
    study = load_study_set(make_study_set(tmp_path / "set", DEFAULT_ROWS))
    db = tmp_path / "answers.sqlite"
    store = StudyStore(db)
    app = create_app(mode="study", study=study, store=store)
    recorder = Recorder()
    with running_server(app) as base:
        page = new_page()
        page.on("response", recorder)
        page.goto(base + "/")
        page.fill("#name", "Alice")
        page.click("button[type=submit]")
        page.wait_for_url(re.compile(r"/t/[A-Za-z0-9_-]+$"))
        session_url = page.url
        for i, (kind, what) in enumerate(ACTIONS):
            _wait_trial(page, i + 1)
            assert page.get_attribute("#progress", "aria-valuenow") == str(i)
            if i == 0:
                page.screenshot(path=str(screenshot_dir / "study_page.png"))
            if kind == "key":
                page.keyboard.press(what)
            else:
                page.click(what)
            if i == 3:
                _wait_trial(page, 5)
                page.reload()  # half-way: the tester comes back to trial 5
                assert page.url == session_url
        page.wait_for_selector("#done:not([hidden])")
        assert "all 8 images" in page.inner_text("#done")
        # A second tester in a fresh browser context (own cookie) answers everything "first".
        bob = new_page()
        bob.on("response", recorder)
        bob.goto(base + "/")
        bob.fill("#name", "Bob")
        bob.press("#name", "Enter")
        for i in range(8):
            _wait_trial(bob, i + 1)
            bob.keyboard.press("1")
        bob.wait_for_selector("#done:not([hidden])")
        # Coming back to / with the cookie resumes (here: the finished screen).
        page.goto(base + "/")
        page.wait_for_selector("#done:not([hidden])")

    # -- stored answers: what was clicked, mapped through the server-side order -----------
    records = [r for r in store.answers() if r.tester == "Alice"]
    assert [r.raw_choice for r in records] == RAW
    for r in records:
        if r.raw_choice in ("first", "second"):
            other = "prediction" if r.first_shown == "target" else "target"
            assert r.choice == (r.first_shown if r.raw_choice == "first" else other)
        else:
            assert r.choice == r.raw_choice
        assert r.shown_at and r.answered_at >= r.shown_at
    store.close()

    # -- report numbers match the stored choices ------------------------------------------
    out = tmp_path / "report"
    result = subprocess.run(
        [sys.executable, "-m", "stedloop.cli.main", "study", "report", "--db", str(db), "--out", str(out), "--json"],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    summary = json.loads(result.stdout)
    all_records = StudyStore(db).answers()
    for group in summary["groups"]:
        for b, cell in enumerate(group["bins"]):
            mine = [
                r for r in all_records
                if r.system == group["system"] and bin_of(r.target) == b
            ]  # fmt: skip
            pooled = cell["pooled"]
            assert pooled["shown"] == len(mine)
            assert pooled["kept"] == sum(r.choice != "discard" for r in mine)
            assert pooled["target"] == sum(r.choice == "target" for r in mine)
            assert pooled["prediction"] == sum(r.choice == "prediction" for r in mine)
            assert pooled["equivalent"] == sum(r.choice == "equivalent" for r in mine)

    # -- blinding: nothing the browser received says which score is the network's ---------
    assert recorder.items, "no responses recorded"
    image_urls = []
    for url, headers, body in recorder.items:
        text = (url + "\n" + json.dumps(headers) + "\n").lower()
        if not body.startswith(b"\x89PNG"):
            text += body.decode("utf-8", errors="replace").lower()
        else:
            image_urls.append(url)
            assert b"tif" not in body.lower() and b"actin" not in body.lower()
        for word in LEAK_WORDS:
            found = re.search(rf"(?<![\w-]){word}(?![\w-])", text)
            assert found is None, f"{word!r} reached the browser in {url}"
        assert ".tif" not in text and "images/" not in text
        for _, prediction, _, _ in DEFAULT_ROWS:
            assert str(prediction) not in text
    assert len(image_urls) >= 16
    assert all(re.search(r"/img/[A-Za-z0-9_-]{20,}\.png$", u) for u in image_urls)
    assert len(set(image_urls)) == 16  # one opaque token per trial, 8 trials x 2 testers
    # The network's score is not always in the same place (16 coin flips: p = 2^-15).
    assert {r.first_shown for r in all_records} == {"target", "prediction"}


def test_report_renders_in_the_browser(tmp_path: Path, new_page, screenshot_dir: Path) -> None:  # type: ignore[no-untyped-def]
    from stedloop.study.report import build_report, write_report
    from stedloop.study.store import AnswerRecord

    answers = []
    for tester, choices in {"A": "TPEETPD", "B": "PPETTEE"}.items():
        for i, c in enumerate(choices):
            for system in ("network", "random"):
                answers.append(
                    AnswerRecord(
                        tester=tester, position=i, image="x", structure="actin", system=system,
                        target=(i % 5) / 5 + 0.1, prediction=0.5, first_shown="target",
                        raw_choice="first",
                        choice={"T": "target", "P": "prediction", "E": "equivalent", "D": "discard"}[c],
                        shown_at=None, answered_at="t",
                    )  # type: ignore[arg-type]
                )  # fmt: skip
    write_report(build_report(answers), tmp_path / "rep", source="browser test")
    page = new_page()
    page.goto((tmp_path / "rep" / "report.html").as_uri())
    assert "Table 1" in page.inner_text("body")
    # Every image in the report loads.
    assert page.evaluate("[...document.images].every(i => i.complete && i.naturalWidth > 0)")
    page.screenshot(path=str(screenshot_dir / "report.png"), full_page=True)
