"""`stedloop evaluate`: how well a model's scores match the labels, the paper's way.

Reported for the network and for the paper's random baseline (a "model" that predicts by
sampling uniformly from the training labels stored in the checkpoint):

- RMSE, MAE, SROCC, KROCC and PLCC (Pearson after a 4-parameter logistic fit of prediction
  to target), each with a percentile bootstrap 95 % confidence interval;
- RMSE per target bin (0–0.2 … 0.8–1.0);
- the user-study confusion and domination per bin with simulated testers
  (:mod:`stedloop.quality.tester`), mean ± std over testers.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import optimize, stats

from stedloop.errors import DataError, StedloopError
from stedloop.metrics import BIN_EDGES, N_BINS, bin_label, bin_of
from stedloop.quality.checkpoint import load_checkpoint
from stedloop.quality.dataset import LabelledImage, load_dataset, read_tiff_image
from stedloop.quality.tester import user_study

METRICS: tuple[str, ...] = ("rmse", "mae", "srocc", "krocc", "plcc")


def logistic4(x: np.ndarray, b1: float, b2: float, b3: float, b4: float) -> np.ndarray:
    """The IQA 4-parameter logistic: b2 + (b1 - b2) / (1 + exp(-(x - b3) / |b4|))."""
    return b2 + (b1 - b2) / (1.0 + np.exp(-(x - b3) / (abs(b4) + 1e-9)))


#: scipy's warnings that a correlation's input is (nearly) constant, so its value is NaN or
#: numerically meaningless; counted and reported as one line (``EvaluationReport.notes``).
DEGENERATE_INPUT = (stats.ConstantInputWarning, stats.NearConstantInputWarning)

#: A fitted logistic whose outputs span less than this fraction of the targets' range is flat:
#: the fit found no trend, and correlating its rounding noise with the target means nothing.
FLAT_FIT_FRACTION = 1e-6


def _correlation(
    fn: Callable[[np.ndarray, np.ndarray], Any],
    x: np.ndarray,
    y: np.ndarray,
    degenerate: set[str] | None,
    name: str,
) -> float:
    """``fn(x, y)[0]`` with scipy's warnings kept off the terminal; a (nearly) constant input
    is noted in ``degenerate`` under ``name``."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        value = float(fn(x, y)[0])
    flagged = any(issubclass(w.category, DEGENERATE_INPUT) for w in caught)
    if degenerate is not None and (flagged or not math.isfinite(value)):
        degenerate.add(name)
    return value


def plcc_logistic(
    pred: np.ndarray, target: np.ndarray, degenerate: set[str] | None = None
) -> float:
    """Pearson correlation of the target with the logistic-mapped prediction."""
    if np.ptp(pred) == 0 or np.ptp(target) == 0:
        if degenerate is not None:
            degenerate.add("plcc")
        return float("nan")
    p0 = [target.max(), target.min(), float(np.median(pred)), float(np.std(pred)) or 0.1]
    try:
        with warnings.catch_warnings(), np.errstate(over="ignore"):
            warnings.simplefilter("ignore")
            params, _ = optimize.curve_fit(logistic4, pred, target, p0=p0, maxfev=5000)
        with np.errstate(over="ignore"):
            mapped = logistic4(pred, *params)
        if not np.isfinite(mapped).all() or np.ptp(mapped) <= FLAT_FIT_FRACTION * np.ptp(target):
            raise RuntimeError
    except (RuntimeError, optimize.OptimizeWarning, ValueError):
        mapped = pred  # fit failed or found no trend: fall back to the linear correlation
    return _correlation(stats.pearsonr, mapped, target, degenerate, "plcc")


def point_metrics(
    pred: np.ndarray, target: np.ndarray, degenerate: set[str] | None = None
) -> dict[str, float]:
    """The five metrics; a correlation on (nearly) constant scores is NaN or unreliable, and
    its name goes into ``degenerate``."""
    err = pred - target
    return {
        "rmse": float(np.sqrt(np.mean(err**2))),
        "mae": float(np.mean(np.abs(err))),
        "srocc": _correlation(stats.spearmanr, pred, target, degenerate, "srocc"),
        "krocc": _correlation(stats.kendalltau, pred, target, degenerate, "krocc"),
        "plcc": plcc_logistic(pred, target, degenerate),
    }


