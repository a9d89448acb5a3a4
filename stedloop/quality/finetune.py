"""Starting a training run from an existing checkpoint: fine-tuning on a lab's own labels.

A lab that labelled 100–300 of its own frames cannot train the network from scratch (that
takes thousands of labels), but it can adapt a trained one (``stedloop train DIR --init
MODEL.pt``). What this module decides:

- **Weights** start from the init checkpoint, and so does its **normalisation** (count
  scaling, mean, std): the network keeps reading counts the way it learned to. Recomputing
  the z-score on ~100 new frames would shift every input the early layers see, undoing the
  very features being reused; ``renormalize`` asks for it explicitly.
- **Frozen blocks** (``freeze_layers`` = N): the first N conv blocks (conv, batch norm, ELU,
  pool) keep their weights *and* their batch-norm running statistics. The statistics stay
  because a frozen block is then exactly the init's function, so the trained later layers
  see the same features at training and at scoring time, and the file's frozen tensors are
  bit-identical to the init's (checkable). Re-estimating them on the new frames instead
  (adaptive batch norm) would silently change what a "frozen" block computes. Frozen blocks
  therefore run in evaluation mode throughout training and are skipped by the batch-norm
  recalibration.
- **Provenance**: the checkpoint's training metadata names the init file and its sha256.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from torch import nn

from stedloop.errors import DataError
from stedloop.quality.checkpoint import Checkpoint, CheckpointError, load_checkpoint
from stedloop.quality.model import CONV_WIDTHS, QualityNet

#: Defaults of `stedloop train --init` (measured: benchmarks/bench_finetune.py, RESULTS.md).
FINE_TUNE_LR = 0.001
FINE_TUNE_BATCH_SIZE = 16
FINE_TUNE_PATIENCE = 20  # epochs of 3-15 small steps, validated on 10-60 frames: noisy
FINE_TUNE_VAL_FRACTION = 0.2
FINE_TUNE_TEST_FRACTION = 0.0
N_CONV_BLOCKS = len(CONV_WIDTHS)
SHIPPED = "shipped"  # `--init shipped`: the model that comes with stedloop


@dataclass(frozen=True)
class InitModel:
    """A checkpoint to start from, with what identifies its file."""

    checkpoint: Checkpoint
    path: Path
    sha256: str

    def provenance(self) -> dict[str, Any]:
        """What the new checkpoint records about where it started."""
        return {
            "file": self.path.name,
            "path": str(self.path),
            "sha256": self.sha256,
            "created_at": self.checkpoint.training.get("created_at"),
            "normalization": self.checkpoint.normalization.as_dict(),
        }


def file_sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with Path(path).open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def init_path(text: str | Path) -> Path:
    """The file ``--init`` names: ``shipped`` is the shipped model (``./shipped`` a file).
    Pass the text as typed: ``Path("./shipped")`` prints as ``shipped``."""
    if isinstance(text, str) and text == SHIPPED:
        from stedloop.quality import shipped_model_path

        return shipped_model_path()
    return Path(text)


def load_init(path: Path) -> InitModel:
    """The checkpoint at ``path``; a CheckpointError saying ``--init`` and why otherwise."""
    path = Path(path)
    try:
        ckpt = load_checkpoint(path)
    except CheckpointError as exc:
        raise CheckpointError(f"--init {exc}") from None
    return InitModel(ckpt, path, file_sha256(path))


def check_freeze_layers(n_blocks: int) -> int:
    if not 0 <= n_blocks <= N_CONV_BLOCKS:
        raise DataError(
            f"--freeze-layers must be 0..{N_CONV_BLOCKS} (the network has {N_CONV_BLOCKS} "
            f"conv blocks), got {n_blocks}"
        )
    return n_blocks


def conv_blocks(model: QualityNet) -> list[list[nn.Module]]:
    """The modules of each conv block (conv, [batch norm], ELU, pool), in order."""
    blocks: list[list[nn.Module]] = []
    for module in model.features:
        if isinstance(module, nn.Conv2d):
            blocks.append([])
        blocks[-1].append(module)
    return blocks


def frozen_parameter_names(model: QualityNet, n_blocks: int) -> list[str]:
    """State-dict keys (weights and batch-norm statistics) of the first ``n_blocks`` blocks."""
    frozen = {id(m) for block in conv_blocks(model)[:n_blocks] for m in block}
    names = []
    for prefix, module in model.named_modules():
        if id(module) in frozen:
            names += [f"{prefix}.{key}" for key in module.state_dict()]
    return names


def freeze_blocks(model: QualityNet, n_blocks: int) -> list[nn.Module]:
    """Stop the first ``n_blocks`` conv blocks learning; return their modules, which must
    stay in evaluation mode (see :func:`train_mode`)."""
    check_freeze_layers(n_blocks)
    modules = [m for block in conv_blocks(model)[:n_blocks] for m in block]
    for module in modules:
        for param in module.parameters():
            param.requires_grad_(False)
    return modules


def train_mode(model: nn.Module, frozen: Iterable[nn.Module]) -> None:
    """Training mode, except frozen modules: their batch norm uses (and keeps) the stored
    running statistics instead of each batch's."""
    model.train()
    for module in frozen:
        module.eval()
