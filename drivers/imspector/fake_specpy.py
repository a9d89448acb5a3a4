"""A faithful fake of the part of specpy that the Imspector driver uses. No hardware.

It mirrors specpy's object model (``get_application`` -> Application -> Measurement ->
Configuration -> Stack), its parameter tree (nested dicts and lists addressed by
``device/.../name`` paths, with list items addressed by index), the error texts Imspector
uses ("No parameter '…'", "Invalid argument for parameter '…'", "Unknown device or
parameter '…'"), stacks whose ``data()`` is 4-D in the reverse order of ``sizes()``, and a
lost connection raising ``RuntimeError`` on every proxy until ``get_application`` is called
again. Images come from the stedloop simulator when it is installed, driven by the
parameters set (converted back to physical units with the fake's own laser calibration).

Use an instance (``FakeSpecpy(...)``) in tests, injected into the driver; or name this
module as ``specpy_module`` in ``[drivers.imspector]`` to run the whole stack on the fake
(the module-level ``get_application`` serves one shared default instance).
"""

from __future__ import annotations

import copy
import io
import math
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from stedloop.driver import AcquireRequest, OverviewRequest
from stedloop.drivers.imspector.paths import PROFILES, ParameterPaths
from stedloop.frame import Frame, Region
from stedloop.params import ImagingParams

CONNECTION_LOST = "Connection to Imspector lost (the remote end closed the connection)"


def connection_refused(host: str, port: int) -> str:
    return f"Could not connect to Imspector at {host}:{port}: Connection refused"


# ---------------------------------------------------------------------------------------------
# Parameter tree
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Leaf:
    """What a parameter accepts: kind, bounds and the step Imspector rounds to."""

    kind: type  # float, int, bool or str
    minimum: float | None = None
    maximum: float | None = None
    quantum: float | None = None

    def coerce(self, path: str, value: Any) -> Any:
        invalid = RuntimeError(f"Invalid argument for parameter '{path}'")
        if self.kind is bool:
            if not isinstance(value, bool):
                raise invalid
            return value
        if self.kind is str:
            if not isinstance(value, str):
                raise invalid
            return value
        if isinstance(value, bool) or not isinstance(value, (int, float, np.number)):
            raise invalid
        number = float(value)
        if not math.isfinite(number):
            raise invalid
        if self.kind is int:
            if number != int(number):
                raise invalid
            number = int(number)
        if self.minimum is not None and number < self.minimum:
            raise invalid
        if self.maximum is not None and number > self.maximum:
            raise invalid
        if self.quantum is not None:
            number = round(number / self.quantum) * self.quantum
        return int(number) if self.kind is int else float(number)


def _split(path: str) -> list[str]:
    return [part for part in path.strip("/").split("/") if part]


def _ensure(tree: dict[str, Any], parts: list[str], value: Any) -> None:
    """Create the nested structure for ``parts`` (numeric parts become list items)."""
    node: Any = tree
    for index, part in enumerate(parts):
        last = index == len(parts) - 1
        following_is_index = not last and parts[index + 1].isdigit()
        empty: Any = [] if following_is_index else {}
        if isinstance(node, list):
            position = int(part)
            while len(node) <= position:
                node.append([] if following_is_index else {})
            if last:
                node[position] = value
            node = node[position]
        else:
            if last:
                node[part] = value
            else:
                node = node.setdefault(part, empty)


