"""Training the quality network with the paper's recipe.

Defaults follow the paper: stratified 80/10/10 split, random flips/rotations on the training
split only, SGD (lr 0.01, momentum 0.9), batch 100, MSE loss on (N,) predictions, early
stopping after 10 epochs without validation improvement, best-validation weights kept.

Optional step decay (``lr_drop_patience`` > 0, off by default): after that many epochs without
validation gain the run goes back to its best weights, multiplies the learning rate by
``lr_drop_factor`` and carries on, at most ``max_lr_drops`` times; early stopping counts only
after the last drop. A smaller step late in training refines the best weights (the shipped
model: validation RMSE 0.0655 at lr 0.01, 0.0650 after the first drop).

Fine-tuning (``init``, :mod:`stedloop.quality.finetune`): the run starts from a checkpoint's
weights and keeps its normalisation; ``freeze_layers`` keeps the first conv blocks as they are.

Beside the model ``M.pt`` the run writes ``M.curves.csv`` / ``M.curves.png`` (train and
validation RMSE per epoch), ``M.split.csv`` (which image went where) and ``M.resume.pt``
(full state after every epoch: pass it to ``--resume`` to continue an interrupted run).

Under ``torchrun`` the run is data-parallel (:mod:`stedloop.quality.data_parallel`): the
processes share each global batch of ``batch_size`` images, only rank 0 writes files, logs
and progress, and the files are the same as a single process writes.
"""

from __future__ import annotations

import csv
import dataclasses
import datetime as dt
import math
import platform
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from stedloop.errors import DataError
from stedloop.quality.augment import apply_symmetries, random_symmetries
from stedloop.quality.checkpoint import (
    Checkpoint,
    CheckpointError,
    Normalization,
    read_torch_file,
    save_checkpoint,
)
from stedloop.quality.data_parallel import (
    Ranks,
    backend_name,
    process_group,
    ranks_from_environment,
)
from stedloop.quality.dataset import load_dataset, load_images, stratified_split
from stedloop.quality.device import resolve_device
from stedloop.quality.finetune import (
    InitModel,
    check_freeze_layers,
    freeze_blocks,
    load_init,
    train_mode,
)
from stedloop.quality.model import DEFAULT_INPUT_SIZE_PX, QualityNet
from stedloop.quality.photon_scale import check_photon_scale
from stedloop.quality.preprocess import check_count_scaling, scale_images

RESUME_FORMAT = "stedloop-quality-resume"


@dataclass
class TrainConfig:
    seed: int = 0
    max_epochs: int = 200
    patience: int = 10
    lr: float = 0.01
    momentum: float = 0.9
    batch_size: int = 100
    input_size_px: int = DEFAULT_INPUT_SIZE_PX
    device: str = "auto"
    precision: str = "fp32"  # "bf16": autocast (much faster on CPUs with AMX, and on GPUs)
    augment: bool = True
    count_scaling: str = "linear"  # or "anscombe" (preprocess.scale_counts)
    photon_scale: str = "none"  # or "estimated" (photon_scale.py)
    lr_drop_patience: int = 0  # 0: constant learning rate (the paper's recipe)
    lr_drop_factor: float = 0.1
    max_lr_drops: int = 2
    val_fraction: float = 0.1  # of the labelled images, stratified (the paper: 0.1)
    test_fraction: float = 0.1  # 0: no test split (test on a separately labelled set)
    freeze_layers: int = 0  # with an init model: its first N conv blocks are kept as they are
    renormalize: bool = False  # with an init model: recompute mean/std on the new images
    # > 1: batch norm normalises each batch in that many strided parts, as a gloo (CPU) run of
    # that many processes does; a single process reproduces such a run with it.
    batch_norm_groups: int = 1


SCHEDULE_FIELDS = ("lr_drop_patience", "lr_drop_factor", "max_lr_drops")


@dataclass
class TrainResult:
    model_path: Path
    best_epoch: int
    best_val_rmse: float
    epochs_run: int
    history: list[dict[str, float]] = field(default_factory=list)
    stopped_early: bool = False
    is_main: bool = True  # False in the other processes of a torchrun (they wrote nothing)


def paths_beside(model_path: Path) -> dict[str, Path]:
    stem = model_path.with_suffix("")
    return {
        "curves_csv": stem.with_name(stem.name + ".curves.csv"),
        "curves_png": stem.with_name(stem.name + ".curves.png"),
        "split_csv": stem.with_name(stem.name + ".split.csv"),
        "resume": stem.with_name(stem.name + ".resume.pt"),
    }


