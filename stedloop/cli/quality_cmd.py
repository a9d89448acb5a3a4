"""`stedloop train | evaluate | score` and `stedloop dataset synth`: the quality network."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import typer

from stedloop.cli.common import (
    EXIT_FAILURES,
    ConfigOption,
    fail,
    load_cli_config,
    output_file,
    output_folder,
    print_json,
)

TIFF_SUFFIXES = (".tif", ".tiff")


def _set_threads(threads: int | None) -> None:
    if threads is not None:
        import torch

        if threads < 1:
            fail(f"--threads must be at least 1, got {threads}")
        torch.set_num_threads(threads)


def expand_paths(paths: list[Path]) -> list[Path]:
    """Files as given; a folder means every TIFF directly inside it (sorted)."""
    out: list[Path] = []
    for path in paths:
        if path.is_dir():
            out += sorted(p for p in path.iterdir() if p.suffix.lower() in TIFF_SUFFIXES)
        else:
            out.append(path)
    return out


def register(app: typer.Typer) -> None:
    @app.command("train")
    def train_cmd(
        data: Path = typer.Argument(
            ..., help="Labelled data folder (manifest.csv or <name>-<score>.tif)."
        ),
        out: Path = typer.Option(..., "--out", "-o", help="Where to write the model (.pt)."),
        seed: int = typer.Option(0, help="Seed of the split, initialisation and augmentation."),
        epochs: int = typer.Option(200, min=1, help="Most epochs (early stopping may end sooner)."),
        patience: int | None = typer.Option(
            None,
            min=1,
            help="Epochs without validation gain before stopping (default 10; 20 with --init).",
        ),
        batch_size: int | None = typer.Option(
            None, min=2, help="Training batch size (default 100, the paper's; 16 with --init)."
        ),
        lr: float | None = typer.Option(
            None, help="SGD learning rate (default 0.01, the paper's; 0.001 with --init)."
        ),
        lr_drop_patience: int | None = typer.Option(
            None,
            min=0,
            help="Epochs without validation gain before going back to the best weights with "
            "a smaller learning rate (default 0: constant rate, the paper's recipe). With "
            "--resume: replaces the interrupted run's schedule (a run that stopped early "
            "continues with its first drop); without it, that run's schedule is kept.",
        ),
        lr_drop_factor: float = typer.Option(0.1, help="Learning-rate factor at each drop."),
        lr_drops: int = typer.Option(2, min=0, help="Most learning-rate drops."),
        input_size: int | None = typer.Option(
            None, min=8, help="Network input size in px (default 224, the paper's; --init: its)."
        ),
        precision: str = typer.Option(
            "fp32", help="fp32, or bf16 autocast (fast on AMX CPUs/GPUs)."
        ),
        resume: Path | None = typer.Option(
            None, help="Continue from a .resume.pt written by an earlier run."
        ),
        device: str = typer.Option("auto", help="auto (CUDA when present), cpu or cuda."),
        threads: int | None = typer.Option(
            None, help="CPU threads for torch (default: torch's choice)."
        ),
        no_augment: bool = typer.Option(False, "--no-augment", help="Disable flips/rotations."),
        count_scaling: str | None = typer.Option(
            None,
            help="Counts to [0, 1] before the z-score: linear (/65535, the paper's; the "
            "default) or anscombe (2*sqrt(c + 3/8), variance-stabilising; stored in the "
            "model). With --init: the init model's.",
        ),
        init: str | None = typer.Option(  # str: "./shipped" must stay a file name
            None,
            help="Fine-tune: start from this model's weights and normalisation instead of "
            "from scratch ('shipped': the shipped model), e.g. on a lab's 100-300 labelled "
            "frames.",
        ),
        freeze_layers: int = typer.Option(
            0,
            help="With --init: the first N of the 6 conv blocks keep their weights and "
            "batch-norm statistics.",
        ),
        val_fraction: float | None = typer.Option(
            None, help="Share of the labels for validation (default 0.1; 0.2 with --init)."
        ),
        test_fraction: float | None = typer.Option(
            None,
            help="Share of the labels held out for testing (default 0.1; 0 with --init: "
            "test on a separately labelled set).",
        ),
        renormalize: bool = typer.Option(
            False,
            "--renormalize",
            help="With --init: recompute the input mean/std on the new training images "
            "instead of keeping the init model's.",
        ),
    ) -> None:
        """Train a quality network with the paper's recipe, or fine-tune one (--init); write
        MODEL plus curves beside it."""
        from stedloop.quality.finetune import (
            FINE_TUNE_BATCH_SIZE,
            FINE_TUNE_LR,
            FINE_TUNE_PATIENCE,
            FINE_TUNE_TEST_FRACTION,
            FINE_TUNE_VAL_FRACTION,
            check_freeze_layers,
            init_path,
            load_init,
        )
        from stedloop.quality.train import TrainConfig, paths_beside, train

        output_file(out)  # before the training, not when the model is saved at its end
        _set_threads(threads)
        check_freeze_layers(freeze_layers)
        if init is not None and resume is not None:
            fail("--resume continues a run with the init model it started from; omit --init")
        start = load_init(init_path(init)) if init is not None else None  # bad files fail first
        if start is not None:
            init_size = start.checkpoint.input_size_px
            init_scaling = start.checkpoint.normalization.scaling
            if input_size is not None and input_size != init_size:
                fail(f"--input-size {input_size}: --init {init} reads {init_size} px inputs")
            if count_scaling is not None and count_scaling != init_scaling:
                fail(f"--count-scaling {count_scaling}: --init {init} uses {init_scaling}")
        elif freeze_layers or renormalize:
            fail("--freeze-layers and --renormalize need --init")
        fine_tune = start is not None
        cfg = TrainConfig(
            seed=seed,
            max_epochs=epochs,
            patience=patience or (FINE_TUNE_PATIENCE if fine_tune else 10),
            lr=lr if lr is not None else (FINE_TUNE_LR if fine_tune else 0.01),
            lr_drop_patience=lr_drop_patience or 0,
            lr_drop_factor=lr_drop_factor,
            max_lr_drops=lr_drops,
            batch_size=batch_size or (FINE_TUNE_BATCH_SIZE if fine_tune else 100),
            input_size_px=start.checkpoint.input_size_px if start else (input_size or 224),
            device=device,
            precision=precision,
            augment=not no_augment,
            count_scaling=(
                start.checkpoint.normalization.scaling if start else (count_scaling or "linear")
            ),
            val_fraction=(
                val_fraction
                if val_fraction is not None
                else (FINE_TUNE_VAL_FRACTION if fine_tune else 0.1)
            ),
            test_fraction=(
                test_fraction
                if test_fraction is not None
                else (FINE_TUNE_TEST_FRACTION if fine_tune else 0.1)
            ),
            freeze_layers=freeze_layers,
            renormalize=renormalize,
        )
        result = train(
            data,
            out,
            cfg,
            init=start,
            resume=resume,
            new_schedule=lr_drop_patience is not None,
            progress=sys.stderr.isatty(),
            log=lambda m: typer.echo(m, err=True),
        )
        beside = paths_beside(out)
        typer.echo(
            f"wrote {result.model_path} (best epoch {result.best_epoch}, validation RMSE "
            f"{result.best_val_rmse:.4f}, {result.epochs_run} epochs"
            f"{', stopped early' if result.stopped_early else ''}); curves in "
            f"{beside['curves_csv'].name} / {beside['curves_png'].name}"
        )

    @app.command("evaluate")
    def evaluate_cmd(
        model: Path = typer.Argument(..., help="Model checkpoint (.pt)."),
        data: Path = typer.Argument(..., help="Labelled data folder."),
        out: Path | None = typer.Option(
            None, "--out", "-o", help="Folder for report.md, metrics.json, plots."
        ),
        split: str = typer.Option(
            "all", help="all, or test/val: only the images the model's training put there."
        ),
        study_set: Path | None = typer.Option(
            None, help="Also write a user-study set (images + study.csv) here."
        ),
        testers: int = typer.Option(11, min=1, help="Simulated testers (paper: 11)."),
        bootstrap: int = typer.Option(1000, min=10, help="Bootstrap resamples for the CIs."),
        seed: int = typer.Option(0, help="Seed of the bootstrap, random baseline and testers."),
        device: str = typer.Option("auto", help="auto, cpu or cuda."),
        threads: int | None = typer.Option(None, help="CPU threads for torch."),
    ) -> None:
        """Score a labelled set and report RMSE/MAE/SROCC/KROCC/PLCC, per-bin errors and the user-study metrics."""
        from stedloop.quality.evaluate import evaluate, write_report

        # Output folders are checked before the (long) evaluation, not after it.
        if out is not None:
            output_folder(out)
        if study_set is not None:
            output_folder(study_set, "--study-set")
        _set_threads(threads)
        report = evaluate(
            model,
            data,
            split=split,
            n_testers=testers,
            n_bootstrap=bootstrap,
            seed=seed,
            device=device,
            study_set=study_set,
        )
        if out is not None:
            write_report(report, out)
        typer.echo(report.markdown())
        if out is not None:
            typer.echo(f"\nwrote {out / 'report.md'}, {out / 'metrics.json'} and plots", err=True)
        if report.skipped:
            for message in report.skipped:
                typer.echo(f"error: {message}", err=True)
            raise typer.Exit(EXIT_FAILURES)

    @app.command("score")
    def score_cmd(
        paths: list[Path] = typer.Argument(..., help="TIFF files or folders (every TIFF inside)."),
        model: Path | None = typer.Option(
            None, "--model", "-m", help="Checkpoint; default: configured, else shipped."
        ),
        fmt: str = typer.Option("json", "--format", help="json (one object per line) or text."),
        device: str | None = typer.Option(None, help="auto, cpu or cuda (default: config)."),
        config: ConfigOption = None,
    ) -> None:
        """Score STED images; prints {"path": ..., "score": ...} per image."""
        if fmt not in ("json", "text"):
            fail(f"--format must be json or text, got {fmt!r}")
        from stedloop.quality.dataset import read_tiff_image
        from stedloop.quality.scorer import CNNScorer

        quality = load_cli_config(config).config.quality
        scorer = CNNScorer.from_checkpoint(
            model if model is not None else quality.model_path,
            device=device or quality.device,
            batch_size=quality.batch_size,
        )
        files = expand_paths(paths)
        if not files:
            fail("no TIFF files found in " + ", ".join(str(p) for p in paths))
        failures = 0
        from stedloop.errors import StedloopError

        for path in files:
            try:
                if not path.is_file():
                    raise FileNotFoundError
                value = scorer.score_one(read_tiff_image(path), name=str(path))
            except FileNotFoundError:
                typer.echo(f"error: {path}: file not found", err=True)
                failures += 1
                continue
            except StedloopError as exc:
                message = str(exc)
                typer.echo(
                    f"error: {message if str(path) in message else f'{path}: {message}'}", err=True
                )
                failures += 1
                continue
            if fmt == "json":
                print_json({"path": str(path), "score": value})
            else:
                typer.echo(f"{value:.4f}  {path}")
        if failures:
            typer.echo(f"error: {failures} of {len(files)} file(s) could not be scored", err=True)
            raise typer.Exit(EXIT_FAILURES)

    dataset_app = typer.Typer(
        help="Labelled data sets for the quality network.", no_args_is_help=True
    )
    app.add_typer(dataset_app, name="dataset")

    @dataset_app.command("synth")
    def synth_cmd(
        out: Path = typer.Option(
            ..., "--out", "-o", help="Folder to write (TIFFs + manifest.csv)."
        ),
        n: int = typer.Option(..., "--n", min=1, help="Number of labelled frames."),
        structure: str = typer.Option("actin", help="actin or tubulin (simulator structure)."),
        seed: int = typer.Option(0, help="Seed of samples, parameters and the expert's noise."),
        config: ConfigOption = None,
    ) -> None:
        """Generate labelled frames with the simulator, scored by the documented synthetic expert."""
        from stedloop.quality.synth import synthesize

        loaded = load_cli_config(config)
        output_folder(out)
        summary = synthesize(
            out,
            n=n,
            structure=structure,
            seed=seed,
            space=loaded.config.params,
            caps=loaded.config.safety,
            progress=lambda i: typer.echo(f"{i}/{n} frames", err=True) if i % 50 == 0 else None,
        )
        typer.echo(json.dumps(summary))
