"""Driver-worker benchmark: control latency while busy, abort-to-safe time, frame transfer.

Run: ``python benchmarks/bench_worker.py`` (add ``--no-daemon`` to skip the daemon part).

1. Control round trip while the worker is blocked in a 2 s acquisition (simulator with
   ``acquire_delay_s = 2``): ``WorkerDriver.ping()`` (a real round trip to the worker's main
   thread), ``health()`` (memory only), and the daemon's ``status`` over its ROUTER socket
   while a session's frame is in flight in a worker. Target p99 <= 5 ms.
2. Abort request to safe state with a hung worker (``hang_on_frame = 0``): the time until
   the blocked ``acquire`` raises, which happens only after ``safe_state()`` was answered
   by the fresh worker. Target <= grace period + 1 s. With a standby worker connected in
   advance, one that connects when promoted, and none. The simulator's default sample
   (8 x 8 fields) takes ~0.5 s to generate on connect, standing in for a slow connect.
3. Frame transfer overhead, worker -> daemon, 3 x 224 x 224 uint16: per acquire, wall time
   in the caller minus the driver's own frame time (``finished_at_s - started_at_s``), in
   the worker and in-process in the same run; the difference is what the worker costs.
   Back to back, and interleaved with work in the caller (as in a session, where the worker
   idles while the daemon scores), with a ping after the same idle gap for comparison.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as _dt
import os
import platform
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np
import zmq
from machine import cpu_name

from stedloop.config.schema import WorkerSection
from stedloop.driver import AcquireRequest
from stedloop.drivers.simulator import SimulatorDriver, SimulatorOptions
from stedloop.errors import AcquisitionAborted
from stedloop.frame import Region
from stedloop.logs import configure_logging
from stedloop.params import ImagingParams, SafetyCaps
from stedloop.worker.client import WorkerDriver

FIELD = Region(0.0, 0.0, 224, 224)
PARAMS = ImagingParams(dwell_time_us=10.0, excitation_uw=5.0, depletion_mw=100.0)


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


def summary_ms(values_s: list[float]) -> str:
    ms = [v * 1000 for v in values_s]
    return (
        f"n={len(ms)} median {statistics.median(ms):.3f} ms, p99 {pct(ms, 99):.3f} ms, "
        f"max {max(ms):.3f} ms"
    )


def settings(**changes: Any) -> WorkerSection:
    return WorkerSection(python_executable=Path(sys.executable), **changes)


def conditions() -> None:
    import torch

    cpu = cpu_name()
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    print(f"date: {_dt.datetime.now().isoformat(timespec='seconds')}")
    print(f"cpu: {cpu}, {os.cpu_count()} logical cores, load average {load}")
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, pyzmq {zmq.__version__} "
        f"(libzmq {zmq.zmq_version()}), torch {torch.__version__} (threads "
        f"{torch.get_num_threads()}, not used here)"
    )


def control_while_busy(rounds: int) -> None:
    print("\n1. control round trip while the worker is blocked in a 2 s acquisition")
    driver = WorkerDriver("simulator", {"seed": 1, "acquire_delay_s": 2.0}, settings=settings())
    pings: list[float] = []
    healths: list[float] = []
    aborts: list[float] = []
    try:
        driver.connect()
        for index in range(rounds):
            done = threading.Event()

            def run(done: threading.Event = done) -> None:
                with contextlib.suppress(AcquisitionAborted):
                    driver.acquire(AcquireRequest(PARAMS, FIELD))
                done.set()

            thread = threading.Thread(target=run)
            thread.start()
            while driver.health()["busy"] != "acquire" or driver.ping()["busy"] != "acquire":
                time.sleep(0.01)
            while not done.is_set() and driver.health()["busy_for_s"] < 1.8:
                started = time.perf_counter()
                driver.ping()
                pings.append(time.perf_counter() - started)
                started = time.perf_counter()
                driver.health()
                healths.append(time.perf_counter() - started)
                time.sleep(0.002)
            if index == rounds - 1:
                started = time.perf_counter()
                driver.request_abort()
                aborts.append(time.perf_counter() - started)
            thread.join()
    finally:
        driver.close()
    print(f"   WorkerDriver.ping() round trip: {summary_ms(pings)}")
    print(f"   WorkerDriver.health():          {summary_ms(healths)}")
    print(f"   WorkerDriver.request_abort() returns after {aborts[0] * 1000:.3f} ms")


def daemon_status_while_busy(samples: int) -> None:
    print("\n   daemon `status` round trip while a session frame is in flight in the worker")
    from stedloop.client import Client
    from stedloop.client.local_daemon import start_daemon, stop_daemon

    home = Path(tempfile.mkdtemp(prefix="bench-worker-"))
    site = home / "site.toml"
    site.write_text(
        '[driver]\nin_worker = true\n[objectives]\nnames = ["resolution"]\n'
        "[drivers.simulator]\nacquire_delay_s = 2.0\nfield_px = 224\n"
    )
    process, ready = start_daemon(home, {"STEDLOOP_CONFIG": str(site)})
    times: list[float] = []
    try:
        with Client(ready["request_address"], timeout_s=5) as client:
            client.call("session.start", budget_frames=3, name="bench")
            deadline = time.monotonic() + 60
            while len(times) < samples and time.monotonic() < deadline:
                started = time.perf_counter()
                status = client.call("status")
                elapsed = time.perf_counter() - started
                session = status.get("session") or {}
                if session.get("state") == "running":
                    times.append(elapsed)
                time.sleep(0.005)
    finally:
        code = stop_daemon(process)
    print(f"   daemon status (Client.call, tcp loopback): {summary_ms(times)}; daemon exit {code}")


def abort_to_safe(repeats: int, grace_s: float) -> None:
    print(f"\n2. abort request -> safe state with a hung worker (grace period {grace_s:g} s)")
    modes = (
        ("standby, connected in advance", {"standby": True, "standby_connected": True}),
        ("standby, connects on promotion", {"standby": True, "standby_connected": False}),
        ("no standby (cold start)       ", {"standby": False}),
    )
    for label, mode in modes:
        results: list[float] = []
        for _ in range(repeats):
            driver = WorkerDriver(
                "simulator",
                {"seed": 1, "hang_on_frame": 0},
                settings=settings(abort_grace_period_s=grace_s, **mode),
            )
            try:
                driver.connect()
                while mode["standby"] and (
                    driver._spare is None
                    or (mode.get("standby_connected") and not driver._spare.driver_connected)
                ):
                    time.sleep(0.02)
                outcome: list[float] = []

                def run(driver: WorkerDriver = driver, outcome: list[float] = outcome) -> None:
                    try:
                        driver.acquire(AcquireRequest(PARAMS, FIELD))
                    except AcquisitionAborted:
                        outcome.append(time.perf_counter())

                thread = threading.Thread(target=run)
                thread.start()
                while driver.ping()["busy"] != "acquire":
                    time.sleep(0.01)
                time.sleep(0.2)
                asked = time.perf_counter()
                driver.request_abort()
                thread.join(30)
                health = driver.health()
                assert health["last_safe_state"]["how"] == "commanded after restart"
                results.append(outcome[0] - asked)
            finally:
                driver.close()
        print(
            f"   {label}: "
            + ", ".join(f"{r:.3f} s" for r in results)
            + f" (target <= {grace_s + 1:g} s)"
        )


def transfer_overhead(frames: int) -> None:
    print("\n3. frame transfer overhead, 3 x 224 x 224 uint16 (caller wall time - frame time)")
    local = SimulatorDriver(SimulatorOptions(seed=1, sample_fields=8), SafetyCaps())
    local.connect()
    remote = WorkerDriver(
        "simulator", {"seed": 1, "sample_fields": 8}, settings=settings(standby=False)
    )
    remote.connect()
    regions = [Region(4.48 * (i % 2), 4.48 * ((i // 2) % 2), 224, 224) for i in range(4)]

    def overhead(driver: Any, region: Region) -> float:
        started = time.perf_counter()
        frame = driver.acquire(AcquireRequest(PARAMS, region))
        wall = time.perf_counter() - started
        assert frame.stack().shape == (3, 224, 224) and frame.sted.dtype == np.uint16
        return wall - (frame.finished_at_s - frame.started_at_s)

    try:
        # a) back to back: each driver called again as soon as its frame is back
        for label, driver in (("in-process", local), ("worker", remote)):
            values = [overhead(driver, regions[i % 4]) for i in range(frames)]
            print(f"   back to back, {label:10s}: {summary_ms(values)}")
        # b) interleaved, as in a session: the caller computes (here: an in-process frame)
        #    while the worker idles, then asks for the next frame; a ping after the same
        #    idle gap shows the wake-up cost of the processes alone, without a payload.
        interleaved: list[float] = []
        pings: list[float] = []
        for index in range(frames):
            local.acquire(AcquireRequest(PARAMS, regions[index % 4]))
            if index % 2:
                started = time.perf_counter()
                remote.ping()
                pings.append(time.perf_counter() - started)
            else:
                interleaved.append(overhead(remote, regions[index % 4]))
        print(f"   interleaved,  worker    : {summary_ms(interleaved)}")
        print(f"   interleaved,  ping only : {summary_ms(pings)}")
    finally:
        remote.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--no-daemon", action="store_true", help="skip the daemon status part")
    parser.add_argument("--rounds", type=int, default=3, help="2 s acquisitions to probe")
    parser.add_argument("--repeats", type=int, default=3, help="hung-worker aborts per mode")
    parser.add_argument("--frames", type=int, default=60, help="frames for the transfer part")
    args = parser.parse_args()
    configure_logging("warning")  # log lines to stderr, only warnings and errors
    conditions()
    control_while_busy(args.rounds)
    if not args.no_daemon:
        daemon_status_while_busy(samples=300)
    abort_to_safe(args.repeats, grace_s=WorkerSection().abort_grace_period_s)
    transfer_overhead(args.frames)


if __name__ == "__main__":
    main()
