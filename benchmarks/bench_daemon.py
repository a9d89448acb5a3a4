"""Daemon benchmarks: control latency under load, event latency, fuzzing, kill/restart soak.

    python benchmarks/bench_daemon.py                 # everything, modest sizes
    python benchmarks/bench_daemon.py --only soak --cycles 50
    python benchmarks/bench_daemon.py --only latency --pacing back-to-back   # the worst case

Each part starts the real daemon (`stedloop serve`) as a subprocess on free loopback ports
with its data in a temporary folder, on the simulator:

* latency: a session runs while 20 client threads poll `status`; prints the round-trip
  percentiles (target p99 <= 5 ms) and, from a subscriber, how long after the ledger recorded
  a frame (its `told` row's timestamp) the `frame` event arrived (target <= 10 ms);
* fuzz: 10,000+ malformed or hostile messages from a seeded mutation fuzzer, each must be
  answered with a well-formed error/ok reply (or, over the hard size cap, dropped), then
  `ping` must still work;
* soak: SIGKILL the daemon during a session, restart, resume, N times; then check the ledger:
  no recorded frame lost, none recorded twice, events contiguous.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import shutil
import signal
import statistics
import sys
import tempfile
import threading
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import zmq
from machine import cpu_name

from stedloop.client import Client, DaemonError
from stedloop.client.local_daemon import start_daemon, stop_daemon
from stedloop.server.handlers import METHODS
from stedloop.store import SessionStore
from stedloop.store import ledger as L
from stedloop.wire.protocol import ERROR_CODES


def conditions() -> str:
    import torch

    cpu = cpu_name()
    return (
        f"date {datetime.now(timezone.utc):%Y-%m-%d %H:%M} UTC; CPU {cpu}, {os.cpu_count()} "
        f"cores (shared, load avg {os.getloadavg()[0]:.1f}); Python {platform.python_version()}, "
        f"pyzmq {zmq.__version__} / libzmq {zmq.zmq_version()}, numpy {np.__version__}, "
        f"torch {torch.__version__} ({torch.get_num_threads()} threads)"
    )


def objectives() -> list[str]:
    from stedloop.quality import shipped_model_path

    return ["quality"] if shipped_model_path().is_file() else ["resolution", "signal_ratio"]


def site(home: Path, extra: str = "", names: list[str] | None = None) -> dict[str, str]:
    home.mkdir(parents=True, exist_ok=True)
    listed = json.dumps(names if names is not None else objectives())
    (home / "site.toml").write_text(f"[objectives]\nnames = {listed}\n{extra}")
    return {"STEDLOOP_CONFIG": str(home / "site.toml")}


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(np.asarray(values), q))


# -- latency ----------------------------------------------------------------------------------
def poll_status(address: str, clients: int, seconds: float, poll_hz: float) -> list[float]:
    """``clients`` threads, each polling ``status`` at ``poll_hz``; round trips in ms."""
    rtts: list[list[float]] = [[] for _ in range(clients)]
    stop = threading.Event()

    def poll(index: int) -> None:
        with Client(address, timeout_s=5) as client:
            period = 1.0 / poll_hz
            while not stop.is_set():
                t0 = time.perf_counter()
                client.call("status")
                rtts[index].append((time.perf_counter() - t0) * 1e3)
                time.sleep(max(0.0, period - (time.perf_counter() - t0)))

    threads = [threading.Thread(target=poll, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    time.sleep(seconds)
    stop.set()
    for thread in threads:
        thread.join()
    return [t for series in rtts for t in series]


def describe_rtt(label: str, rtt_ms: list[float]) -> str:
    return (
        f"{label}: requests {len(rtt_ms)}; round trip ms p50 {pct(rtt_ms, 50):.2f}  "
        f"p90 {pct(rtt_ms, 90):.2f}  p99 {pct(rtt_ms, 99):.2f}  max {max(rtt_ms):.2f}"
    )


def frame_lags(home: Path, sid: str, received: dict[int, tuple[float, float]]) -> str:
    """Ledger 'told' row -> event published -> event received, per frame, in ms."""
    record = SessionStore(home / "sessions").open(sid, readonly=True)
    told = {e.frame: e.time_s for e in record.ledger.events() if e.kind == L.TOLD}
    record.close()
    frames = [f for f in told if f in received]
    total = [(received[f][1] - told[f]) * 1e3 for f in frames]
    commit = [(received[f][0] - told[f]) * 1e3 for f in frames]
    delivery = [(received[f][1] - received[f][0]) * 1e3 for f in frames]
    return (
        f"{len(frames)} frames; ledger told row -> subscriber, ms: p50 {pct(total, 50):.2f}  "
        f"p99 {pct(total, 99):.2f}  max {max(total):.2f}  (target <= 10 ms)\n"
        f"  of which row written -> event published (the ledger's durable commit, fsync, and "
        f"the publish call): p50 {pct(commit, 50):.2f}  p99 {pct(commit, 99):.2f}\n"
        f"  and published -> received (ZeroMQ PUB/SUB + JSON): p50 {pct(delivery, 50):.2f}  "
        f"p99 {pct(delivery, 99):.2f}  max {max(delivery):.2f}"
    )


def bench_latency(
    root: Path, clients: int, seconds: float, poll_hz: float, realtime: bool = False
) -> None:
    """Status round trips while a session runs. ``realtime``: the simulator takes as long
    as the real scan (3 x 224² px x dwell), so the daemon waits on the instrument between
    frames as on a microscope; otherwise simulated frames come back to back and the session
    keeps a core busy all the time (the worst case)."""
    home = root / ("latency-realtime" if realtime else "latency")
    # A large sample, so that the session does not use it up during the measurement.
    extra = "[drivers.simulator]\nsample_fields = 32\n" + ("realtime = true\n" if realtime else "")
    process, ready = start_daemon(home, site(home, extra))
    received: dict[int, tuple[float, float]] = {}
    stop = threading.Event()

    def subscribe() -> None:
        sub = zmq.Context.instance().socket(zmq.SUB)
        sub.setsockopt(zmq.SUBSCRIBE, b"frame")
        sub.connect(ready["event_address"])
        while not stop.is_set():
            if sub.poll(100):
                event = json.loads(sub.recv_multipart()[1])
                received[event["data"]["frame"]] = (event["time_s"], time.time())
        sub.close(0)

    try:
        with Client(ready["request_address"], timeout_s=30) as control:
            while control.call("status")["scorer"]["state"] == "loading":
                time.sleep(0.2)
            idle_rtt = poll_status(ready["request_address"], clients, seconds / 3, poll_hz)
            started = control.call("session.start", budget_frames=10_000)
            sid = started["session_id"]
            subscriber = threading.Thread(target=subscribe)
            subscriber.start()
            busy_rtt = poll_status(ready["request_address"], clients, seconds, poll_hz)
            stop.set()
            subscriber.join()
            session = control.call("status")["session"]
            if session["state"] == "running":
                control.call("session.stop", session_id=sid, token=started["token"])
            else:
                print(f"note: the session ended by itself ({session['state']})")
    finally:
        stop_daemon(process)
    pacing = "real-time scans" if realtime else "simulated frames back to back"
    print(
        f"\n## status round trip: {clients} client threads x {poll_hz:g} Hz "
        f"(objectives {', '.join(objectives())}; {pacing})"
    )
    print(describe_rtt(f"daemon idle, {seconds / 3:g} s (the machine's own noise)", idle_rtt))
    print(
        describe_rtt(f"session running, {seconds:g} s, {session['frames']} frames", busy_rtt)
        + "  (target p99 <= 5 ms)"
    )
    print("frame events while polled: " + frame_lags(home, sid, received))


def bench_event_latency_idle(root: Path, frames: int) -> None:
    """Frame event latency without pollers (the daemon and session alone)."""
    home = root / "events"
    process, ready = start_daemon(home, site(home, "[drivers.simulator]\nfield_px = 224\n"))
    received: dict[int, tuple[float, float]] = {}
    try:
        with Client(ready["request_address"], timeout_s=30) as client:
            while client.call("status")["scorer"]["state"] == "loading":
                time.sleep(0.2)
            started = client.call("session.start", budget_frames=frames)
            sid = started["session_id"]
            for event in client.follow(ready["event_address"], since_seq=0):
                if event["topic"] == "frame":
                    received[event["data"]["frame"]] = (event["time_s"], time.time())
                if event["topic"] == "session" and event["data"].get("state") in (
                    "finished",
                    "stopped",
                    "failed",
                ):
                    break
    finally:
        stop_daemon(process)
    print(
        f"\n## frame event latency, no pollers (via Client.follow): {frame_lags(home, sid, received)}"
    )


# -- fuzz -------------------------------------------------------------------------------------
VALID = [
    {"v": 1, "id": "a", "method": "ping", "params": {}},
    {"v": 1, "id": 2, "method": "status"},
    {"v": 1, "id": "s", "method": "session.get", "params": {"session_id": "x"}},
    {"v": 1, "id": "e", "method": "events.since", "params": {"seq": 0, "limit": 5}},
    {"v": 1, "id": "f", "method": "frame.get", "params": {"session_id": "x", "frame": 0}},
    {"v": 1, "id": "t", "method": "session.stop", "params": {"session_id": "x", "token": "y"}},
    {"v": 1, "id": "l", "method": "sessions.list", "params": {"limit": 3}},
    {
        "v": 1,
        "id": "b",
        "method": "session.start",
        "params": {"overrides": {"params": {"depletion_mw": {"max": 900}}}},
    },
]
WEIRD = [
    None,
    True,
    -1,
    2**70,
    1e308,
    "",
    "x" * 300,
    [],
    {},
    [[[]]],
    {"a": {"b": {}}},
    "\u202e",
    "\ud800",
    -0.0,
    "1",
    [1, "2", None],
]


def hostile_message(rng: random.Random) -> bytes:
    kind = rng.randrange(9)
    base = json.loads(json.dumps(rng.choice(VALID)))
    if kind == 0:
        return rng.randbytes(rng.randrange(0, 400))
    if kind == 1:  # flip bytes of a valid request
        data = bytearray(json.dumps(base).encode())
        for _ in range(rng.randrange(1, 6)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return bytes(data)
    if kind == 2:  # truncate
        data = json.dumps(base).encode()
        return data[: rng.randrange(len(data))]
    if kind == 3:  # type confusion in the envelope
        base[rng.choice(["v", "id", "method", "params"])] = rng.choice(WEIRD)
    elif kind == 4:  # type confusion in params
        params = base.setdefault("params", {})
        key = rng.choice([*params, "seq", "limit", "token", "session_id", "zzz"])
        params[key] = rng.choice(WEIRD)
    elif kind == 5:  # unknown method / extra keys
        base["method"] = rng.choice([*METHODS, "", "ping ", "__init__", "session.*", "x" * 64])
        if rng.random() < 0.5:
            base[rng.choice(["extra", "V", "ID"])] = 1
    elif kind == 6:  # deep nesting (within the size cap)
        depth = rng.randrange(100, 1500)
        return (
            b'{"v":1,"id":"d","method":"ping","params":{"p":' + b"[" * depth + b"]" * depth + b"}}"
        )
    elif kind == 7:  # NaN / Infinity / huge numbers
        return rng.choice(
            [
                b'{"v":1,"id":"n","method":"ping","params":{"a":NaN}}',
                b'{"v":1,"id":Infinity,"method":"ping"}',
                b'{"v":1,"id":' + b"9" * 5000 + b',"method":"ping"}',
            ]
        )
    else:  # just over the size cap (replied with too_large)
        return b'{"v":1,"id":"big","method":"ping","params":{"p":"' + b"a" * 70_000 + b'"}}'
    return json.dumps(base).encode()


def bench_fuzz(root: Path, count: int, seed: int) -> None:
    home = root / "fuzz"
    env = site(home, "[session]\nbudget_frames = 1\n[drivers.simulator]\nfield_px = 32\n")
    env["STEDLOOP_DAEMON__MAX_MESSAGE_BYTES"] = "65536"
    process, ready = start_daemon(home, env)
    rng = random.Random(seed)
    codes: dict[str, int] = {}
    answered = dropped = malformed_replies = 0
    dealer = zmq.Context.instance().socket(zmq.DEALER)
    dealer.setsockopt(zmq.LINGER, 0)
    dealer.connect(ready["request_address"])
    started = time.perf_counter()
    try:
        for i in range(count):
            if i % 2000 == 1999:  # over the hard cap: ZeroMQ drops it and the peer
                dealer.send_multipart([b"", b"x" * (65536 * 4 + 10)])
                if dealer.poll(300):
                    malformed_replies += 1  # a reply was not expected
                dropped += 1
                continue
            dealer.send_multipart([b"", hostile_message(rng)])
            if not dealer.poll(5000):
                raise SystemExit(f"no reply to message {i}: the daemon stopped answering")
            try:
                reply = json.loads(dealer.recv_multipart()[-1])
                ok = set(reply) in ({"id", "ok", "result"}, {"id", "ok", "error"})
                code = "ok" if reply["ok"] else reply["error"]["code"]
                ok = ok and (code == "ok" or code in ERROR_CODES)
            except (ValueError, KeyError, TypeError):
                ok, code = False, "?"
            malformed_replies += not ok
            codes[code] = codes.get(code, 0) + 1
            answered += 1
        elapsed = time.perf_counter() - started
        with Client(ready["request_address"]) as client:
            alive = client.call("ping")["pong"] is True
    finally:
        dealer.close(0)
        exit_code = stop_daemon(process)
    print(f"\n## protocol fuzz: {count} hostile messages (seed {seed}) in {elapsed:.1f} s")
    print(
        f"answered {answered}, dropped by the hard size cap {dropped} (as designed), "
        f"malformed replies {malformed_replies}; still serving afterwards: {alive}; "
        f"clean exit code {exit_code}"
    )
    print("reply codes: " + ", ".join(f"{k} {v}" for k, v in sorted(codes.items())))


# -- soak -------------------------------------------------------------------------------------
def _start_when_ready(client: Client, **params: Any) -> dict[str, Any]:
    """session.start, retried while the daemon's quality model is still loading."""
    while True:
        try:
            return dict(client.call("session.start", **params))
        except DaemonError as exc:
            if exc.code != "busy":
                raise
            time.sleep(0.2)


