"""The shipped model: loads, scores the two real STED frames sensibly, ranks synthetic frames.

Skipped when models/quality_default.pt is absent (a checkout before the model was trained);
the real-frame test also skips when ../shared/data/real_sted/ is absent.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from stedloop.quality import shipped_model_path
from stedloop.quality.checkpoint import load_checkpoint

REAL_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_sted"
if not REAL_DIR.is_dir():
    REAL_DIR = Path("/work/shared/data/real_sted")

pytestmark = pytest.mark.skipif(
    not shipped_model_path().is_file(), reason="no shipped model installed"
)


def test_shipped_model_is_small_fp16_and_documented() -> None:
    path = shipped_model_path()
    assert path.stat().st_size < 20 * 1024 * 1024
    ckpt = load_checkpoint(path)
    assert ckpt.input_size_px == 224
    assert len(ckpt.train_labels) > 100
    assert ckpt.training["structures"] == ["actin"]
    assert (path.parent / "MODEL_CARD.md").is_file()


@pytest.mark.skipif(not REAL_DIR.is_dir(), reason="real STED frames not available")
def test_real_frames_get_finite_scores_in_range() -> None:
    files = sorted(REAL_DIR.glob("*.tif"))
    assert len(files) == 2
    res = subprocess.run(
        [sys.executable, "-m", "stedloop.cli.main", "score", *map(str, files), "--device", "cpu"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert res.returncode == 0, res.stderr
    results = [json.loads(line) for line in res.stdout.splitlines()]
    assert [r["path"] for r in results] == [str(f) for f in files]
    for r in results:
        assert np.isfinite(r["score"]) and 0.0 <= r["score"] <= 1.0


def test_shipped_model_ranks_fresh_synthetic_frames(tmp_path: Path) -> None:
    """Frames from samples never seen in training (seed 99): scores follow the labels."""
    from scipy import stats

    from stedloop.quality.dataset import load_dataset, read_tiff_image
    from stedloop.quality.scorer import CNNScorer
    from stedloop.quality.synth import synthesize

    synthesize(tmp_path / "fresh", n=32, structure="actin", seed=99)
    items = load_dataset(tmp_path / "fresh")
    scorer = CNNScorer.from_checkpoint(None, device="cpu")
    scores = scorer.score([read_tiff_image(it.path) for it in items])
    rho = stats.spearmanr(scores, [it.score for it in items])[0]
    assert rho > 0.7, rho
