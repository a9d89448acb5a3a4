"""Every path through the Imspector driver, against the fake specpy (no hardware)."""

from __future__ import annotations

import ast
import re
import sys
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stedloop.config import load_config
from stedloop.driver import AcquireRequest, RawOutput
from stedloop.drivers import create_driver
from stedloop.drivers.imspector import ImspectorDriver, ImspectorOptions
from stedloop.drivers.imspector.fake_specpy import FakeSpecpy, noise_image_source
from stedloop.errors import (
    AcquisitionAborted,
    ConfigError,
    DriverDisconnected,
    DriverError,
    ParameterRejected,
    SafetyCapExceeded,
)
from stedloop.frame import Region
from stedloop.params import ImagingParams, SafetyCaps

CURRENT_EXC = "ExpControl/measurement/channels/0/lasers/5/power/calibrated"
CURRENT_DEP = "ExpControl/measurement/channels/0/lasers/6/power/calibrated"
CURRENT_DWELL = "ExpControl/measurement/pixel_steps/step_duration/0"
REGION = Region(0.0, 0.0, 224, 224)
PARAMS = ImagingParams(dwell_time_us=10.0, excitation_uw=5.0, depletion_mw=100.0)


def make_fake(**kwargs: Any) -> FakeSpecpy:
    kwargs.setdefault("image_source", noise_image_source())
    return FakeSpecpy(**kwargs)


def make_driver(
    fake: FakeSpecpy, waits: list[float] | None = None, **options: Any
) -> ImspectorDriver:
    options.setdefault("excitation_uw_at_full_scale", 20.0)
    options.setdefault("depletion_mw_at_full_scale", 350.0)
    sink = waits if waits is not None else []
    return ImspectorDriver(
        ImspectorOptions(**options), SafetyCaps(), specpy_module=fake, wait=sink.append
    )


def lasers_are_off(fake: FakeSpecpy, exc: str = CURRENT_EXC, dep: str = CURRENT_DEP) -> bool:
    return all(
        fake.value(name, exc) == 0.0 and fake.value(name, dep) == 0.0
        for name in ("Confocal", "STED")
    )


def test_happy_path_sets_runs_reads_back_and_records() -> None:
    fake = make_fake()
    with make_driver(fake) as driver:
        fake.set_log.clear()
        frame = driver.acquire(AcquireRequest(PARAMS, REGION))
        assert fake.run_log == ["Confocal", "STED", "Confocal"]
        # What Imspector holds, in its units (s, % of full power, m).
        assert fake.value("STED", CURRENT_DWELL) == pytest.approx(10e-6)
        assert fake.value("STED", CURRENT_EXC) == pytest.approx(25.0)
        assert fake.value("STED", CURRENT_DEP) == pytest.approx(28.57)  # 100/350 %, 0.01 steps
        assert fake.value("Confocal", CURRENT_DEP) == 0.0
        assert fake.value("STED", "ExpControl/scan/range/x/psz") == pytest.approx(20e-9)
        assert fake.value("STED", "ExpControl/scan/range/x/off") == pytest.approx(2.24e-6)
    # The frame records what was applied (read back), not what was asked.
    assert frame.params.depletion_mw == pytest.approx(28.57 / 100 * 350)
    assert frame.params.depletion_mw != PARAMS.depletion_mw
    assert frame.params.dwell_time_us == pytest.approx(10.0)
    assert frame.sted.shape == frame.confocal_before.shape == (224, 224)
    assert frame.pixel_size_nm == pytest.approx(20.0)
    meta = frame.metadata["imspector"]
    assert meta["requested"] == PARAMS.as_dict()
    assert meta["applied"]["STED"]["values"][CURRENT_DEP] == pytest.approx(28.57)
    assert meta["applied"]["Confocal"]["params"]["depletion_mw"] == 0.0
    assert meta["version"] == fake.version
    assert frame.metadata["raw_files"] == []
    # Closing put both lasers to zero everywhere and stopped the measurement.
    assert lasers_are_off(fake)
    assert fake.stop_calls >= 2


