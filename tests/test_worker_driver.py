"""WorkerDriver against real worker processes running the simulator over real sockets."""

from __future__ import annotations

import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from stedloop import errors
from stedloop.config import load_config
from stedloop.driver import AcquireRequest
from stedloop.drivers.simulator import SimulatorDriver, SimulatorOptions
from stedloop.frame import Region
from stedloop.params import ImagingParams, SafetyCaps
from stedloop.worker import WorkerDriver, create_worker_driver
from tests.worker_helpers import FIELD, PARAMS, process_gone, simulator_worker, wait_for


@pytest.fixture(scope="module")
def worker() -> Iterator[WorkerDriver]:
    """One connected worker (ipc) shared by the tests that leave it healthy."""
    driver = simulator_worker({"include_ground_truth": True, "fail_on_frame": 1})
    driver.connect()
    yield driver
    driver.close()


def _in_process(**options: object) -> SimulatorDriver:
    opts = {"seed": 3, "sample_fields": 2, **options}
    driver = SimulatorDriver(SimulatorOptions(**opts), SafetyCaps())
    driver.connect()
    return driver


def _assert_same_frame(a, b) -> None:  # type: ignore[no-untyped-def]
    for name in ("confocal_before", "sted", "confocal_after"):
        assert getattr(a, name).dtype == getattr(b, name).dtype
        assert np.array_equal(getattr(a, name), getattr(b, name)), name
    assert a.params == b.params and a.region == b.region and a.pixel_size_nm == b.pixel_size_nm
    plain_a = {k: v for k, v in a.metadata.items() if not isinstance(v, np.ndarray)}
    plain_b = {k: v for k, v in b.metadata.items() if not isinstance(v, np.ndarray)}
    assert plain_a == plain_b


@pytest.mark.parametrize("transport", ["ipc", "tcp"])
def test_frames_through_the_worker_equal_in_process_frames(transport: str) -> None:
    local = _in_process()
    with simulator_worker(transport=transport) as remote:
        assert remote.health()["state"] == "ready"
        region2 = Region(4.48, 0.0, 224, 224)
        for region in (FIELD, FIELD, region2):  # the second shows the first one's bleaching
            _assert_same_frame(
                remote.acquire(AcquireRequest(PARAMS, region)),
                local.acquire(AcquireRequest(PARAMS, region)),
            )
        assert remote.describe() == local.describe()


def test_ground_truth_metadata_array_crosses_as_a_buffer(worker: WorkerDriver) -> None:
    frame = worker.acquire(AcquireRequest(PARAMS, FIELD))
    truth = frame.metadata["ground_truth"]
    assert truth.dtype == np.float32 and truth.shape == (224, 224) and truth.sum() > 0


def test_typed_errors_cross_the_boundary(worker: WorkerDriver) -> None:
    # fail_on_frame=1: whichever acquire is the worker's second one fails.
    outcomes = []
    for _ in range(2):
        try:
            worker.acquire(AcquireRequest(PARAMS, FIELD))
            outcomes.append("ok")
        except errors.DriverError as exc:
            outcomes.append(f"{type(exc).__name__}: {exc}")
    assert any(o.startswith("DriverError: simulated driver failure") for o in outcomes) or (
        outcomes == ["ok", "ok"]  # the module's first test already used up frame 1
    )
    with pytest.raises(errors.RegionError, match="outside"):
        worker.acquire(AcquireRequest(PARAMS, Region(100.0, 0.0, 224, 224)))
    with pytest.raises(errors.ParameterRejected, match="simulator's range"):
        worker.acquire(AcquireRequest(ImagingParams(2000.0, 0.0, 0.0), FIELD))
    assert worker.health()["state"] == "ready" and worker.health()["restarts"] == 0


def test_driver_disconnected_and_config_errors_are_typed() -> None:
    remote = simulator_worker()
    try:
        with pytest.raises(errors.DriverDisconnected, match="connect"):
            remote.acquire(AcquireRequest(PARAMS, FIELD))  # started but never connected
    finally:
        remote.close()
    bad = simulator_worker({"no_such_option": 1})
    try:
        with pytest.raises(errors.ConfigError, match="no_such_option"):
            bad.connect()
    finally:
        bad.close()


def test_caps_are_refused_in_the_daemon_and_again_in_the_worker(worker: WorkerDriver) -> None:
    too_strong = ImagingParams(10.0, 5.0, 400.0)  # depletion beyond the 350 mW cap
    before = worker.ping()["calls_done"]
    with pytest.raises(errors.SafetyCapExceeded, match="max_depletion_mw"):
        worker.acquire(AcquireRequest(too_strong, FIELD))
    assert worker.ping()["calls_done"] == before  # refused before anything was sent
    # Straight to the worker, past the daemon-side check: the driver refuses it there too.
    link = worker._ready_link()
    args = {"params": too_strong.as_dict(), "region": FIELD.as_dict()}
    with pytest.raises(errors.SafetyCapExceeded, match="max_depletion_mw"):
        link.call("acquire", args, timeout_s=10)
    assert worker.ping()["calls_done"] == before + 1


