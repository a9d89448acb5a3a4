"""Training-only augmentation: the 8 symmetries of the square (flips and 90° rotations).

They keep pixel size and noise statistics intact, so the label stays valid.
"""

from __future__ import annotations

import torch


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Apply symmetry ``k`` in 0..7 (rotate by k%4 quarter turns, then flip if k >= 4)."""
    y = torch.rot90(x, k % 4, dims=(-2, -1))
    return torch.flip(y, dims=(-1,)) if k >= 4 else y


def random_symmetries(n: int, generator: torch.Generator) -> torch.Tensor:
    """``n`` random symmetry numbers in 0..7: drawn for a whole global batch, so that processes
    sharing it (see :mod:`stedloop.quality.data_parallel`) draw alike and each applies its share."""
    return torch.randint(0, 8, (n,), generator=generator)


def apply_symmetries(batch: torch.Tensor, ks: torch.Tensor) -> torch.Tensor:
    """Image i of a (N, C, H, W) batch gets symmetry ``ks[i]``."""
    return torch.stack([dihedral(img, int(k)) for img, k in zip(batch, ks, strict=True)])


def random_dihedral(batch: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Each image of a (N, C, H, W) batch gets its own random symmetry."""
    return apply_symmetries(batch, random_symmetries(batch.shape[0], generator))