def test_confocal_settings_from_options() -> None:
    fake = make_fake()
    with make_driver(fake, confocal_excitation_uw=2.0, confocal_dwell_time_us=5.0) as driver:
        driver.acquire(AcquireRequest(PARAMS, REGION))
        assert fake.value("Confocal", CURRENT_EXC) == pytest.approx(10.0)
        assert fake.value("Confocal", CURRENT_DWELL) == pytest.approx(5e-6)
        assert fake.value("STED", CURRENT_EXC) == pytest.approx(25.0)


def test_image_axes_follow_imspector_order() -> None:
    # A gradient along x: data() is (t, z, y, x), so columns must increase in the frame.
    def gradient(request: Any) -> np.ndarray:
        h, w = request.region.height_px, request.region.width_px
        return np.tile(np.arange(w, dtype=np.uint16), (h, 1))

    fake = make_fake(image_source=gradient)
    with make_driver(fake) as driver:
        frame = driver.acquire(AcquireRequest(PARAMS, REGION))
    assert (frame.sted[0] == np.arange(224)).all()
    assert (frame.sted[:, 5] == 5).all()


def test_legacy_profile() -> None:
    fake = make_fake(profile="legacy")
    with make_driver(fake, path_profile="legacy") as driver:
        frame = driver.acquire(AcquireRequest(PARAMS, REGION))
        assert fake.value("STED", "ExpControl/scan/dwelltime") == pytest.approx(10e-6)
        assert fake.value(
            "STED", "ExpControl/lasers/power_calibrated/6/value/calibrated"
        ) == pytest.approx(28.57)
    assert frame.params.excitation_uw == pytest.approx(5.0)
    assert lasers_are_off(
        fake,
        "ExpControl/lasers/power_calibrated/5/value/calibrated",
        "ExpControl/lasers/power_calibrated/6/value/calibrated",
    )


def test_path_override_moves_one_quantity() -> None:
    fake = make_fake()
    other = "ExpControl/measurement/channels/0/lasers/7/power/calibrated"
    with make_driver(fake, paths={"depletion_power": other}) as driver:
        driver.acquire(AcquireRequest(PARAMS, REGION))
        assert fake.value("STED", other) == pytest.approx(28.57)
        assert fake.value("STED", CURRENT_DEP) == 0.0


def test_unknown_override_key_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="depletion_powr"):
        ImspectorOptions(
            excitation_uw_at_full_scale=20,
            depletion_mw_at_full_scale=350,
            paths={"depletion_powr": "x/y"},
        )


def test_current_paths_on_a_legacy_build_fail_clearly() -> None:
    fake = make_fake(profile="legacy")
    with make_driver(fake) as driver, pytest.raises(DriverError) as info:
        driver.acquire(AcquireRequest(PARAMS, REGION))
    assert "No parameter 'ExpControl/measurement/pixel_steps/step_duration/0'" in str(info.value)
    assert "configuration 'Confocal'" in str(info.value)


@pytest.mark.parametrize(
    ("path", "text"),
    [
        ("ExpControl/lasers/nothing/6", "No parameter 'ExpControl/lasers/nothing/6'"),
        ("STED775/power", "Unknown device or parameter 'STED775/power'"),
    ],
)
def test_unknown_path_raises_and_leaves_lasers_safe(path: str, text: str) -> None:
    fake = make_fake()
    with make_driver(fake, paths={"depletion_power": path}) as driver:
        # Excitation was set before the refused depletion path in this configuration.
        with pytest.raises(DriverError, match=re.escape(text)):
            driver.acquire(AcquireRequest(PARAMS, REGION))
        assert fake.value("Confocal", CURRENT_EXC) == 0.0
        assert fake.run_log == []


def test_a_power_beyond_the_calibrated_full_scale_is_refused_before_any_set() -> None:
    fake = make_fake()
    # 15 µW is within the safety cap, but with 10 µW at full scale it is 150 %.
    with make_driver(fake, excitation_uw_at_full_scale=10.0) as driver:
        fake.set_log.clear()
        with pytest.raises(ParameterRejected, match=r"excitation_uw=15 µW is outside .* 0\.\.10"):
            driver.acquire(AcquireRequest(ImagingParams(10.0, 15.0, 50.0), REGION))
        assert fake.set_log == [] and fake.run_log == []
        assert driver.describe().parameter_ranges["excitation_uw"] == (0.0, 10.0)