def mse_loss(pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """MSE that refuses shape mismatches ((N, 1) vs (N,) would broadcast to N x N)."""
    if pred.shape != target.shape:
        raise ValueError(f"prediction shape {tuple(pred.shape)} != target {tuple(target.shape)}")
    return torch.mean((pred.float() - target.float()) ** 2)


def _normalization(
    train_images: np.ndarray, scaling: str = "linear", photon_scale: str = "none"
) -> Normalization:
    scaled = scale_images(train_images.astype(np.float64), scaling, photon_scale)
    std = float(scaled.std())
    if not std > 0:
        raise DataError("training images have zero variance; cannot normalise")
    return Normalization(
        mean=float(scaled.mean()), std=std, scaling=scaling, photon_scale=photon_scale
    )


def _to_input(images: np.ndarray, norm: Normalization) -> torch.Tensor:
    x = (scale_images(images, norm.scaling, norm.photon_scale) - norm.mean) / norm.std
    return torch.from_numpy(x.astype(np.float32)).unsqueeze(1)


def _evaluate_rmse(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    device: str,
    batch: int,
    autocast: bool,
    ranks: Ranks | None = None,
) -> float:
    """RMSE of the evaluation-mode predictions; under torchrun each process scores its share."""
    ranks = ranks or Ranks()
    x, y = ranks.shard(x), ranks.shard(y)
    model.eval()
    preds = []
    with torch.inference_mode():
        for s in range(0, len(x), batch):
            xb = x[s : s + batch].to(device).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
                preds.append(model(xb).float().cpu())
    if not ranks.distributed:
        return float(torch.sqrt(mse_loss(torch.cat(preds), y)))
    sq_err = float(((torch.cat(preds) - y) ** 2).double().sum()) if preds else 0.0
    total, count = ranks.all_sum([sq_err, len(y)], device)
    return math.sqrt(total / count)


def recalibrate_batch_norm(
    model: nn.Module,
    x: torch.Tensor,
    device: str,
    batch: int,
    autocast: bool,
    generator: torch.Generator,
    max_images: int = 500,
    frozen: Sequence[nn.Module] = (),
    ranks: Ranks | None = None,
) -> None:
    """Recompute batch-norm running statistics with the current weights ("precise BN").

    With SGD at lr 0.01 and momentum 0.9 the weights move a lot within an epoch, so the
    running averages (momentum 0.1 over the epoch's ~10 batches) describe weights that no
    longer exist: evaluation-mode predictions then swing far from training-mode ones
    (validation RMSE 0.28 vs 0.10 measured on the same weights). A no-gradient pass over
    up to ``max_images`` training images with cumulative averaging fixes that, so the
    validation score (and the best-validation weights kept) reflect the model as used.
    Modules in ``frozen`` keep their statistics (see :mod:`stedloop.quality.finetune`).
    Under torchrun with ``SyncBatchNorm`` each process passes its share of every batch (the
    statistics are the whole batch's); with per-process batch norm (gloo) every process
    passes every batch, so that all hold the single-process statistics.
    """
    ranks = ranks or Ranks()
    kept = {id(m) for m in frozen}
    norms = [
        m
        for m in model.modules()
        if isinstance(m, nn.modules.batchnorm._BatchNorm) and id(m) not in kept
    ]
    if not norms:
        return
    saved = [m.momentum for m in norms]
    for m in norms:
        m.reset_running_stats()
        m.momentum = None  # cumulative average over the recalibration batches
    train_mode(model, frozen)
    order = torch.randperm(len(x), generator=generator)[:max_images]
    with torch.no_grad():
        for s in range(0, len(order), batch):
            idx = order[s : s + batch]
            if len(idx) < 2 or (ranks.sync_batch_norm and not ranks.usable(len(idx))):
                continue
            if ranks.sync_batch_norm:
                idx = ranks.shard(idx)
            xb = x[idx].to(device).contiguous(memory_format=torch.channels_last)
            with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
                model(xb)
    for m, momentum in zip(norms, saved, strict=True):
        m.momentum = momentum
    model.eval()


def write_curves(history: list[dict[str, float]], best_epoch: int, paths: dict[str, Path]) -> None:
    with paths["curves_csv"].open("w", newline="") as fh:
        writer = csv.DictWriter(
            fh, fieldnames=["epoch", "train_rmse", "val_rmse", "lr", "seconds"], restval=""
        )
        writer.writeheader()
        for row in history:
            writer.writerow(row)
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.5))
    epochs = [r["epoch"] for r in history]
    ax.plot(epochs, [r["train_rmse"] for r in history], label="train")
    ax.plot(epochs, [r["val_rmse"] for r in history], label="validation")
    ax.axvline(best_epoch, color="grey", linestyle="--", label=f"best (epoch {best_epoch})")
    ax.set_xlabel("epoch")
    ax.set_ylabel("RMSE")
    ax.legend()
    fig.tight_layout()
    fig.savefig(paths["curves_png"], dpi=100)
    plt.close(fig)