class ParameterTree:
    """One configuration's parameters: a nested dict/list with a spec per leaf."""

    def __init__(self, leaves: dict[str, tuple[Leaf, Any]]) -> None:
        self._data: dict[str, Any] = {}
        self._specs: dict[str, Leaf] = {}
        for path, (spec, default) in leaves.items():
            parts = _split(path)
            _ensure(self._data, parts, default)
            self._specs["/".join(parts)] = spec

    def copy(self) -> ParameterTree:
        clone = ParameterTree({})
        clone._data = copy.deepcopy(self._data)
        clone._specs = dict(self._specs)
        return clone

    def _walk(self, path: str) -> tuple[Any, list[str]]:
        parts = _split(path)
        node: Any = self._data
        for depth, part in enumerate(parts):
            if isinstance(node, dict) and part in node:
                node = node[part]
            elif isinstance(node, list) and part.isdigit() and int(part) < len(node):
                node = node[int(part)]
            elif depth == 0:
                raise RuntimeError(f"Unknown device or parameter '{path}'")
            else:
                raise RuntimeError(f"No parameter '{path}'")
        return node, parts

    def get(self, path: str) -> Any:
        node, _ = self._walk(path)
        return copy.deepcopy(node)

    def set(self, path: str, value: Any) -> list[str]:
        """Set a leaf or (with a dict/list) a whole subtree; returns the leaf paths changed."""
        node, parts = self._walk(path)
        if isinstance(node, (dict, list)):
            return self._set_subtree(parts, node, value, path)
        key = "/".join(parts)
        spec = self._specs.get(key)
        if spec is None:  # a structural value no one may write
            raise RuntimeError(f"Invalid argument for parameter '{path}'")
        self._assign(parts, spec.coerce(path, value))
        return [key]

    def _set_subtree(self, parts: list[str], node: Any, value: Any, path: str) -> list[str]:
        changed: list[str] = []
        if isinstance(node, dict):
            if not isinstance(value, dict):
                raise RuntimeError(f"Invalid argument for parameter '{path}'")
            for key in value:
                if key not in node:
                    raise RuntimeError(f"No parameter '{'/'.join([*parts, str(key)])}'")
            items = list(value.items())
        else:
            if not isinstance(value, list) or len(value) > len(node):
                raise RuntimeError(f"Invalid argument for parameter '{path}'")
            items = [(str(i), v) for i, v in enumerate(value)]
        for key, sub in items:
            changed += self.set("/".join([*parts, str(key)]), sub)
        return changed

    def _assign(self, parts: list[str], value: Any) -> None:
        parent: Any = self._data
        for part in parts[:-1]:
            parent = parent[int(part)] if isinstance(parent, list) else parent[part]
        if isinstance(parent, list):
            parent[int(parts[-1])] = value
        else:
            parent[parts[-1]] = value

    def raw(self, path: str) -> Any:
        node, _ = self._walk(path)
        return node


def default_leaves(paths: ParameterPaths, n_lasers: int = 8) -> dict[str, tuple[Leaf, Any]]:
    """A small but realistic parameter tree holding every path of ``paths``."""
    power = Leaf(float, 0.0, 100.0, quantum=0.01)  # Imspector rounds powers to 0.01 %
    leaves: dict[str, tuple[Leaf, Any]] = {
        "ExpControl/scan/range/mode": (Leaf(int, 0, 4096), 528),
        "ExpControl/scan/range/z/off": (Leaf(float, -1e-4, 1e-4), 0.0),
        "Pinhole/pinhole_size": (Leaf(float, 1e-7, 1e-3), 5.0e-5),
    }
    for axis in ("x", "y"):
        leaves[f"ExpControl/scan/range/{axis}/psz"] = (Leaf(float, 1e-9, 1e-5), 2.0e-8)
        leaves[f"ExpControl/scan/range/{axis}/len"] = (Leaf(float, 1e-8, 2e-4), 4.48e-6)
        leaves[f"ExpControl/scan/range/{axis}/res"] = (Leaf(int, 1, 8192), 224)
        leaves[f"ExpControl/scan/range/{axis}/off"] = (Leaf(float, -1e-4, 1e-4), 0.0)
    if paths.dwell_time.startswith("ExpControl/measurement/pixel_steps"):
        for step in range(4):
            leaves[f"ExpControl/measurement/pixel_steps/step_duration/{step}"] = (
                Leaf(float, 0.0, 1e-2, quantum=1e-8),  # 10 ns clock
                1e-5 if step == 0 else 0.0,
            )
            leaves[f"ExpControl/measurement/pixel_steps/step_active/{step}"] = (
                Leaf(bool),
                step == 0,
            )
        for laser in range(n_lasers):
            base = f"ExpControl/measurement/channels/0/lasers/{laser}"
            leaves[f"{base}/active"] = (Leaf(bool), False)
            leaves[f"{base}/power/calibrated"] = (power, 0.0)
        leaves["ExpControl/measurement/channels/0/name"] = (Leaf(str), "Ch1")
    else:
        leaves["ExpControl/scan/dwelltime"] = (Leaf(float, 1e-8, 1e-2, quantum=1e-8), 1e-5)
        for laser in range(n_lasers):
            leaves[f"ExpControl/lasers/power_calibrated/{laser}/value/calibrated"] = (power, 0.0)
    # Every configured path must exist (custom profiles may add their own).
    for path in paths.model_dump().values():
        if "/".join(_split(path)) not in {"/".join(_split(p)) for p in leaves}:
            leaves[path] = (Leaf(float, 0.0, 100.0), 0.0)
    return leaves


