"""What a quality model does to frames an expert judges in a known order (issue 15's table).

    python benchmarks/bench_quality_properties.py [--model M ...] [--real DIR]
        [--set NAME=DIR ...]

For each model (default: the shipped one), in one run:

- synthetic sets (``--set actin=DIR``, a ``stedloop dataset synth`` folder with
  manifest.csv): Spearman rank correlation (SROCC) and RMSE against the expert's labels;
  ``--split-from CHECKPOINT`` keeps only the rows that checkpoint held out as its test split;
- real and simulated degradation series (the recipe of ``stedloop.quality.probes``): adjacent
  levels in order, and the worst level-4 / level-0 ratio per family;
- the same frames times 0.5, 2 and 4: the largest score change;
- the same counts without the structure (shuffled, phase-randomised): score / original.

The real frames are ``DIR/*.tif`` with series in ``DIR/degradations`` (default: the shared
real STED frames when present). Prints figures and conditions.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import platform
import tempfile
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import tifffile
from machine import cpu_name
from scipy.stats import spearmanr

if TYPE_CHECKING:
    from stedloop.quality.scorer import CNNScorer

DEFAULT_REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real_sted"
GAINS = (0.5, 2.0, 4.0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", action="append", default=[], help="checkpoint (repeat)")
    parser.add_argument("--real", type=Path, default=DEFAULT_REAL)
    parser.add_argument("--set", action="append", default=[], metavar="NAME=DIR")
    parser.add_argument("--split-from", type=Path, default=None, metavar="CHECKPOINT")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()

    import torch

    from stedloop.quality.degradations import evaluate_degradations
    from stedloop.quality.probes import (
        STRUCTURELESS_KINDS,
        gained,
        good_simulated_frames,
        structureless,
        write_degradation_series,
    )
    from stedloop.quality.scorer import CNNScorer

    torch.set_num_threads(args.threads)
    print(
        f"# bench_quality_properties: date {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC; "
        f"CPU {cpu_name()}, {os.cpu_count()} cores (load avg {os.getloadavg()[0]:.1f}); "
        f"Python {platform.python_version()}, torch {torch.__version__} "
        f"({args.threads} threads)"
    )
    sets = [_parse_set(text) for text in args.set]
    held_out = _test_split(args.split_from) if args.split_from else None

    simulated = good_simulated_frames()
    real = sorted(args.real.glob("*.tif")) if args.real.is_dir() else []
    real_frames = [tifffile.imread(p) for p in real]
    print(f"frames: {len(simulated)} simulated (actin, good settings), {len(real)} real")

    with tempfile.TemporaryDirectory() as scratch:
        simulated_folder = write_degradation_series(Path(scratch), simulated)

        for model in args.model or [None]:
            scorer = CNNScorer.from_checkpoint(model, device="cpu")
            print(f"\n## model {model or 'shipped'} (photon scale {_photon_scale(scorer)})")
            for name, folder in sets:
                _print_set(scorer, name, folder, held_out)
            folders = [("simulated", simulated_folder)]
            if (args.real / "degradations").is_dir():
                folders.append(("real", args.real / "degradations"))
            for label, folder in folders:
                report = evaluate_degradations(folder, scorer, str(model or "shipped"))
                for scored in report.series:
                    print(
                        f"{label} {scored.series.frame[:24]:24s} {scored.series.family:5s} "
                        + " ".join(f"{s:.3f}" for s in scored.scores)
                        + f"  in order {scored.pairs_in_order}/{scored.n_pairs}"
                        + f"  L4/L0 {_ratio(scored.ratio)}"
                    )
            rng = np.random.default_rng(0)
            for label, frames in (("simulated", simulated), ("real", real_frames)):
                if not frames:
                    continue
                changes, kept = [], {kind: [] for kind in STRUCTURELESS_KINDS}
                for image in frames:
                    counts = image.astype(np.float64)
                    probes = [gained(image, g) for g in GAINS]
                    probes += [structureless(counts, k, rng) for k in STRUCTURELESS_KINDS]
                    base, *rest = scorer.score([image, *probes])
                    changes.append([abs(s - base) for s in rest[: len(GAINS)]])
                    for kind, score in zip(STRUCTURELESS_KINDS, rest[len(GAINS) :], strict=True):
                        kept[kind].append(score / base)
                worst = np.max(np.array(changes), axis=0)
                print(
                    f"{label}: gain x{' x'.join(f'{g:g}' for g in GAINS)} largest change "
                    + " ".join(f"{w:.3f}" for w in worst)
                    + "; "
                    + "; ".join(
                        f"{kind} / original " + " ".join(f"{r:.2f}" for r in ratios)
                        for kind, ratios in kept.items()
                    )
                )


def _parse_set(text: str) -> tuple[str, Path]:
    name, sep, folder = text.partition("=")
    if not sep or not (Path(folder) / "manifest.csv").is_file():
        raise SystemExit(f"--set {text!r}: expected NAME=DIR with DIR/manifest.csv")
    return name, Path(folder)


def _test_split(checkpoint: Path) -> set[str]:
    from stedloop.quality.checkpoint import load_checkpoint

    training = load_checkpoint(checkpoint).training
    return {Path(p).name for p in training.get("test_paths", [])}


def _print_set(scorer: CNNScorer, name: str, folder: Path, held_out: set[str] | None) -> None:
    with open(folder / "manifest.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    if held_out is not None and any(Path(r["path"]).name in held_out for r in rows):
        rows = [r for r in rows if Path(r["path"]).name in held_out]
    images = [tifffile.imread(folder / r["path"]) for r in rows]
    predicted = np.asarray(scorer.score(images))
    labels = np.array([float(r["score"]) for r in rows])
    srocc = float(spearmanr(predicted, labels)[0])
    rmse = float(np.sqrt(np.mean((predicted - labels) ** 2)))
    print(f"set {name}: n={len(rows)} SROCC {srocc:.3f} RMSE {rmse:.3f}")


def _photon_scale(scorer: CNNScorer) -> str:
    return str(scorer.checkpoint.normalization.photon_scale)


def _ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


if __name__ == "__main__":
    main()
