"""Fine-tuning on a lab's own labels: the shipped model on a "different microscope".

    python benchmarks/bench_finetune.py [--model M] [--work /tmp/stedloop-bench-finetune]
        [--sizes 50 100 300] [--seeds 0] [--epochs 40] [--threads 2] [--precision bf16]
        [--ft-lr 0.001] [--ft-batch 16] [--ft-patience 20] [--ft-freeze 0]
        [--ft-renormalize] [--scratch-batch 16] [--scratch-patience 20]
        [--skip-scratch] [--skip-finetune]

The other microscope is built in the simulator, with the same synthetic expert labelling its
frames from the ground truth (``stedloop.quality.synth``): tubulin (the shipped model never
trained on it) imaged at NA 1.2 instead of 1.4 (confocal FWHM 255 nm instead of 221 nm, a
wider excitation spot and donut, so less resolution at a given depletion power), three times
the out-of-focus background, and a detector that reports 3 digital units per photon (the
expert judges photons; the network sees units). Labels are the expert's on the photons, so
they mean the same thing as on the training domain.

Conditions, each scored on the same held-out test set of that domain (``--n-test`` frames
from other simulated samples; Spearman's rank correlation, SROCC, with a percentile
bootstrap 95 % CI, and RMSE against the labels):

* the model as it is (no labels);
* fine-tuned (``train --init``: its weights and normalisation; by default the ``--init``
  defaults of ``stedloop train``: lr 0.001, batch 16, patience 20, nothing frozen) on
  50 / 100 / 300 labels;
* trained from scratch on the same labels: lr 0.01 (the paper's), its own normalisation
  (Anscombe scaling like the shipped model), batch 16 and patience 20 like the fine-tuning
  by default, so only the starting point differs; ``--scratch-batch 100 --scratch-patience
  10`` is plain ``stedloop train``.

All use the fine-tuning split (80 % train / 20 % validation for early stopping, at most
``--epochs``; no test split: the test set is the separate one). The 50 / 100 / 300 labels are
random subsets of one pool of 300 (per seed). Generated data lives in ``--work``, never in
the repository. Prints the figures and the conditions.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from machine import cpu_name

from stedloop.driver import AcquireRequest

#: The "different microscope" (see the module docstring).
DOMAIN = {
    "structure": "tubulin",
    "numerical_aperture": 1.2,
    "confocal_fwhm_nm": 255.0,
    "background_factor": 3.0,
    "detector_units_per_photon": 3.0,
}
FIELDS_PER_SAMPLE = 4  # 4 x 4 fields per simulated sample (coverslip)
POOL_SIZE = 300  # labelled frames the 50 / 100 / 300 subsets are drawn from


def make_domain_set(out: Path, n: int, seed: int) -> Path:
    """``n`` frames of the other microscope, labelled by the synthetic expert, in ``out``."""
    import tifffile

    from stedloop.drivers.simulator import SimulatorDriver, SimulatorOptions, physics
    from stedloop.frame import Region
    from stedloop.params import ParamSpace, SafetyCaps
    from stedloop.quality.dataset import MANIFEST_NAME, write_manifest
    from stedloop.quality.synth import draw_params, expert_label, frame_expert_measures

    if (out / MANIFEST_NAME).is_file():  # made by an earlier run with the same n and seed
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng([seed, 7])
    space, caps = ParamSpace(), SafetyCaps()
    optics = physics.Optics(
        numerical_aperture=DOMAIN["numerical_aperture"],
        confocal_fwhm_m=DOMAIN["confocal_fwhm_nm"] * 1e-9,
    )
    gain = DOMAIN["detector_units_per_photon"]
    rows: list[dict[str, object]] = []
    while len(rows) < n:
        opts = SimulatorOptions(
            structure=DOMAIN["structure"],
            seed=int(rng.integers(0, 2**31 - 1)),
            sample_fields=FIELDS_PER_SAMPLE,
            include_ground_truth=True,
            background_counts_per_s_per_uw=physics.Detector.background_counts_per_s_per_uw
            * DOMAIN["background_factor"],
        )
        driver = SimulatorDriver(opts, caps=caps)
        # Another objective: same dye and detector, other optics (before the first acquire).
        driver.beam = physics.BeamModel(
            opts.pixel_size_nm,
            driver.RADIUS_PX,
            dye=driver.beam.dye,
            optics=optics,
            detector=driver.beam.detector,
        )
        driver.connect()
        try:
            field_um = opts.field_px * opts.pixel_size_nm / 1000
            regions = [
                Region(ix * field_um, iy * field_um, opts.field_px, opts.field_px)
                for iy in range(FIELDS_PER_SAMPLE)
                for ix in range(FIELDS_PER_SAMPLE)
            ]
            density = np.array([driver.fluorophore_map(r).mean() for r in regions])
            for region, d in zip(regions, density, strict=True):
                if d < 0.5 * np.median(density) or len(rows) >= n:
                    continue
                params = draw_params(rng, space, caps)
                frame = driver.acquire(AcquireRequest(params, region))
                meta = frame.metadata
                measures = frame_expert_measures(frame)
                units = np.round(frame.sted.astype(np.float64) * gain)
                if units.max() > 65535:  # never clipped: such a frame is not written
                    continue
                name = f"frame_{len(rows):05d}.tif"
                tifffile.imwrite(out / name, units.astype(np.uint16))
                rows.append(
                    {
                        "path": name,
                        "score": round(expert_label(measures["true_score"], rng), 5),
                        "structure": DOMAIN["structure"],
                        **{k: round(v, 4) for k, v in params.as_dict().items()},
                        "true_score": round(measures["true_score"], 5),
                        "effective_fwhm_nm": meta["effective_fwhm_nm"],
                        "sample_seed": opts.seed,
                    }
                )
        finally:
            driver.close()
    write_manifest(out, rows)
    return out


def subset(pool: Path, out: Path, n: int, seed: int) -> Path:
    """A data folder holding ``n`` random labelled frames of ``pool`` (manifest only)."""
    from stedloop.quality.dataset import write_manifest

    with (pool / "manifest.csv").open() as fh:
        rows = list(csv.DictReader(fh))
    pick = np.random.default_rng([seed, n]).permutation(len(rows))[:n]
    out.mkdir(parents=True, exist_ok=True)
    chosen = [dict(rows[i], path=os.path.relpath(pool / rows[i]["path"], out)) for i in pick]
    write_manifest(out, chosen)
    return out


@dataclass
class Outcome:
    condition: str
    labels: int
    seed: int
    srocc: float
    srocc_ci: tuple[float, float]
    rmse: float
    best_epoch: int | None = None
    epochs: int | None = None
    train_s: float | None = None


def score_test(model: Path | None, test: Path, n_boot: int = 1000) -> tuple[float, tuple, float]:
    """SROCC (with bootstrap 95 % CI) and RMSE of ``model`` on the labelled folder ``test``."""
    from scipy import stats

    from stedloop.quality.dataset import load_dataset, read_tiff_image
    from stedloop.quality.scorer import CNNScorer

    items = load_dataset(test)
    scorer = CNNScorer.from_checkpoint(model, device="cpu", batch_size=16)
    pred = scorer.score([read_tiff_image(it.path) for it in items])
    labels = np.array([it.score for it in items])
    rho = float(stats.spearmanr(pred, labels)[0])
    rng = np.random.default_rng(0)
    boots = []
    for _ in range(n_boot):
        idx = rng.integers(0, len(labels), len(labels))
        boots.append(stats.spearmanr(pred[idx], labels[idx])[0])
    lo, hi = np.nanpercentile(boots, [2.5, 97.5])
    return rho, (float(lo), float(hi)), float(np.sqrt(np.mean((pred - labels) ** 2)))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None, help="model to adapt (default: shipped)")
    parser.add_argument("--work", type=Path, default=Path("/tmp/stedloop-bench-finetune"))
    parser.add_argument("--sizes", type=int, nargs="+", default=[50, 100, 300])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0])
    parser.add_argument("--n-test", type=int, default=200)
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--ft-patience", type=int, default=None, help="default: --init's")
    parser.add_argument("--scratch-patience", type=int, default=20)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--precision", default="bf16")
    parser.add_argument("--ft-lr", type=float, default=None, help="default: train --init's")
    parser.add_argument("--ft-batch", type=int, default=None, help="default: train --init's")
    parser.add_argument("--ft-freeze", type=int, default=0)
    parser.add_argument(
        "--ft-renormalize", action="store_true", help="mean/std from the new labels"
    )
    parser.add_argument("--scratch-batch", type=int, default=16)
    parser.add_argument("--skip-scratch", action="store_true")
    parser.add_argument("--skip-finetune", action="store_true")
    args = parser.parse_args()

    import torch

    from stedloop.quality import shipped_model_path
    from stedloop.quality.finetune import (
        FINE_TUNE_BATCH_SIZE,
        FINE_TUNE_LR,
        FINE_TUNE_PATIENCE,
        FINE_TUNE_TEST_FRACTION,
        FINE_TUNE_VAL_FRACTION,
        file_sha256,
        load_init,
    )
    from stedloop.quality.train import TrainConfig, train

    torch.set_num_threads(args.threads)
    model = Path(args.model) if args.model else shipped_model_path()
    init = load_init(model)
    ft_lr = args.ft_lr if args.ft_lr is not None else FINE_TUNE_LR
    ft_batch = args.ft_batch if args.ft_batch is not None else FINE_TUNE_BATCH_SIZE
    ft_patience = args.ft_patience if args.ft_patience is not None else FINE_TUNE_PATIENCE
    work = args.work
    t0 = time.perf_counter()
    n_pool = max(POOL_SIZE, *args.sizes)
    pool = make_domain_set(work / f"pool-{n_pool}", n_pool, seed=11)
    test = make_domain_set(work / f"test-{args.n_test}", args.n_test, seed=12)
    gen_s = time.perf_counter() - t0

    outcomes = [Outcome("as shipped", 0, 0, *score_test(model, test))]
    print(f"as shipped: SROCC {outcomes[0].srocc:.3f}", flush=True)
    common = {
        "max_epochs": args.epochs,
        "precision": args.precision,
        "device": "cpu",
        "val_fraction": FINE_TUNE_VAL_FRACTION,
        "test_fraction": FINE_TUNE_TEST_FRACTION,
    }
    scaling = init.checkpoint.normalization.scaling
    runs = []
    if not args.skip_finetune:
        runs.append(
            (
                f"fine-tuned (lr {ft_lr:g}, batch {ft_batch}, patience {ft_patience}, "
                f"{args.ft_freeze} frozen{', renormalised' if args.ft_renormalize else ''})",
                TrainConfig(
                    lr=ft_lr,
                    batch_size=ft_batch,
                    patience=ft_patience,
                    freeze_layers=args.ft_freeze,
                    renormalize=args.ft_renormalize,
                    count_scaling=scaling,
                    **common,
                ),
                init,
            )
        )
    if not args.skip_scratch:
        runs.append(
            (
                f"from scratch (lr 0.01, batch {args.scratch_batch}, "
                f"patience {args.scratch_patience})",
                TrainConfig(
                    lr=0.01,
                    batch_size=args.scratch_batch,
                    patience=args.scratch_patience,
                    count_scaling=scaling,
                    **common,
                ),
                None,
            )
        )
    tag = f"lr{ft_lr:g}-b{ft_batch}-p{ft_patience}-f{args.ft_freeze}"
    tag += "-renorm" if args.ft_renormalize else ""
    (work / "models").mkdir(parents=True, exist_ok=True)
    for seed in args.seeds:
        for size in args.sizes:
            data = subset(pool, work / f"labels-{size}-s{seed}", size, seed)
            for name, cfg, start in runs:
                cfg.seed = seed
                kind = (
                    "ft-" + tag
                    if start is not None
                    else f"scratch-b{args.scratch_batch}-p{args.scratch_patience}"
                )
                out = work / "models" / f"{kind}-{size}-s{seed}.pt"
                t = time.perf_counter()
                result = train(data, out, cfg, init=start)
                seconds = time.perf_counter() - t
                outcome = Outcome(
                    name, size, seed, *score_test(out, test),
                    result.best_epoch, result.epochs_run, seconds,
                )  # fmt: skip
                outcomes.append(outcome)
                print(
                    f"{name}, {size} labels, seed {seed}: SROCC {outcome.srocc:.3f} "
                    f"(best epoch {result.best_epoch}/{result.epochs_run}, {seconds:.0f} s)",
                    flush=True,
                )

    print("== bench_finetune ==")
    print(f"date: {dt.datetime.now().isoformat(timespec='seconds')}")
    print(f"cpu: {cpu_name()} ({os.cpu_count()} logical), torch threads: {torch.get_num_threads()}")
    print(f"torch {torch.__version__}, numpy {np.__version__}, python {platform.python_version()}")
    print(f"load average: {os.getloadavg()}")
    print(f"init model: {model} (sha256 {file_sha256(model)[:16]}…)")
    print(
        f"domain: {DOMAIN}; label pool seed 11 ({n_pool} frames), test seed 12 "
        f"({args.n_test} frames), generated in {gen_s:.0f} s under {work}"
    )
    print(
        f"training: {args.precision}, <= {args.epochs} epochs, "
        f"split {1 - FINE_TUNE_VAL_FRACTION:g}/{FINE_TUNE_VAL_FRACTION:g} train/validation, "
        f"seeds {args.seeds}"
    )
    print("| condition | labels | seed | SROCC [95 % CI] | RMSE | best epoch / run | train s |")
    print("| --- | --- | --- | --- | --- | --- | --- |")
    for o in outcomes:
        epochs = f"{o.best_epoch} / {o.epochs}" if o.epochs is not None else "–"
        secs = f"{o.train_s:.0f}" if o.train_s is not None else "–"
        print(
            f"| {o.condition} | {o.labels} | {o.seed} | {o.srocc:.3f} "
            f"[{o.srocc_ci[0]:.3f}, {o.srocc_ci[1]:.3f}] | {o.rmse:.3f} | {epochs} | {secs} |"
        )


if __name__ == "__main__":
    main()
