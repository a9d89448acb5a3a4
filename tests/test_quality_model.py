"""The quality network, its checkpoints and the scorer (tiny 32-px models for speed)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch

from stedloop.errors import DataError, StedloopError
from stedloop.quality import scorer as scorer_module
from stedloop.quality.checkpoint import (
    Checkpoint,
    CheckpointError,
    Normalization,
    load_checkpoint,
    save_checkpoint,
)
from stedloop.quality.model import QualityNet, count_parameters, pooled_size
from stedloop.quality.preprocess import scale_counts
from stedloop.quality.scorer import CNNScorer


def _tiny_ckpt(tmp_path: Path, size: int = 32) -> Path:
    torch.manual_seed(0)
    model = QualityNet(input_size_px=size)
    ckpt = Checkpoint(model, Normalization(mean=1e-4, std=5e-5), train_labels=[0.2, 0.5, 0.9])
    return save_checkpoint(ckpt, tmp_path / "tiny.pt")


def _images(n: int, size: int = 32, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.poisson(5.0, (size, size)).astype(np.uint16) for _ in range(n)]


def test_paper_architecture_size_and_shapes() -> None:
    model = QualityNet()
    assert pooled_size(224) == 4  # ceil-mode pooling: 224 -> 4 after six pools
    assert count_parameters(model) == 4_249_537  # ~4.25 M as in QUALITY.md
    model.eval()
    with torch.no_grad():
        out = model(torch.randn(3, 1, 224, 224))
    assert out.shape == (3,)  # (N,), not (N, 1): MSE must not broadcast
    assert ((out >= 0) & (out <= 1)).all()
    bn_layers = [m for m in model.features if isinstance(m, torch.nn.BatchNorm2d)]
    assert len(bn_layers) == 5  # all conv layers but the first


def test_checkpoint_roundtrip_is_fp16_and_keeps_stats(tmp_path: Path) -> None:
    path = _tiny_ckpt(tmp_path)
    raw = torch.load(path, weights_only=True)
    floats = [v for v in raw["state_dict"].values() if v.is_floating_point()]
    assert floats and all(v.dtype == torch.float16 for v in floats)
    ckpt = load_checkpoint(path)
    assert ckpt.input_size_px == 32
    assert ckpt.normalization == Normalization(1e-4, 5e-5)
    assert ckpt.train_labels == [0.2, 0.5, 0.9]


@pytest.mark.parametrize(
    ("mutate", "message"),
    [
        (lambda p: p.pop("normalization"), "missing 'normalization'"),
        (lambda p: p["architecture"].update(version=99), "does not match"),
        (lambda p: p["architecture"].update(input_size_px=96), "weight head"),
        (lambda p: p.update(format="something-else"), "not a stedloop quality checkpoint"),
        (lambda p: p["normalization"].update(std=0.0), "bad normalisation"),
        (lambda p: p["state_dict"].pop("head.7.bias"), "missing"),
        (lambda p: p["normalization"].update(scaling="log"), "unknown count scaling 'log'"),
    ],
)
def test_bad_checkpoints_name_the_file(tmp_path: Path, mutate, message: str) -> None:
    path = _tiny_ckpt(tmp_path)
    payload = torch.load(path, weights_only=True)
    mutate(payload)
    bad = tmp_path / "bad.pt"
    torch.save(payload, bad)
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(bad)
    assert str(bad) in str(info.value)
    assert message in str(info.value)


def test_corrupt_and_absent_checkpoint(tmp_path: Path) -> None:
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint at all")
    with pytest.raises(CheckpointError, match="junk.pt"):
        load_checkpoint(junk)
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "absent.pt")


def test_scorer_batches_match_single_and_are_in_range(tmp_path: Path) -> None:
    scorer = CNNScorer.from_checkpoint(_tiny_ckpt(tmp_path), device="cpu", batch_size=4)
    assert scorer.device == "cpu"
    images = _images(7)
    batched = scorer.score(images)
    single = np.array([scorer.score([im])[0] for im in images])
    assert batched.dtype == np.float64 and batched.shape == (7,)
    assert np.all((batched >= 0) & (batched <= 1))
    np.testing.assert_allclose(batched, single, atol=1e-5)
    assert len(set(np.round(batched, 6))) > 1  # not a constant output


def test_scorer_centre_crops_larger_and_refuses_smaller(tmp_path: Path) -> None:
    scorer = CNNScorer.from_checkpoint(_tiny_ckpt(tmp_path), device="cpu")
    base = _images(1, 32)[0]
    padded = np.zeros((40, 44), dtype=np.uint16)
    padded[4:36, 6:38] = base
    np.testing.assert_allclose(scorer.score([padded]), scorer.score([base]), atol=1e-6)
    with pytest.raises(DataError, match="smaller than"):
        scorer.score([base[:20, :]])


@pytest.mark.parametrize(
    ("image", "message"),
    [
        (np.full((32, 32), np.nan, dtype=np.float32), "NaN"),
        (np.full((32, 32), 7, dtype=np.uint16), "constant"),
        (np.ones((2, 32, 32), dtype=np.uint16), "2-D"),
        (np.ones((32, 32), dtype=np.complex64), "dtype"),
        (np.full((32, 32), -3.0), "outside"),
    ],
)
def test_scorer_refuses_bad_images(tmp_path: Path, image: np.ndarray, message: str) -> None:
    scorer = CNNScorer.from_checkpoint(_tiny_ckpt(tmp_path), device="cpu")
    with pytest.raises(DataError, match=message):
        scorer.score([_images(1)[0], image], names=["good.tif", "bad.tif"])
    with pytest.raises(DataError, match="bad.tif"):
        scorer.score([_images(1)[0], image], names=["good.tif", "bad.tif"])


def test_missing_shipped_model_is_a_clear_error(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.setattr(scorer_module, "shipped_model_path", lambda: tmp_path / "none.pt")
    with pytest.raises(StedloopError, match="no shipped quality model"):
        CNNScorer.from_checkpoint(None)


def test_from_config_uses_section(tmp_path: Path) -> None:
    from stedloop.config.schema import QualitySection

    section = QualitySection(model_path=_tiny_ckpt(tmp_path), device="cpu", batch_size=3)
    scorer = CNNScorer.from_config(section)
    assert scorer.batch_size == 3 and scorer.device == "cpu"
    assert scorer.score(_images(2)).shape == (2,)


def test_cuda_request_without_gpu_is_refused(tmp_path: Path) -> None:
    if torch.cuda.is_available():
        pytest.skip("a GPU is present")
    with pytest.raises(StedloopError, match="no CUDA GPU"):
        CNNScorer.from_checkpoint(_tiny_ckpt(tmp_path), device="cuda")


def test_count_scalings_map_counts_to_unit_range() -> None:
    counts = np.array([0.0, 1.0, 100.0, 65535.0])
    np.testing.assert_allclose(scale_counts(counts, "linear"), counts / 65535)
    stabilised = scale_counts(counts, "anscombe")
    assert stabilised[-1] == pytest.approx(1.0)
    assert np.all(np.diff(stabilised) > 0)
    # Three decades of brightness become under two.
    assert stabilised[2] / stabilised[1] < 10 < (counts[2] / counts[1])
    with pytest.raises(DataError, match="unknown count scaling 'sqrt'"):
        scale_counts(counts, "sqrt")


def test_the_scaling_is_stored_and_the_scorer_applies_it(tmp_path: Path) -> None:
    torch.manual_seed(0)
    norm = Normalization(mean=0.02, std=0.03, scaling="anscombe")
    path = save_checkpoint(Checkpoint(QualityNet(input_size_px=32), norm), tmp_path / "a.pt")
    ckpt = load_checkpoint(path)
    assert ckpt.normalization == norm
    images = _images(4)
    expected_input = (scale_counts(np.stack(images).astype(np.float64), "anscombe") - 0.02) / 0.03
    with torch.no_grad():
        expected = ckpt.model.float().eval()(
            torch.from_numpy(expected_input[:, None].astype(np.float32))
        )
    scores = CNNScorer.from_checkpoint(path, device="cpu").score(images)
    np.testing.assert_allclose(scores, expected.numpy(), atol=2e-3)
    # A file written before the key existed is linear.
    payload = torch.load(path, weights_only=True)
    del payload["normalization"]["scaling"]
    torch.save(payload, tmp_path / "old.pt")
    assert load_checkpoint(tmp_path / "old.pt").normalization.scaling == "linear"