# ---------------------------------------------------------------------------------------------
# Images
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunRequest:
    """What a run of one configuration images, in physical units."""

    configuration: str
    params: ImagingParams | None  # None when the lasers are off (no image but noise)
    configuration_params: dict[str, ImagingParams | None]
    region: Region
    pixel_size_nm: float


ImageSource = Callable[[RunRequest], np.ndarray]


def noise_image_source(seed: int = 0) -> ImageSource:
    """Poisson background whose rate grows with excitation × dwell: no structure at all."""
    rng = np.random.default_rng(seed)

    def render(request: RunRequest) -> np.ndarray:
        shape = (request.region.height_px, request.region.width_px)
        p = request.params
        rate = 0.5 if p is None else 0.5 + 0.2 * p.excitation_uw * p.dwell_time_us
        return rng.poisson(rate, size=shape).astype(np.uint16)

    return render


class SimulatorImageSource:
    """Images from ``stedloop.drivers.simulator.SimulatorDriver`` with the set parameters.

    One simulator frame covers the three runs of a frame: the first confocal run acquires a
    frame with the STED configuration's parameters and returns its confocal-before image,
    the STED run returns its STED image, the next confocal run its confocal-after image.
    A run of ``overview_configuration`` is the simulator's overview of the scanned area.
    """

    def __init__(
        self,
        sted_configuration: str = "STED",
        overview_configuration: str = "Overview",
        **simulator_options: Any,
    ) -> None:
        from stedloop.drivers.simulator import SimulatorDriver  # optional dependency here

        self._driver_cls = SimulatorDriver
        self._options = simulator_options
        self._sted = sted_configuration
        self._overview = overview_configuration
        self._driver: Any = None
        self._geometry: tuple[float, int] | None = None
        self._pending: Any = None
        self._sted_done = False

    def _simulator(self, pixel_size_nm: float, field_px: int) -> Any:
        if self._geometry != (pixel_size_nm, field_px):
            options = self._driver_cls.Options.model_validate(
                {**self._options, "pixel_size_nm": pixel_size_nm, "field_px": field_px}
            )
            self._driver = self._driver_cls(options)
            self._driver.connect()
            self._geometry = (pixel_size_nm, field_px)
        return self._driver

    def __call__(self, request: RunRequest) -> np.ndarray:
        if request.configuration == self._overview:
            return self._overview_image(request)
        sted_params = request.configuration_params.get(self._sted)
        if sted_params is None:  # lasers off: the detector sees nothing but dark counts
            shape = (request.region.height_px, request.region.width_px)
            return np.zeros(shape, dtype=np.uint16)
        simulator = self._simulator(request.pixel_size_nm, request.region.width_px)
        is_sted = request.configuration == self._sted
        if self._pending is not None and not is_sted and self._sted_done:
            image: np.ndarray = self._pending.confocal_after
            self._pending, self._sted_done = None, False
            return image
        if self._pending is None or (is_sted and self._sted_done):
            self._pending = simulator.acquire(AcquireRequest(sted_params, request.region))
            self._sted_done = False
        frame: Frame = self._pending
        if is_sted:
            self._sted_done = True
            return frame.sted
        return frame.confocal_before

    def _overview_image(self, request: RunRequest) -> np.ndarray:
        region = request.region
        if request.params is None:  # lasers off
            return np.zeros((region.height_px, region.width_px), dtype=np.uint16)
        # The sample of the frames so far (its bleaching included), at the frames' geometry.
        simulator = self._driver if self._driver is not None else self._simulator(20.0, 224)
        size_nm = request.pixel_size_nm
        overview = simulator.acquire_overview(
            OverviewRequest(
                region.x_um,
                region.y_um,
                region.width_px * size_nm / 1000,
                region.height_px * size_nm / 1000,
                size_nm,
                request.params.dwell_time_us,
                request.params.excitation_uw,
            )
        )
        image: np.ndarray = overview.image
        return image


