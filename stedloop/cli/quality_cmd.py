"""`stedloop train | evaluate | evaluate-degradations | score` and `stedloop dataset synth`: the quality network."""

from __future__ import annotations

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
    """Files as given; a folder means every TIFF directly inside it (sorted). A file reached
    twice (given directly and through its folder, or by two spellings of its path) is listed
    once, under the first spelling."""
    out: list[Path] = []
    seen: set[Path] = set()
    for path in paths:
        found = (
            sorted(p for p in path.iterdir() if p.suffix.lower() in TIFF_SUFFIXES)
            if path.is_dir()
            else [path]
        )
        for file in found:
            key = file.resolve()
            if key not in seen:
                seen.add(key)
                out.append(file)
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
        photon_scale: str | None = typer.Option(
            None,
            help="none (values are photon counts; the default) or estimated (each image "
            "divided by its own estimated counts per photon first, so detector gain does not "
            "matter and a grainy frame reads as the few photons it holds; stored in the "
            "model). With --init: the init model's, unless given (then mean/std are "
            "recomputed).",
        ),
    ) -> None:
        """Train a quality network with the paper's recipe, or fine-tune one (--init); write
        MODEL plus curves beside it. Under torchrun (`torchrun --nproc-per-node N --no-python
        stedloop train ...`) the processes train data-parallel on one global batch."""
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
            photon_scale=(
                photon_scale or (start.checkpoint.normalization.photon_scale if start else "none")
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
        if not result.is_main:
            return  # another process of a torchrun: rank 0 wrote the files and says so
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
        as_json: bool = typer.Option(
            False, "--json", help="Print the metrics as JSON (no report text, no progress)."
        ),
    ) -> None:
        """Score a labelled set and report RMSE/MAE/SROCC/KROCC/PLCC, per-bin errors and the user-study metrics."""
        from stedloop.quality.evaluate import evaluate, write_report

        # Output folders are checked before the (long) evaluation, not after it.
        if out is not None:
            output_folder(out)
        if study_set is not None:
            output_folder(study_set, "--study-set")
        _set_threads(threads)
        from stedloop.cli.progress import CommandProgress

        with CommandProgress("evaluate", 0, "", quiet=as_json) as bar:
            stage = [""]

            def on_progress(name: str, done: int, total: int) -> None:
                if name != stage[0]:
                    stage[0] = name
                    bar.phase(name, total, "images" if name == "scoring" else "resamples")
                bar.update(done)

            report = evaluate(
                model,
                data,
                split=split,
                n_testers=testers,
                n_bootstrap=bootstrap,
                seed=seed,
                device=device,
                study_set=study_set,
                progress=on_progress,
            )
        if out is not None:
            write_report(report, out)
        if as_json:
            print_json(report.as_dict())
        else:
            typer.echo(report.markdown())
        if out is not None:
            typer.echo(f"\nwrote {out / 'report.md'}, {out / 'metrics.json'} and plots", err=True)
        if study_set is not None:
            typer.echo(
                f"wrote the study set: {study_set / 'study.csv'} and {report.n_images} images "
                f"in {study_set / 'images'} (next: stedloop study serve --set {study_set})",
                err=True,
            )
        if report.skipped:
            for message in report.skipped:
                typer.echo(f"error: {message}", err=True)
            raise typer.Exit(EXIT_FAILURES)

    @app.command("evaluate-degradations")
    def evaluate_degradations_cmd(
        folder: Path = typer.Argument(
            ...,
            help="Degradation series: FOLDER/<frame>/<family>_<level>.tif, level 0 the original.",
        ),
        model: Path | None = typer.Option(
            None, "--model", "-m", help="Checkpoint; default: configured, else shipped."
        ),
        out: Path | None = typer.Option(
            None,
            "--out",
            "-o",
            help="Folder for scores.csv and scores_by_level.png (default: none).",
        ),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
        device: str | None = typer.Option(None, help="auto, cpu or cuda (default: config)."),
        config: ConfigOption = None,
    ) -> None:
        """Check a model on degradation series of your own frames: how often each level scores
        below the one before, and the most degraded level's score over the original's."""
        from stedloop.quality.degradations import (
            discover_series,
            evaluate_degradations,
            write_csv,
            write_plot,
        )
        from stedloop.quality.scorer import CNNScorer

        discover_series(folder)  # a wrong folder is refused before the model loads
        if out is not None:
            output_folder(out)
        quality = load_cli_config(config).config.quality
        scorer = CNNScorer.from_checkpoint(
            model if model is not None else quality.model_path,
            device=device or quality.device,
            batch_size=quality.batch_size,
        )
        report = evaluate_degradations(folder, scorer, str(scorer.model_path))
        if report.ignored:
            names = ", ".join(str(p.relative_to(folder)) for p in report.ignored[:5])
            more = f" and {len(report.ignored) - 5} more" if len(report.ignored) > 5 else ""
            typer.echo(
                f"note: ignored {len(report.ignored)} TIFF(s) not named <family>_<level>.tif: "
                f"{names}{more}",
                err=True,
            )
        if as_json:
            print_json(report.as_dict())
        else:
            typer.echo(report.text())
        if out is not None:
            csv_path = write_csv(report, out / "scores.csv")
            png_path = write_plot(report, out / "scores_by_level.png")
            typer.echo(f"wrote {csv_path} and {png_path}", err=True)

    @app.command("score")
    def score_cmd(
        paths: list[Path] = typer.Argument(..., help="TIFF files or folders (every TIFF inside)."),
        model: Path | None = typer.Option(
            None, "--model", "-m", help="Checkpoint; default: configured, else shipped."
        ),
        fmt: str = typer.Option("json", "--format", help="json (one object per line) or text."),
        device: str | None = typer.Option(None, help="auto, cpu or cuda (default: config)."),
        endpoint: str | None = typer.Option(
            None,
            help="Scoring service URL (default: quality.endpoint); --model is then the "
            "fallback's model (quality.fallback = local).",
        ),
        local: bool = typer.Option(
            False, "--local", help="Score here even when quality.endpoint is set."
        ),
        config: ConfigOption = None,
    ) -> None:
        """Score STED images (or the STED channel of stedloop's frames); prints
        {"path": ..., "score": ...} per image, plus "channel" when one was picked."""
        if fmt not in ("json", "text"):
            fail(f"--format must be json or text, got {fmt!r}")
        if local and endpoint is not None:
            fail("give --endpoint or --local, not both")
        from stedloop.errors import ScoringUnavailable, StedloopError
        from stedloop.quality.dataset import read_scorable_image
        from stedloop.scoring_service.configured import configured_scorer

        overrides: dict[str, object] = {}
        if model is not None:
            overrides["model_path"] = model
        if device is not None:
            overrides["device"] = device
        if endpoint is not None:
            overrides["endpoint"] = endpoint
        if local:
            overrides["endpoint"] = None
        # Validated as the [quality] section (an endpoint must be an http(s) URL, ...).
        quality = load_cli_config(config, {"quality": overrides}).config.quality
        scorer = configured_scorer(quality)
        files = expand_paths(paths)
        if not files:
            fail("no TIFF files found in " + ", ".join(str(p) for p in paths))
        failures = 0

        for path in files:
            try:
                if not path.is_file():
                    raise FileNotFoundError
                picked = read_scorable_image(path)
                value = float(scorer.score([picked.image], names=[str(path)])[0])
            except ScoringUnavailable as exc:  # the scorer is missing, not this file
                fail(f"{exc}; nothing scored after {path}", EXIT_FAILURES)
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
                line = {"path": str(path), "score": value}
                if picked.channel is not None:
                    line["channel"] = picked.channel
                print_json(line)
            else:
                where = "" if picked.channel is None else f" [channel {picked.channel}]"
                typer.echo(f"{value:.4f}  {path}{where}")
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
        variants: int = typer.Option(
            0,
            "--variants",
            min=0,
            max=20,
            help="Also write this many labelled variants of each frame (photon-starved at any "
            "brightness, gain-scaled, structureless), so brightness and quality part ways.",
        ),
        config: ConfigOption = None,
        as_json: bool = typer.Option(
            False, "--json", help="Print the summary as JSON (no progress)."
        ),
        shards: int = typer.Option(
            1,
            "--shards",
            min=1,
            help="Split the set into this many seeded parts (the same --shards gives the same "
            "files however they run; 1: one random stream).",
        ),
        workers: int = typer.Option(
            0,
            "--workers",
            min=0,
            help="Run the parts as Ray tasks on this many CPUs (0: here, one after another; "
            "needs stedloop[ray]).",
        ),
        address: str | None = typer.Option(
            None, "--address", help="A running Ray cluster (auto, ray://HOST:10001)."
        ),
    ) -> None:
        """Generate labelled frames with the simulator, scored by the documented synthetic expert."""
        from stedloop.cli.progress import CommandProgress
        from stedloop.quality.synth import PartResult, SynthPart, synth_part, synthesize
        from stedloop.sweep.engine import map_in_order, require_ray

        loaded = load_cli_config(config)
        if workers or address:
            require_ray("data sets on Ray")  # before any folder is made
        output_folder(out)
        with CommandProgress("dataset synth", n, "frames", quiet=as_json) as bar:

            def on_ray(parts: list[SynthPart]) -> list[PartResult]:
                def tell(done: int, _total: int) -> None:
                    bar.update(sum(part.n for part in parts[:done]))

                return map_in_order(synth_part, parts, workers, address, tell, "data sets on Ray")

            summary = synthesize(
                out,
                n=n,
                structure=structure,
                seed=seed,
                space=loaded.config.params,
                caps=loaded.config.safety,
                progress=bar.update,
                variants=variants,
                shards=shards,
                run_parts=on_ray if workers or address else None,
            )
        if as_json:
            print_json(summary)
            return
        extra = f" and {summary['variants']} variants" if summary["variants"] else ""
        typer.echo(
            f"wrote {summary['n']} labelled {structure} frames{extra} to {out} "
            f"(manifest.csv; mean label {summary['label_mean']:.2f}); "
            f"next: stedloop train {out} --out model.pt"
        )
