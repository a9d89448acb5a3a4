"""`stedloop simulate`: write simulated frames (OME-TIFF) of fresh sample regions.

The built-in simulator by default. A configured driver other than the simulator is never
replaced silently: the command refuses unless ``--driver`` names the driver to use, which
may be the configured one (a lab's own simulator plugin, e.g. around pySTED).
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from stedloop.cli.common import ConfigOption, fail, load_cli_config, output_folder

if TYPE_CHECKING:
    from stedloop.config.schema import StedloopConfig
    from stedloop.params import ImagingParams

DEFAULT_DWELL_TIME_US = 10.0
DEFAULT_EXCITATION_UW = 5.0
DEFAULT_DEPLETION_MW = 150.0
MAX_SAMPLE_FIELDS = 32


def register(app: typer.Typer) -> None:
    """Add `simulate` to the main app."""

    @app.command("simulate")
    def simulate(
        structure: str | None = typer.Option(
            None,
            "--structure",
            help="Sample structure: actin (default), tubulin, puncta or beads (simulator only).",
        ),
        n: int = typer.Option(10, "--n", help="Number of frames, each on a fresh region."),
        out: Path = typer.Option(..., "--out", help="Folder for the OME-TIFF files."),
        seed: int | None = typer.Option(
            None,
            "--seed",
            help="Sample and noise seed (default: the seed in the drivers.simulator config "
            "table; simulator only).",
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
        driver_name: str | None = typer.Option(
            None,
            "--driver",
            help="The driver that takes the frames (default: the built-in simulator, when "
            "it is the configured driver). Another driver is used only when named here.",
        ),
        config: ConfigOption = None,
    ) -> None:
        """Simulate N confocal/STED/confocal frames on fresh regions and write OME-TIFFs.

        Every input is checked (structure, parameters against the configured range and the
        safety caps, the output folder) before the first file is written.
        """
        from stedloop.driver import AcquireRequest
        from stedloop.drivers import parse_driver_options
        from stedloop.drivers.simulator import STRUCTURES, SimulatorDriver, SimulatorOptions
        from stedloop.frame import Region
        from stedloop.params import ImagingParams
        from stedloop.tiffio import write_frame_tiff

        if n < 1:
            fail(f"--n must be at least 1, got {n}")
        loaded = load_cli_config(config)
        configured = loaded.config.driver.name
        if driver_name is None and configured != "simulator":
            fail(
                f"the configured driver is {configured!r}, not the simulator; pass --driver "
                f"simulator for simulated frames, or --driver {configured} to take them "
                f"through {configured!r}"
            )
        params = ImagingParams(dwell_time_us, excitation_uw, depletion_mw)
        loaded.config.params.validate_point(params)
        loaded.config.safety.check(params)
        if driver_name is not None and driver_name != "simulator":
            if structure is not None or seed is not None:
                fail("--structure and --seed set the built-in simulator's sample; drop them")
            _through_driver(driver_name, loaded.config, params, n, out, overwrite)
            return
        structure = structure or "actin"
        if structure not in STRUCTURES:
            fail(f"unknown structure {structure!r}; expected one of {', '.join(STRUCTURES)}")

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


def _through_driver(
    name: str, config: StedloopConfig, params: ImagingParams, n: int, out: Path, overwrite: bool
) -> None:
    """Take ``n`` frames through driver ``name`` (options from ``[drivers.<name>]``) on fresh
    regions, with the same checks as a session: the instrument claim, the caps, the regions."""
    from stedloop.driver import AcquireRequest
    from stedloop.drivers import create_driver
    from stedloop.errors import StedloopError
    from stedloop.instrument import claim_instrument
    from stedloop.session.regions import RegionTiler
    from stedloop.tiffio import write_frame_tiff

    config = config.model_copy(update={"driver": config.driver.model_copy(update={"name": name})})
    paths = [out / f"{name}_{i:04d}.ome.tif" for i in range(n)]
    try:
        driver = create_driver(config)
        claim = claim_instrument(config, "`stedloop simulate`")
    except StedloopError as exc:
        fail(str(exc))
    try:
        with driver:
            description = driver.describe()
            tiler = RegionTiler(
                description,
                gap_um=config.session.region_gap_um,
                unbounded_columns=config.session.unbounded_columns,
            )
            if tiler.capacity is not None and tiler.capacity < n:
                fail(f"--n {n} needs more fresh regions than {name!r} offers ({tiler.capacity})")
            output_folder(out)
            existing = [p for p in paths if p.exists()]
            if existing and not overwrite:
                fail(f"{existing[0]} already exists; use --overwrite or another --out")
            for path in paths:
                frame = driver.acquire(AcquireRequest(params, tiler.take()))
                write_frame_tiff(
                    path,
                    frame,
                    {"generator": f"stedloop simulate --driver {name}"},
                    overwrite=overwrite,
                )
    except StedloopError as exc:
        fail(f"driver {name!r}: {exc}")
    finally:
        claim.release()
    typer.echo(f"wrote {n} frame(s) from driver {name!r} ({params.describe()}) to {out}")