def train(
    data_dir: Path,
    out: Path,
    config: TrainConfig | None = None,
    resume: Path | None = None,
    progress: bool = False,
    log: Callable[[str], None] | None = None,
    new_schedule: bool = False,
    init: Path | InitModel | None = None,
    ranks: Ranks | None = None,
) -> TrainResult:
    """Train a quality network on the labelled images in ``data_dir``; write ``out``.

    With ``resume``, ``new_schedule`` takes the learning-rate schedule from ``config`` instead
    of the interrupted run: a run that stopped early then continues with its first drop.
    With ``init`` (a checkpoint, see :mod:`stedloop.quality.finetune`) training starts from
    its weights and keeps its normalisation, input size and count scaling.
    ``ranks``: this process's place in a data-parallel run; by default what torchrun's
    environment says (alone without it)."""
    cfg = config or TrainConfig()
    device = resolve_device(cfg.device)
    with process_group(ranks_from_environment() if ranks is None else ranks, device) as group:
        return _train(data_dir, out, cfg, resume, progress, log, new_schedule, init, group)


def _train(
    data_dir: Path,
    out: Path,
    cfg: TrainConfig,
    resume: Path | None,
    progress: bool,
    log: Callable[[str], None] | None,
    new_schedule: bool,
    init: Path | InitModel | None,
    ranks: Ranks,
) -> TrainResult:
    out = Path(out)
    data_dir = Path(data_dir)
    say = log if log is not None and ranks.is_main else (lambda _msg: None)
    paths = paths_beside(out)
    device = resolve_device(cfg.device)
    autocast = cfg.precision == "bf16"
    if cfg.precision not in ("fp32", "bf16"):
        raise DataError(f"unknown precision {cfg.precision!r}; expected fp32 or bf16")

    state: dict[str, Any] | None = None
    if resume is not None and init is not None:
        raise DataError("--resume continues a run with the init model it started from; omit --init")
    if resume is not None:
        state = _load_resume(Path(resume))
        # The data, split and recipe are the interrupted run's; the epoch limit and device
        # come from this call, and so may the schedule (to carry on where a run stopped).
        override = {"device": cfg.device, "max_epochs": cfg.max_epochs}
        if new_schedule:
            override |= {k: getattr(cfg, k) for k in SCHEDULE_FIELDS}
        cfg = TrainConfig(**{**state["config"], **override})
        autocast = cfg.precision == "bf16"
    _check_config(cfg)
    _check_ranks(cfg, ranks)
    if init is not None and not isinstance(init, InitModel):
        init = load_init(Path(init))
    if init is not None:
        _check_init_matches(cfg, init)
        if cfg.photon_scale != init.checkpoint.normalization.photon_scale:
            # Another photon scale changes every input: the mean/std must be computed anew.
            cfg = dataclasses.replace(cfg, renormalize=True)
    init_meta = init.provenance() if init is not None else (state or {}).get("init")
    if init_meta is None and (cfg.freeze_layers or cfg.renormalize):
        raise DataError("--freeze-layers and --renormalize need an --init model")

    items = load_dataset(data_dir)
    scores = [it.score for it in items]
    if state is not None:
        by_rel = {it.relpath: i for i, it in enumerate(items)}
        try:
            tr, va, te = ([by_rel[r] for r in state["split"][k]] for k in ("train", "val", "test"))
        except KeyError as exc:
            raise DataError(
                f"{resume}: image {exc} of the interrupted run is not in {data_dir}"
            ) from None
    else:
        fractions = (1 - cfg.val_fraction - cfg.test_fraction, cfg.val_fraction, cfg.test_fraction)
        tr, va, te = stratified_split(scores, cfg.seed, fractions)
    if len(tr) < 2:
        raise DataError(f"{data_dir}: too few images to train ({len(items)})")
    if ranks.is_main:
        _write_split(paths["split_csv"], items, {"train": tr, "val": va, "test": te})

    images = load_images(items, cfg.input_size_px)
    if state is not None and state.get("normalization") is not None:
        # An init's, or a recomputed one; resume files written before the photon scale was
        # stored there carry it in their config only.
        fields = {"photon_scale": cfg.photon_scale, **state["normalization"]}
        norm = Normalization(**fields)
    elif init is not None and not cfg.renormalize:
        norm = init.checkpoint.normalization  # read images the way the init model learned
    else:
        norm = _normalization(images[tr], cfg.count_scaling, cfg.photon_scale)
    x_train, x_val = _to_input(images[tr], norm), _to_input(images[va], norm)
    y_all = torch.tensor(scores, dtype=torch.float32)
    y_train, y_val = y_all[tr], y_all[va]
    say(
        f"{len(items)} images: {len(tr)} train / {len(va)} validation / {len(te)} test; "
        f"{norm.scaling} count scaling, photon scale {norm.photon_scale}, normalisation "
        f"mean={norm.mean:.4g} std={norm.std:.4g}{_norm_source(init_meta, cfg)}; device {device}"
        f"{_ranks_note(ranks, cfg.batch_size)}"
    )

    torch.manual_seed(cfg.seed)
    model = QualityNet(cfg.input_size_px)
    if init is not None:
        model.load_state_dict(init.checkpoint.model.state_dict())
        say(
            f"starting from {init.path} (sha256 {init.sha256[:12]}…), "
            f"{cfg.freeze_layers} conv block(s) frozen, lr {cfg.lr:g}"
        )
    if ranks.sync_batch_norm:
        # In place (the root is no batch norm): the same parameters and state-dict keys.
        nn.SyncBatchNorm.convert_sync_batchnorm(model)
    frozen = freeze_blocks(model, cfg.freeze_layers)  # after the conversion: its modules
    # Module.to(memory_format=...) works at runtime; torch's overloads omit it.
    model = model.to(device).to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    # Training steps go through DDP (gradients averaged over the processes); everything else
    # (evaluation, recalibration, state dicts without a 'module.' prefix) uses the model itself.
    stepper: nn.Module = model
    if ranks.distributed:
        from torch.nn.parallel import DistributedDataParallel

        stepper = DistributedDataParallel(
            model, device_ids=[ranks.local_rank] if device == "cuda" else None
        )
    optimizer = _sgd(model, cfg.lr, cfg.momentum)
    gen = torch.Generator().manual_seed(cfg.seed)
    history: list[dict[str, float]] = []
    best_val, best_epoch, bad_epochs, start_epoch, lr_drops = math.inf, 0, 0, 1, 0
    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    if state is not None:
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        gen.set_state(state["generator"])
        torch.set_rng_state(state["torch_rng"])
        history = state["history"]
        best_val, best_epoch = state["best_val"], state["best_epoch"]
        bad_epochs, start_epoch = state["bad_epochs"], state["epoch"] + 1
        lr_drops = int(state.get("lr_drops", 0))
        best_state = state["best_model"]
        say(f"resuming after epoch {state['epoch']} (best validation RMSE {best_val:.4f})")
    elif init is not None:
        # Epoch 0 is the init model as it is: fine-tuning keeps it unless an epoch beats it
        # on validation, so a run on a few noisy labels never ends worse than its start.
        t0 = time.perf_counter()
        best_val = _evaluate_rmse(model, x_val, y_val, device, cfg.batch_size, autocast, ranks)
        train_rmse = _evaluate_rmse(
            model, x_train, y_train, device, cfg.batch_size, autocast, ranks
        )
        history.append(
            {
                "epoch": 0,
                "train_rmse": round(train_rmse, 6),
                "val_rmse": round(best_val, 6),
                "lr": 0.0,
                "seconds": round(time.perf_counter() - t0, 2),
            }
        )
        say(
            f"epoch 0 (the init model): train RMSE {train_rmse:.4f}, validation RMSE {best_val:.4f}"
        )

    bar = _progress(progress and ranks.is_main)
    task = (
        bar.add_task("training", total=cfg.max_epochs, completed=start_epoch - 1) if bar else None
    )
    stopped_early = False
    try:
        if bar:
            bar.start()
        for epoch in range(start_epoch, cfg.max_epochs + 1):
            if _lr_drop_due(cfg, bad_epochs, lr_drops):
                lr_drops += 1
                bad_epochs = 0
                model.load_state_dict(best_state)
                # Fresh optimizer: the momentum built up at the old step size would overshoot.
                lr = optimizer.param_groups[0]["lr"] * cfg.lr_drop_factor
                optimizer = _sgd(model, lr, cfg.momentum)
                say(f"learning rate {lr:.3g} from the best weights (epoch {best_epoch})")
            if bad_epochs >= cfg.patience and lr_drops >= _drops_allowed(cfg):
                stopped_early = True
                break
            t0 = time.perf_counter()
            train_mode(model, frozen)
            order = torch.randperm(len(x_train), generator=gen)
            sq_err, seen = 0.0, 0
            for s in range(0, len(order), cfg.batch_size):
                batch = order[s : s + cfg.batch_size]
                if not ranks.usable(len(batch), cfg.batch_norm_groups):  # batch norm: 2 each
                    continue
                # Drawn for the global batch, so every process draws alike.
                symmetries = random_symmetries(len(batch), gen) if cfg.augment else None
                mine = ranks.shard(batch)
                xb = x_train[mine]
                if symmetries is not None:
                    xb = apply_symmetries(xb, ranks.shard(symmetries))
                xb = xb.to(device).contiguous(memory_format=torch.channels_last)
                yb = y_train[mine].to(device)
                with torch.autocast(device, dtype=torch.bfloat16, enabled=autocast):
                    pred, yb = _forward_in_groups(stepper, xb, yb, cfg.batch_norm_groups)
                loss = mse_loss(pred, yb)
                # The global batch's mean loss; the same number in every process, so all stop
                # together on a divergence.
                batch_sq_err, batch_len = ranks.all_sum(
                    [float(loss.detach()) * len(mine), len(mine)], device
                )
                batch_mse = batch_sq_err / batch_len
                if not math.isfinite(batch_mse):
                    raise DataError(f"training diverged at epoch {epoch} (loss {batch_mse})")
                if ranks.distributed:
                    # DDP averages gradients over the processes; weighting each share by its
                    # size makes that the gradient of the global batch's mean loss.
                    loss = loss * (len(mine) * ranks.world_size / len(batch))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                sq_err += batch_sq_err
                seen += int(batch_len)
            train_rmse = math.sqrt(sq_err / max(seen, 1))
            # Own random stream per epoch: the weight trajectory does not depend on it.
            recal_gen = torch.Generator().manual_seed(cfg.seed * 100_003 + epoch)
            recalibrate_batch_norm(
                model,
                x_train,
                device,
                cfg.batch_size,
                autocast,
                recal_gen,
                frozen=frozen,
                ranks=ranks,
            )
            val_rmse = _evaluate_rmse(model, x_val, y_val, device, cfg.batch_size, autocast, ranks)
            history.append(
                {
                    "epoch": epoch,
                    "train_rmse": round(train_rmse, 6),
                    "val_rmse": round(val_rmse, 6),
                    "lr": optimizer.param_groups[0]["lr"],
                    "seconds": round(time.perf_counter() - t0, 2),
                }
            )
            if val_rmse < best_val:
                best_val, best_epoch, bad_epochs = val_rmse, epoch, 0
                best_state = {k: v.detach().cpu().clone() for k, v in model.state_dict().items()}
            else:
                bad_epochs += 1
            say(
                f"epoch {epoch}: train RMSE {train_rmse:.4f}, validation RMSE {val_rmse:.4f}"
                f"{' (best)' if best_epoch == epoch else ''}"
            )
            if not ranks.is_main:
                continue  # rank 0 writes the files and the progress
            write_curves(history, best_epoch, paths)
            _save_resume(
                paths["resume"],
                {
                    "format": RESUME_FORMAT,
                    "config": asdict(cfg),
                    "split": {
                        "train": [items[i].relpath for i in tr],
                        "val": [items[i].relpath for i in va],
                        "test": [items[i].relpath for i in te],
                    },
                    "model": model.state_dict(),
                    "optimizer": optimizer.state_dict(),
                    "generator": gen.get_state(),
                    "torch_rng": torch.get_rng_state(),
                    "history": history,
                    "best_val": best_val,
                    "best_epoch": best_epoch,
                    "bad_epochs": bad_epochs,
                    "lr_drops": lr_drops,
                    "epoch": epoch,
                    "best_model": best_state,
                    "init": init_meta,
                    "normalization": _norm_fields(norm),
                },
            )
            if bar and task is not None:
                bar.update(
                    task,
                    advance=1,
                    description=f"epoch {epoch} val RMSE {val_rmse:.4f} (best {best_val:.4f})",
                )
        else:
            stopped_early = bad_epochs >= cfg.patience and lr_drops >= _drops_allowed(cfg)
    finally:
        if bar:
            bar.stop()

    epochs_run = sum(1 for row in history if row["epoch"] > 0)  # epoch 0: an init model as is
    result = TrainResult(
        out, best_epoch, best_val, epochs_run, history, stopped_early, is_main=ranks.is_main
    )
    if not ranks.is_main:
        return result
    if ranks.sync_batch_norm:  # the file holds the plain network (same keys)
        model = QualityNet(cfg.input_size_px).to(device)
    model.load_state_dict(best_state)
    model = model.cpu().to(memory_format=torch.contiguous_format).eval()  # type: ignore[call-overload]
    training = {
        "created_at": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "data_dir": str(data_dir),
        "n_images": len(items),
        "split_sizes": {"train": len(tr), "val": len(va), "test": len(te)},
        "split_seed": cfg.seed,
        "test_paths": [items[i].relpath for i in te],
        "val_paths": [items[i].relpath for i in va],
        "structures": sorted({it.structure for it in items}),
        "config": asdict(cfg),
        "best_epoch": best_epoch,
        "best_val_rmse": best_val,
        "epochs_run": epochs_run,
        "lr_drops": lr_drops,
        "stopped_early": stopped_early,
        "init": init_meta,  # None: trained from scratch
        "normalization_source": "init" if init_meta and not cfg.renormalize else "training set",
        "torch": str(torch.__version__),
        "python": platform.python_version(),
    }
    if ranks.distributed:
        training["data_parallel"] = {
            "processes": ranks.world_size,
            "backend": backend_name(ranks),
            "batch_norm": "synchronised" if ranks.sync_batch_norm else "per process",
        }
    ckpt = Checkpoint(
        model=model,
        normalization=norm,
        train_labels=[scores[i] for i in tr],
        training=training,
    )
    save_checkpoint(ckpt, out)
    write_curves(history, best_epoch, paths) if history else None
    return result