def test_refused_value_raises_and_leaves_lasers_safe() -> None:
    fake = make_fake()
    # A full scale configured as 200 where Imspector's values end at 100: 15 µW of 20 µW at
    # "200" is sent as 150, which Imspector refuses.
    options = {"excitation_uw_at_full_scale": 20.0, "power_full_scale": 200.0}
    with make_driver(fake, **options) as driver:
        stops_before = fake.stop_calls
        with pytest.raises(
            DriverError, match=re.escape(f"Invalid argument for parameter '{CURRENT_EXC}'")
        ):
            driver.acquire(AcquireRequest(ImagingParams(10.0, 15.0, 50.0), REGION))
        assert lasers_are_off(fake)
        assert fake.stop_calls > stops_before
        assert fake.run_log == []


def test_a_value_imspector_changes_is_caught_on_read_back() -> None:
    fake = make_fake()
    original = fake._set

    def doubling(configuration: str, path: str, value: Any) -> None:
        if path == CURRENT_DEP and value:
            value = value * 2  # e.g. a wrong calibration in Imspector
        original(configuration, path, value)

    fake._set = doubling  # type: ignore[method-assign]
    with make_driver(fake) as driver:
        with pytest.raises(DriverError, match="applied .* but .* was asked"):
            driver.acquire(AcquireRequest(PARAMS, REGION))
        assert lasers_are_off(fake)
        assert fake.run_log == []


@pytest.mark.parametrize(
    ("hook", "text"),
    [
        (lambda d: np.concatenate([d, d], axis=1), "expected one 2-D image"),
        (lambda d: d.astype(np.complex64), "unusable data type complex64"),
        (lambda d: d[..., :100], "image is (224, 100) px, expected (224, 224)"),
        (lambda d: np.full(d.shape, np.nan, np.float32), "NaN"),
    ],
)
def test_wrong_stack_shape_or_dtype(hook: Any, text: str) -> None:
    fake = make_fake()
    with make_driver(fake) as driver:
        fake.stack_hook = hook
        with pytest.raises(DriverError, match=re.escape(text)) as info:
            driver.acquire(AcquireRequest(PARAMS, REGION))
        assert "stack 'ExpControl Ch1 {1}' of configuration 'Confocal'" in str(info.value)
        assert lasers_are_off(fake)


def test_caps_refused_before_any_set() -> None:
    fake = make_fake()
    driver = make_driver(fake)
    driver.connect()
    fake.set_log.clear()
    with pytest.raises(SafetyCapExceeded, match="max_depletion_mw"):
        driver.acquire(AcquireRequest(ImagingParams(10.0, 5.0, 400.0), REGION))
    assert fake.set_log == []
    # The driver re-checks right before each set, not only in BaseDriver.acquire.
    with pytest.raises(SafetyCapExceeded, match="light dose"):
        driver._acquire(AcquireRequest(ImagingParams(100.0, 5.0, 300.0), REGION))
    assert [r for r in fake.set_log if r.value != 0.0] == []
    driver.close()


def test_dwell_outside_the_setup_range_is_refused_before_any_set() -> None:
    fake = make_fake()
    with make_driver(fake, dwell_time_range_us=(1.0, 50.0)) as driver:
        fake.set_log.clear()
        with pytest.raises(ParameterRejected, match="dwell_time_range_us"):
            driver.acquire(AcquireRequest(ImagingParams(80.0, 1.0, 0.0), REGION))
        assert fake.set_log == []


def test_connect_refused_tells_what_to_check() -> None:
    fake = make_fake()
    fake.go_offline()
    driver = make_driver(fake, host="127.0.0.1", port=12345)
    with pytest.raises(DriverDisconnected) as info:
        driver.connect()
    message = str(info.value)
    assert "127.0.0.1:12345" in message and "Imspector is running" in message
    assert "Run Server" in message


def test_connect_puts_lasers_in_safe_state() -> None:
    fake = make_fake()
    fake.set_value("STED", CURRENT_DEP, 50.0)  # left on by someone at the PC
    make_driver(fake).connect()
    assert lasers_are_off(fake)


