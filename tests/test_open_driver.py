"""``open_driver``: the one way the daemon and `stedloop optimize` open the configured driver
(claim, build, connect, safe state) and close it again (safe state, close, release)."""

from __future__ import annotations

from typing import Any

import pytest

import stedloop.drivers
from stedloop.config import load_config
from stedloop.errors import DriverDisconnected, DriverError
from stedloop.instrument import InstrumentBusy, claim_instrument, open_driver


class SpyDriver:
    """Records what is asked of it; fails where a test says so (the hardware boundary)."""

    def __init__(self, fail: dict[str, tuple[int, Exception]]) -> None:
        self.calls: list[str] = []
        self.fail = fail  # method name -> (the how-manieth call fails, with what)

    def _call(self, name: str) -> None:
        self.calls.append(name)
        nth, error = self.fail.get(name, (0, None))
        if error is not None and self.calls.count(name) == nth:
            raise error

    def connect(self) -> None:
        self._call("connect")

    def safe_state(self) -> None:
        self._call("safe_state")

    def close(self) -> None:
        self._call("close")


@pytest.fixture()
def spy(monkeypatch: pytest.MonkeyPatch) -> dict[str, Any]:
    made: dict[str, Any] = {"fail": {}, "driver": None}

    def create_driver(config: Any) -> SpyDriver:
        made["driver"] = SpyDriver(made["fail"])
        return made["driver"]

    monkeypatch.setattr(stedloop.drivers, "create_driver", create_driver)
    return made


def _instrument_free(config: Any) -> bool:
    try:
        claim_instrument(config, "a second process").release()
    except InstrumentBusy:
        return False
    return True


def test_open_driver_claims_connects_and_makes_safe_and_close_undoes_it(spy: dict) -> None:
    config = load_config().config
    with open_driver(config, "a test") as opened:
        assert opened.driver.calls == ["connect", "safe_state"]  # lasers off before all else
        assert not _instrument_free(config)
    assert spy["driver"].calls == ["connect", "safe_state", "safe_state", "close"]
    assert _instrument_free(config)
    opened.close()  # a second close does nothing
    assert spy["driver"].calls[-1] == "close" and len(spy["driver"].calls) == 4


def test_a_failing_safe_state_at_close_still_closes_and_releases(spy: dict) -> None:
    config = load_config().config
    spy["fail"]["safe_state"] = (2, DriverError("shutter stuck"))  # the one at close
    opened = open_driver(config, "a test")
    with pytest.raises(DriverError, match="shutter stuck"):
        opened.close()
    assert spy["driver"].calls[-1] == "close"
    assert _instrument_free(config)


def test_a_driver_that_cannot_connect_leaves_the_instrument_free(spy: dict) -> None:
    config = load_config().config
    spy["fail"]["connect"] = (1, DriverDisconnected("no instrument at that address"))
    with pytest.raises(DriverDisconnected, match="no instrument"):
        open_driver(config, "a test")
    assert spy["driver"].calls[-1] == "close"
    assert _instrument_free(config)


def test_a_claimed_instrument_is_refused_before_a_driver_is_built(spy: dict) -> None:
    config = load_config().config
    held = claim_instrument(config, "`stedloop serve`")
    try:
        with pytest.raises(InstrumentBusy, match="in use by `stedloop serve`"):
            open_driver(config, "a test")
        assert spy["driver"] is None
        open_driver(config, "a test", share=True).close()  # unless it may be shared
    finally:
        held.release()
