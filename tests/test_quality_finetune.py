"""Fine-tuning (`stedloop train --init`) on tiny 32-px data sets: seconds, real files."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest
import torch
from cli_helpers import run_stedloop
from test_quality_train import SIZE, _cfg, make_dataset

from stedloop.errors import DataError
from stedloop.quality.checkpoint import load_checkpoint, save_checkpoint
from stedloop.quality.dataset import stratified_split
from stedloop.quality.finetune import conv_blocks, frozen_parameter_names
from stedloop.quality.model import QualityNet
from stedloop.quality.train import paths_beside, train


@pytest.fixture(scope="module")
def init_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A from-scratch model to start from (1 epoch is enough: only its bits matter)."""
    folder = tmp_path_factory.mktemp("init")
    out = folder / "init.pt"
    train(make_dataset(folder / "data", n=16), out, _cfg(max_epochs=1, count_scaling="anscombe"))
    return out


def _brighter_dataset(folder: Path, n: int = 20) -> Path:
    """Another "microscope": the same kind of frames with 3x the counts, so statistics
    recomputed on it would differ from the init model's."""
    import tifffile

    data = make_dataset(folder, n=n, seed=7)
    for path in data.glob("*.tif"):
        tifffile.imwrite(path, (tifffile.imread(path).astype(np.uint32) * 3).astype(np.uint16))
    return data


def test_init_keeps_normalisation_names_the_init_and_frozen_blocks_stay_bit_identical(
    tmp_path: Path, init_model: Path
) -> None:
    data = _brighter_dataset(tmp_path / "new")
    out = tmp_path / "tuned.pt"
    result = train(
        data,
        out,
        _cfg(max_epochs=2, lr=0.01, freeze_layers=2, count_scaling="anscombe"),
        init=init_model,
    )
    start, tuned = load_checkpoint(init_model), load_checkpoint(out)

    assert tuned.normalization == start.normalization
    recomputed = train(
        data,
        tmp_path / "renorm.pt",
        _cfg(max_epochs=1, count_scaling="anscombe", renormalize=True),
        init=init_model,
    )
    assert recomputed.model_path.is_file()
    assert load_checkpoint(tmp_path / "renorm.pt").normalization != start.normalization

    named = tuned.training["init"]
    assert named["file"] == "init.pt"
    assert named["sha256"] == hashlib.sha256(init_model.read_bytes()).hexdigest()
    assert tuned.training["normalization_source"] == "init"
    assert tuned.training["config"]["freeze_layers"] == 2

    # Frozen: the first two conv blocks' weights and batch-norm statistics, in the file
    # written and in the weights of the last epoch (not only the best, which may be epoch 0).
    frozen = frozen_parameter_names(start.model, 2)
    assert "features.4.running_mean" in frozen and "features.7.weight" not in frozen
    last = torch.load(paths_beside(out)["resume"], weights_only=True)["model"]
    init_state, tuned_state = start.model.state_dict(), tuned.model.state_dict()
    for key in frozen:
        assert torch.equal(tuned_state[key], init_state[key]), key
        assert torch.equal(last[key].cpu(), init_state[key]), key
    learned = [k for k in init_state if k not in frozen and init_state[k].is_floating_point()]
    assert any(not torch.equal(last[k].cpu(), init_state[k]) for k in learned)
    assert [h["epoch"] for h in result.history] == [0, 1, 2]
    assert result.epochs_run == 2


def test_epoch_zero_is_the_init_model_and_is_kept_unless_beaten(
    tmp_path: Path, init_model: Path
) -> None:
    data = _brighter_dataset(tmp_path / "new")
    result = train(
        data, tmp_path / "t.pt", _cfg(max_epochs=3, count_scaling="anscombe"), init=init_model
    )
    first = result.history[0]
    assert first["epoch"] == 0 and first["lr"] == 0.0
    val = [h["val_rmse"] for h in result.history]
    assert result.best_val_rmse == pytest.approx(min(val), abs=1e-6)
    tuned = load_checkpoint(tmp_path / "t.pt").model.state_dict()
    init = load_checkpoint(init_model).model.state_dict()
    same = all(torch.equal(tuned[k], init[k]) for k in init)
    # Whichever way this seed goes: the init is kept exactly when no epoch beat it.
    assert same == (result.best_epoch == 0)
    assert same or result.best_val_rmse < first["val_rmse"]


def test_resumed_fine_tuning_keeps_init_normalisation_and_provenance(
    tmp_path: Path, init_model: Path
) -> None:
    data = _brighter_dataset(tmp_path / "new")
    out = tmp_path / "t.pt"
    cfg = _cfg(max_epochs=1, freeze_layers=3, count_scaling="anscombe")
    train(data, out, cfg, init=init_model)
    train(data, out, _cfg(max_epochs=2), resume=paths_beside(out)["resume"])
    start, tuned = load_checkpoint(init_model), load_checkpoint(out)
    assert tuned.training["epochs_run"] == 2
    assert tuned.normalization == start.normalization
    assert tuned.training["init"]["file"] == "init.pt"
    assert tuned.training["config"]["freeze_layers"] == 3
    for key in frozen_parameter_names(start.model, 3):
        assert torch.equal(tuned.model.state_dict()[key], start.model.state_dict()[key]), key


