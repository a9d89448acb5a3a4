"""`stedloop doctor` in a real subprocess: what it reports and its exit code."""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

FAKE = "stedloop.drivers.imspector.fake_specpy"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def write_config(
    path: Path,
    *,
    host: str = "127.0.0.1",
    module: str = FAKE,
    model: Path | None = None,
    ports: tuple[int, int] | None = None,
    extra: str = "",
) -> Path:
    request, event = ports or (free_port(), free_port())
    lines = [
        '[driver]\nname = "imspector"',
        f'[drivers.imspector]\nhost = "{host}"\nspecpy_module = "{module}"',
        "excitation_uw_at_full_scale = 20.0\ndepletion_mw_at_full_scale = 350.0",
        f'[daemon]\nrequest_address = "tcp://127.0.0.1:{request}"',
        f'event_address = "tcp://127.0.0.1:{event}"',
    ]
    if model is not None:
        lines.append(f"[quality]\nmodel_path = {json.dumps(str(model))}")
    path.write_text("\n".join(lines) + "\n" + extra)
    return path


def doctor(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "stedloop.cli.main", "doctor", "--config", str(config), *args],
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "STEDLOOP_LOG_FORMAT": "json"},
    )


def by_name(result: subprocess.CompletedProcess[str]) -> dict[str, dict]:
    return {check["name"]: check for check in json.loads(result.stdout)}


@pytest.mark.slow  # loads and warms up a real quality network in the subprocess
def test_all_well_exits_zero(tmp_path: Path) -> None:
    checkpoint = pytest.importorskip("stedloop.quality.checkpoint")
    from stedloop.quality.model import QualityNet

    model = checkpoint.save_checkpoint(
        checkpoint.Checkpoint(QualityNet(), checkpoint.Normalization(0.1, 0.05)),
        tmp_path / "model.pt",
    )
    result = doctor(write_config(tmp_path / "site.toml", model=model))
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.splitlines()
    for name in ("config", "plugins", "driver", "compute", "model", "ports"):
        assert any(line.startswith("OK") and f" {name} " in line for line in lines), name
    assert "imspector: connected, 224x224 px at 20 nm, lasers in the safe state" in result.stdout
    assert lines[-1] == "all checks passed"


def test_unreachable_imspector_busy_port_missing_model(tmp_path: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        config = write_config(
            tmp_path / "site.toml",
            host="127.0.0.2",
            model=tmp_path / "nowhere.pt",
            ports=(busy.getsockname()[1], free_port()),
        )
        result = doctor(config, "--json", "--timeout", "10")
    finally:
        busy.close()
    assert result.returncode == 1, result.stdout + result.stderr
    checks = by_name(result)
    assert checks["config"]["ok"] and checks["compute"]["ok"]
    driver = checks["driver"]
    assert driver["ok"] is False
    assert "127.0.0.2" in driver["detail"] and "Imspector is running" in driver["detail"]
    assert "start the instrument software" in driver["fix"]
    assert (
        checks["model"]["ok"] is False and "nowhere.pt does not exist" in checks["model"]["detail"]
    )
    ports = checks["ports"]
    assert ports["ok"] is False and "is not free" in ports["detail"]
    assert "stedloop daemon status" in ports["fix"]


def test_bad_config_fails_and_skips_the_rest(tmp_path: Path) -> None:
    config = tmp_path / "bad.toml"
    config.write_text("[session]\nbudget_frame = 3\n")
    result = doctor(config, "--json")
    assert result.returncode == 1
    checks = by_name(result)
    assert checks["config"]["ok"] is False
    assert "budget_frame" in checks["config"]["detail"]
    assert {checks[n]["ok"] for n in ("plugins", "driver", "compute", "model", "ports")} == {None}


def test_imspector_config_without_calibration_fails_the_config_check(tmp_path: Path) -> None:
    """The shipped configs/imspector.toml before the lab enters its laser calibration: the
    config check says what is missing (not "OK config valid" and a failure further down)."""
    config = write_config(tmp_path / "site.toml")
    text = config.read_text().replace(
        "excitation_uw_at_full_scale = 20.0\ndepletion_mw_at_full_scale = 350.0\n", ""
    )
    config.write_text(text)
    result = doctor(config, "--json")
    assert result.returncode == 1
    checks = by_name(result)
    assert checks["config"]["ok"] is False
    assert "drivers.imspector.excitation_uw_at_full_scale" in checks["config"]["detail"]
    assert "drivers.imspector.depletion_mw_at_full_scale" in checks["config"]["detail"]
    assert str(config) in checks["config"]["detail"]
    assert "power meter" in checks["config"]["fix"]
    assert checks["plugins"]["ok"] is True  # the driver plugin itself is fine
    assert checks["driver"]["ok"] is None
    text_run = doctor(config)
    assert "OK    config" not in text_run.stdout
    assert text_run.stdout.startswith("FAIL  config")


@pytest.mark.skipif(importlib.util.find_spec("specpy") is not None, reason="specpy installed")
def test_missing_specpy_says_how_to_install(tmp_path: Path) -> None:
    result = doctor(write_config(tmp_path / "site.toml", module="specpy"), "--json")
    assert result.returncode == 1
    driver = by_name(result)["driver"]
    assert driver["ok"] is False
    assert "pip install 'stedloop[imspector]'" in driver["fix"]


def simulator_config(path: Path, field_px: int, objectives: list[str]) -> Path:
    request, event = free_port(), free_port()
    path.write_text(
        f'[driver]\nname = "simulator"\n[drivers.simulator]\nfield_px = {field_px}\n'
        f"[objectives]\nnames = {json.dumps(objectives)}\n"
        f'[daemon]\nrequest_address = "tcp://127.0.0.1:{request}"\n'
        f'event_address = "tcp://127.0.0.1:{event}"\n'
        f"[store]\ndata_dir = {json.dumps(str(path.parent / 'data'))}\n"
    )
    return path


def test_acquire_reports_frames_the_quality_network_cannot_score(tmp_path: Path) -> None:
    """A 64 px driver with the quality objective: the session would finish with no score."""
    config = simulator_config(tmp_path / "site.toml", 64, ["quality", "resolution"])
    result = doctor(config, "--json", "--acquire")
    assert result.returncode == 1, result.stdout + result.stderr
    checks = by_name(result)
    assert checks["driver"]["ok"] is True
    scoring = checks["scoring"]
    assert scoring["ok"] is False
    assert (
        "64x64 px fields, smaller than the quality network's 224x224 px input"
        in (scoring["detail"])
    )
    acquire = checks["acquire"]
    assert acquire["ok"] is False
    assert "took a 64x64 px frame at dwell_time_us=" in acquire["detail"]
    assert "objective 'quality' cannot score it: DataError" in acquire["detail"]
    assert "'resolution'" not in acquire["detail"]  # it could score it
    assert "at least 224 px" in acquire["fix"]


def test_acquire_takes_and_scores_one_frame(tmp_path: Path) -> None:
    config = simulator_config(tmp_path / "site.toml", 64, ["resolution", "bleaching"])
    result = doctor(config, "--acquire")
    lines = result.stdout.splitlines()
    acquire = next(line for line in lines if " acquire " in line)
    assert acquire.startswith("OK"), result.stdout
    assert "took a 64x64 px frame" in acquire and "scored: resolution " in acquire
    assert "bleaching " in acquire