def bench_soak(root: Path, cycles: int, seed: int) -> None:
    home = root / "soak"
    # Objectives that score 96 px frames (the quality network needs 224 px): frames must be
    # told for the soak to check that none is lost.
    env = site(
        home,
        "[drivers.simulator]\nfield_px = 96\nsample_fields = 32\n",
        names=["resolution", "signal_ratio"],
    )
    rng = random.Random(seed)
    sid = None
    seen_told: set[int] = set()
    restart_s: list[float] = []
    frames_per_cycle: list[int] = []
    problems: list[str] = []
    for cycle in range(cycles + 1):
        t0 = time.perf_counter()
        process, ready = start_daemon(home, env)
        restart_s.append(time.perf_counter() - t0)
        with Client(ready["request_address"], timeout_s=30) as client:
            status = client.call("status")
            if sid is None:
                result = _start_when_ready(client, budget_frames=100_000)
                sid = result["session_id"]
            else:
                if status["interrupted"] != [sid]:
                    problems.append(f"cycle {cycle}: interrupted = {status['interrupted']}")
                result = _start_when_ready(client, resume=sid)
            before = client.call("status")["session"]["frames"]
            if cycle == cycles:  # the last run: stop cleanly and check the ledger
                time.sleep(1.0)
                client.call("session.stop", session_id=sid, token=result["token"])
                while client.call("status")["session"]["state"] not in ("stopped", "finished"):
                    time.sleep(0.05)
                stop_daemon(process)
                break
            time.sleep(rng.uniform(0.3, 1.5))
            frames_per_cycle.append(client.call("status")["session"]["frames"] - before)
        process.send_signal(signal.SIGKILL)
        process.wait()
        record = SessionStore(home / "sessions").open(sid, readonly=True)
        told_now = [e.frame for e in record.ledger.events() if e.kind == L.TOLD]
        record.close()
        if not seen_told <= set(told_now):
            problems.append(
                f"cycle {cycle}: recorded frames lost {sorted(seen_told - set(told_now))}"
            )
        seen_told = set(told_now)
    record = SessionStore(home / "sessions").open(sid, readonly=True)
    events = record.ledger.events()
    history = record.history()
    record.close()
    told = [e.frame for e in events if e.kind == L.TOLD]
    duplicates = len(told) - len(set(told))
    acquired = [e.frame for e in events if e.kind == L.ACQUIRED]
    redone = len(acquired) - len(set(acquired))
    seqs = [e.seq for e in events]
    contiguous = seqs == list(range(1, len(seqs) + 1))
    done_numbers = [f.frame for f in history.done_frames()]
    numbering_ok = done_numbers == list(range(len(done_numbers)))
    folder = home / "sessions" / sid
    missing_tiffs = [f for f in history.done_frames() if f.tiff and not (folder / f.tiff).is_file()]
    if not told:
        problems.append("no frame was told, so nothing could be lost: the soak checked nothing")
    lost = [p for p in problems if "lost" in p]
    print(f"\n## kill/restart soak: {cycles} x SIGKILL during a session, restart, resume")
    print(
        f"frames recorded (told) {len(set(told))}; cycles that lost recorded frames {len(lost)}; "
        f"frames told twice {duplicates}; frames re-acquired after a kill (in flight, redone) "
        f"{redone}; ledger seq contiguous {contiguous}; frame numbers contiguous {numbering_ok}; "
        f"missing TIFFs {len(missing_tiffs)}"
    )
    print(
        f"restart to ready: median {statistics.median(restart_s):.2f} s, max {max(restart_s):.2f} s; "
        f"frames per cycle median {statistics.median(frames_per_cycle) if frames_per_cycle else 0}"
    )
    print("problems: " + ("; ".join(problems) if problems else "none"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", choices=["latency", "events", "fuzz", "soak"], action="append")
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--seconds", type=float, default=15.0)
    parser.add_argument("--poll-hz", type=float, default=20.0)
    parser.add_argument(
        "--pacing",
        choices=["both", "realtime", "back-to-back"],
        default="both",
        help="latency part: real-time scans, simulated frames back to back (the worst case), "
        "or both",
    )
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--cycles", type=int, default=50)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    parts = args.only or ["latency", "events", "fuzz", "soak"]
    print("# bench_daemon: " + conditions())
    root = Path(tempfile.mkdtemp(prefix="stedloop-bench-daemon-"))
    try:
        if "latency" in parts:
            if args.pacing in ("both", "realtime"):
                bench_latency(root, args.clients, args.seconds, args.poll_hz, realtime=True)
            if args.pacing in ("both", "back-to-back"):
                bench_latency(root, args.clients, args.seconds, args.poll_hz)
        if "events" in parts:
            bench_event_latency_idle(root, args.frames)
        if "fuzz" in parts:
            bench_fuzz(root, args.messages, args.seed)
        if "soak" in parts:
            bench_soak(root, args.cycles, args.seed)
    finally:
        shutil.rmtree(root, ignore_errors=True)
    sys.stdout.flush()


if __name__ == "__main__":
    main()
