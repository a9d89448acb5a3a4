"""Plugin discovery: real entry points from a temporary distribution on sys.path."""

from __future__ import annotations

import os
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest

from stedloop import PLUGIN_API_VERSION, registry
from stedloop.config import load_config
from stedloop.driver import AcquireRequest
from stedloop.drivers import create_driver
from stedloop.errors import PluginError
from stedloop.frame import Region
from stedloop.params import ImagingParams
from tests.cli_helpers import run_stedloop

PACKAGE = "stedloop_testplug"

MODULES = {
    "__init__.py": "",
    "good.py": """
        import numpy as np
        from pydantic import BaseModel, ConfigDict
        from stedloop.driver import BaseDriver, DriverDescription
        from stedloop.frame import Frame

        class Options(BaseModel):
            model_config = ConfigDict(extra="forbid")
            gain: float = 1.0

        class LabDriver(BaseDriver):
            API_VERSION = "2.0"
            Options = Options

            def connect(self): self.connected = True
            def describe(self):
                return DriverDescription("lab", 50.0, (16, 16), None, {})
            def _acquire(self, request):
                image = np.full((16, 16), self.options.gain)
                return Frame(image, image, image, request.params, request.region, 50.0, 0.0, 1.0)
            def safe_state(self): pass
            def close(self): pass
    """,
    "incomplete.py": """
        from stedloop.driver import BaseDriver, DriverDescription, SafeStateContext
        from stedloop.objectives.base import BaseObjective

        class HalfDriver(BaseDriver):  # no _acquire, no close
            API_VERSION = "2.0"

            def connect(self): pass
            def describe(self):
                return DriverDescription("half", 50.0, (16, 16), None, {})
            def safe_state(self): pass

        class PlainDriver(SafeStateContext):  # not an ABC: connect is the base's placeholder
            API_VERSION = "2.0"

            def describe(self): pass
            def acquire(self, request): pass
            def request_abort(self): pass
            def safe_state(self): pass
            def close(self): pass

        class NoAbortDriver(PlainDriver):  # the protocol's request_abort is missing
            request_abort = None
            def connect(self): pass

        class OneArgDriver(BaseDriver):  # stedloop builds drivers as cls(options, caps)
            API_VERSION = "2.0"

            def __init__(self, options):
                super().__init__(options)
            def connect(self): pass
            def describe(self): pass
            def _acquire(self, request): pass
            def safe_state(self): pass
            def close(self): pass

        class NoOptionsModel(OneArgDriver):
            Options = dict
            def __init__(self, options=None, caps=None):
                super().__init__(options)

        class NoEvaluate(BaseObjective):
            name = "noeval"
    """,
    "broken.py": "raise ImportError('this plugin needs labhardware, which is not installed')",
    "oldapi.py": "class Old:\n    API_VERSION = '0.9'\n    def evaluate(self, frame): return 1.0",
    "newminor.py": "class New:\n    API_VERSION = '2.99'\n    def evaluate(self, frame): return 1.0",
    "noversion.py": "class Bare:\n    def evaluate(self, frame): return 1.0",
    "badversion.py": "class Odd:\n    API_VERSION = 'one'\n    def evaluate(self, frame): return 1.0",
    "scorer.py": "class Half:\n    API_VERSION = '2.0'\n    @classmethod\n    def from_config(cls, q): return cls()",
    "clash.py": "class A:\n    API_VERSION = '2.0'\nclass B:\n    API_VERSION = '2.0'",
}

ENTRY_POINTS = f"""
[stedloop.drivers]
labdriver = {PACKAGE}.good:LabDriver
brokendriver = {PACKAGE}.broken:Nothing
halfdriver = {PACKAGE}.incomplete:HalfDriver
plaindriver = {PACKAGE}.incomplete:PlainDriver
noabort = {PACKAGE}.incomplete:NoAbortDriver
oneargdriver = {PACKAGE}.incomplete:OneArgDriver
nooptions = {PACKAGE}.incomplete:NoOptionsModel

[stedloop.objectives]
old = {PACKAGE}.oldapi:Old
newer = {PACKAGE}.newminor:New
bare = {PACKAGE}.noversion:Bare
odd = {PACKAGE}.badversion:Odd
clashing = {PACKAGE}.clash:A
noeval = {PACKAGE}.incomplete:NoEvaluate

[stedloop.scorers]
half = {PACKAGE}.scorer:Half
"""


def write_distribution(root: Path, name: str, entry_points: str) -> None:
    # The folder name must use underscores: importlib.metadata reads the project name
    # from it up to the first "-" (and would take "stedloop-x" for stedloop itself).
    info = root / f"{name.replace('-', '_')}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(textwrap.dedent(entry_points))


@pytest.fixture
def plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    root = tmp_path / "site"
    package = root / PACKAGE
    package.mkdir(parents=True)
    for filename, source in MODULES.items():
        (package / filename).write_text(textwrap.dedent(source))
    write_distribution(root, "stedloop-testplug", ENTRY_POINTS)
    write_distribution(
        root, "other-testplug", f"[stedloop.objectives]\nclashing = {PACKAGE}.clash:B\n"
    )
    monkeypatch.syspath_prepend(str(root))
    yield root
    for module in [m for m in sys.modules if m.startswith(PACKAGE)]:
        del sys.modules[module]


