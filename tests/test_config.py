"""Layered configuration: defaults < shipped file < site file < environment < overrides."""

from __future__ import annotations

from pathlib import Path

import pytest
from cli_helpers import run_stedloop

from stedloop.config import load_config, with_overrides
from stedloop.errors import ConfigError


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def load_error(site: Path) -> str:
    """The message of the ConfigError that loading ``site`` raises."""
    with pytest.raises(ConfigError) as info:
        load_config(site, environ={})
    return str(info.value)


def test_defaults_come_from_the_shipped_file() -> None:
    loaded = load_config(environ={})
    assert loaded.config.driver.name == "simulator"
    assert loaded.source_of("session.budget_frames").endswith("default.toml")
    assert loaded.source_of("store.data_dir") == "default"


def test_site_file_merges_deeply_and_env_wins(tmp_path: Path) -> None:
    site = write(
        tmp_path / "site.toml",
        "[params.depletion_mw]\nmax = 200.0\n[session]\nbudget_frames = 12\n",
    )
    loaded = load_config(site, environ={"STEDLOOP_SESSION__BUDGET_FRAMES": "40"})
    config = loaded.config
    assert config.params.depletion_mw.max == 200.0
    assert config.params.depletion_mw.min == 0.0  # sibling key kept from the defaults
    assert config.session.budget_frames == 40
    assert loaded.source_of("session.budget_frames") == "environment"
    assert loaded.source_of("params.depletion_mw.max") == f"file {site}"


def test_stedloop_config_env_names_the_site_file(tmp_path: Path) -> None:
    site = write(tmp_path / "site.toml", "[session]\nbudget_frames = 7\n")
    loaded = load_config(environ={"STEDLOOP_CONFIG": str(site)})
    assert loaded.config.session.budget_frames == 7
    assert "$STEDLOOP_CONFIG" in loaded.source_of("session.budget_frames")


def test_unknown_key_names_key_file_and_suggestion(tmp_path: Path) -> None:
    site = write(tmp_path / "site.toml", "[session]\nbudget_frame = 3\n")
    message = load_error(site)
    assert "unknown key 'session.budget_frame'" in message
    assert str(site) in message
    assert "did you mean 'budget_frames'" in message


def test_unknown_table_names_the_file_that_brought_it(tmp_path: Path) -> None:
    """Only a table's leaves are recorded as coming from a file; an unknown [section] is
    blamed on that file, not on the defaults."""
    site = write(tmp_path / "site.toml", "[bogus]\nx = 1\n[bogus.deeper]\ny = 2\n")
    message = load_error(site)
    assert f"unknown key 'bogus' (from file {site})" in message
    assert "(from default" not in message
    via_env = write(tmp_path / "env.toml", "[session.nested]\nx = 1\n")
    with pytest.raises(ConfigError) as info:
        load_config(environ={"STEDLOOP_CONFIG": str(via_env)})
    assert f"'session.nested' (from file {via_env} ($STEDLOOP_CONFIG))" in str(info.value)


def test_wrong_type_and_unit_names_expected_form(tmp_path: Path) -> None:
    site = write(tmp_path / "site.toml", '[params.dwell_time_us]\nmax = "10 ms"\n')
    message = load_error(site)
    assert "params.dwell_time_us.max" in message
    assert "'10 ms'" in message
    assert "µs" in message


def test_range_beyond_safety_cap_is_refused(tmp_path: Path) -> None:
    site = write(tmp_path / "site.toml", "[params.depletion_mw]\nmax = 400.0\n")
    with pytest.raises(
        ConfigError, match="depletion_mw.max=400 exceeds safety.max_depletion_mw=350"
    ):
        load_config(site, environ={})


@pytest.mark.parametrize(
    ("content", "expected"),
    [("[session\nbudget=1", "not valid TOML"), (b"\xff\xfe", "not UTF-8|not valid TOML")],
)
def test_unreadable_files(tmp_path: Path, content: str | bytes, expected: str) -> None:
    path = tmp_path / "bad.toml"
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content)
    with pytest.raises(ConfigError, match=expected):
        load_config(path, environ={})
    with pytest.raises(ConfigError, match="does not exist"):
        load_config(tmp_path / "missing.toml", environ={})


def test_bad_environment_variables() -> None:
    with pytest.raises(ConfigError, match="STEDLOOP_SESION__X does not name a setting"):
        load_config(environ={"STEDLOOP_SESION__X": "1"})
    with pytest.raises(ConfigError, match="session.budget_frames.*from environment"):
        load_config(environ={"STEDLOOP_SESSION__BUDGET_FRAMES": "many"})


def test_overrides_are_validated_and_tracked() -> None:
    loaded = load_config(environ={})
    updated = with_overrides(loaded, {"session": {"budget_frames": 5}})
    assert updated.config.session.budget_frames == 5
    assert updated.source_of("session.budget_frames") == "override"
    with pytest.raises(ConfigError, match="exceeds"):
        with_overrides(loaded, {"params": {"excitation_uw": {"max": 50.0}}})


def test_config_show_prints_values_and_sources(tmp_path: Path) -> None:
    site = write(tmp_path / "site.toml", "[session]\nbudget_frames = 9\n")
    result = run_stedloop("config", "show", "--config", str(site))
    assert result.returncode == 0, result.stderr
    line = next(x for x in result.stdout.splitlines() if x.startswith("session.budget_frames"))
    assert "9" in line and str(site) in line


def test_config_show_bad_file_exits_2_with_one_line_reason(tmp_path: Path) -> None:
    site = write(tmp_path / "site.toml", "[nonsense]\nx = 1\n")
    result = run_stedloop("config", "show", "--config", str(site))
    assert result.returncode == 2
    assert result.stderr.startswith("error: invalid configuration")
    assert "unknown key 'nonsense'" in result.stderr
    assert result.stdout == ""


def test_unknown_optimizer_choice_names_the_key_and_the_allowed_values(tmp_path: Path) -> None:
    site = write(tmp_path / "site.toml", '[optimizer]\nsurrogate_inputs = "dose"\n')
    message = load_error(site)
    assert "optimizer.surrogate_inputs" in message
    assert "light-dose" in message and "parameters" in message
