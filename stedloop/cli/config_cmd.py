"""`stedloop config show|validate`: the effective settings and where each came from."""

from __future__ import annotations

import json

import typer
from rich.console import Console
from rich.table import Table

from stedloop.cli.common import ConfigOption, load_cli_config, print_json


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
        """Check a config (and the configured driver's options); exit 2 with the reason if bad."""
        loaded = load_cli_config(config)
        from stedloop.drivers import validate_driver_options

        validate_driver_options(loaded.config)
        typer.echo("configuration is valid")
