"""The plugin API from outside: a driver package written against stedloop.plugin_api only,
the contract check a plugin author runs (stedloop.testing.check_driver), and the worked
driver in docs/plugins.md being that very package."""

from __future__ import annotations

import ast
import re
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

import stedloop.plugin_api as api
from stedloop import PLUGIN_API_VERSION, registry
from stedloop.config import load_config
from stedloop.drivers import create_driver
from stedloop.drivers.simulator import SimulatorDriver, SimulatorOptions
from stedloop.errors import DriverError, ParameterRejected
from stedloop.objectives.bleaching import BleachingObjective
from stedloop.session import Session
from stedloop.store import SessionStore
from stedloop.testing import check_driver

REPO = Path(__file__).resolve().parent.parent
TOY = REPO / "tests" / "toy_plugin"
TOY_DRIVER = TOY / "stedloop_toy" / "driver.py"
TOY_OPTIONS = {"depletion_mw_per_volt": 50.0, "excitation_uw_per_volt": 5.0, "field_px": 32}


@pytest.fixture
def toy_installed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """``pip install stedloop-toy``, as far as entry points go: a dist-info on sys.path."""
    info = tmp_path / "site" / "stedloop_toy-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: stedloop-toy\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text("[stedloop.drivers]\ntoy = stedloop_toy:ToyDriver\n")
    monkeypatch.syspath_prepend(str(tmp_path / "site"))
    monkeypatch.syspath_prepend(str(TOY))
    yield
    for module in [m for m in sys.modules if m.startswith("stedloop_toy")]:
        del sys.modules[module]


def test_the_plugin_api_exports_what_a_plugin_needs() -> None:
    for name in api.__all__:
        assert getattr(api, name) is not None, name
    assert api.PLUGIN_API_VERSION == PLUGIN_API_VERSION
    assert issubclass(api.SafetyCapExceeded, api.ParameterRejected)
    assert api.AcquireRequest.__dataclass_fields__.keys() == {"params", "region", "raw_output"}


def test_the_toy_driver_imports_nothing_of_stedloop_but_the_plugin_api() -> None:
    tree = ast.parse(TOY_DRIVER.read_text(encoding="utf-8"))
    stedloop_imports = {
        node.module
        for node in ast.walk(tree)
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("stedloop")
    }
    assert stedloop_imports == {"stedloop.plugin_api"}
    assert re.search(r'API_VERSION: ClassVar\[str\] = "\d+\.\d+"', TOY_DRIVER.read_text())


def test_the_simulator_keeps_the_contract() -> None:
    options = SimulatorOptions(field_px=32, sample_fields=4)
    description = check_driver(lambda caps: SimulatorDriver(options, caps))
    assert description.name == "simulator"


def test_the_toy_plugin_loads_keeps_the_contract_and_runs_a_session(
    toy_installed: None, tmp_path: Path
) -> None:
    cls = registry.load(registry.DRIVERS, "toy")
    check_driver(lambda caps: cls(cls.Options(**TOY_OPTIONS), caps))

    loaded = load_config(
        overrides={
            "driver": {"name": "toy"},
            "drivers": {"toy": TOY_OPTIONS},
            "session": {"budget_frames": 2, "retry_delay_s": 0.0},
            "optimizer": {"random_seed": 1, "n_candidates": 100},
            "params": {"depletion_mw": {"min": 0.0, "max": 300.0}},
            "objectives": {"names": ["bleaching"]},
        }
    )
    driver = create_driver(loaded.config)
    driver.connect()
    try:
        store = SessionStore(tmp_path / "sessions")
        session = Session.start(loaded, driver, store=store, objectives=[BleachingObjective()])
        summary = session.run()
        session.close()
    finally:
        driver.close()
    assert (summary.state, summary.frames) == ("finished", 2)
    frames = session.folder / "frames"
    assert sorted(p.name for p in frames.glob("*.toy.json")) == ["0000.toy.json", "0001.toy.json"]


class _RangeAsDriverError(SimulatorDriver):
    """Breaks one rule: an out-of-range value raises DriverError, not ParameterRejected."""

    def _acquire(self, request: api.AcquireRequest) -> api.Frame:
        try:
            return super()._acquire(request)
        except ParameterRejected as exc:
            raise DriverError(str(exc)) from None


class _IgnoresItsCaps(SimulatorDriver):
    """Breaks another: it checks default caps, not the caps it was built with."""

    def __init__(self, options: SimulatorOptions, caps: api.SafetyCaps) -> None:
        super().__init__(options, api.SafetyCaps())


@pytest.mark.parametrize(
    ("cls", "text"),
    [
        (_RangeAsDriverError, "outside its parameter_ranges and raised DriverError; raise Param"),
        (_IgnoresItsCaps, "it must check the caps it is built with"),
    ],
)
def test_check_driver_names_the_broken_rule(cls: type[SimulatorDriver], text: str) -> None:
    options = SimulatorOptions(field_px=32, sample_fields=4)
    with pytest.raises(AssertionError, match=re.escape(text)):
        check_driver(lambda caps: cls(options, caps))


def test_the_worked_driver_in_the_docs_is_the_toy_plugin() -> None:
    docs = (REPO / "docs" / "plugins.md").read_text(encoding="utf-8")
    blocks = re.findall(r"```python\n(.*?)```", docs, flags=re.S)
    assert TOY_DRIVER.read_text(encoding="utf-8") in blocks
