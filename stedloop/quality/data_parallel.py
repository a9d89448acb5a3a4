"""Training on several processes under ``torchrun``: torch.distributed data parallelism.

``torchrun --nproc-per-node N ... stedloop train ...`` starts N copies of the command with
``RANK``, ``WORLD_SIZE`` and ``LOCAL_RANK`` set; :func:`ranks_from_environment` reads them
and :func:`process_group` joins the copies (NCCL on GPUs, one GPU per process; gloo on CPUs).
Without those variables (or with ``WORLD_SIZE`` 1) training is the single-process one.

How a global batch is shared (:class:`Ranks`): every process draws the same shuffle and the
same augmentation from the same seeded generator, cuts the same global batch of
``batch_size`` images and takes every N-th of them from its rank on (``batch[rank::N]``,
the stride torch's ``DistributedSampler`` uses). Each process scales its loss so that
DDP's gradient average is the gradient of the global batch's mean loss; the weights then
follow the single-process run's up to float rounding, given the same batch norm:

- on GPUs batch norm is ``SyncBatchNorm``: statistics over the whole global batch, as in a
  single process;
- torch's ``SyncBatchNorm`` runs on GPUs only, so on CPUs each process normalises its own
  ``batch_size / N`` images ("ghost" batch norm). A single process reproduces such a run
  with ``TrainConfig.batch_norm_groups = N`` (each global batch normalised in N strided
  parts, the same ones).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from stedloop.errors import ConfigError

ENV_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK")


@dataclass(frozen=True)
class Ranks:
    """This process's place among the training processes (``world_size`` 1: alone)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    sync_batch_norm: bool = False  # True under NCCL: statistics over the global batch

    @property
    def is_main(self) -> bool:
        """The process that writes files, logs and progress (rank 0)."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    @property
    def batch_norm_parts(self) -> int:
        """Into how many parts batch norm cuts a global batch (1: all of it together)."""
        return 1 if self.sync_batch_norm else self.world_size

    def shard(self, batch: torch.Tensor) -> torch.Tensor:
        """This process's share of a global batch (all of it when alone)."""
        return batch[self.rank :: self.world_size] if self.distributed else batch

    def usable(self, batch_len: int, groups: int = 1) -> bool:
        """Whether a global batch of ``batch_len`` images can be trained on: every process
        needs one image, and every batch-norm part two (it divides by the variance); a
        single process may cut its batch into ``groups`` parts itself. All processes decide
        alike, so none waits on a collective step the others skipped."""
        parts = groups * self.batch_norm_parts
        return batch_len >= self.world_size and batch_len // parts >= 2

    def all_sum(self, values: Sequence[float], device: str) -> list[float]:
        """The sums of ``values`` over all processes (the values themselves when alone)."""
        if not self.distributed:
            return [float(v) for v in values]
        tensor = torch.tensor(list(values), dtype=torch.float64, device=device)
        torch.distributed.all_reduce(tensor)
        return [float(v) for v in tensor.tolist()]


def ranks_from_environment(env: dict[str, str] | None = None) -> Ranks:
    """The ranks torchrun set in the environment; alone when they are absent."""
    env = dict(os.environ) if env is None else env
    present = [name for name in ENV_VARIABLES if name in env]
    if not present:
        return Ranks()
    if len(present) < len(ENV_VARIABLES):
        missing = ", ".join(n for n in ENV_VARIABLES if n not in env)
        raise ConfigError(
            f"torchrun environment incomplete: {missing} not set (start with torchrun)"
        )
    try:
        rank, world, local = (int(env[name]) for name in ENV_VARIABLES)
    except ValueError:
        shown = ", ".join(f"{n}={env[n]!r}" for n in ENV_VARIABLES)
        raise ConfigError(f"torchrun environment is not numeric: {shown}") from None
    if world < 1 or not 0 <= rank < world or local < 0:
        raise ConfigError(f"torchrun environment is inconsistent: RANK={rank} WORLD_SIZE={world}")
    return Ranks(rank=rank, world_size=world, local_rank=local)


@contextmanager
def process_group(ranks: Ranks, device: str) -> Iterator[Ranks]:
    """Join the other processes for the duration (NCCL for ``cuda``, gloo for ``cpu``) and
    yield the ranks with the batch-norm mode that backend allows; nothing when alone. A group
    someone else initialised (a caller's own launcher) is used and left open."""
    if not ranks.distributed:
        yield ranks
        return
    dist = torch.distributed
    if not dist.is_available():
        raise ConfigError("this torch build has no torch.distributed; cannot train under torchrun")
    if device == "cuda":
        count = torch.cuda.device_count()
        if ranks.local_rank >= count:
            raise ConfigError(
                f"torchrun started process {ranks.local_rank} on this machine but it has "
                f"{count} GPU(s): use --nproc-per-node {count} or fewer (one GPU per process)"
            )
        torch.cuda.set_device(ranks.local_rank)  # "cuda" then means this process's GPU
    backend = "nccl" if device == "cuda" else "gloo"
    own = not dist.is_initialized()
    if own:
        dist.init_process_group(backend=backend)
    elif dist.get_world_size() != ranks.world_size:
        raise ConfigError(
            f"the initialised process group has {dist.get_world_size()} processes, "
            f"WORLD_SIZE says {ranks.world_size}"
        )
    try:
        yield Ranks(
            ranks.rank, ranks.world_size, ranks.local_rank, sync_batch_norm=device == "cuda"
        )
    finally:
        if own:
            dist.destroy_process_group()


def backend_name(ranks: Ranks) -> str:
    """How the processes talk, for the training metadata."""
    if not ranks.distributed:
        return "none"
    return "nccl" if ranks.sync_batch_norm else "gloo"