def test_init_of_another_input_size_or_scaling_is_refused(tmp_path: Path, init_model: Path) -> None:
    data = make_dataset(tmp_path / "new", n=12, size=40)
    with pytest.raises(DataError, match="reads 32 px inputs"):
        train(
            data,
            tmp_path / "t.pt",
            _cfg(input_size_px=40, count_scaling="anscombe"),
            init=init_model,
        )
    with pytest.raises(DataError, match="anscombe count scaling"):
        train(data, tmp_path / "t.pt", _cfg(count_scaling="linear"), init=init_model)
    with pytest.raises(DataError, match="need an --init"):
        train(data, tmp_path / "t.pt", _cfg(freeze_layers=1))


def test_freeze_layers_counts_the_six_conv_blocks() -> None:
    model = QualityNet(SIZE)
    blocks = conv_blocks(model)
    assert len(blocks) == 6
    assert all(isinstance(block[0], torch.nn.Conv2d) for block in blocks)
    assert frozen_parameter_names(model, 0) == []
    assert len(frozen_parameter_names(model, 6)) == len(
        [k for k in model.state_dict() if k.startswith("features.")]
    )


def test_a_test_fraction_of_zero_gives_no_test_split() -> None:
    scores = list(np.linspace(0, 1, 50))
    train_idx, val, test = stratified_split(scores, 0, (0.8, 0.2, 0.0))
    assert test == [] and len(val) == 10 and len(train_idx) == 40
    assert stratified_split(scores, 0) == stratified_split(scores, 0, (0.8, 0.1, 0.1))


def test_cli_fine_tunes_with_its_defaults(tmp_path: Path, init_model: Path) -> None:
    data = _brighter_dataset(tmp_path / "new", n=20)
    out = tmp_path / "tuned.pt"
    res = run_stedloop(
        "train", str(data), "--out", str(out), "--init", str(init_model), "--freeze-layers", "1",
        "--epochs", "1", "--device", "cpu", "--threads", "1",
        timeout_s=120,
    )  # fmt: skip
    assert res.returncode == 0, res.stderr
    assert "from init.pt" in res.stderr and "epoch 0 (the init model)" in res.stderr
    training = load_checkpoint(out).training
    assert training["config"]["lr"] == 0.001
    assert training["config"]["batch_size"] == 16
    assert training["config"]["patience"] == 20
    assert training["config"]["input_size_px"] == SIZE
    assert training["config"]["count_scaling"] == "anscombe"
    assert training["split_sizes"] == {"train": 16, "val": 4, "test": 0}
    assert training["init"]["sha256"] == hashlib.sha256(init_model.read_bytes()).hexdigest()


def _other_architecture(tmp_path: Path, init_model: Path) -> Path:
    payload = torch.load(init_model, weights_only=True)
    payload["architecture"]["version"] = 99
    path = tmp_path / "v99.pt"
    torch.save(payload, path)
    return path


def _wider_head(tmp_path: Path, init_model: Path) -> Path:
    ckpt = load_checkpoint(init_model)
    ckpt.model = QualityNet(128)  # same name and version, weights of another shape
    path = save_checkpoint(ckpt, tmp_path / "wide.pt")
    payload = torch.load(path, weights_only=True)
    payload["architecture"]["input_size_px"] = SIZE
    torch.save(payload, path)
    return path


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda tmp, init: tmp / "missing.pt", "not found"),
        (lambda tmp, init: _write(tmp / "notes.pt", b"not a model"), "not a quality checkpoint"),
        (lambda tmp, init: _other_archive(tmp / "other.pt"), "not a stedloop quality checkpoint"),
        (_other_architecture, "does not match"),
        (_wider_head, "expected"),
    ],
    ids=["missing", "not-torch", "other-torch-file", "other-architecture", "other-shapes"],
)
def test_cli_bad_init_is_one_line_exit_2(tmp_path: Path, init_model: Path, make, says: str) -> None:
    data = make_dataset(tmp_path / "data", n=12)
    bad = make(tmp_path, init_model)
    res = run_stedloop("train", str(data), "--out", str(tmp_path / "t.pt"), "--init", str(bad))
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1, res.stderr
    assert lines[0].startswith("error: --init") and bad.name in lines[0] and says in lines[0]
    assert not (tmp_path / "t.pt").exists()


def _write(path: Path, content: bytes) -> Path:
    path.write_bytes(content)
    return path


def _other_archive(path: Path) -> Path:
    torch.save({"weights": torch.zeros(3)}, path)
    return path


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--freeze-layers", "7"], "--freeze-layers must be 0..6"),
        (["--freeze-layers", "-1"], "--freeze-layers must be 0..6"),
        (["--no-init", "--freeze-layers", "2"], "need --init"),
        (["--input-size", "64"], "reads 32 px inputs"),
        (["--val-fraction", "0"], "--val-fraction must lie in (0, 1)"),
        (["--val-fraction", "0.5", "--test-fraction", "0.45"], "at least 10 %"),
    ],
)
def test_cli_refuses_bad_fine_tuning_options(
    tmp_path: Path, init_model: Path, args: list[str], says: str
) -> None:
    data = make_dataset(tmp_path / "data", n=12)
    init = [] if "--no-init" in args else ["--init", str(init_model)]
    args = [a for a in args if a != "--no-init"]
    res = run_stedloop("train", str(data), "--out", str(tmp_path / "t.pt"), *init, *args)
    assert res.returncode == 2, res.stderr
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and says in lines[0], res.stderr


def test_init_shipped_names_the_shipped_model() -> None:
    from stedloop.quality import shipped_model_path
    from stedloop.quality.finetune import init_path

    assert init_path("shipped") == shipped_model_path()
    assert init_path("./shipped") != shipped_model_path()
    assert init_path(Path("m.pt")) == Path("m.pt")
