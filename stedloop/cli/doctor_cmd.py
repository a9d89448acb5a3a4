"""`stedloop doctor`: is this machine ready to run stedloop? Each check says OK or FAIL + fix.

Checks, in order: the config; the plugins it names; the configured driver (for Imspector:
specpy importable, Imspector reachable; then connect, describe, safe state, close; the
configured parameter ranges must lie within the driver's); the device scoring will use; the
quality model file (loaded for real); whether the driver's fields are large enough for the
quality network; whether the daemon's ports are free. With ``--acquire``: one test frame
through the driver, scored by every configured objective (doctor_acquire.py). Exit code 0
when everything is OK, 1 otherwise.
"""

from __future__ import annotations

import importlib.util
import socket
import sys
import threading
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import typer

from stedloop.cli.common import EXIT_FAILURES, EXIT_OK, ConfigOption, load_cli_config, print_json

if TYPE_CHECKING:
    from stedloop.config.schema import StedloopConfig


@dataclass
class Check:
    name: str
    ok: bool | None  # None: skipped because an earlier check failed
    detail: str
    fix: str = ""


class _Failed(Exception):
    """A check failed; carries the fix to print."""

    def __init__(self, detail: str, fix: str) -> None:
        super().__init__(detail)
        self.fix = fix


def _run(name: str, check: Callable[[], str]) -> Check:
    try:
        return Check(name, True, check())
    except _Failed as exc:
        return Check(name, False, str(exc), exc.fix)
    except Exception as exc:  # a check must report, never crash the doctor
        return Check(name, False, f"{type(exc).__name__}: {exc}", "see the message above")


# -- the checks ----------------------------------------------------------------------------


def check_driver_options(config: StedloopConfig, files: str) -> str:
    """The config check includes the driver's own table ([drivers.<name>], e.g. Imspector's
    laser calibration), as `stedloop config validate` does: a config the driver would refuse
    is not reported valid. A driver plugin that does not load is the plugins check's."""
    from stedloop.drivers import validate_driver_options
    from stedloop.errors import ConfigError, PluginError

    name = config.driver.name
    try:
        validate_driver_options(config)
    except PluginError:
        return f"valid ({files}); driver {name!r} not checked (its plugin did not load)"
    except ConfigError as exc:
        calibration = (
            "; the laser calibration is measured at the sample with a power meter "
            "(docs/imspector.md)"
            if name == "imspector"
            else ""
        )
        raise _Failed(
            f"{files}: {exc}",
            f"complete [drivers.{name}] in the config (then `stedloop config validate`)"
            + calibration,
        ) from None
    return f"valid ({files})"


def check_plugins(config: StedloopConfig) -> str:
    from stedloop import registry
    from stedloop.drivers import driver_class
    from stedloop.errors import StedloopError

    try:
        driver_class(config.driver.name)
    except StedloopError as exc:
        raise _Failed(
            str(exc),
            "install the driver plugin, or complete it if it is installed but incomplete "
            f"(installed drivers: {', '.join(registry.available(registry.DRIVERS))})",
        ) from None
    problems = []
    for name in config.objectives.names:
        try:
            registry.load(registry.OBJECTIVES, name)
        except StedloopError as exc:
            problems.append(str(exc))
    if problems:
        raise _Failed(
            "; ".join(problems),
            "install the objective plugin or remove it from objectives.names",
        )
    return f"driver {config.driver.name!r}, objectives {', '.join(config.objectives.names)}"


def check_driver(
    config: StedloopConfig, timeout_s: float, facts: dict[str, Any] | None = None
) -> str:
    name = config.driver.name
    options = config.driver_options()
    if name == "imspector":
        module = options.get("specpy_module", "specpy")
        if importlib.util.find_spec(module.split(".")[0]) is None:
            raise _Failed(
                f"the Imspector driver needs {module!r}, which is not installed",
                "pip install 'stedloop[imspector]' on the acquisition PC (specpy comes "
                "with Imspector's Python interface)",
            )
    # A daemon or session driving the instrument now is not disturbed (no connect, no safe
    # state in the middle of its frame): say who holds it instead.
    from stedloop.instrument import InstrumentBusy, claim_instrument

    try:
        claim = claim_instrument(config, "`stedloop doctor`")
    except InstrumentBusy as exc:
        return f"{name}: not touched, {str(exc).split(';')[0].removeprefix('the ')}"
    try:
        return _exercise_driver(config, name, timeout_s, facts if facts is not None else {})
    finally:
        claim.release()