def _forward_in_groups(
    model: nn.Module, xb: torch.Tensor, yb: torch.Tensor, groups: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """Predictions for a batch (and its targets in their order): at once, or in ``groups``
    strided parts each normalised on its own (``TrainConfig.batch_norm_groups``)."""
    if groups == 1:
        return model(xb), yb
    parts = [xb[j::groups].contiguous(memory_format=torch.channels_last) for j in range(groups)]
    preds = [model(part) for part in parts]
    return torch.cat(preds), torch.cat([yb[j::groups] for j in range(groups)])


def _write_split(path: Path, items: Sequence[Any], parts: dict[str, list[int]]) -> None:
    with path.open("w", newline="") as fh:
        writer = csv.writer(fh)
        writer.writerow(["path", "score", "structure", "split"])
        for name, indices in parts.items():
            for i in indices:
                writer.writerow([items[i].relpath, items[i].score, items[i].structure, name])


def _ranks_note(ranks: Ranks, batch_size: int) -> str:
    if not ranks.distributed:
        return ""
    per = batch_size / ranks.world_size
    norm = "synchronised" if ranks.sync_batch_norm else "per process"
    return (
        f"; {ranks.world_size} processes ({backend_name(ranks)}), global batch {batch_size} "
        f"({per:g} per process), batch norm {norm}"
    )


def _check_ranks(cfg: TrainConfig, ranks: Ranks) -> None:
    """A batch every process can share, refused up front rather than skipped every step."""
    if ranks.distributed and cfg.batch_norm_groups != 1:
        raise DataError(
            "batch_norm_groups reproduces a multi-process run in one process; "
            "under torchrun leave it at 1"
        )
    if (ranks.distributed or cfg.batch_norm_groups > 1) and not ranks.usable(
        cfg.batch_size, cfg.batch_norm_groups
    ):
        parts = max(ranks.world_size, cfg.batch_norm_groups)
        raise DataError(
            f"batch size {cfg.batch_size} is too small to share among {parts} "
            f"{'processes' if ranks.distributed else 'batch-norm groups'}: "
            f"use at least {2 * parts}"
        )


def _sgd(model: nn.Module, lr: float, momentum: float) -> torch.optim.SGD:
    """SGD over the parameters that learn (frozen blocks have none to give)."""
    params = [p for p in model.parameters() if p.requires_grad]
    return torch.optim.SGD(params, lr=lr, momentum=momentum)


def _norm_fields(norm: Normalization) -> dict[str, Any]:
    return dataclasses.asdict(norm)


def _norm_source(init_meta: dict[str, Any] | None, cfg: TrainConfig) -> str:
    if init_meta is None:
        return ""
    return " (recomputed here)" if cfg.renormalize else f" (from {init_meta['file']})"


def _check_init_matches(cfg: TrainConfig, init: InitModel) -> None:
    """The init model fixes the input size and count scaling; a config that differs is refused
    rather than silently overridden."""
    ckpt = init.checkpoint
    if cfg.input_size_px != ckpt.input_size_px:
        raise DataError(
            f"--init {init.path} reads {ckpt.input_size_px} px inputs; "
            f"input size {cfg.input_size_px} does not match"
        )
    if cfg.count_scaling != ckpt.normalization.scaling:
        raise DataError(
            f"--init {init.path} uses {ckpt.normalization.scaling} count scaling; "
            f"{cfg.count_scaling} does not match"
        )


def _drops_allowed(cfg: TrainConfig) -> int:
    return cfg.max_lr_drops if cfg.lr_drop_patience > 0 else 0


def _lr_drop_due(cfg: TrainConfig, bad_epochs: int, lr_drops: int) -> bool:
    return (
        cfg.lr_drop_patience > 0
        and lr_drops < cfg.max_lr_drops
        and bad_epochs >= cfg.lr_drop_patience
    )


def _check_config(cfg: TrainConfig) -> None:
    check_count_scaling(cfg.count_scaling)
    check_photon_scale(cfg.photon_scale)
    check_freeze_layers(cfg.freeze_layers)
    if not 0 < cfg.val_fraction < 1:
        raise DataError(f"--val-fraction must lie in (0, 1), got {cfg.val_fraction}")
    if not 0 <= cfg.test_fraction < 1:
        raise DataError(f"--test-fraction must lie in [0, 1), got {cfg.test_fraction}")
    if cfg.val_fraction + cfg.test_fraction >= 0.9:
        raise DataError(
            f"--val-fraction + --test-fraction must leave at least 10 % for training, got "
            f"{cfg.val_fraction:g} + {cfg.test_fraction:g}"
        )
    if cfg.lr_drop_patience < 0:
        raise DataError(f"lr_drop_patience must be >= 0 epochs, got {cfg.lr_drop_patience}")
    if not 0 < cfg.lr_drop_factor < 1:
        raise DataError(f"lr_drop_factor must lie in (0, 1), got {cfg.lr_drop_factor}")
    if cfg.max_lr_drops < 0:
        raise DataError(f"max_lr_drops must be >= 0, got {cfg.max_lr_drops}")
    if cfg.batch_norm_groups < 1:
        raise DataError(f"batch_norm_groups must be >= 1, got {cfg.batch_norm_groups}")


def _progress(enabled: bool) -> Any:
    if not enabled:
        return None
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    # On stderr, with stdout (the command's result line) left alone; the estimate is to the
    # last epoch allowed (early stopping may end sooner).
    return Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        TextColumn("{task.completed}/{task.total} epochs"),
        TimeElapsedColumn(),
        TextColumn("eta ≤"),
        TimeRemainingColumn(),
        console=Console(stderr=True),
        transient=False,
    )


def _save_resume(path: Path, state: dict[str, Any]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save(state, tmp)
    tmp.replace(path)


def _load_resume(path: Path) -> dict[str, Any]:
    if not path.is_file():
        raise CheckpointError(f"{path}: resume file not found")
    state = read_torch_file(path, "training resume file")
    if not isinstance(state, dict) or state.get("format") != RESUME_FORMAT:
        raise CheckpointError(
            f"{path}: not a training resume file (pass the .resume.pt written beside the model)"
        )
    return state