def test_disconnect_mid_session_then_reconnect_with_backoff() -> None:
    fake = make_fake()
    waits: list[float] = []
    driver = make_driver(fake, waits, reconnect_attempts=2, reconnect_backoff_s=0.5)
    driver.connect()
    driver.acquire(AcquireRequest(PARAMS, REGION))
    fake.lose_connection_on_run = 5  # the STED run of the second frame
    with pytest.raises(DriverDisconnected, match="Run Server") as info:
        driver.acquire(AcquireRequest(PARAMS, REGION))
    assert "the next frame reconnects" in str(info.value)
    assert not driver.connected
    # Still closed: every retry is refused, with doubling waits, then a clear error.
    with pytest.raises(DriverDisconnected, match="cannot connect"):
        driver.acquire(AcquireRequest(PARAMS, REGION))
    assert waits == [0.5, 1.0]
    # Imspector is back: the next frame reconnects, goes safe first, then images.
    fake.go_online()
    connections = fake.connections
    fake.set_log.clear()
    frame = driver.acquire(AcquireRequest(PARAMS, REGION))
    assert fake.connections == connections + 1
    first = fake.set_log[:4]
    assert {r.path for r in first} == {CURRENT_EXC, CURRENT_DEP} and all(
        r.value == 0.0 for r in first
    )
    assert frame.sted.shape == (224, 224)
    driver.close()


def test_safe_state_when_disconnected_does_not_raise() -> None:
    fake = make_fake()
    driver = make_driver(fake)
    driver.connect()
    fake.go_offline()
    driver.safe_state()
    assert driver.last_safe_state_ok is False
    assert not driver.connected
    driver.close()  # idempotent, quiet


def test_abort_stops_a_slow_run() -> None:
    fake = make_fake(run_delay_s=10.0)
    driver = make_driver(fake)
    driver.connect()
    threading.Timer(0.2, driver.request_abort).start()
    started = time.monotonic()
    with pytest.raises(AcquisitionAborted):
        driver.acquire(AcquireRequest(PARAMS, REGION))
    assert time.monotonic() - started < 5.0
    assert lasers_are_off(fake)
    driver.close()


def test_raw_measurement_saved_beside_the_frames(tmp_path: Path) -> None:
    fake = make_fake()
    frames = tmp_path / "session" / "frames"
    with make_driver(fake) as driver:
        frame = driver.acquire(AcquireRequest(PARAMS, REGION, RawOutput(frames, "0007")))
        second = driver.acquire(AcquireRequest(PARAMS, REGION))  # asks for no raw files
    names = [Path(p).name for p in frame.metadata["raw_files"]]
    assert names == ["0007.confocal_before.obf", "0007.sted.obf", "0007.confocal_after.obf"]
    assert all(Path(p).is_file() for p in frame.metadata["raw_files"])
    assert second.metadata["raw_files"] == []
    assert sorted(p.name for p in frames.iterdir()) == sorted(names)


def test_raw_output_dir_from_options(tmp_path: Path) -> None:
    fake = make_fake()
    with make_driver(fake, raw_output_dir=tmp_path) as driver:
        frame = driver.acquire(AcquireRequest(PARAMS, REGION))
    assert [Path(p).parent for p in frame.metadata["raw_files"]] == [tmp_path] * 3


def test_missing_measurement_or_configuration() -> None:
    with pytest.raises(DriverError, match="no measurement is active"):
        make_driver(make_fake(has_measurement=False)).connect()
    with pytest.raises(DriverError, match=r"lacks configuration\(s\) 'STED'"):
        make_driver(make_fake(configurations=("Confocal",))).connect()


def test_specpy_missing_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "specpy", None)  # import specpy -> ImportError
    options = ImspectorOptions(excitation_uw_at_full_scale=20, depletion_mw_at_full_scale=350)
    with pytest.raises(DriverError, match=re.escape("pip install 'stedloop[imspector]'")):
        ImspectorDriver(options).connect()


def test_options_are_required() -> None:
    with pytest.raises(DriverError, match="excitation_uw_at_full_scale"):
        ImspectorDriver()