def _exercise_driver(
    config: StedloopConfig, name: str, timeout_s: float, facts: dict[str, Any]
) -> str:
    from stedloop.drivers import create_driver
    from stedloop.errors import DriverDisconnected, StedloopError

    driver = create_driver(config)
    outcome: dict[str, Any] = {}

    def exercise() -> None:
        try:
            driver.connect()
            outcome["description"] = driver.describe()
            driver.safe_state()
        except BaseException as exc:
            outcome["error"] = exc
        finally:
            try:
                driver.close()
            except Exception as exc:
                outcome.setdefault("error", exc)

    worker = threading.Thread(target=exercise, name="doctor-driver", daemon=True)
    worker.start()
    worker.join(timeout_s)
    if worker.is_alive():
        raise _Failed(
            f"driver {name!r} did not answer within {timeout_s:g} s",
            "check the instrument PC and its network; raise --timeout if it is slow",
        )
    error = outcome.get("error")
    if isinstance(error, DriverDisconnected):
        raise _Failed(str(error), "start the instrument software, then run stedloop doctor again")
    if isinstance(error, StedloopError):
        raise _Failed(str(error), f"check [drivers.{name}] and the instrument's state")
    if error is not None:
        raise _Failed(f"{type(error).__name__}: {error}", "this is a driver bug; report it")
    description = outcome["description"]
    facts["description"] = description
    problems = config.params.outside_ranges(description.parameter_ranges)
    if problems:
        raise _Failed(
            f"{description.name} connected, but " + "; ".join(problems),
            "narrow those [params] ranges to the driver's (or fix the driver's settings)",
        )
    width, height = description.field_of_view_px
    return (
        f"{description.name}: connected, {width}x{height} px at "
        f"{description.pixel_size_nm:g} nm, lasers in the safe state"
    )


def check_compute(config: StedloopConfig) -> str:
    try:
        import torch
    except ImportError as exc:
        raise _Failed(f"torch cannot be imported: {exc}", "pip install torch") from None
    requested = config.quality.device
    threads = torch.get_num_threads()
    if torch.cuda.is_available():
        gpu = torch.cuda.get_device_name(0)
        if requested == "cpu":
            return f"CPU ({threads} threads) as configured; a CUDA GPU ({gpu}) is also present"
        return f"CUDA GPU {gpu} (torch {torch.__version__})"
    if requested == "cuda":
        raise _Failed(
            "quality.device is 'cuda' but torch sees no CUDA GPU",
            "set quality.device = 'auto' or 'cpu', or install a CUDA build of torch and "
            "the NVIDIA driver",
        )
    return f"CPU, {threads} threads (torch {torch.__version__}; no CUDA GPU found)"


def check_model(config: StedloopConfig, device: str, facts: dict[str, Any] | None = None) -> str:
    try:
        from stedloop.quality import shipped_model_path
        from stedloop.quality.scorer import CNNScorer
    except ImportError as exc:
        raise _Failed(f"the quality scorer is not available: {exc}", "reinstall stedloop") from None
    configured = config.quality.model_path
    path = Path(configured).expanduser() if configured is not None else shipped_model_path()
    where = "quality.model_path" if configured is not None else "the shipped model"
    if not path.is_file():
        raise _Failed(
            f"{where} {path} does not exist",
            "set quality.model_path to a trained checkpoint (stedloop train), or reinstall "
            "stedloop to get the shipped model",
        )
    from stedloop.errors import StedloopError

    try:
        scorer = CNNScorer.from_checkpoint(path, device=device, batch_size=1)
    except StedloopError as exc:
        raise _Failed(
            f"{path} cannot be loaded: {exc}", "retrain or replace the checkpoint"
        ) from None
    if facts is not None:
        facts["input_size_px"] = scorer.input_size_px
    return f"{path} loads on {scorer.device}"


