"""`stedloop simulate` as a user runs it: a real subprocess, real files, exit codes."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from cli_helpers import run_stedloop

from stedloop.params import ImagingParams
from stedloop.tiffio import read_frame_tiff


def run_simulate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return run_stedloop("simulate", *args, env=env, timeout_s=120)


def test_writes_n_frames_on_fresh_regions_with_applied_params(tmp_path: Path) -> None:
    out = tmp_path / "frames"
    result = run_simulate(
        "--structure", "tubulin", "--n", "3", "--out", str(out), "--seed", "5",
        "--dwell-time-us", "12", "--excitation-uw", "4", "--depletion-mw", "90",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    files = sorted(out.glob("*.ome.tif"))
    assert [f.name for f in files] == [f"tubulin_{i:04d}.ome.tif" for i in range(3)]
    frames = [read_frame_tiff(f) for f in files]
    assert all(f.params == ImagingParams(12.0, 4.0, 90.0) for f in frames)
    assert len({(f.region.x_um, f.region.y_um) for f in frames}) == 3  # fresh regions
    assert all(f.metadata["structure"] == "tubulin" for f in frames)
    assert all(f.metadata["seed"] == 5 for f in frames)
    assert not np.array_equal(frames[0].sted, frames[1].sted)


def test_same_seed_gives_same_files(tmp_path: Path) -> None:
    for name in ("a", "b"):
        assert (
            run_simulate("--n", "1", "--out", str(tmp_path / name), "--seed", "9").returncode == 0
        )
    a = read_frame_tiff(tmp_path / "a" / "actin_0000.ome.tif")
    b = read_frame_tiff(tmp_path / "b" / "actin_0000.ome.tif")
    np.testing.assert_array_equal(a.stack(), b.stack())


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--structure", "mitochondria"], "unknown structure 'mitochondria'"),
        (["--dwell-time-us", "nan"], "dwell_time_us must be finite"),
        (["--excitation-uw", "-1"], "excitation_uw must not be negative"),
        (["--depletion-mw", "400"], "depletion_mw=400"),
        (["--dwell-time-us", "100", "--depletion-mw", "350"], "safety cap"),
        (["--n", "0"], "--n must be at least 1"),
    ],
)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(
    tmp_path: Path, args: list[str], message: str
) -> None:
    out = tmp_path / "out"
    result = run_simulate("--n", "2", "--out", str(out), *args)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not out.exists()


def test_unreadable_config_is_exit_2(tmp_path: Path) -> None:
    config = tmp_path / "site.toml"
    config.write_text("[drivers.simulator\nstructure = 'actin'\n")
    result = run_simulate("--out", str(tmp_path / "out"), "--config", str(config))
    assert result.returncode == 2
    assert "site.toml" in result.stderr
    assert not (tmp_path / "out").exists()


def test_existing_files_are_not_overwritten_without_flag(tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert run_simulate("--n", "1", "--out", str(out)).returncode == 0
    before = (out / "actin_0000.ome.tif").read_bytes()
    result = run_simulate("--n", "1", "--out", str(out), "--seed", "3")
    assert result.returncode == 2 and "already exists" in result.stderr
    assert (out / "actin_0000.ome.tif").read_bytes() == before
    assert run_simulate("--n", "1", "--out", str(out), "--seed", "3", "--overwrite").returncode == 0
    assert (out / "actin_0000.ome.tif").read_bytes() != before


def test_help_names_every_option() -> None:
    result = run_simulate("--help")
    assert result.returncode == 0
    for option in ("--structure", "--n", "--out", "--seed", "--dwell-time-us", "--excitation-uw", "--depletion-mw", "--config"):  # fmt: skip
        assert option in result.stdout


def imspector_config(path: Path) -> Path:
    path.write_text(
        '[driver]\nname = "imspector"\n[drivers.imspector]\n'
        'specpy_module = "stedloop.drivers.imspector.fake_specpy"\n'
        "excitation_uw_at_full_scale = 20.0\ndepletion_mw_at_full_scale = 350.0\n"
        f"[store]\ndata_dir = {str(path.parent / 'data')!r}\n"
    )
    return path


def test_another_configured_driver_is_never_replaced_silently(tmp_path: Path) -> None:
    config = imspector_config(tmp_path / "site.toml")
    out = tmp_path / "out"
    result = run_simulate("--n", "1", "--out", str(out), "--config", str(config))
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert "the configured driver is 'imspector', not the simulator" in line
    assert "--driver simulator" in line and "--driver imspector" in line
    assert not out.exists()
    named = run_simulate(
        "--n", "1", "--out", str(out), "--config", str(config), "--driver", "simulator"
    )
    assert named.returncode == 0, named.stderr
    assert [p.name for p in out.iterdir()] == ["actin_0000.ome.tif"]


def test_frames_through_a_plugin_driver_named_with_driver(tmp_path: Path) -> None:
    site = tmp_path / "site"
    info = site / "stedloop_toy-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: stedloop-toy\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[stedloop.drivers]\ntoy = stedloop_toy:ToyDriver\n")
    toy = Path(__file__).resolve().parent / "toy_plugin"
    config = tmp_path / "site.toml"
    config.write_text(
        "[drivers.toy]\ndepletion_mw_per_volt = 50.0\nexcitation_uw_per_volt = 5.0\n"
        f"field_px = 32\n[store]\ndata_dir = {str(tmp_path / 'data')!r}\n"
    )
    out = tmp_path / "out"
    env = {"PYTHONPATH": os.pathsep.join([str(site), str(toy)])}
    common = ("--n", "2", "--out", str(out), "--config", str(config), "--driver", "toy")
    refused = run_simulate(*common, "--structure", "beads", env=env)
    assert refused.returncode == 2 and "--structure and --seed" in refused.stderr
    result = run_simulate(*common, env=env)
    assert result.returncode == 0, result.stderr
    frames = [read_frame_tiff(out / f"toy_{i:04d}.ome.tif") for i in range(2)]
    assert all(f.shape == (32, 32) for f in frames)
    assert frames[0].region != frames[1].region  # fresh regions
    assert all(f.params == ImagingParams(10.0, 5.0, 150.0) for f in frames)  # read back
