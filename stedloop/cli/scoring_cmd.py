"""`stedloop scoring serve`: the quality network as a shared scoring service (Ray Serve)."""

from __future__ import annotations

import dataclasses
import signal
import threading
from pathlib import Path
from types import FrameType

import typer

from stedloop.cli.common import ConfigOption, fail, load_cli_config

RAY_MISSING = (
    "the scoring service needs Ray Serve, which is not installed: "
    "pip install 'stedloop[ray]' (the daemons that use the service do not need it)"
)


def register(app: typer.Typer) -> None:
    scoring_app = typer.Typer(
        help="The quality network as a shared scoring service (Ray Serve).", no_args_is_help=True
    )
    app.add_typer(scoring_app, name="scoring")

    @scoring_app.command("serve")
    def serve_cmd(
        host: str = typer.Option(
            "127.0.0.1",
            help="Address to listen on; anything but loopback needs --token-env or --token-file.",
        ),
        port: int = typer.Option(8470, help="HTTP port; daemons use http://HOST:PORT/score."),
        model: Path | None = typer.Option(
            None, "--model", "-m", help="Checkpoint; default: quality.model_path, else shipped."
        ),
        device: str | None = typer.Option(None, help="auto, cpu or cuda (default: config)."),
        replicas: int = typer.Option(1, help="Replicas of the network (each loads the model)."),
        gpus_per_replica: float | None = typer.Option(
            None, help="GPUs per replica (default: 1 when a GPU is present and device allows)."
        ),
        cpus_per_replica: float = typer.Option(1.0, help="CPUs Ray reserves per replica."),
        threads: int = typer.Option(0, help="Torch CPU threads per replica (0: torch's choice)."),
        max_batch_size: int = typer.Option(32, help="Most frames scored as one batch."),
        batch_wait_ms: float = typer.Option(
            2.0, help="How long a replica waits for more frames to fill a batch."
        ),
        token_env: str | None = typer.Option(
            None, help="Environment variable holding the token daemons must send."
        ),
        token_file: Path | None = typer.Option(
            None, help="File holding the token daemons must send."
        ),
        tls_certfile: Path | None = typer.Option(
            None, help="Serve HTTPS with this certificate (or put a reverse proxy in front)."
        ),
        tls_keyfile: Path | None = typer.Option(None, help="The certificate's private key."),
        ray_address: str | None = typer.Option(
            None,
            help="A running Ray cluster (e.g. auto, or ray://head:10001); default: a "
            "local Ray started for the service.",
        ),
        num_cpus: int | None = typer.Option(
            None, help="CPUs of the local Ray (default: all); ignored with --ray-address."
        ),
        object_store_mb: int | None = typer.Option(
            None, help="Object store of the local Ray, in MB (default: Ray's, 30 % of memory)."
        ),
        config: ConfigOption = None,
    ) -> None:
        """Serve the quality network over HTTP with dynamic batching, until Ctrl-C or SIGTERM."""
        from stedloop.scoring_service.options import ServiceOptions, check_options
        from stedloop.scoring_service.tokens import read_token, token_digest

        if token_env is not None and token_file is not None:
            fail("give --token-env or --token-file, not both")
        quality = load_cli_config(config).config.quality
        token = read_token(token_env, token_file, "--token-env" if token_env else "--token-file")
        model_path = model if model is not None else quality.model_path
        if model_path is not None and not model_path.is_file():
            fail(f"--model {model_path}: no such file")
        options = ServiceOptions(
            host=host,
            port=port,
            model_path=model_path.resolve() if model_path is not None else None,
            device=device or quality.device,
            replicas=replicas,
            gpus_per_replica=0.0,
            cpus_per_replica=cpus_per_replica,
            cpu_threads=threads,
            max_batch_size=max_batch_size,
            batch_wait_ms=batch_wait_ms,
            token_digest=token_digest(token) if token is not None else None,
            tls_certfile=tls_certfile,
            tls_keyfile=tls_keyfile,
        )
        check_options(options)  # before Ray starts (seconds) and without it
        if options.device not in ("auto", "cpu", "cuda"):
            fail(f"--device must be auto, cpu or cuda, got {options.device!r}")
        gpus = gpus_per_replica if gpus_per_replica is not None else _default_gpus(options.device)
        options = dataclasses.replace(options, gpus_per_replica=gpus)
        check_options(options)
        try:
            import ray

            from stedloop.scoring_service.server import start_service, stop_service
        except ImportError:
            fail(RAY_MISSING)
        if ray_address is not None:
            ray.init(address=ray_address, log_to_driver=False)
        else:
            store = object_store_mb * 1024 * 1024 if object_store_mb is not None else None
            ray.init(
                num_cpus=num_cpus,
                object_store_memory=store,
                include_dashboard=False,
                log_to_driver=False,
            )
        stop = threading.Event()

        def on_signal(_number: int, _frame: FrameType | None) -> None:
            stop.set()

        for name in ("SIGINT", "SIGTERM", "SIGHUP"):
            number = getattr(signal, name, None)
            if number is not None:
                signal.signal(number, on_signal)
        try:
            url = start_service(options)
            typer.echo(
                f"scoring service at {url}: {options.replicas} replica(s), "
                f"{gpus:g} GPU(s) each, batches of up to {options.max_batch_size} within "
                f"{options.batch_wait_ms:g} ms; {'token required' if token else 'no token'}; "
                "Ctrl-C stops it",
                err=True,
            )
            while not stop.wait(0.5):
                pass
            typer.echo("stopping the scoring service", err=True)
            stop_service()
        finally:
            ray.shutdown()


def _default_gpus(device: str) -> float:
    """One GPU per replica when this machine has one and the device allows it."""
    if device == "cpu":
        return 0.0
    import torch

    if torch.cuda.is_available():
        return 1.0
    if device == "cuda":
        fail(
            "--device cuda was asked for but this machine has no CUDA GPU (or pass "
            "--gpus-per-replica for a cluster's GPU nodes)"
        )
    return 0.0