def check_service(config: StedloopConfig) -> str:
    """The scoring service of ``quality.endpoint`` answers with this daemon's token; with
    fallback ``local``, the local model is the service's (else frames would pause)."""
    from stedloop.errors import ScoringUnavailable, StedloopError
    from stedloop.scoring_service.client import RemoteScorer, file_sha256
    from stedloop.scoring_service.configured import local_model_path
    from stedloop.scoring_service.tokens import read_token

    quality = config.quality
    assert quality.endpoint is not None
    try:
        where = "quality.token_env" if quality.token_env is not None else "quality.token_file"
        token = read_token(quality.token_env, quality.token_file, where)
    except StedloopError as exc:
        raise _Failed(
            str(exc), "give the daemon the service's token (docs/scoring_service.md)"
        ) from None
    scorer = RemoteScorer(
        quality.endpoint,
        token=token,
        timeout_s=quality.timeout_s,
        connect_timeout_s=quality.connect_timeout_s,
    )
    try:
        info = scorer.info()
    except ScoringUnavailable as exc:
        raise _Failed(
            str(exc),
            "start it (`stedloop scoring serve` on the service's machine) or correct "
            f"quality.endpoint; meanwhile fallback {quality.fallback!r} applies",
        ) from None
    finally:
        scorer.close()
    served = str(info.get("model_sha256") or "")
    if quality.fallback == "local":
        path = local_model_path(quality)
        local = file_sha256(path) if path.is_file() else None
        if served and local != served:
            raise _Failed(
                f"{quality.endpoint} scores with model sha256 {served[:12]}, but the local "
                f"fallback's model {path} is {'missing' if local is None else local[:12]}: "
                "the fallback would pause, not score",
                "set quality.model_path to a copy of the service's model file",
            )
    return (
        f"{quality.endpoint} answers: model sha256 {served[:12]} on {info.get('device')}, "
        f"batches of up to {info.get('max_batch_size')}; fallback {quality.fallback}"
    )


def check_scoring(config: Any, facts: dict[str, Any]) -> str:
    """The quality network refuses images smaller than its input: say so before a session
    whose every frame would fail to score."""
    description, size = facts.get("description"), facts.get("input_size_px")
    if description is None or size is None:
        return "not checked (needs the driver's and the model's checks)"
    width, height = description.field_of_view_px
    if min(width, height) < size:
        raise _Failed(
            f"driver {description.name!r} images {width}x{height} px fields, smaller than the "
            f"quality network's {size}x{size} px input: no frame could be scored",
            f"set the driver's field to at least {size} px, or remove 'quality' from "
            "objectives.names",
        )
    return f"{width}x{height} px fields fit the quality network's {size}x{size} px input"


def check_acquire(config: Any, timeout_s: float, input_size_px: int | None) -> str:
    from stedloop.cli.doctor_acquire import (
        AcquireCheckFailed,
        score_test_frame,
        take_test_frame,
    )

    try:
        frame = take_test_frame(config, timeout_s)
    except AcquireCheckFailed as exc:
        raise _Failed(str(exc), exc.fix) from None
    height, width = frame.shape
    taken = f"a {width}x{height} px frame at {frame.params.describe()}"
    results = score_test_frame(config, frame)
    failed = [r for r in results if r.error is not None]
    if failed:
        size = input_size_px or 224  # the shipped network's input
        small = min(width, height) < size and any(r.name == "quality" for r in failed)
        hint = (
            f"the quality network needs frames of at least {size} px: set the driver's field "
            "larger, or remove 'quality' from objectives.names"
            if small
            else "fix the objective or the driver's frames (docs/plugins.md: Frame images)"
        )
        raise _Failed(
            f"took {taken}, but "
            + "; ".join(f"objective {r.name!r} cannot score it: {r.error}" for r in failed),
            hint,
        )
    scores = ", ".join(f"{r.name} {r.value:.4g}" for r in results)
    return f"took {taken}; scored: {scores}"