def default_image_source(sted_configuration: str = "STED", seed: int = 0) -> ImageSource:
    """The simulator when it is installed, else structureless Poisson noise."""
    try:
        return SimulatorImageSource(sted_configuration, seed=seed)
    except ImportError:
        return noise_image_source(seed)


# ---------------------------------------------------------------------------------------------
# The remote objects
# ---------------------------------------------------------------------------------------------


class _Proxy:
    """Base of every remote object: dead once its connection is lost."""

    def __init__(self, fake: FakeSpecpy, generation: int) -> None:
        self._fake = fake
        self._generation = generation

    def _check(self) -> None:
        self._fake._check_link(self._generation)


class Stack(_Proxy):
    def __init__(self, fake: FakeSpecpy, generation: int, holder: _StackData) -> None:
        super().__init__(fake, generation)
        self._holder = holder

    def name(self) -> str:
        self._check()
        return self._holder.name

    def sizes(self) -> list[int]:
        """Sizes in Imspector order (x, y, z, t): the reverse of ``data().shape``."""
        self._check()
        return list(reversed(self._holder.data.shape))

    def shape(self) -> list[int]:
        return self.sizes()

    def number_of_dimensions(self) -> int:
        return len(self.sizes())

    def type(self) -> np.dtype:
        self._check()
        return self._holder.data.dtype

    def data(self) -> np.ndarray:
        self._check()
        return np.array(self._holder.data, copy=True)


@dataclass
class _StackData:
    name: str
    data: np.ndarray


class Configuration(_Proxy):
    def __init__(self, fake: FakeSpecpy, generation: int, name: str) -> None:
        super().__init__(fake, generation)
        self._name = name

    def name(self) -> str:
        self._check()
        return self._name

    def parameters(self, path: str = "") -> Any:
        self._check()
        return self._fake._get(self._name, path)

    def set_parameters(self, path: str, value: Any) -> None:
        self._check()
        self._fake._set(self._name, path, value)

    def number_of_stacks(self) -> int:
        self._check()
        return len(self._fake._stacks[self._name])

    def stack_names(self) -> list[str]:
        self._check()
        return [s.name for s in self._fake._stacks[self._name]]

    def stack(self, which: int | str) -> Stack:
        self._check()
        return self._fake._stack(self._generation, self._fake._stacks[self._name], which)


class Measurement(_Proxy):
    def name(self) -> str:
        self._check()
        return self._fake.measurement_name

    def number_of_configurations(self) -> int:
        self._check()
        return len(self._fake._trees)

    def configuration_names(self) -> list[str]:
        self._check()
        return list(self._fake._trees)

    def configuration(self, which: int | str) -> Configuration:
        self._check()
        names = list(self._fake._trees)
        if isinstance(which, int) and not isinstance(which, bool):
            if not 0 <= which < len(names):
                raise RuntimeError(f"Configuration index {which} out of range")
            return Configuration(self._fake, self._generation, names[which])
        if which not in self._fake._trees:
            raise RuntimeError(f"No configuration '{which}'")
        return Configuration(self._fake, self._generation, str(which))

    def active_configuration(self) -> Configuration:
        self._check()
        return Configuration(self._fake, self._generation, self._fake.active_configuration)

    def activate(self, configuration: Configuration) -> None:
        self._check()
        self._fake.active_configuration = configuration.name()

    def parameters(self, path: str = "") -> Any:
        self._check()
        return self._fake._get(self._fake.active_configuration, path)

    def set_parameters(self, path: str, value: Any) -> None:
        self._check()
        self._fake._set(self._fake.active_configuration, path, value)

    def number_of_stacks(self) -> int:
        self._check()
        return sum(len(s) for s in self._fake._stacks.values())

    def stack_names(self) -> list[str]:
        self._check()
        return [s.name for stacks in self._fake._stacks.values() for s in stacks]

    def stack(self, which: int | str) -> Stack:
        self._check()
        every = [s for stacks in self._fake._stacks.values() for s in stacks]
        return self._fake._stack(self._generation, every, which)

    def save_as(self, path: str, compression: bool = True) -> None:
        self._check()
        self._fake._save(str(path))


