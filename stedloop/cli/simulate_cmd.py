"""`stedloop simulate`: write simulated frames (OME-TIFF) of fresh sample regions."""

from __future__ import annotations

import math
from pathlib import Path

import typer

from stedloop.cli.common import ConfigOption, fail, load_cli_config, output_folder
from stedloop.driver import AcquireRequest

DEFAULT_DWELL_TIME_US = 10.0
DEFAULT_EXCITATION_UW = 5.0
DEFAULT_DEPLETION_MW = 150.0
MAX_SAMPLE_FIELDS = 32


def register(app: typer.Typer) -> None:
    """Add `simulate` to the main app."""

    @app.command("simulate")
    def simulate(
        structure: str = typer.Option(
            "actin", "--structure", help="Sample structure: actin, tubulin, puncta or beads."
        ),
        n: int = typer.Option(10, "--n", help="Number of frames, each on a fresh region."),
        out: Path = typer.Option(..., "--out", help="Folder for the OME-TIFF files."),
        seed: int | None = typer.Option(
            None,
            "--seed",
            help="Sample and noise seed (default: the seed in the drivers.simulator config table).",
        ),
        dwell_time_us: float = typer.Option(
            DEFAULT_DWELL_TIME_US, "--dwell-time-us", help="Pixel dwell time, µs."
        ),
        excitation_uw: float = typer.Option(
            DEFAULT_EXCITATION_UW, "--excitation-uw", help="Excitation power, µW."
        ),
        depletion_mw: float = typer.Option(
            DEFAULT_DEPLETION_MW, "--depletion-mw", help="Depletion power, mW (0 = confocal)."
        ),
        overwrite: bool = typer.Option(False, "--overwrite", help="Replace existing files."),
        config: ConfigOption = None,
    ) -> None:
        """Simulate N confocal/STED/confocal frames on fresh regions and write OME-TIFFs.

        Every input is checked (structure, parameters against the configured range and the
        safety caps, the output folder) before the first file is written.
        """
        from stedloop.drivers import parse_driver_options
        from stedloop.drivers.simulator import STRUCTURES, SimulatorDriver, SimulatorOptions
        from stedloop.frame import Region
        from stedloop.params import ImagingParams
        from stedloop.tiffio import write_frame_tiff

        if structure not in STRUCTURES:
            fail(f"unknown structure {structure!r}; expected one of {', '.join(STRUCTURES)}")
        if n < 1:
            fail(f"--n must be at least 1, got {n}")
        loaded = load_cli_config(config)
        params = ImagingParams(dwell_time_us, excitation_uw, depletion_mw)
        loaded.config.params.validate_point(params)
        loaded.config.safety.check(params)

        options = dict(loaded.config.drivers.get("simulator", {}))
        options["structure"] = structure
        if seed is not None:
            options["seed"] = seed
        needed_fields = math.ceil(math.sqrt(n))
        if needed_fields > MAX_SAMPLE_FIELDS:
            fail(
                f"--n {n} needs more fresh regions than the largest sample holds ({MAX_SAMPLE_FIELDS**2})"
            )
        options["sample_fields"] = max(int(options.get("sample_fields", 1)), needed_fields)
        parsed = parse_driver_options(SimulatorDriver, "simulator", options)
        assert isinstance(parsed, SimulatorOptions)

        output_folder(out)
        paths = [out / f"{structure}_{i:04d}.ome.tif" for i in range(n)]
        existing = [p for p in paths if p.exists()]
        if existing and not overwrite:
            fail(
                f"{existing[0]} already exists ({len(existing)} of the files); use --overwrite or another --out"
            )

        driver = SimulatorDriver(parsed, loaded.config.safety)
        with driver:
            fields = parsed.sample_fields
            field_um = parsed.field_px * parsed.pixel_size_nm / 1000
            for index, path in enumerate(paths):
                ix, iy = index % fields, index // fields
                region = Region(ix * field_um, iy * field_um, parsed.field_px, parsed.field_px)
                frame = driver.acquire(AcquireRequest(params, region))
                write_frame_tiff(
                    path, frame, {"generator": "stedloop simulate"}, overwrite=overwrite
                )
        typer.echo(f"wrote {n} frame(s) of {structure} ({params.describe()}) to {out}")
