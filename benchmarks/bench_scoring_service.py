"""The scoring service against local scoring: throughput and latency with 1, 4 and 8 clients.

    python benchmarks/bench_scoring_service.py [--clients 1 4 8] [--frames 40] [--size 512]
        [--threads 2] [--device auto] [--max-batch-size 16] [--batch-wait-ms 2]
        [--endpoint URL --token-env VAR]

Each client stands for one daemon: a thread that scores frames one at a time, back to back
(a daemon scores each frame as it arrives). ``local``: the clients share one ``CNNScorer``
in this process (the acquisition PC scoring its own frames). ``service``: each client has
its own ``RemoteScorer`` (HTTP, one kept-alive connection) to a Ray Serve deployment with
dynamic batching, started here on a local Ray (or ``--endpoint``: one already running, e.g.
on a GPU server). Both run in one run, on the same machine, one after the other. Latency is
per frame as the client sees it (encoding, HTTP, queueing, batching, the network); it
includes preprocessing in both modes. Prints a Markdown table and the conditions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import socket
import statistics
import threading
import time
from collections.abc import Callable

import numpy as np
from machine import cpu_name

Score = Callable[[np.ndarray], float]


def run_clients(make_client: Callable[[], Score], clients: int, frames: list[np.ndarray], n: int):
    """``clients`` threads, each scoring ``n`` frames back to back after 3 warm-up frames;
    (frames per second over all, every latency in ms)."""
    scorers = [make_client() for _ in range(clients)]
    for score in scorers:
        for frame in frames[:3]:
            score(frame)
    latencies: list[list[float]] = [[] for _ in range(clients)]
    barrier = threading.Barrier(clients + 1)

    def client(i: int) -> None:
        score = scorers[i]
        barrier.wait()
        for k in range(n):
            started = time.perf_counter()
            score(frames[(i * 7 + k) % len(frames)])
            latencies[i].append((time.perf_counter() - started) * 1e3)

    threads = [threading.Thread(target=client, args=(i,)) for i in range(clients)]
    for thread in threads:
        thread.start()
    barrier.wait()
    started = time.perf_counter()
    for thread in threads:
        thread.join()
    wall_s = time.perf_counter() - started
    every = [x for per in latencies for x in per]
    return clients * n / wall_s, every


def p99(values: list[float]) -> float:
    return float(np.percentile(values, 99))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--clients", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--frames", type=int, default=40, help="frames per client")
    parser.add_argument("--size", type=int, default=512, help="frame side, px (uint16)")
    parser.add_argument("--threads", type=int, default=2, help="torch threads, both modes")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--max-batch-size", type=int, default=16)
    parser.add_argument("--batch-wait-ms", type=float, default=2.0)
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--endpoint", default=None, help="use this service instead")
    parser.add_argument("--token-env", default=None, help="its token's environment variable")
    parser.add_argument("--skip-local", action="store_true")
    args = parser.parse_args()

    import torch

    from stedloop.quality.scorer import CNNScorer
    from stedloop.scoring_service.client import RemoteScorer

    torch.set_num_threads(args.threads)
    rng = np.random.default_rng(0)
    frames = [
        rng.poisson(3.0 + (i % 8), (args.size, args.size)).astype(np.uint16) for i in range(32)
    ]
    rows: list[tuple[str, int, float, float, float]] = []

    if not args.skip_local:
        local = CNNScorer.from_checkpoint(None, device=args.device, batch_size=1)
        for clients in args.clients:
            fps, lat = run_clients(
                lambda: lambda f: local.score_one(f), clients, frames, args.frames
            )
            rows.append(("local", clients, fps, statistics.median(lat), p99(lat)))
            print(rows[-1], flush=True)
        del local

    token = os.environ[args.token_env] if args.token_env else None
    started_ray = False
    url = args.endpoint
    service_start_s = 0.0
    if url is None:
        import ray

        from stedloop.scoring_service.options import ServiceOptions
        from stedloop.scoring_service.server import start_service, stop_service

        t0 = time.perf_counter()
        ray.init(
            num_cpus=os.cpu_count(),
            object_store_memory=100 * 1024 * 1024,
            include_dashboard=False,
            log_to_driver=False,
        )
        started_ray = True
        url = start_service(
            ServiceOptions(
                port=free_port(),
                device=args.device,
                replicas=args.replicas,
                gpus_per_replica=1.0 if args.device != "cpu" and torch.cuda.is_available() else 0,
                # Ray gives an actor OMP_NUM_THREADS = its CPUs: as many as torch threads.
                cpus_per_replica=float(args.threads),
                cpu_threads=args.threads,
                max_batch_size=args.max_batch_size,
                batch_wait_ms=args.batch_wait_ms,
            )
        )
        service_start_s = time.perf_counter() - t0
    probe = RemoteScorer(url, token=token)
    info = probe.info()
    # The service path without the network: GET round trips (proxy, replica, reply).
    round_trips: list[float] = []
    for _ in range(30):
        t = time.perf_counter()
        probe.info()
        round_trips.append((time.perf_counter() - t) * 1e3)
    replies: list[dict] = []  # the service's own account: batch size, time in the network

    def service_client() -> Score:
        remote = RemoteScorer(url, token=token)

        def score(frame: np.ndarray) -> float:
            value = remote.score_one(frame)
            replies.append(remote.last_reply)
            return value

        return score

    batching: dict[int, tuple[float, float]] = {}
    try:
        for clients in args.clients:
            fps, lat = run_clients(service_client, clients, frames, args.frames)
            timed = replies[-clients * args.frames :]
            batching[clients] = (
                statistics.mean(r["batch_size"] for r in timed),
                statistics.median(r["batch_ms"] for r in timed),
            )
            rows.append(("service", clients, fps, statistics.median(lat), p99(lat)))
            print(rows[-1], batching[clients], flush=True)
    finally:
        if started_ray:
            stop_service()
            ray.shutdown()

    print("== bench_scoring_service ==")
    print(f"date: {dt.datetime.now().isoformat(timespec='seconds')}")
    print(f"cpu: {cpu_name()} ({os.cpu_count()} logical), torch threads: {args.threads}")
    print(f"torch {torch.__version__}, numpy {np.__version__}, python {platform.python_version()}")
    try:
        import ray as _ray

        print(f"ray {_ray.__version__}")
    except ImportError:
        pass
    print(
        f"frames: {args.size}x{args.size} uint16 ({args.size * args.size * 2} bytes on the wire), "
        f"{args.frames} per client after 3 warm-up frames"
    )
    print(
        f"service: {url} ({'started here' if started_ray else 'given'}"
        f"{f', up in {service_start_s:.1f} s' if started_ray else ''}), device "
        f"{info['device']}, replicas {args.replicas}, batches up to {info['max_batch_size']} "
        f"within {args.batch_wait_ms:g} ms"
    )
    niceness = os.environ.get("RAY_worker_niceness", "15 (Ray's default)")  # noqa: SIM112
    print(f"Ray worker processes (the replica) run at niceness {niceness}; this process at 0")
    print(
        f"service round trip without scoring (GET, 30 calls): median "
        f"{statistics.median(round_trips):.1f} ms, p99 {p99(round_trips):.1f} ms"
    )
    print(f"load average when done: {', '.join(f'{x:.1f}' for x in os.getloadavg())}")
    print()
    print(
        "| mode | clients | frames/s | median ms | p99 ms | mean batch | median batch ms "
        "(in the network) |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|")
    for mode, clients, fps, median, tail in rows:
        extra = "1 | -"
        if mode == "service":
            size, batch_ms = batching[clients]
            extra = f"{size:.1f} | {batch_ms:.1f}"
        print(f"| {mode} | {clients} | {fps:.1f} | {median:.1f} | {tail:.1f} | {extra} |")


if __name__ == "__main__":
    main()