def test_available_lists_without_importing(plugins: Path) -> None:
    assert {"labdriver", "brokendriver", "simulator", "imspector"} <= set(
        registry.available(registry.DRIVERS)
    )
    rows = {row["name"]: row for row in registry.describe(registry.DRIVERS)}
    assert rows["labdriver"]["distribution"] == "stedloop-testplug 0.1"
    assert not [m for m in sys.modules if m.startswith(PACKAGE + ".")]


def test_only_the_configured_plugin_is_imported(plugins: Path, tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text('[driver]\nname = "labdriver"\n[drivers.labdriver]\ngain = 3.0\n')
    driver = create_driver(load_config(site).config)
    with driver:
        frame = driver.acquire(AcquireRequest(ImagingParams(1.0, 1.0, 0.0), Region(0, 0, 16, 16)))
    assert float(frame.sted.mean()) == 3.0
    assert f"{PACKAGE}.good" in sys.modules
    assert f"{PACKAGE}.broken" not in sys.modules  # the broken plugin never mattered


def test_broken_plugin_fails_clearly_when_configured(plugins: Path) -> None:
    with pytest.raises(PluginError, match="needs labhardware") as info:
        registry.load(registry.DRIVERS, "brokendriver")
    assert "cannot import stedloop.drivers plugin 'brokendriver'" in str(info.value)


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("old", f"written for plugin API 0.9, but this stedloop provides {PLUGIN_API_VERSION}"),
        ("newer", "written for plugin API 2.99"),
        ("bare", "does not declare API_VERSION"),
        ("odd", "not 'MAJOR.MINOR'"),
        ("clashing", "registered twice"),
    ],
)
def test_version_and_name_problems(plugins: Path, name: str, text: str) -> None:
    with pytest.raises(PluginError, match=text):
        registry.load(registry.OBJECTIVES, name)


def test_missing_methods_are_named(plugins: Path) -> None:
    with pytest.raises(PluginError, match="lacks score"):
        registry.load(registry.SCORERS, "half")


@pytest.mark.parametrize(
    ("name", "text"),
    [
        ("noabort", "lacks request_abort, which stedloop.drivers plugins must provide"),
        ("oneargdriver", r"cannot be built as OneArgDriver\(options, caps\)"),
        ("nooptions", "has no Options model"),
    ],
)
def test_a_driver_breaking_the_protocol_is_refused_at_load(
    plugins: Path, name: str, text: str
) -> None:
    with pytest.raises(PluginError, match=text):
        registry.load(registry.DRIVERS, name)


@pytest.mark.parametrize(
    ("group", "name", "methods"),
    [
        (registry.DRIVERS, "halfdriver", "_acquire, close"),
        (registry.DRIVERS, "plaindriver", "connect"),
        (registry.OBJECTIVES, "noeval", "evaluate"),
    ],
)
def test_abstract_methods_left_unimplemented_are_refused_at_load(
    plugins: Path, group: str, name: str, methods: str
) -> None:
    with pytest.raises(PluginError) as info:
        registry.load(group, name)
    message = str(info.value)
    assert f"plugin {name!r}" in message and f"does not implement {methods}," in message
    assert "\n" not in message


def test_an_incomplete_driver_is_one_line_and_exit_2_from_the_cli(
    plugins: Path, tmp_path: Path
) -> None:
    site = tmp_path / "site.toml"
    site.write_text('[driver]\nname = "halfdriver"\n')
    env = {"PYTHONPATH": os.pathsep.join([str(plugins), os.getcwd()]), "STEDLOOP_CONFIG": str(site)}
    for command in (["config", "validate"], ["optimize", "--budget", "2"]):
        result = run_stedloop(*command, env=env)
        assert result.returncode == 2, (command, result.stdout, result.stderr)
        assert "Traceback" not in result.stderr
        lines = result.stderr.strip().splitlines()
        assert lines == [
            f"error: stedloop.drivers plugin 'halfdriver' ({PACKAGE}.incomplete:HalfDriver) "
            "does not implement _acquire, close, which its base class leaves abstract; "
            "define them in the plugin class"
        ], (command, result.stderr)


def test_unknown_names_and_groups(plugins: Path) -> None:
    with pytest.raises(PluginError, match="installed: .*labdriver"):
        registry.load(registry.DRIVERS, "nosuch")
    with pytest.raises(PluginError, match="unknown plugin group"):
        registry.available("stedloop.cameras")


def test_shipped_plugins_declare_the_current_api() -> None:
    cls = registry.load(registry.DRIVERS, "imspector")
    assert cls.API_VERSION == PLUGIN_API_VERSION
    sharpness = registry.load(registry.OBJECTIVES, "sharpness")
    assert sharpness.API_VERSION == PLUGIN_API_VERSION