def bootstrap_ci(
    pred: np.ndarray,
    target: np.ndarray,
    n: int,
    rng: np.random.Generator,
    degenerate_resamples: list[int] | None = None,
    on_resample: Callable[[int], None] | None = None,
) -> dict[str, tuple[float, float]]:
    """Percentile 95 % intervals; resamples whose correlations are NaN are left out of those
    metrics' intervals. ``degenerate_resamples`` gets how many resamples had (nearly)
    constant scores."""
    samples: dict[str, list[float]] = {m: [] for m in METRICS}
    count = 0
    for done in range(n):
        if on_resample is not None and done % 10 == 0:
            on_resample(done)
        idx = rng.integers(0, len(pred), len(pred))
        degenerate: set[str] = set()
        for key, value in point_metrics(pred[idx], target[idx], degenerate).items():
            if math.isfinite(value):
                samples[key].append(value)
        count += bool(degenerate)
    if degenerate_resamples is not None:
        degenerate_resamples.append(count)
    if on_resample is not None:
        on_resample(n)
    return {
        k: (float(np.percentile(v, 2.5)), float(np.percentile(v, 97.5)))
        if v
        else (float("nan"), float("nan"))
        for k, v in samples.items()
    }


def per_bin_rmse(pred: np.ndarray, target: np.ndarray) -> list[dict[str, Any]]:
    bins = np.array([bin_of(t) for t in target])
    rows = []
    for b in range(N_BINS):
        mask = bins == b
        rmse = float(np.sqrt(np.mean((pred[mask] - target[mask]) ** 2))) if mask.any() else None
        rows.append({"bin": bin_label(b), "n": int(mask.sum()), "rmse": rmse})
    return rows


@dataclass
class EvaluationReport:
    model: str
    data: str
    split: str
    n_images: int
    structures: list[str]
    network: dict[str, Any]
    random: dict[str, Any]
    n_testers: int
    items: list[dict[str, Any]] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    #: One line each about results to read with care (correlations on near-constant scores).
    notes: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "data": self.data,
            "split": self.split,
            "n_images": self.n_images,
            "structures": self.structures,
            "n_testers": self.n_testers,
            "bin_edges": list(BIN_EDGES),
            "network": self.network,
            "random_baseline": self.random,
            "skipped": self.skipped,
            "notes": self.notes,
            "items": self.items,
        }

    def markdown(self) -> str:
        def ci(block: dict[str, Any], key: str) -> str:
            lo, hi = block["ci95"][key]
            return f"{block['metrics'][key]:.3f} [{lo:.3f}, {hi:.3f}]"

        def ms(cell: dict[str, Any]) -> str:
            if cell["mean"] is None:
                return "–"
            return f"{cell['mean']:.2f} ± {cell['std']:.2f}"

        lines = [
            f"Model `{self.model}` on `{self.data}` (split: {self.split}, {self.n_images} images, "
            f"structures: {', '.join(self.structures)})",
            "",
            "| metric | network (95 % CI) | random baseline (95 % CI) |",
            "| --- | --- | --- |",
        ]
        for key in METRICS:
            lines.append(f"| {key.upper()} | {ci(self.network, key)} | {ci(self.random, key)} |")
        lines += [
            "",
            f"Per target bin (confusion and domination: {self.n_testers} simulated testers, mean ± std)",
            "",
            "| target bin | n | RMSE net | RMSE random | confusion net | confusion random "
            "| domination net | domination random |",
            "| --- | --- | --- | --- | --- | --- | --- | --- |",
        ]
        for b in range(N_BINS):
            nb, rb = self.network["per_bin"][b], self.random["per_bin"][b]

            def r(x: float | None) -> str:
                return "–" if x is None else f"{x:.3f}"

            lines.append(
                f"| {nb['bin']} | {nb['n']} | {r(nb['rmse'])} | {r(rb['rmse'])} "
                f"| {ms(self.network['user_study']['confusion'][b])} "
                f"| {ms(self.random['user_study']['confusion'][b])} "
                f"| {ms(self.network['user_study']['domination'][b])} "
                f"| {ms(self.random['user_study']['domination'][b])} |"
            )
        if self.notes:
            lines += ["", "Notes:"]
            lines += [f"- {n}" for n in self.notes]
        if self.skipped:
            lines += ["", f"Skipped {len(self.skipped)} unusable image(s):"]
            lines += [f"- {s}" for s in self.skipped]
        return "\n".join(lines)