def test_control_calls_answer_while_the_driver_is_busy() -> None:
    with simulator_worker({"acquire_delay_s": 3.0}) as remote:
        result: list[object] = []
        thread = threading.Thread(
            target=lambda: result.append(
                _catch(lambda: remote.acquire(AcquireRequest(PARAMS, FIELD)))
            )
        )
        thread.start()
        wait_for(lambda: remote.health()["busy"] == "acquire", 5, "the acquisition to start")
        wait_for(lambda: remote.ping()["busy"] == "acquire", 5, "the worker to report busy")
        started = time.monotonic()
        pong = remote.ping()
        health = remote.health()
        assert time.monotonic() - started < 1.0  # answered while the frame is still running
        assert pong["busy"] == "acquire" and health["busy"] == "acquire"
        remote.request_abort()
        thread.join(5)
        assert isinstance(result[0], errors.AcquisitionAborted)
        assert remote.health()["restarts"] == 0  # honoured: no kill needed


def _catch(fn):  # type: ignore[no-untyped-def]
    try:
        return fn()
    except Exception as exc:
        return exc


def test_abort_during_a_slow_acquire_is_honoured_quickly() -> None:
    with simulator_worker({"acquire_delay_s": 30.0}) as remote:
        pid = remote.health()["pid"]
        outcome: list[object] = []
        thread = threading.Thread(
            target=lambda: outcome.append(
                _catch(lambda: remote.acquire(AcquireRequest(PARAMS, FIELD)))
            )
        )
        thread.start()
        wait_for(lambda: remote.health()["busy"] == "acquire", 5, "the acquisition to start")
        asked = time.monotonic()
        remote.request_abort()
        thread.join(10)
        took_s = time.monotonic() - asked
        assert isinstance(outcome[0], errors.AcquisitionAborted)
        assert took_s < remote.settings.abort_grace_period_s  # no kill was needed
        assert remote.health()["pid"] == pid and remote.health()["restarts"] == 0
        assert remote.ping()["busy"] is None  # and the same worker carries on


def test_close_leaves_no_process_and_no_socket_behind() -> None:
    remote = simulator_worker(standby=True)
    remote.connect()
    wait_for(lambda: remote.health()["standby_pid"] is not None, 30, "the standby worker")
    pids = [remote.health()["pid"], remote.health()["standby_pid"]]
    folders = [Path(link.address[len("ipc://") :]).parent for link in (remote._link, remote._spare)]
    remote.close()
    remote.close()  # idempotent
    for pid in pids:
        wait_for(lambda pid=pid: process_gone(pid), 5, f"worker {pid} to exit")
    assert not any(folder.exists() for folder in folders)
    with pytest.raises(errors.DriverDisconnected, match="closed"):
        remote.acquire(AcquireRequest(PARAMS, FIELD))


def test_python_executable_is_used_and_a_bad_one_is_a_clear_error(tmp_path: Path) -> None:
    remote = simulator_worker(python_executable=sys.executable)
    try:
        remote.connect()
        assert remote.health()["python"] == sys.version.split()[0]
    finally:
        remote.close()
    missing = simulator_worker(python_executable=tmp_path / "no-python")
    try:
        with pytest.raises(errors.DriverDisconnected, match="python_executable"):
            missing.connect()
    finally:
        missing.close()


def test_create_worker_driver_follows_the_config(tmp_path: Path) -> None:
    site = tmp_path / "site.toml"
    site.write_text(
        "[driver]\nin_worker = true\n[drivers.simulator]\nseed = 3\nsample_fields = 2\n"
        "[safety]\nmax_depletion_mw = 200.0\n[params.depletion_mw]\nmin = 0.0\nmax = 200.0\n"
        '[worker]\nstandby = false\ntransport = "tcp"\n'
    )
    config = load_config(site).config
    remote = create_worker_driver(config)
    try:
        assert remote.caps.max_depletion_mw == 200.0 and remote.settings.transport == "tcp"
        remote.connect()
        assert remote._link is not None and remote._link.address.startswith("tcp://127.0.0.1:")
        with pytest.raises(errors.SafetyCapExceeded):
            remote.acquire(AcquireRequest(ImagingParams(10.0, 5.0, 250.0), FIELD))
    finally:
        remote.close()
