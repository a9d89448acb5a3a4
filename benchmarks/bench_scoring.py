"""Scoring speed of the quality network: batch-1 latency and batch throughput.

    python benchmarks/bench_scoring.py [--model M] [--threads 2] [--device auto]

Uses the shipped model when present (else a freshly initialised network of the same
architecture: the speed is the same). Prints the figures and the conditions.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import statistics
import time

import numpy as np
from machine import cpu_name


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--model", default=None, help="checkpoint (default: shipped)")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--repeats", type=int, default=50)
    args = parser.parse_args()

    import torch

    from stedloop.quality import shipped_model_path
    from stedloop.quality.checkpoint import Checkpoint, Normalization, load_checkpoint
    from stedloop.quality.model import QualityNet
    from stedloop.quality.scorer import CNNScorer

    torch.set_num_threads(args.threads)
    path = args.model or (shipped_model_path() if shipped_model_path().is_file() else None)
    ckpt = (
        load_checkpoint(path)
        if path
        else Checkpoint(QualityNet().eval(), Normalization(1e-4, 2e-4), train_labels=[0.5])
    )
    t0 = time.perf_counter()
    scorer = CNNScorer(ckpt, device=args.device, batch_size=16)
    load_s = time.perf_counter() - t0
    rng = np.random.default_rng(0)
    frames = [rng.poisson(5.0, (224, 224)).astype(np.uint16) for _ in range(64)]

    def sync() -> None:
        if scorer.device == "cuda":
            torch.cuda.synchronize()

    lat = []
    for i in range(args.repeats):
        t = time.perf_counter()
        scorer.score([frames[i % len(frames)]])
        sync()
        lat.append((time.perf_counter() - t) * 1000)
    through = {}
    for batch in (16, 64):
        scorer.batch_size = batch
        scorer.score(frames[:batch])  # warm this shape
        reps = max(3, args.repeats // 10)
        t = time.perf_counter()
        for _ in range(reps):
            scorer.score(frames[:batch])
        sync()
        through[batch] = reps * batch / (time.perf_counter() - t)

    print("== bench_scoring ==")
    print(f"date: {dt.datetime.now().isoformat(timespec='seconds')}")
    print(f"cpu: {cpu_name()} ({os.cpu_count()} logical), torch threads: {torch.get_num_threads()}")
    print(f"torch {torch.__version__}, numpy {np.__version__}, python {platform.python_version()}")
    print(f"device: {scorer.device}, model: {path or 'untrained (same architecture)'}")
    print(f"load + warm-up: {load_s * 1000:.0f} ms")
    q = statistics.quantiles(lat, n=20)
    print(
        f"batch 1 latency over {len(lat)} calls (incl. preprocessing): median "
        f"{statistics.median(lat):.1f} ms, p5 {q[0]:.1f} ms, p95 {q[-1]:.1f} ms"
    )
    for batch, fps in through.items():
        print(f"batch {batch} throughput: {fps:.0f} frames/s ({1000 / fps:.1f} ms/frame)")


if __name__ == "__main__":
    main()