def test_built_from_config_through_the_entry_point(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(
        '[driver]\nname = "imspector"\n[drivers.imspector]\n'
        'specpy_module = "stedloop.drivers.imspector.fake_specpy"\n'
        "excitation_uw_at_full_scale = 20.0\ndepletion_mw_at_full_scale = 350.0\n"
    )
    driver = create_driver(load_config(site).config)
    assert isinstance(driver, ImspectorDriver)
    with driver:
        frame = driver.acquire(AcquireRequest(PARAMS, REGION))
    assert frame.params.excitation_uw == pytest.approx(5.0)
    assert driver.describe().parameter_ranges["depletion_mw"] == (0.0, 350.0)


def test_driver_uses_no_posix_only_calls() -> None:
    # The acquisition PC is usually Windows.
    import stedloop.drivers.imspector.driver as module

    tree = ast.parse(Path(module.__file__).read_text())
    names = {
        f"{n.value.id}.{n.attr}"
        for n in ast.walk(tree)
        if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name)
    }
    imports = {a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    forbidden = {"os.fork", "os.kill", "signal.SIGKILL", "signal.alarm", "os.setsid"}
    assert not names & forbidden
    assert not imports & {"fcntl", "termios", "pwd", "grp", "resource"}


def test_real_specpy_surface_when_installed() -> None:
    specpy = pytest.importorskip("specpy")
    assert callable(specpy.get_application)
    options = ImspectorOptions(
        excitation_uw_at_full_scale=20, depletion_mw_at_full_scale=350, port=1
    )
    with pytest.raises(DriverDisconnected, match="Imspector is running"):
        ImspectorDriver(options, specpy_module=specpy).connect()


def test_fake_serves_simulator_images_driven_by_the_parameters() -> None:
    pytest.importorskip("stedloop.drivers.simulator")
    from stedloop.drivers.imspector.fake_specpy import SimulatorImageSource

    fake = FakeSpecpy()  # default image source: the simulator when installed
    assert isinstance(fake.image_source, SimulatorImageSource)
    with make_driver(fake) as driver:
        strong = driver.acquire(AcquireRequest(ImagingParams(20.0, 10.0, 300.0), REGION))
        elsewhere = driver.acquire(
            AcquireRequest(ImagingParams(20.0, 10.0, 300.0), Region(4.48, 0.0, 224, 224))
        )
    # Strong depletion bleaches: the confocal image after is dimmer than before.
    assert strong.confocal_after.mean() < 0.95 * strong.confocal_before.mean()
    # Another region of the sample shows other structures.
    assert not np.array_equal(strong.confocal_before, elsewhere.confocal_before)
    assert strong.confocal_before.mean() > 1.0


def test_shipped_site_config_refuses_until_the_lasers_are_calibrated() -> None:
    from stedloop.config.loader import shipped_default_path
    from stedloop.drivers import validate_driver_options

    site = shipped_default_path().parent / "imspector.toml"
    with pytest.raises(ConfigError, match="excitation_uw_at_full_scale"):
        validate_driver_options(load_config(site).config)
    calibrated = load_config(
        site,
        overrides={
            "drivers": {
                "imspector": {"excitation_uw_at_full_scale": 20, "depletion_mw_at_full_scale": 300}
            }
        },
    )
    options = validate_driver_options(calibrated.config)
    assert options.sted_configuration == "STED"
    assert calibrated.config.driver.name == "imspector"


def test_a_retried_frame_never_overwrites_its_raw_files(tmp_path: Path) -> None:
    fake = make_fake()
    frames = tmp_path / "session" / "frames"
    with make_driver(fake) as driver:
        raw = RawOutput(frames, "0003")
        first = driver.acquire(AcquireRequest(PARAMS, REGION, raw))
        before = {p: Path(p).read_bytes() for p in first.metadata["raw_files"]}
        again = driver.acquire(AcquireRequest(PARAMS, REGION, raw))  # the same frame: a retry
    assert [Path(p).name for p in again.metadata["raw_files"]] == [
        "0003-2.confocal_before.obf",
        "0003-2.sted.obf",
        "0003-2.confocal_after.obf",
    ]
    assert {p: Path(p).read_bytes() for p in before} == before


def test_the_imspector_driver_keeps_the_plugin_contract() -> None:
    from stedloop.testing import check_driver

    options = ImspectorOptions(excitation_uw_at_full_scale=20.0, depletion_mw_at_full_scale=350.0)
    check_driver(
        lambda caps: ImspectorDriver(options, caps, specpy_module=make_fake(), wait=lambda s: None)
    )