def _select(
    items: list[LabelledImage], split: str, training: dict[str, Any], model: Path
) -> list[LabelledImage]:
    if split == "all":
        return items
    if split not in ("test", "val"):
        raise DataError(f"unknown split {split!r}; expected all, test or val")
    wanted = training.get(f"{split}_paths")
    if not wanted:
        raise DataError(f"{model}: the checkpoint records no {split} split")
    keep = set(wanted)
    chosen = [it for it in items if it.relpath in keep]
    if not chosen:
        raise DataError(f"none of the {split} images recorded in {model} are in this data set")
    return chosen


def _true_scores(folder: Path, items: list[LabelledImage]) -> list[float]:
    """Noiseless scores from the manifest's ``true_score`` column when present."""
    manifest = folder / "manifest.csv"
    found: dict[str, float] = {}
    if manifest.is_file():
        with manifest.open(newline="") as fh:
            for row in csv.DictReader(fh):
                text = (row.get("true_score") or "").strip()
                if text:
                    found[row["path"].strip()] = float(text)
    return [found.get(it.relpath, it.score) for it in items]


def evaluate(
    model: Path,
    data: Path,
    split: str = "all",
    n_testers: int = 11,
    n_bootstrap: int = 1000,
    seed: int = 0,
    device: str = "auto",
    study_set: Path | None = None,
    progress: Callable[[str, int, int], None] | None = None,
) -> EvaluationReport:
    """Score the labelled set and compute the report; ``progress(stage, done, total)`` is
    told how far the long stages are (``scoring`` images, then each ``bootstrap``)."""
    from stedloop.quality.scorer import CNNScorer

    def tell(stage: str, done: int, total: int) -> None:
        if progress is not None:
            progress(stage, done, total)

    model, data = Path(model), Path(data)
    ckpt = load_checkpoint(model)
    items = _select(load_dataset(data), split, ckpt.training, model)
    scorer = CNNScorer(ckpt, device=device, batch_size=32)

    kept: list[LabelledImage] = []
    preds: list[float] = []
    skipped: list[str] = []
    batch_items: list[LabelledImage] = []
    batch_images: list[np.ndarray] = []

    def flush() -> None:
        if not batch_items:
            return
        try:
            scores = scorer.score(batch_images, names=[str(i.path) for i in batch_items])
            kept.extend(batch_items)
            preds.extend(float(s) for s in scores)
        except StedloopError:  # one bad image: score the batch one by one to name it
            for it, im in zip(batch_items, batch_images, strict=True):
                try:
                    preds.append(scorer.score_one(im, name=str(it.path)))
                    kept.append(it)
                except StedloopError as exc:
                    skipped.append(str(exc))
        batch_items.clear()
        batch_images.clear()
        tell("scoring", len(kept) + len(skipped), len(items))

    for item in items:
        try:
            batch_images.append(read_tiff_image(item.path))
            batch_items.append(item)
        except StedloopError as exc:
            skipped.append(str(exc))
        if len(batch_items) >= 32:
            flush()
    flush()
    if not kept:
        raise DataError(f"{data}: no scorable images; nothing to evaluate")

    target = np.array([it.score for it in kept])
    pred = np.array(preds)
    true_scores = _true_scores(data, kept)
    train_labels = np.array(ckpt.train_labels)
    if train_labels.size == 0:
        raise DataError(
            f"{model}: the checkpoint stores no training labels for the random baseline"
        )
    rng = np.random.default_rng(seed)
    random_pred = rng.choice(train_labels, size=len(target), replace=True)

    notes: list[str] = []

    def block(p: np.ndarray, tester_seed: int, who: str) -> dict[str, Any]:
        degenerate: set[str] = set()
        resamples: list[int] = []
        stage = f"bootstrap ({who})"
        result = {
            "metrics": point_metrics(p, target, degenerate),
            "ci95": bootstrap_ci(
                p,
                target,
                n_bootstrap,
                np.random.default_rng(seed + 1),
                resamples,
                lambda done: tell(stage, done, n_bootstrap),
            ),
            "per_bin": per_bin_rmse(p, target),
            "user_study": user_study(target, p, true_scores, n_testers, tester_seed),
        }
        if degenerate:
            names = ", ".join(m.upper() for m in METRICS if m in degenerate)
            notes.append(
                f"{who}: the scores or the labels are (nearly) constant, so {names} "
                "cannot be trusted on this set"
            )
        elif resamples and resamples[0]:
            notes.append(
                f"{who}: {resamples[0]} of {n_bootstrap} bootstrap resamples had (nearly) "
                "constant scores or labels; their correlations were left out of the 95 % CIs "
                "where NaN (small sets give wide intervals)"
            )
        return result

    network = block(pred, seed + 2, "network")
    random_block = block(random_pred, seed + 2, "random baseline")

    report = EvaluationReport(
        model=str(model),
        data=str(data),
        split=split,
        n_images=len(kept),
        structures=sorted({it.structure for it in kept}),
        network=network,
        random=random_block,
        n_testers=n_testers,
        items=[
            {
                "path": it.relpath,
                "target": it.score,
                "prediction": p,
                "random": float(r),
                "structure": it.structure,
            }
            for it, p, r in zip(kept, pred, random_pred, strict=True)
        ],
        skipped=skipped,
        notes=notes,
    )
    if study_set is not None:
        write_study_set(study_set, kept, pred)
    return report


