"""The screenshot in docs/napari.md: a short simulator session opened with the napari reader.

Run under a display (napari draws with OpenGL), headless with Xvfb:
    xvfb-run -a .venv/bin/python scripts/napari_screenshot.py docs/images/napari_reader.png
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

CONFIG = """
[objectives]
names = ["resolution", "bleaching"]

[session]
retry_delay_s = 0.0

[drivers.simulator]
field_px = 96
sample_fields = 4
acquire_delay_s = 0.0
"""


def main(out: Path) -> None:
    import napari

    with tempfile.TemporaryDirectory() as tmp:
        home = Path(tmp) / "home"
        config = Path(tmp) / "site.toml"
        config.write_text(CONFIG)
        env = {**os.environ, "STEDLOOP_HOME": str(home)}
        subprocess.run(
            [sys.executable, "-m", "stedloop.cli.main", "optimize", "-c", str(config),
             "--budget", "6", "--seed", "3", "--name", "actin"],
            env=env, check=True, capture_output=True,
        )  # fmt: skip
        (session,) = (home / "sessions").iterdir()
        viewer = napari.Viewer(show=False)
        confocal, sted = viewer.open(str(session), plugin="stedloop")
        meta = sted.metadata["stedloop"]
        entries = meta["frames"]
        best = [e["frame"] for e in entries].index(meta["best_frame"])
        viewer.grid.enabled = True  # confocal and STED side by side
        viewer.scale_bar.visible = True
        viewer.window.resize(1000, 620)
        viewer.dims.set_current_step(0, best)
        entry = entries[best]
        params = ", ".join(f"{k} {v:.3g}" for k, v in entry["params"].items())
        units = {o["name"]: o["unit"] for o in meta["objectives"]}
        scores = ", ".join(
            f"{k} {v:.3g} {units.get(k, '')}".strip()
            for k, v in entry["values"].items()
            if v is not None
        )
        viewer.text_overlay.visible = True
        viewer.text_overlay.color = "white"
        viewer.text_overlay.font_size = 9
        viewer.text_overlay.position = "top_left"
        viewer.text_overlay.text = f"frame {entry['frame']} (best)\n{params}\n{scores}"
        for layer in (confocal, sted):
            # the reader's limits span the whole session; this one frame may be much dimmer
            layer.contrast_limits = (0.0, float(np.percentile(layer.data[best], 99.8)) or 1.0)
        viewer.reset_view()
        viewer.screenshot(str(out), canvas_only=False, flash=False)
        viewer.close()


if __name__ == "__main__":
    main(Path(sys.argv[1]))
