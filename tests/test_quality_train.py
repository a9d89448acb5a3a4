"""Training, data sets, evaluation and the CLI on tiny 32-px images (seconds, real files)."""

from __future__ import annotations

import csv
import json
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import tifffile
import torch

from stedloop.errors import DataError
from stedloop.quality.checkpoint import load_checkpoint
from stedloop.quality.dataset import load_dataset, stratified_split, write_manifest
from stedloop.quality.evaluate import evaluate, plcc_logistic, point_metrics, write_report
from stedloop.quality.train import TrainConfig, mse_loss, paths_beside, train

SIZE = 32


def _blob_image(rng: np.random.Generator, quality: float) -> np.ndarray:
    """Sharper, brighter lines for higher quality: something a CNN can learn quickly."""
    _yy, xx = np.mgrid[0:SIZE, 0:SIZE]
    width = 4.0 - 3.0 * quality
    lines = np.exp(-((xx - rng.uniform(8, 24)) ** 2) / (2 * width**2))
    lam = 2 + 40 * quality * lines
    return rng.poisson(lam).astype(np.uint16)


def make_dataset(folder: Path, n: int = 24, seed: int = 0, size: int = SIZE) -> Path:
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    rows = []
    for i in range(n):
        q = float(rng.uniform(0.05, 0.95))
        image = _blob_image(rng, q)
        if size != SIZE:
            image = np.pad(image, ((0, size - SIZE), (0, size - SIZE)), mode="reflect")
        tifffile.imwrite(folder / f"img{i:03d}.tif", image)
        rows.append({"path": f"img{i:03d}.tif", "score": round(q, 4), "structure": "lines"})
    write_manifest(folder, rows)
    return folder


def _cfg(**kw) -> TrainConfig:
    base = {"input_size_px": SIZE, "max_epochs": 2, "batch_size": 8, "device": "cpu"}
    base.update(kw)
    return TrainConfig(**base)


def test_mse_refuses_the_broadcast_trap() -> None:
    pred = torch.rand(5, 1)
    target = torch.rand(5)
    # Silent broadcasting would compute a 5x5 loss; ours refuses it.
    assert ((pred - target) ** 2).shape == (5, 5)
    with pytest.raises(ValueError, match="shape"):
        mse_loss(pred, target)
    assert mse_loss(pred.reshape(-1), target).shape == ()


def test_stratified_split_keeps_distribution() -> None:
    rng = np.random.default_rng(1)
    scores = list(np.clip(rng.beta(5, 2, 500), 0, 1))
    tr, va, te = stratified_split(scores, seed=3)
    assert sorted(tr + va + te) == list(range(500))
    assert len(va) == pytest.approx(50, abs=3) and len(te) == pytest.approx(50, abs=3)
    for part in (va, te):
        assert np.mean([scores[i] for i in part]) == pytest.approx(np.mean(scores), abs=0.03)
    assert stratified_split(scores, seed=3) == (tr, va, te)


def test_named_files_and_bad_labels(tmp_path: Path) -> None:
    named = tmp_path / "named"
    named.mkdir()
    tifffile.imwrite(named / "a-0.25.tif", np.arange(64, dtype=np.uint16).reshape(8, 8))
    tifffile.imwrite(named / "b-1.tif", np.arange(64, dtype=np.uint16).reshape(8, 8))
    items = load_dataset(named)
    assert [it.score for it in items] == [0.25, 1.0]
    tifffile.imwrite(named / "c-1.5.tif", np.arange(64, dtype=np.uint16).reshape(8, 8))
    with pytest.raises(DataError, match=r"c-1\.5\.tif.*outside \[0, 1\]"):
        load_dataset(named)
    bad = make_dataset(tmp_path / "bad", n=3)
    text = (bad / "manifest.csv").read_text().replace(",0.", ",-0.", 1)
    (bad / "manifest.csv").write_text(text)
    with pytest.raises(DataError, match=r"manifest\.csv:2: score"):
        load_dataset(bad)


