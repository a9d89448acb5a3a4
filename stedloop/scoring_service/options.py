"""How the scoring service runs (``stedloop scoring serve``'s options), checked without Ray:
a refused setting is said before a cluster starts, and on a machine without Ray too."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass
from pathlib import Path

from stedloop.errors import ConfigError

APP_NAME = "stedloop-scoring"
ROUTE = "/score"
DEFAULT_PORT = 8470


@dataclass(frozen=True)
class ServiceOptions:
    """How the service runs; ``token_digest`` is the sha256 of its token (None: no token)."""

    host: str = "127.0.0.1"
    port: int = DEFAULT_PORT
    model_path: Path | None = None
    device: str = "auto"
    replicas: int = 1
    gpus_per_replica: float = 0.0
    cpus_per_replica: float = 1.0
    cpu_threads: int = 0
    max_batch_size: int = 32
    batch_wait_ms: float = 2.0
    token_digest: str | None = None
    tls_certfile: Path | None = None
    tls_keyfile: Path | None = None

    @property
    def url(self) -> str:
        scheme = "https" if self.tls_certfile else "http"
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{scheme}://{host}:{self.port}{ROUTE}"


def is_loopback_host(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name or 0.0.0.0-like wildcard is reachable from outside
        return False


def check_options(options: ServiceOptions) -> None:
    """Refuse what must not run: a non-loopback address without a token, bad numbers."""
    if not is_loopback_host(options.host) and options.token_digest is None:
        raise ConfigError(
            f"refusing to listen on {options.host} without a token: anything but loopback "
            "needs --token-env or --token-file (and the daemons' quality.token_env or "
            "quality.token_file); see docs/scoring_service.md"
        )
    if not 0 < options.port < 65536:
        raise ConfigError(f"--port must be 1..65535, got {options.port}")
    if options.gpus_per_replica < 0 or options.cpus_per_replica < 0:
        raise ConfigError("--gpus-per-replica and --cpus-per-replica must not be negative")
    if options.replicas < 1:
        raise ConfigError(f"--replicas must be at least 1, got {options.replicas}")
    if not 1 <= options.max_batch_size <= 4096:
        raise ConfigError(f"--max-batch-size must be 1..4096, got {options.max_batch_size}")
    if not 0 <= options.batch_wait_ms <= 1000:
        raise ConfigError(f"--batch-wait-ms must be 0..1000, got {options.batch_wait_ms}")
    if (options.tls_certfile is None) != (options.tls_keyfile is None):
        raise ConfigError("--tls-certfile and --tls-keyfile go together")