def write_study_set(folder: Path, items: list[LabelledImage], pred: np.ndarray) -> Path:
    """DIR/images/*.tif (copies of the 16-bit images) and DIR/study.csv (per the contract)."""
    folder = Path(folder)
    (folder / "images").mkdir(parents=True, exist_ok=True)
    rows = []
    for i, (item, p) in enumerate(zip(items, pred, strict=True)):
        name = f"{i:04d}_{item.path.stem}.tif"
        shutil.copyfile(item.path, folder / "images" / name)
        rows.append([f"images/{name}", item.score, float(p), item.structure])
    with (folder / "study.csv").open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["image", "target", "prediction", "structure"])
        writer.writerows(rows)
    return folder / "study.csv"


def write_report(report: EvaluationReport, out: Path) -> None:
    """report.md, metrics.json, scatter.png and per_bin.png in ``out``."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "report.md").write_text(report.markdown() + "\n")
    (out / "metrics.json").write_text(json.dumps(report.as_dict(), indent=2) + "\n")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    target = np.array([it["target"] for it in report.items])
    pred = np.array([it["prediction"] for it in report.items])
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.scatter(target, pred, s=10, alpha=0.6)
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_xlabel("target (expert) score")
    ax.set_ylabel("network score")
    m = report.network["metrics"]
    ax.set_title(f"SROCC {m['srocc']:.3f}, RMSE {m['rmse']:.3f}")
    fig.tight_layout()
    fig.savefig(out / "scatter.png", dpi=100)
    plt.close(fig)

    fig, axes = plt.subplots(1, 3, figsize=(12, 3.5))
    labels = [row["bin"] for row in report.network["per_bin"]]
    x = np.arange(len(labels))
    getters: tuple[tuple[str, Callable[[dict[str, Any]], list[float]]], ...] = (
        ("RMSE", lambda blk: [r["rmse"] or 0 for r in blk["per_bin"]]),
        ("confusion", lambda blk: [c["mean"] or 0 for c in blk["user_study"]["confusion"]]),
        ("domination", lambda blk: [c["mean"] or 0 for c in blk["user_study"]["domination"]]),
    )
    for ax, (title, getter) in zip(axes, getters, strict=True):
        ax.bar(x - 0.2, getter(report.network), width=0.4, label="network")
        ax.bar(x + 0.2, getter(report.random), width=0.4, label="random")
        ax.set_xticks(x, labels)
        ax.set_title(title + " per target bin")
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "per_bin.png", dpi=100)
    plt.close(fig)
