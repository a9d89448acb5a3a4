"""Builders shared by the study tests: a real study set of 16-bit TIFFs on disk."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import tifffile


def write_image(path: Path, seed: int, shape: tuple[int, int] = (64, 64)) -> Path:
    rng = np.random.default_rng(seed)
    image = rng.poisson(4.0, shape).astype(np.uint16)
    image[10:20, 5:60] += np.uint16(40 + seed)  # some structure, different per image
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, image)
    return path


def make_study_set(
    root: Path,
    rows: list[tuple[float, float, str, str]],
) -> Path:
    """rows: (target, prediction, structure, system); one image per row."""
    records = []
    for i, (target, prediction, structure, system) in enumerate(rows):
        name = f"images/{structure}_{i:03d}.tif"
        write_image(root / name, seed=i)
        records.append(
            {
                "image": name,
                "target": target,
                "prediction": prediction,
                "structure": structure,
                "system": system,
            }
        )
    with (root / "study.csv").open("w", newline="") as fh:
        writer = csv.DictWriter(
            fh, fieldnames=["image", "target", "prediction", "structure", "system"]
        )
        writer.writeheader()
        writer.writerows(records)
    return root


#: A small set: distinct, recognisable prediction values so tests can look for leaks.
DEFAULT_ROWS: list[tuple[float, float, str, str]] = [
    (0.10, 0.731942, "actin", "network"),
    (0.35, 0.418237, "actin", "network"),
    (0.55, 0.629173, "actin", "network"),
    (0.72, 0.561834, "actin", "network"),
    (0.90, 0.812476, "actin", "network"),
    (0.10, 0.903318, "actin", "random"),
    (0.35, 0.276651, "actin", "random"),
    (0.55, 0.147792, "actin", "random"),
]
