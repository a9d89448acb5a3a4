"""Quality-network checkpoints: weights plus everything needed to use them correctly.

A checkpoint is a ``torch.save`` dict loaded with ``weights_only=True`` (no pickled code):

- ``format`` / ``format_version``: what this file is;
- ``architecture``: name, version and input size of :class:`QualityNet`;
- ``normalization``: how counts are scaled to [0, 1] (``scaling``: ``linear`` = 1/65535, the
  paper's; ``anscombe``; files without the key are linear) and the training set's scalar
  mean and std after that scaling (the z-score applied to every input);
- ``state_dict``: weights, floating point stored as fp16 to keep the file small;
- ``train_labels``: the training labels (for the paper's random baseline);
- ``training``: free-form metadata (seed, data, epochs, metrics, versions).

Loading refuses anything missing or mismatched with a :class:`CheckpointError` naming the file.
"""

from __future__ import annotations

import math
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from stedloop.errors import DataError
from stedloop.quality.model import ARCHITECTURE_NAME, ARCHITECTURE_VERSION, QualityNet
from stedloop.quality.photon_scale import check_photon_scale
from stedloop.quality.preprocess import check_count_scaling

CHECKPOINT_FORMAT = "stedloop-quality-checkpoint"
CHECKPOINT_FORMAT_VERSION = 1


class CheckpointError(DataError):
    """A quality-network checkpoint is missing, unreadable or does not match this code."""


@dataclass(frozen=True)
class Normalization:
    """Count scaling to [0, 1] (``preprocess.scale_counts``), then a scalar z-score."""

    mean: float
    std: float
    scaling: str = "linear"
    photon_scale: str = "none"  # or "estimated": each image to photons first

    def __post_init__(self) -> None:
        if not (math.isfinite(self.mean) and math.isfinite(self.std) and self.std > 0):
            raise ValueError(f"bad normalisation mean={self.mean!r} std={self.std!r}")
        check_count_scaling(self.scaling)
        check_photon_scale(self.photon_scale)

    def as_dict(self) -> dict[str, Any]:
        return {
            "mean": float(self.mean),
            "std": float(self.std),
            "scale": 65535.0,
            "scaling": self.scaling,
            "photon_scale": self.photon_scale,
        }


@dataclass
class Checkpoint:
    """A loaded (or about to be saved) quality model."""

    model: QualityNet
    normalization: Normalization
    train_labels: list[float] = field(default_factory=list)
    training: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def input_size_px(self) -> int:
        return self.model.input_size_px