def test_train_writes_model_curves_and_resumes(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data")
    out = tmp_path / "m.pt"
    result = train(data, out, _cfg(max_epochs=2))
    beside = paths_beside(out)
    for key in ("curves_csv", "curves_png", "split_csv", "resume"):
        assert beside[key].is_file(), key
    rows = list(csv.DictReader(beside["curves_csv"].open()))
    assert [int(r["epoch"]) for r in rows] == [1, 2]
    ckpt = load_checkpoint(out)
    assert ckpt.input_size_px == SIZE
    assert len(ckpt.train_labels) == ckpt.training["split_sizes"]["train"] > 10
    assert result.best_epoch in (1, 2)
    assert ckpt.training["split_sizes"]["test"] >= 1
    assert 0 < ckpt.normalization.std < 1

    resumed = train(data, out, _cfg(max_epochs=4), resume=beside["resume"])
    assert [h["epoch"] for h in resumed.history] == [1, 2, 3, 4]
    assert resumed.history[:2] == result.history[:2]


def test_training_is_seeded(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", n=12)
    a = train(data, tmp_path / "a.pt", _cfg(max_epochs=1, seed=5))
    b = train(data, tmp_path / "b.pt", _cfg(max_epochs=1, seed=5))
    assert a.history[0]["train_rmse"] == b.history[0]["train_rmse"]
    assert a.history[0]["val_rmse"] == b.history[0]["val_rmse"]


def test_training_learns_and_early_stopping_stops(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", n=60)
    result = train(data, tmp_path / "m.pt", _cfg(max_epochs=25, patience=5))
    assert result.stopped_early or result.epochs_run == 25
    if result.stopped_early:
        assert result.epochs_run == result.best_epoch + 5
    val = [h["val_rmse"] for h in result.history]
    assert result.best_val_rmse == pytest.approx(min(val), abs=1e-6)
    assert result.history[result.best_epoch - 1]["val_rmse"] == pytest.approx(
        result.best_val_rmse, abs=1e-6
    )
    # It learned something that generalises: fresh images of the same kind are ranked.
    from scipy import stats

    from stedloop.quality.scorer import CNNScorer

    fresh = load_dataset(make_dataset(tmp_path / "fresh", n=40, seed=123))
    scorer = CNNScorer.from_checkpoint(tmp_path / "m.pt", device="cpu")
    scores = scorer.score([tifffile.imread(it.path) for it in fresh])
    labels = [it.score for it in fresh]
    assert stats.spearmanr(scores, labels)[0] > 0.6
    assert np.sqrt(np.mean((scores - labels) ** 2)) < np.std(labels)


def test_plcc_logistic_is_one_for_monotone_sigmoid() -> None:
    x = np.linspace(0, 1, 50)
    y = 0.1 + 0.8 / (1 + np.exp(-(x - 0.5) / 0.1))
    assert plcc_logistic(x, y) == pytest.approx(1.0, abs=1e-4)


def test_correlations_on_flat_or_constant_scores_warn_nothing_and_are_noted() -> None:
    """scipy's NearConstantInputWarning came out raw under `stedloop evaluate`: a logistic
    fit that finds no trend is flat, and correlating its rounding noise meant nothing."""
    rng = np.random.default_rng(17)  # a case whose logistic fit comes out flat
    n = int(rng.integers(4, 40))
    target = np.round(rng.random(n), 2)
    pred = rng.random(n) * rng.choice([1, 0.1, 1e-3])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        degenerate: set[str] = set()
        plcc = plcc_logistic(pred, target, degenerate)
        assert plcc == pytest.approx(float(np.corrcoef(pred, target)[0, 1]))
        assert degenerate == set()
        metrics = point_metrics(np.full(n, 0.5), target, degenerate)
    assert np.isnan(metrics["srocc"]) and np.isnan(metrics["plcc"])
    assert degenerate == {"srocc", "krocc", "plcc"}


def test_evaluate_report_and_study_set(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", n=20)
    model = tmp_path / "m.pt"
    train(data, model, _cfg(max_epochs=1))
    test_only = evaluate(model, data, split="test", n_testers=2, n_bootstrap=10, device="cpu")
    assert 1 <= test_only.n_images <= 3
    assert {it["path"] for it in test_only.items} == set(
        load_checkpoint(model).training["test_paths"]
    )
    # an unreadable file listed in the manifest is reported, not fatal
    (data / "img000.tif").write_bytes(b"garbage")
    report = evaluate(
        model, data, n_testers=3, n_bootstrap=20, device="cpu", study_set=tmp_path / "study"
    )
    assert report.n_images == 19 and len(report.skipped) == 1 and "img000.tif" in report.skipped[0]
    md = report.markdown()
    for key in ("RMSE", "SROCC", "KROCC", "PLCC", "MAE", "confusion", "0.8–1.0"):
        assert key in md
    write_report(report, tmp_path / "out")
    for name in ("report.md", "metrics.json", "scatter.png", "per_bin.png"):
        assert (tmp_path / "out" / name).is_file()
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert len(metrics["network"]["per_bin"]) == 5
    assert len(metrics["random_baseline"]["user_study"]["confusion"]) == 5
    rows = list(csv.DictReader((tmp_path / "study" / "study.csv").open()))
    assert len(rows) == 19 and set(rows[0]) == {"image", "target", "prediction", "structure"}
    assert (tmp_path / "study" / rows[0]["image"]).is_file()


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stedloop.cli.main", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_cli_train_score_evaluate(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", n=12)
    model = tmp_path / "m.pt"
    res = _cli(
        "train",
        str(data),
        "--out",
        str(model),
        "--epochs",
        "1",
        "--input-size",
        "32",
        "--batch-size",
        "8",
        "--device",
        "cpu",
        "--threads",
        "1",
    )
    assert res.returncode == 0, res.stderr
    assert model.is_file()
    (data / "broken.tif").write_bytes(b"not a tiff")
    res = _cli("score", str(data), "--model", str(model), "--format", "json")
    assert res.returncode == 1
    lines = [json.loads(line) for line in res.stdout.splitlines()]
    assert len(lines) == 12
    assert all(set(d) == {"path", "score"} and 0 <= d["score"] <= 1 for d in lines)
    assert "broken.tif" in res.stderr
    (data / "broken.tif").unlink()
    res = _cli(
        "evaluate",
        str(model),
        str(data),
        "--out",
        str(tmp_path / "ev"),
        "--testers",
        "2",
        "--bootstrap",
        "10",
        "--device",
        "cpu",
        "--study-set",
        str(tmp_path / "study"),
    )
    assert res.returncode == 0, res.stderr
    assert "SROCC" in res.stdout and (tmp_path / "ev" / "metrics.json").is_file()
    # Where the study set went, and no raw Python warnings (one clear note in the report).
    assert f"wrote the study set: {tmp_path / 'study' / 'study.csv'}" in res.stderr
    assert "Warning" not in res.stderr, res.stderr
    res = _cli("evaluate", str(model), str(data), "--testers", "2", "--bootstrap", "10", "--json")
    assert res.returncode == 0, res.stderr
    metrics = json.loads(res.stdout)  # the metrics only: no report text
    assert metrics == json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert "evaluate" not in res.stderr  # and no progress lines
    (data / "img003.tif").write_bytes(b"truncated")  # listed in the manifest
    res = _cli(
        "evaluate", str(model), str(data), "--testers", "2", "--bootstrap", "10", "--device", "cpu"
    )
    assert res.returncode == 1 and "SROCC" in res.stdout and "img003.tif" in res.stderr


def test_cli_bad_model_is_one_line_exit_2(tmp_path: Path) -> None:
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"xx")
    image = tmp_path / "x.tif"
    tifffile.imwrite(image, np.arange(1024, dtype=np.uint16).reshape(32, 32))
    res = _cli("score", str(image), "--model", str(bad))
    assert res.returncode == 2
    assert "bad.pt" in res.stderr and len(res.stderr.strip().splitlines()) == 1


def _replay_schedule(
    val: list[float], drop_patience: int, drops_max: int, lr0: float
) -> list[float]:
    """The learning rate each epoch should have had, replayed from the validation curve."""
    lrs, lr, best, bad, drops = [], lr0, float("inf"), 0, 0
    for v in val:
        if bad >= drop_patience and drops < drops_max:
            lr, bad, drops = lr * 0.1, 0, drops + 1
        lrs.append(lr)
        if v < best:
            best, bad = v, 0
        else:
            bad += 1
    return lrs


def test_learning_rate_drops_follow_the_validation_curve_and_survive_resume(
    tmp_path: Path,
) -> None:
    data = make_dataset(tmp_path / "data", n=40)
    cfg = {"lr_drop_patience": 1, "max_lr_drops": 2, "patience": 3, "seed": 1}
    full = train(data, tmp_path / "full.pt", _cfg(max_epochs=14, **cfg))
    val = [h["val_rmse"] for h in full.history]
    lrs = [h["lr"] for h in full.history]
    assert lrs == pytest.approx(_replay_schedule(val, 1, 2, 0.01))
    assert lrs[-1] == pytest.approx(1e-4)  # both drops happened on this seed
    # Early stopping waits for the last drop, then counts its own patience.
    if full.stopped_early:
        last_drop_epoch = lrs.index(lrs[-1]) + 1
        assert full.epochs_run == max(full.best_epoch, last_drop_epoch - 1) + 3
    rows = list(csv.DictReader(paths_beside(tmp_path / "full.pt")["curves_csv"].open()))
    assert [float(r["lr"]) for r in rows] == pytest.approx(lrs)
    assert load_checkpoint(tmp_path / "full.pt").training["lr_drops"] == 2

    # Interrupted after a drop and resumed: the same run.
    first_drop = next(i for i, lr in enumerate(lrs) if lr < 0.01) + 1
    part = tmp_path / "part.pt"
    train(data, part, _cfg(max_epochs=first_drop + 1, **cfg))
    resumed = train(data, part, _cfg(max_epochs=14, **cfg), resume=paths_beside(part)["resume"])
    assert [h["val_rmse"] for h in resumed.history] == val


@pytest.mark.parametrize(
    ("field", "value", "match"),
    [
        ("lr_drop_factor", 1.0, "lr_drop_factor"),
        ("lr_drop_factor", 0.0, "lr_drop_factor"),
        ("lr_drop_patience", -1, "lr_drop_patience"),
        ("max_lr_drops", -2, "max_lr_drops"),
        ("count_scaling", "sqrt", "unknown count scaling 'sqrt'"),
    ],
)
def test_bad_schedule_is_refused_by_name(
    tmp_path: Path, field: str, value: float, match: str
) -> None:
    data = make_dataset(tmp_path / "data", n=12)
    with pytest.raises(DataError, match=match):
        train(data, tmp_path / "m.pt", _cfg(**{field: value}))


def test_a_run_that_stopped_early_continues_with_a_new_schedule(tmp_path: Path) -> None:
    """Drops after as many bad epochs as early stopping waits: resuming the stopped paper-recipe
    run with that schedule is the same computation as running with it from the start."""
    import shutil

    data = make_dataset(tmp_path / "data", n=40)
    paper = train(data, tmp_path / "paper.pt", _cfg(max_epochs=40, patience=2, seed=3))
    assert paper.stopped_early
    assert {h["lr"] for h in paper.history} == {0.01}
    stopped_state = tmp_path / "stopped.resume.pt"
    shutil.copy(paths_beside(tmp_path / "paper.pt")["resume"], stopped_state)
    schedule = _cfg(max_epochs=40, patience=2, seed=3, lr_drop_patience=2, max_lr_drops=1)

    continued = train(data, tmp_path / "paper.pt", schedule, stopped_state, new_schedule=True)
    whole = train(data, tmp_path / "whole.pt", schedule)

    def strip(history: list[dict[str, float]]) -> list[dict[str, float]]:
        return [{k: v for k, v in h.items() if k != "seconds"} for h in history]

    assert strip(continued.history) == strip(whole.history)
    assert len(whole.history) > len(paper.history)
    assert whole.history[len(paper.history)]["lr"] == pytest.approx(0.001)
    # Without new_schedule a resume keeps the stored schedule (none): still stopped.
    kept = train(data, tmp_path / "kept.pt", schedule, stopped_state)
    assert strip(kept.history) == strip(paper.history)


def test_anscombe_scaling_trains_and_is_stored(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", n=12)
    train(data, tmp_path / "m.pt", _cfg(max_epochs=1, count_scaling="anscombe"))
    norm = load_checkpoint(tmp_path / "m.pt").normalization
    assert norm.scaling == "anscombe"
    # The statistics are those of the scaled training images, not of the raw counts.
    assert 0.005 < norm.mean < 0.2


def test_train_rmse_is_over_the_training_images(tmp_path: Path) -> None:
    """The epoch's train RMSE divided the squared errors by the test split's size once per
    batch (a loop variable left over from writing split.csv). With lr 0 and one batch it is
    the untrained network's training-mode RMSE on the training images."""
    import torch

    from stedloop.quality.dataset import load_images
    from stedloop.quality.model import QualityNet
    from stedloop.quality.train import _to_input

    data = make_dataset(tmp_path / "data", n=24)
    out = tmp_path / "m.pt"
    result = train(data, out, _cfg(max_epochs=1, lr=0.0, batch_size=100, augment=False, seed=2))
    rows = list(csv.DictReader(paths_beside(out)["split_csv"].open()))
    train_rows = [r for r in rows if r["split"] == "train"]
    items = {it.relpath: it for it in load_dataset(data)}
    images = load_images([items[r["path"]] for r in train_rows], SIZE)
    x = _to_input(images, load_checkpoint(out).normalization)
    y = torch.tensor([float(r["score"]) for r in train_rows])
    torch.manual_seed(2)  # the run's initial weights
    model = QualityNet(SIZE).train()
    with torch.no_grad():
        expected = float(torch.sqrt(torch.mean((model(x) - y) ** 2)))
    assert result.history[0]["train_rmse"] == pytest.approx(expected, abs=1e-5)