class Application(_Proxy):
    def version(self) -> str:
        self._check()
        return self._fake.version

    def host(self) -> str:
        self._check()
        return self._fake.host

    def measurement_names(self) -> list[str]:
        self._check()
        return [self._fake.measurement_name] if self._fake.has_measurement else []

    def active_measurement(self) -> Measurement:
        self._check()
        if not self._fake.has_measurement:
            raise RuntimeError("No active measurement")
        return Measurement(self._fake, self._generation)

    def measurement(self, name: str) -> Measurement:
        self._check()
        if not self._fake.has_measurement or name != self._fake.measurement_name:
            raise RuntimeError(f"No measurement '{name}'")
        return Measurement(self._fake, self._generation)

    def activate(self, measurement: Measurement) -> None:
        self._check()

    def parameters(self, path: str = "") -> Any:
        self._check()
        return self._fake._get(self._fake.active_configuration, path)

    def run(self, measurement: Measurement) -> int:
        self._check()
        self._fake._run()
        return 0

    def start(self, measurement: Measurement) -> None:
        self._check()
        threading.Thread(target=self._fake._run, daemon=True).start()

    def pause(self, measurement: Measurement | None = None) -> None:
        self._check()
        self._fake._stop_requested.set()
        self._fake.stop_calls += 1

    def stop(self, measurement: Measurement) -> None:
        self._check()
        self._fake._stop_requested.set()
        self._fake.stop_calls += 1


# ---------------------------------------------------------------------------------------------
# The module-like fake
# ---------------------------------------------------------------------------------------------


@dataclass
class SetRecord:
    configuration: str
    path: str
    value: Any


