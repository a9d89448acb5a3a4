"""Training under torchrun: two gloo processes on the CPU against one process (real torchrun).

What "the same run" means here: torch's SyncBatchNorm runs on GPUs only, so on CPUs each of
the N processes normalises its own share of the global batch. A single process computes the
same thing with ``batch_norm_groups = N`` (each global batch normalised in the same N strided
parts); with the same seed, global batch, shuffle and augmentation the weights then agree up
to float rounding. Tolerance: 1e-5 on every fp32 weight and batch-norm statistic after two
epochs (weights are O(0.1-10); measured: 0.0, since two processes' gradients, scaled by powers
of two, sum in the same float operations as one process's two parts). The same float
operations matter: on this tiny set (batch-norm parts of 4 images, 1x1 px after the last
pool) rounding grows fast; one process on two threads instead of one already ends epoch 1
at validation RMSE 0.015 instead of 0.028. So every run here uses one thread. Whole-batch
batch norm (one process, one group) moves the weights by orders of magnitude more: checked
too, so that the comparison can tell the two apart.
"""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from test_quality_train import SIZE, make_dataset

from stedloop.errors import ConfigError, DataError
from stedloop.quality.checkpoint import load_checkpoint
from stedloop.quality.data_parallel import Ranks, ranks_from_environment
from stedloop.quality.finetune import frozen_parameter_names
from stedloop.quality.train import TrainConfig, paths_beside, train

WEIGHT_TOLERANCE = 1e-5
RMSE_TOLERANCE = 2e-6  # the curves are rounded to 6 decimals
LAUNCH_TIMEOUT_S = 180  # a hung rendezvous or collective fails the test instead of blocking it


@pytest.fixture
def one_thread() -> Iterator[None]:
    """The in-process runs on one thread, as the torchrun processes (``--threads 1``)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _torchrun(*args: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    """`torchrun --nproc-per-node 2 -m stedloop.cli.main train ...` on the CPU; its rendezvous
    on a free loopback port (port 0: the launcher binds one itself)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(name, None)
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nnodes",
        "1",
        "--nproc-per-node",
        "2",
        "--rdzv-backend",
        "c10d",
        "--rdzv-endpoint",
        "127.0.0.1:0",
        "--rdzv-id",
        uuid.uuid4().hex,
        "--max-restarts",
        "0",
        "-m",
        "stedloop.cli.main",
        "train",
        *args,
        "--input-size",
        str(SIZE),
        "--device",
        "cpu",
        "--threads",
        "1",
    ]
    return subprocess.run(
        command, capture_output=True, text=True, timeout=LAUNCH_TIMEOUT_S, cwd=cwd, env=env
    )


def _resume_state(model: Path) -> dict[str, Any]:
    state: dict[str, Any] = torch.load(paths_beside(model)["resume"], weights_only=True)
    return state


