"""`stedloop config show|validate`: the effective settings and where each came from."""

from __future__ import annotations

import json
from typing import TYPE_CHECKING

import typer
from rich.console import Console
from rich.table import Table

from stedloop.cli.common import ConfigOption, load_cli_config, print_json

if TYPE_CHECKING:
    from stedloop.config.schema import StedloopConfig


def register(app: typer.Typer) -> None:
    config_app = typer.Typer(help="Inspect and check configuration.", no_args_is_help=True)
    app.add_typer(config_app, name="config")

    @config_app.command("show")
    def show(
        config: ConfigOption = None,
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
    ) -> None:
        """Print the effective settings and the layer (default, file, environment) of each."""
        loaded = load_cli_config(config)
        items = loaded.effective_items()
        if as_json:
            print_json([{"key": k, "value": v, "source": s} for k, v, s in items])
            return
        console = Console()
        if not console.is_terminal:
            width = max(len(k) for k, _, _ in items)
            for key, value, source in items:
                typer.echo(f"{key:<{width}} = {json.dumps(value):<28} # {source}")
            return
        table = Table(title="stedloop settings", show_lines=False)
        table.add_column("key", style="cyan", no_wrap=True)
        table.add_column("value")
        table.add_column("source", style="dim")
        for key, value, source in items:
            table.add_row(key, json.dumps(value), source)
        console.print(table)

    @config_app.command("validate")
    def validate(config: ConfigOption = None) -> None:
        """Check a config, the configured driver's options and that the parameter ranges fit
        the driver's; exit 2 with the reason if bad."""
        loaded = load_cli_config(config)
        from stedloop.drivers import validate_driver_options

        validate_driver_options(loaded.config)
        unchecked = _check_driver_ranges(loaded.config)
        if unchecked:
            typer.echo(
                f"configuration is valid; the driver's parameter ranges were not checked "
                f"({unchecked}): `stedloop doctor` checks them with the instrument connected"
            )
            return
        typer.echo("configuration is valid")


def _check_driver_ranges(config: StedloopConfig) -> str | None:
    """Compare the parameter ranges with the driver's (``describe()`` without connecting,
    which the shipped drivers support); ConfigError when one does not fit, else None, or
    why the driver could not say without a connection."""
    from stedloop.drivers import check_params_fit_driver, create_driver
    from stedloop.errors import StedloopError

    driver = create_driver(config)
    try:
        description = driver.describe()
    except StedloopError as exc:  # e.g. a plugin that learns its ranges from the instrument
        return str(exc)
    finally:
        driver.close()
    check_params_fit_driver(config, description)
    return None
