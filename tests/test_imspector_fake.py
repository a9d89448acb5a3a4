"""The fake specpy behaves like specpy where the driver relies on it."""

from __future__ import annotations

import re
import threading
import time
from pathlib import Path

import numpy as np
import pytest

from stedloop.drivers.imspector import fake_specpy
from stedloop.drivers.imspector.fake_specpy import CONNECTION_LOST, FakeSpecpy

DEPLETION = "ExpControl/measurement/channels/0/lasers/6/power/calibrated"


def test_parameters_nested_dict_and_path_access() -> None:
    meas = FakeSpecpy().get_application().active_measurement()
    tree = meas.parameters("")
    assert tree["ExpControl"]["measurement"]["channels"][0]["lasers"][6]["power"]["calibrated"] == 0
    meas.set_parameters(DEPLETION, 12.346)
    assert meas.parameters(DEPLETION) == pytest.approx(12.35)  # rounded to 0.01 like Imspector
    assert meas.parameters("ExpControl/measurement/channels/0/lasers/6") == {
        "active": False,
        "power": {"calibrated": pytest.approx(12.35)},
    }


def test_set_whole_dict_back() -> None:
    meas = FakeSpecpy().get_application().active_measurement()
    tree = meas.parameters("")
    tree["ExpControl"]["scan"]["range"]["x"]["off"] = 1e-6
    meas.set_parameters("", tree)
    assert meas.parameters("ExpControl/scan/range/x/off") == pytest.approx(1e-6)
    with pytest.raises(RuntimeError, match=r"^No parameter 'ExpControl/bogus'$"):
        meas.set_parameters("", {"ExpControl": {"bogus": 1}})


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("Nowhere/scan/x", "Unknown device or parameter 'Nowhere/scan/x'"),
        ("ExpControl/scan/nothing", "No parameter 'ExpControl/scan/nothing'"),
        ("ExpControl/measurement/channels/3/lasers/0", "No parameter"),
    ],
)
def test_unknown_paths_use_imspector_texts(path: str, message: str) -> None:
    meas = FakeSpecpy().get_application().active_measurement()
    with pytest.raises(RuntimeError, match=message):
        meas.parameters(path)
    with pytest.raises(RuntimeError, match=message):
        meas.set_parameters(path, 1.0)


@pytest.mark.parametrize("value", [101.0, -1.0, "5", float("nan"), True, None])
def test_invalid_values_refused(value: object) -> None:
    meas = FakeSpecpy().get_application().active_measurement()
    with pytest.raises(RuntimeError, match=f"^Invalid argument for parameter '{DEPLETION}'$"):
        meas.set_parameters(DEPLETION, value)
    assert meas.parameters(DEPLETION) == 0.0


def test_legacy_profile_has_the_older_paths() -> None:
    meas = FakeSpecpy(profile="legacy").get_application().active_measurement()
    meas.set_parameters("ExpControl/scan/dwelltime", 2e-5)
    meas.set_parameters("ExpControl/lasers/power_calibrated/6/value/calibrated", 10)
    with pytest.raises(RuntimeError, match="No parameter"):
        meas.parameters("ExpControl/measurement/pixel_steps/step_duration/0")


def test_geometry_keeps_length_equal_to_pixels_times_size() -> None:
    meas = FakeSpecpy().get_application().active_measurement()
    meas.set_parameters("ExpControl/scan/range/x/psz", 3e-8)
    meas.set_parameters("ExpControl/scan/range/x/len", 1e-6)
    assert meas.parameters("ExpControl/scan/range/x/res") == 33
    assert meas.parameters("ExpControl/scan/range/x/len") == pytest.approx(33 * 3e-8)


def test_configurations_hold_their_own_parameters() -> None:
    fake = FakeSpecpy()
    meas = fake.get_application().active_measurement()
    assert meas.configuration_names() == ["Confocal", "STED"]
    sted = meas.configuration("STED")
    sted.set_parameters(DEPLETION, 40)
    assert meas.configuration("Confocal").parameters(DEPLETION) == 0
    meas.activate(sted)
    assert meas.active_configuration().name() == "STED"
    assert meas.parameters(DEPLETION) == 40
    with pytest.raises(RuntimeError, match="No configuration 'Nope'"):
        meas.configuration("Nope")


def test_stack_data_is_reverse_of_sizes() -> None:
    fake = FakeSpecpy(image_source=fake_specpy.noise_image_source())
    app = fake.get_application()
    meas = app.active_measurement()
    meas.set_parameters("ExpControl/scan/range/x/len", 2e-6)  # 100 px wide, 224 high
    app.run(meas)
    stack = meas.configuration("Confocal").stack(0)
    assert stack.sizes() == [100, 224, 1, 1]
    assert stack.data().shape == (1, 1, 224, 100)
    assert stack.data().dtype == np.uint16
    assert meas.stack(stack.name()).data().shape == (1, 1, 224, 100)


def test_disconnect_kills_every_proxy_until_reconnected() -> None:
    fake = FakeSpecpy()
    app = fake.get_application()
    meas = app.active_measurement()
    fake.go_offline()
    for call in (app.version, lambda: meas.parameters(""), lambda: app.run(meas)):
        with pytest.raises(RuntimeError, match=re.escape(CONNECTION_LOST)):
            call()
    with pytest.raises(RuntimeError, match="Connection refused"):
        fake.get_application()
    fake.go_online()
    with pytest.raises(RuntimeError, match=re.escape(CONNECTION_LOST)):
        app.version()  # an old proxy stays dead, as after a real reconnect
    assert fake.get_application().version() == fake.version


def test_wrong_host_or_port_is_refused() -> None:
    fake = FakeSpecpy()
    with pytest.raises(RuntimeError, match="127.0.0.2:12345"):
        fake.get_application("127.0.0.2")
    with pytest.raises(RuntimeError, match="Connection refused"):
        fake.get_application("127.0.0.1", 5000)
    assert fake.get_application("localhost", 12345).host() == "127.0.0.1"


def test_slow_run_ends_early_on_stop() -> None:
    fake = FakeSpecpy(image_source=fake_specpy.noise_image_source(), run_delay_s=5.0)
    app = fake.get_application()
    meas = app.active_measurement()
    threading.Timer(0.1, app.stop, args=(meas,)).start()
    started = time.monotonic()
    app.run(meas)
    assert time.monotonic() - started < 2.0
    assert fake.stop_calls == 1


def test_save_as_writes_the_stacks(tmp_path: Path) -> None:
    fake = FakeSpecpy(image_source=fake_specpy.noise_image_source())
    meas = fake.get_application().active_measurement()
    meas.save_as(str(tmp_path / "raw.obf"))
    with np.load(tmp_path / "raw.obf") as archive:
        assert any(name.startswith("STED/") for name in archive.files)
    with pytest.raises(RuntimeError, match="Unsupported file format"):
        meas.save_as(str(tmp_path / "raw.tif"))


def test_module_level_get_application_serves_one_shared_fake() -> None:
    first = fake_specpy.get_application()
    second = fake_specpy.get_application("localhost")
    assert first.version() == second.version()
    assert fake_specpy.default_fake() is fake_specpy.default_fake()
