"""How fast the lasers go safe when the daemon dies in the middle of a frame.

`stedloop serve` runs a driver in a worker process (`driver.in_worker = true`); the driver is
the test suite's spy (tests/worker_spy.py), which logs every call with its time to a file and
takes 8 s per frame. Each run starts a session, waits until a frame is being acquired,
SIGKILLs the daemon and reads from the spy's log when the orphaned worker asked the driver to
abort and when it called ``safe_state``. Target: safe state within 1 s plus the driver's own
abort time. Usage: python benchmarks/bench_safe_exit.py [--runs 10]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import cpu_name  # noqa: E402

from stedloop.client import Client, DaemonError  # noqa: E402
from stedloop.client.local_daemon import start_daemon  # noqa: E402
from tests.worker_spy import install_spy_plugin, read_spy_log  # noqa: E402

SITE = """
[driver]
name = "spy"
in_worker = true
[drivers.spy]
log_path = "{log}"
acquire_s = 8.0
[objectives]
names = ["resolution"]
[session]
budget_frames = 3
[worker]
abort_grace_period_s = 2.0
"""


def one_run(root: Path, pythonpath: str) -> tuple[float, float]:
    """Seconds from the SIGKILL to the driver's request_abort and to its safe_state."""
    home = Path(tempfile.mkdtemp(dir=root))
    log = home / "spy.log"
    site = home / "site.toml"
    site.write_text(SITE.format(log=log))
    daemon, ready = start_daemon(home, {"STEDLOOP_CONFIG": str(site), "PYTHONPATH": pythonpath})
    try:
        with Client(ready["request_address"], timeout_s=10) as client:
            while True:
                try:
                    client.call("session.start")
                    break
                except DaemonError as exc:
                    if exc.code != "busy":
                        raise
                    time.sleep(0.1)
        deadline = time.monotonic() + 60
        while "acquire_start" not in (log.read_text() if log.exists() else ""):
            if time.monotonic() > deadline:
                raise RuntimeError("the session's first frame did not start")
            time.sleep(0.02)
        worker = next(e.pid for e in read_spy_log(log) if e.name == "acquire_start")
        time.sleep(0.5)  # well inside the 8 s frame
        killed_at = time.time()
        daemon.kill()
    finally:
        daemon.kill()
        daemon.wait(10)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        events = [e for e in read_spy_log(log) if e.pid == worker and e.at_s >= killed_at]
        names = [e.name for e in events]
        if "safe_state" in names:
            abort = next(e.at_s for e in events if e.name == "request_abort")
            safe = next(e.at_s for e in events if e.name == "safe_state")
            return abort - killed_at, safe - killed_at
        time.sleep(0.05)
    raise RuntimeError(f"no safe_state within 20 s of the kill; the spy logged {names}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=10)
    args = parser.parse_args()
    load = os.getloadavg()[0] if hasattr(os, "getloadavg") else float("nan")
    print(
        f"# bench_safe_exit: date {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; CPU "
        f"{cpu_name()}, {os.cpu_count()} cores (shared, load avg {load:.1f}); Python "
        f"{platform.python_version()}"
    )
    with tempfile.TemporaryDirectory(prefix="stedloop-bench-safe-exit-") as tmp:
        root = Path(tmp)
        pythonpath = install_spy_plugin(root / "plugins")
        aborts, safes = [], []
        for _ in range(args.runs):
            abort_s, safe_s = one_run(root, pythonpath)
            aborts.append(abort_s)
            safes.append(safe_s)
    print(f"\n## SIGKILL of `stedloop serve` mid-frame (driver in a worker): {args.runs} runs")
    for name, values in (("request_abort", aborts), ("safe_state", safes)):
        print(
            f"{name} after the kill, s: median {statistics.median(values):.3f}  "
            f"max {max(values):.3f}  (target: safe state <= 1 s + the driver's abort time)"
        )


if __name__ == "__main__":
    main()