def _port_free(host: str, port: int) -> str | None:
    """None when ``host:port`` can be bound now, else the reason."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        if sys.platform != "win32":  # on Windows SO_REUSEADDR would let us steal the port
            probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as exc:
            return exc.strerror or str(exc)
    return None


def check_ports(config: StedloopConfig) -> str:
    free, problems = [], []
    for key in ("request_address", "event_address"):
        address = getattr(config.daemon, key)
        parts = urlsplit(address)
        if parts.scheme != "tcp":
            free.append(f"{key} {address} (not TCP, not checked)")
            continue
        host = parts.hostname or ""
        host = "0.0.0.0" if host in ("*", "") else host
        try:
            port = parts.port
        except ValueError:
            port = None
        if port is None:
            problems.append(f"daemon.{key} {address!r} has no valid port")
            continue
        reason = _port_free(host, port)
        if reason is None:
            free.append(f"{host}:{port}")
        else:
            problems.append(f"daemon.{key} {host}:{port} is not free ({reason})")
    if problems:
        raise _Failed(
            "; ".join(problems),
            "stop what uses the port (a stedloop daemon already running? see "
            "`stedloop daemon status`) or choose other ports in [daemon]",
        )
    return "free: " + ", ".join(free)


# -- the command -----------------------------------------------------------------------------


def run_checks(config_path: Path | None, timeout_s: float, acquire: bool = False) -> list[Check]:
    from stedloop.errors import StedloopError

    checks: list[Check] = []
    try:
        loaded = load_cli_config(config_path)
    except StedloopError as exc:
        checks.append(
            Check("config", False, str(exc), "correct the config (stedloop config validate)")
        )
        names = ["plugins", "driver", "compute", "model", "scoring", "ports"]
        for name in [*names, "acquire"] if acquire else names:
            checks.append(Check(name, None, "skipped: the config did not load"))
        return checks
    config = loaded.config
    files = ", ".join(str(p) for p in loaded.files) or "defaults only"
    valid = _run("config", lambda: check_driver_options(config, files))
    checks.append(valid)
    plugins = _run("plugins", lambda: check_plugins(config))
    checks.append(plugins)
    facts: dict[str, Any] = {}  # the driver's description, the network's input size
    driver = Check("driver", None, "skipped: the driver plugin did not load")
    if not valid.ok:
        driver = Check("driver", None, f"skipped: [drivers.{config.driver.name}] is incomplete")
    elif plugins.ok:
        driver = _run("driver", lambda: check_driver(config, timeout_s, facts))
    checks.append(driver)
    compute = _run("compute", lambda: check_compute(config))
    checks.append(compute)
    device = config.quality.device if compute.ok else "cpu"
    checks.append(_run("model", lambda: check_model(config, device, facts)))
    if "quality" in config.objectives.names:
        checks.append(_run("scoring", lambda: check_scoring(config, facts)))
    if config.quality.endpoint is not None:
        checks.append(_run("service", lambda: check_service(config)))
    checks.append(_run("ports", lambda: check_ports(config)))
    if acquire:
        if driver.ok and "description" in facts:
            size = facts.get("input_size_px")
            checks.append(_run("acquire", lambda: check_acquire(config, timeout_s, size)))
        else:
            checks.append(Check("acquire", None, "skipped: the driver was not exercised"))
    return checks


def _print(checks: list[Check]) -> None:
    width = max(len(c.name) for c in checks)
    for check in checks:
        status = {True: "OK", False: "FAIL", None: "SKIP"}[check.ok]
        typer.echo(f"{status:<5} {check.name:<{width}}  {check.detail}")
        if check.ok is False and check.fix:
            typer.echo(f"{'':<5} {'':<{width}}  fix: {check.fix}")


def register(app: typer.Typer) -> None:
    """Add `stedloop doctor`."""

    @app.command("doctor")
    def doctor(
        config: ConfigOption = None,
        timeout: float = typer.Option(
            20.0, "--timeout", min=0.1, help="Seconds to wait for the driver to answer."
        ),
        as_json: bool = typer.Option(False, "--json", help="Machine-readable output."),
        acquire: bool = typer.Option(
            False,
            "--acquire",
            help="Also take one test frame through the driver (lasers on: the sample is "
            "exposed once) and score it with every configured objective.",
        ),
    ) -> None:
        """Check the config, the driver connection, the GPU/CPU, the model and the daemon ports."""
        checks = run_checks(config, timeout, acquire)
        if as_json:
            print_json([asdict(c) for c in checks])
        else:
            _print(checks)
        failed = any(c.ok is False for c in checks)
        if not as_json:
            typer.echo("some checks failed" if failed else "all checks passed")
        raise typer.Exit(EXIT_FAILURES if failed else EXIT_OK)