def _largest_difference(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> float:
    assert set(a) == set(b)
    return max(
        float((a[k].double() - b[k].double()).abs().max()) for k in a if a[k].is_floating_point()
    )


def _curves(history: list[dict[str, float]]) -> list[tuple[float, float, float]]:
    return [(h["train_rmse"], h["val_rmse"], h["lr"]) for h in history]


def _assert_same_curves(got: list[dict[str, float]], want: list[dict[str, float]]) -> None:
    assert [h["epoch"] for h in got] == [h["epoch"] for h in want]
    for g, w in zip(_curves(got), _curves(want), strict=True):
        assert g == pytest.approx(w, abs=RMSE_TOLERANCE)


def test_torchrun_two_processes_train_resume_and_fine_tune_as_one_process(
    tmp_path: Path, one_thread: None
) -> None:
    data = make_dataset(tmp_path / "data", n=24)
    common = ["--batch-size", "8", "--seed", "4"]
    cfg = {"input_size_px": SIZE, "batch_size": 8, "seed": 4, "device": "cpu"}
    root = Path(__file__).resolve().parent.parent

    # From scratch for one epoch, then resumed to two, both under torchrun.
    first = _torchrun(str(data), "-o", str(tmp_path / "ddp.pt"), "--epochs", "1", *common, cwd=root)
    assert first.returncode == 0, first.stderr[-3000:]
    resumed = _torchrun(
        str(data),
        "-o",
        str(tmp_path / "ddp.pt"),
        "--epochs",
        "2",
        "--resume",
        str(paths_beside(tmp_path / "ddp.pt")["resume"]),
        *common,
        cwd=root,
    )
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    # Rank 0 alone logs and reports; the other process says nothing.
    assert resumed.stdout.count("wrote ") == 1, resumed.stdout
    assert resumed.stderr.count("resuming after epoch 1") == 1, resumed.stderr[-3000:]
    assert resumed.stderr.count("epoch 2: train RMSE") == 1
    assert "2 processes (gloo), global batch 8 (4 per process)" in first.stderr

    alone = train(data, tmp_path / "one.pt", TrainConfig(max_epochs=2, batch_norm_groups=2, **cfg))
    ddp_state, one_state = _resume_state(tmp_path / "ddp.pt"), _resume_state(tmp_path / "one.pt")
    assert _largest_difference(ddp_state["model"], one_state["model"]) <= WEIGHT_TOLERANCE
    assert _largest_difference(ddp_state["best_model"], one_state["best_model"]) <= WEIGHT_TOLERANCE
    _assert_same_curves(ddp_state["history"], alone.history)
    assert torch.equal(ddp_state["generator"], one_state["generator"])  # same draws consumed

    # The same checkpoint format: no 'module.' prefixes, loads, and says how it was trained.
    ckpt = load_checkpoint(tmp_path / "ddp.pt")
    assert not any(k.startswith("module.") for k in ckpt.model.state_dict())
    assert ckpt.training["data_parallel"] == {
        "processes": 2,
        "backend": "gloo",
        "batch_norm": "per process",
    }
    assert ckpt.training["best_epoch"] == alone.best_epoch

    # Whole-batch batch norm is another computation: the comparison above can fail.
    whole = train(data, tmp_path / "whole.pt", TrainConfig(max_epochs=2, **cfg))
    assert _largest_difference(
        ddp_state["model"], _resume_state(tmp_path / "whole.pt")["model"]
    ) > (1000 * WEIGHT_TOLERANCE)
    assert _curves(whole.history) != _curves(alone.history)

    # Fine-tuning from that model with frozen blocks, under torchrun and alone.
    tuned = _torchrun(
        str(data),
        "-o",
        str(tmp_path / "tuned.pt"),
        "--init",
        str(tmp_path / "one.pt"),
        "--freeze-layers",
        "2",
        "--epochs",
        "2",
        *common,
        cwd=root,
    )
    assert tuned.returncode == 0, tuned.stderr[-3000:]
    init = load_checkpoint(tmp_path / "one.pt")
    tune_cfg = TrainConfig(
        max_epochs=2,
        batch_norm_groups=2,
        lr=0.001,
        patience=20,
        val_fraction=0.2,
        test_fraction=0.0,
        freeze_layers=2,
        **cfg,
    )
    tuned_alone = train(data, tmp_path / "tuned1.pt", tune_cfg, init=tmp_path / "one.pt")
    tuned_state = _resume_state(tmp_path / "tuned.pt")
    assert (
        _largest_difference(tuned_state["model"], _resume_state(tmp_path / "tuned1.pt")["model"])
        <= WEIGHT_TOLERANCE
    )
    _assert_same_curves(tuned_state["history"], tuned_alone.history)
    tuned_ckpt = load_checkpoint(tmp_path / "tuned.pt").model.state_dict()
    for key in frozen_parameter_names(init.model, 2):  # frozen blocks: the init's, bit for bit
        assert torch.equal(tuned_ckpt[key], init.model.state_dict()[key]), key


def test_single_process_batch_norm_groups_need_two_images_each(tmp_path: Path) -> None:
    data = make_dataset(tmp_path / "data", n=12)
    cfg = TrainConfig(input_size_px=SIZE, max_epochs=1, batch_size=5, device="cpu")
    with pytest.raises(DataError, match="batch size 5 is too small .* 3 batch-norm groups"):
        train(data, tmp_path / "m.pt", TrainConfig(**{**cfg.__dict__, "batch_norm_groups": 3}))
    with pytest.raises(DataError, match="batch_norm_groups must be >= 1"):
        train(data, tmp_path / "m.pt", TrainConfig(**{**cfg.__dict__, "batch_norm_groups": 0}))


def test_torchrun_environment_is_read_or_refused_in_one_line() -> None:
    assert ranks_from_environment({}) == Ranks()
    assert not ranks_from_environment(
        {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0"}
    ).distributed
    two = ranks_from_environment({"RANK": "1", "WORLD_SIZE": "2", "LOCAL_RANK": "1"})
    assert two.distributed and not two.is_main
    assert torch.equal(two.shard(torch.arange(7)), torch.tensor([1, 3, 5]))
    with pytest.raises(ConfigError, match="LOCAL_RANK not set"):
        ranks_from_environment({"RANK": "0", "WORLD_SIZE": "2"})
    with pytest.raises(ConfigError, match="inconsistent: RANK=2 WORLD_SIZE=2"):
        ranks_from_environment({"RANK": "2", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
    with pytest.raises(ConfigError, match="not numeric"):
        ranks_from_environment({"RANK": "x", "WORLD_SIZE": "2", "LOCAL_RANK": "0"})
