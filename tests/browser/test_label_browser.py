"""Labelling mode end-to-end in headless Chromium: keys and slider produce a training set."""

from __future__ import annotations

from pathlib import Path

import pytest
from browser_helpers import running_server
from study_helpers import write_image

from stedloop.quality.dataset import load_dataset
from stedloop.study.app import create_app
from stedloop.study.labelling import labeller_folder_name
from stedloop.study.store import StudyStore

pytestmark = pytest.mark.browser


def test_label_with_keys_and_slider(tmp_path: Path, new_page, screenshot_dir: Path) -> None:  # type: ignore[no-untyped-def]
    for i in range(3):
        write_image(tmp_path / "new" / f"img{i}.tif", seed=i, shape=(224, 224))
    store = StudyStore(tmp_path / "labels.sqlite")
    app = create_app(
        mode="label", store=store, label_source=tmp_path / "new", label_out=tmp_path / "out",
        label_structure="tubulin",
    )  # fmt: skip
    with running_server(app) as base:
        page = new_page()
        page.goto(base + "/")
        page.fill("#name", "Marie")
        page.press("#name", "Enter")
        page.wait_for_function(
            "document.getElementById('count')?.textContent.startsWith('Image 1 of 3')"
        )
        page.keyboard.press("7")  # 0.7
        page.keyboard.press("ArrowRight")  # +0.01 -> 0.71
        assert page.inner_text("#value") == "0.71"
        page.wait_for_function("document.getElementById('image')?.complete")
        page.screenshot(path=str(screenshot_dir / "label_page.png"))
        page.keyboard.press("Enter")
        page.wait_for_function(
            "document.getElementById('count')?.textContent.startsWith('Image 2 of 3')"
        )
        page.keyboard.press("+")  # 1.0
        page.keyboard.press("ArrowDown")  # -0.1 -> 0.9
        page.click("#save")
        page.wait_for_function(
            "document.getElementById('count')?.textContent.startsWith('Image 3 of 3')"
        )
        page.fill("#slider", "0.05")  # drag the slider
        page.click("#save")
        page.wait_for_function("document.getElementById('saved')?.textContent.includes('all 3')")
        # Going back shows the stored score of image 1.
        page.keyboard.press("PageUp")
        page.keyboard.press("PageUp")
        page.wait_for_function(
            "document.getElementById('count')?.textContent.startsWith('Image 1 of 3')"
        )
        assert page.inner_text("#saved") == "saved: 0.71"
    store.close()
    items = load_dataset(tmp_path / "out" / labeller_folder_name("Marie"))
    assert [round(i.score, 4) for i in items] == [0.71, 0.9, 0.05]
    assert {i.structure for i in items} == {"tubulin"}