def save_checkpoint(ckpt: Checkpoint, path: Path) -> Path:
    """Write ``ckpt`` to ``path`` (fp16 weights), atomically: temp file then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    state = {
        k: (v.detach().to("cpu", torch.float16) if v.is_floating_point() else v.detach().cpu())
        for k, v in ckpt.model.state_dict().items()
    }
    payload = {
        "format": CHECKPOINT_FORMAT,
        "format_version": CHECKPOINT_FORMAT_VERSION,
        "architecture": {
            "name": ARCHITECTURE_NAME,
            "version": ARCHITECTURE_VERSION,
            "input_size_px": ckpt.model.input_size_px,
        },
        "normalization": ckpt.normalization.as_dict(),
        "state_dict": state,
        "train_labels": [float(x) for x in ckpt.train_labels],
        "training": ckpt.training,
    }
    tmp = path.with_name(path.name + ".tmp")
    torch.save(payload, tmp)
    tmp.replace(path)
    return path


def read_torch_file(path: Path, what: str) -> Any:
    """``torch.load`` of a file ``torch.save`` wrote (weights only), or a CheckpointError
    saying in one line why not. ``torch.save`` writes a zip archive: anything else (a TIFF, a
    text file) is named as such, instead of the unpickler's "pop from empty list"."""
    try:
        is_archive = zipfile.is_zipfile(path)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read {what} ({exc.strerror or exc})") from None
    if not is_archive:
        raise CheckpointError(
            f"{path}: not a {what} (not a file written by torch.save, as `stedloop train` does)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for damaged or foreign archives
        raise CheckpointError(f"{path}: cannot read {what} ({_load_failure(exc)})") from None


def _load_failure(exc: Exception) -> str:
    """The useful line of a torch.load error (its first lines are advice about weights_only)."""
    text = str(exc)
    marker = "WeightsUnpickler error:"
    if marker in text:
        detail = text.split(marker, 1)[1].strip().splitlines()
        return "it holds objects other than weights: " + (detail[0] if detail else "?")[:160]
    lines = text.strip().splitlines()
    return (lines[0] if lines else type(exc).__name__)[:160]


def _require(payload: dict[str, Any], key: str, path: Path) -> Any:
    if key not in payload:
        raise CheckpointError(f"{path}: not a valid quality checkpoint (missing '{key}')")
    return payload[key]


def load_checkpoint(path: Path) -> Checkpoint:
    """Read a checkpoint, refusing missing fields and other architectures by name."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: quality model file not found")
    payload = read_torch_file(path, "quality checkpoint")
    if not isinstance(payload, dict):
        raise CheckpointError(f"{path}: not a quality checkpoint (not a dict)")
    if payload.get("format") != CHECKPOINT_FORMAT:
        raise CheckpointError(
            f"{path}: not a stedloop quality checkpoint (format={payload.get('format')!r})"
        )
    version = _require(payload, "format_version", path)
    if version != CHECKPOINT_FORMAT_VERSION:
        raise CheckpointError(
            f"{path}: checkpoint format version {version} is not supported "
            f"(this stedloop reads {CHECKPOINT_FORMAT_VERSION})"
        )
    arch = _require(payload, "architecture", path)
    if not isinstance(arch, dict):
        raise CheckpointError(f"{path}: 'architecture' must be a table")
    if arch.get("name") != ARCHITECTURE_NAME or arch.get("version") != ARCHITECTURE_VERSION:
        raise CheckpointError(
            f"{path}: architecture {arch.get('name')!r} v{arch.get('version')} does not match "
            f"this stedloop's {ARCHITECTURE_NAME!r} v{ARCHITECTURE_VERSION}"
        )
    size = arch.get("input_size_px")
    if not isinstance(size, int) or size < 8:
        raise CheckpointError(f"{path}: bad or missing architecture input_size_px {size!r}")
    norm = _require(payload, "normalization", path)
    try:
        normalization = Normalization(
            float(norm["mean"]),
            float(norm["std"]),
            str(norm.get("scaling", "linear")),
            str(norm.get("photon_scale", "none")),  # files before it took counts as photons
        )
        if float(norm.get("scale", 65535.0)) != 65535.0:
            raise ValueError("only scale 65535 is supported")
    except (KeyError, TypeError, ValueError, DataError) as exc:
        raise CheckpointError(f"{path}: bad normalisation statistics ({exc})") from exc
    state = _require(payload, "state_dict", path)
    model = QualityNet(input_size_px=size)
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"{path}: weights do not match the architecture "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for key, tensor in expected.items():
        if tuple(state[key].shape) != tuple(tensor.shape):
            raise CheckpointError(
                f"{path}: weight {key} has shape {tuple(state[key].shape)}, "
                f"expected {tuple(tensor.shape)}"
            )
    model.load_state_dict({k: v.to(expected[k].dtype) for k, v in state.items()})
    for key, tensor in model.state_dict().items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise CheckpointError(f"{path}: weight {key} holds NaN or infinite values")
    model.eval()
    labels = payload.get("train_labels", [])
    training = payload.get("training", {})
    return Checkpoint(
        model=model,
        normalization=normalization,
        train_labels=[float(x) for x in labels],
        training=dict(training) if isinstance(training, dict) else {},
        path=path,
    )