class FakeSpecpy:
    """Stands in for the ``specpy`` module plus the Imspector it talks to.

    Fault injection (all attributes may be changed while a test runs):
    ``online`` (False: refused / lost), ``lose_connection_on_run`` (the n-th run, 1-based,
    drops the link mid-run), ``run_delay_s`` (slow runs; ``stop`` ends them early),
    ``stack_hook`` (rewrite the array a run leaves in the stack: wrong shape or dtype),
    ``refuse`` (path -> predicate(value) -> True to refuse with Imspector's text).
    Records: ``set_log``, ``run_log``, ``saved``, ``stop_calls``, ``connections``.
    """

    def __init__(
        self,
        *,
        profile: str = "current",
        configurations: tuple[str, ...] = ("Confocal", "STED"),
        measurement_name: str = "stedloop",
        host: str = "127.0.0.1",
        port: int = 12345,
        version: str = "16.3.15000-fake",
        excitation_uw_at_full_scale: float = 20.0,
        depletion_mw_at_full_scale: float = 350.0,
        power_full_scale: float = 100.0,
        image_source: ImageSource | None = None,
        run_delay_s: float = 0.0,
        has_measurement: bool = True,
    ) -> None:
        self.paths = PROFILES[profile]
        base = ParameterTree(default_leaves(self.paths))
        self._trees: dict[str, ParameterTree] = {name: base.copy() for name in configurations}
        self._stacks: dict[str, list[_StackData]] = {}
        for index, name in enumerate(configurations):
            res_x = int(base.raw(self.paths.resolution_x))
            res_y = int(base.raw(self.paths.resolution_y))
            blank = np.zeros((1, 1, res_y, res_x), dtype=np.uint16)
            self._stacks[name] = [_StackData(f"ExpControl Ch1 {{{index + 1}}}", blank)]
        self.active_configuration = configurations[0]
        self.measurement_name = measurement_name
        self.has_measurement = has_measurement
        self.host = host
        self.port = port
        self.version = version
        self.calibration = (excitation_uw_at_full_scale, depletion_mw_at_full_scale)
        self.power_full_scale = power_full_scale
        self.image_source: ImageSource = image_source or default_image_source(
            "STED" if "STED" in configurations else configurations[-1]
        )
        self.run_delay_s = run_delay_s
        self.online = True
        self.lose_connection_on_run: int | None = None
        self.stack_hook: Callable[[np.ndarray], np.ndarray] | None = None
        self.refuse: dict[str, Callable[[Any], bool]] = {}
        self.set_log: list[SetRecord] = []
        self.run_log: list[str] = []
        self.saved: list[Path] = []
        self.stop_calls = 0
        self.connections = 0
        self._generation = 0
        self._lock = threading.RLock()
        self._stop_requested = threading.Event()

    # -- the specpy module surface ----------------------------------------------------------
    def get_application(self, host: str = "127.0.0.1", port_num: int = 0) -> Application:
        port = port_num or 12345
        local = {"127.0.0.1", "localhost"} if self.host in ("127.0.0.1", "localhost") else set()
        if not self.online or (host != self.host and host not in local) or port != self.port:
            raise RuntimeError(connection_refused(host, port))
        with self._lock:
            self.connections += 1
            return Application(self, self._generation)

    # -- fault injection -------------------------------------------------------------------
    def go_offline(self) -> None:
        """Imspector closed: every proxy fails for good, new connections are refused."""
        with self._lock:
            self.online = False
            self._generation += 1  # proxies of this link never work again

    def go_online(self) -> None:
        self.online = True

    # -- inspection helpers for tests ----------------------------------------------------------
    def value(self, configuration: str, path: str) -> Any:
        return self._trees[configuration].get(path)

    def set_value(self, configuration: str, path: str, value: Any) -> None:
        """Change a value as a person at the Imspector PC would (not logged)."""
        self._trees[configuration].set(path, value)

    def params_of(self, configuration: str) -> ImagingParams | None:
        """The configuration's settings in physical units (None with both lasers off)."""
        tree = self._trees[configuration]
        exc_full, dep_full = self.calibration
        excitation_uw = tree.get(self.paths.excitation_power) / self.power_full_scale * exc_full
        depletion_mw = tree.get(self.paths.depletion_power) / self.power_full_scale * dep_full
        dwell_s = tree.get(self.paths.dwell_time)
        if excitation_uw <= 0 or dwell_s <= 0:
            return None
        return ImagingParams(dwell_s * 1e6, excitation_uw, depletion_mw)

    # -- internals called by the proxies --------------------------------------------------------
    def _check_link(self, generation: int) -> None:
        if not self.online or generation != self._generation:
            raise RuntimeError(CONNECTION_LOST)

    def _get(self, configuration: str, path: str) -> Any:
        with self._lock:
            return self._trees[configuration].get(path)

    def _set(self, configuration: str, path: str, value: Any) -> None:
        with self._lock:
            tree = self._trees[configuration]
            key = "/".join(_split(path))
            refuse = self.refuse.get(key)
            if refuse is not None and refuse(value):
                raise RuntimeError(f"Invalid argument for parameter '{path}'")
            changed = tree.set(path, value)
            self.set_log.append(SetRecord(configuration, key, copy.deepcopy(value)))
            self._couple_geometry(tree, changed)

    def _couple_geometry(self, tree: ParameterTree, changed: list[str]) -> None:
        # Imspector keeps len = res x psz: a new pixel size or length changes the pixel count,
        # and the length is rounded to whole pixels (so values read back differ slightly).
        for axis in ("x", "y"):
            base = f"ExpControl/scan/range/{axis}"
            touched = {c.rsplit("/", 1)[-1] for c in changed if c.startswith(base + "/")}
            if not touched & {"psz", "len", "res"}:
                continue
            psz = tree.raw(f"{base}/psz")
            if "res" in touched and not touched & {"psz", "len"}:
                res = int(tree.raw(f"{base}/res"))
            else:
                res = max(1, round(tree.raw(f"{base}/len") / psz))
            tree._assign(_split(f"{base}/res"), int(res))
            tree._assign(_split(f"{base}/len"), res * psz)

    def _stack(self, generation: int, stacks: list[_StackData], which: int | str) -> Stack:
        if isinstance(which, int) and not isinstance(which, bool):
            if not 0 <= which < len(stacks):
                raise RuntimeError(f"Stack index {which} out of range")
            return Stack(self, generation, stacks[which])
        for holder in stacks:
            if holder.name == which:
                return Stack(self, generation, holder)
        raise RuntimeError(f"No stack '{which}'")

    def _run(self) -> None:
        generation = self._generation
        self._stop_requested.clear()
        configuration = self.active_configuration
        self.run_log.append(configuration)
        if self.lose_connection_on_run is not None and (
            len(self.run_log) == self.lose_connection_on_run
        ):
            self.go_offline()
            raise RuntimeError(CONNECTION_LOST)
        if self.run_delay_s > 0:
            deadline = time.monotonic() + self.run_delay_s
            while time.monotonic() < deadline and not self._stop_requested.is_set():
                self._stop_requested.wait(min(0.01, self.run_delay_s))
                self._check_link(generation)
        self._check_link(generation)
        tree = self._trees[configuration]
        psz_m = float(tree.raw(self.paths.pixel_size_x))
        res_x = int(tree.raw(self.paths.resolution_x))
        res_y = int(tree.raw(self.paths.resolution_y))
        len_x_um = float(tree.raw(self.paths.length_x)) * 1e6
        len_y_um = float(tree.raw(self.paths.length_y)) * 1e6
        x_um = float(tree.raw(self.paths.offset_x)) * 1e6 - len_x_um / 2
        y_um = float(tree.raw(self.paths.offset_y)) * 1e6 - len_y_um / 2
        request = RunRequest(
            configuration=configuration,
            params=self.params_of(configuration),
            configuration_params={name: self.params_of(name) for name in self._trees},
            region=Region(round(x_um, 6), round(y_um, 6), res_x, res_y),
            pixel_size_nm=psz_m * 1e9,
        )
        image = np.asarray(self.image_source(request))
        data = image.astype(np.uint16, copy=False).reshape(1, 1, *image.shape)
        if self.stack_hook is not None:
            data = self.stack_hook(data)
        self._stacks[configuration][0].data = data

    def _save(self, path: str) -> None:
        target = Path(path)
        if target.suffix.lower() not in (".obf", ".msr"):
            raise RuntimeError(f"Unsupported file format '{target.suffix}'")
        if not target.parent.is_dir():
            raise RuntimeError(f"Cannot open file '{path}' for writing")
        # Not the OBF format: a NumPy archive of every stack, enough to check what was saved.
        buffer = io.BytesIO()
        arrays: dict[str, Any] = {
            f"{conf}/{s.name}": s.data for conf, stacks in self._stacks.items() for s in stacks
        }
        np.savez(buffer, **arrays)
        target.write_bytes(buffer.getvalue())
        self.saved.append(target)


@dataclass
class _Shared:
    instance: FakeSpecpy | None = None
    lock: threading.Lock = field(default_factory=threading.Lock)


_SHARED = _Shared()


def default_fake() -> FakeSpecpy:
    """The instance served by the module-level ``get_application`` (created on first use)."""
    with _SHARED.lock:
        if _SHARED.instance is None:
            _SHARED.instance = FakeSpecpy()
        return _SHARED.instance


def get_application(host: str = "127.0.0.1", port_num: int = 0) -> Application:
    """Module-level entry point, as in specpy: connect to the shared fake Imspector."""
    return default_fake().get_application(host, port_num)
