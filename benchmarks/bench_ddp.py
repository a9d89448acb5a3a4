"""`stedloop train` under torchrun against one process: epoch wall time on the CPU.

    python benchmarks/bench_ddp.py [--work /tmp/stedloop-bench-ddp] [--n 240] [--size 224]
        [--batch 64] [--epochs 3] [--reps 2] [--cores 2]

Writes ``--n`` labelled frames (Poisson lines of random width and brightness; the content does
not matter for the speed) and trains on them with the same seed, global batch and epochs:

* one process, as without torchrun, on ``--cores`` threads and on one thread;
* ``torchrun --nproc-per-node P`` (gloo, per-process batch norm) for P = 2 (and more when
  ``--cores`` allows), ``--cores / P`` threads each.

Per condition: the median epoch time (rank 0's ``seconds`` column of the curves: the
training steps, the batch-norm recalibration and the validation; epoch 1 left out as
warm-up) and the command's whole wall time (Python and torch start-up, the rendezvous, data
loading), and its CPU time summed over all its processes (user + system: what the run costs
the machine whatever the other load on it; the difference between the conditions is what
the extra processes, their start-up and their communication cost). Conditions run in turn, ``--reps`` rounds, so drift on a shared machine hits them
alike. Prints the table and the conditions.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from machine import cpu_name


@dataclass
class Condition:
    processes: int
    threads: int
    epoch_s: list[float] = field(default_factory=list)
    wall_s: list[float] = field(default_factory=list)
    cpu_s: list[float] = field(default_factory=list)

    @property
    def name(self) -> str:
        how = "torchrun" if self.processes > 1 else "one process"
        return f"{how}: {self.processes} x {self.threads} thread(s)"


def make_set(out: Path, n: int, size: int, seed: int = 0) -> Path:
    import tifffile

    from stedloop.quality.dataset import MANIFEST_NAME, write_manifest

    if (out / MANIFEST_NAME).is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    _yy, xx = np.mgrid[0:size, 0:size]
    rows = []
    for i in range(n):
        quality = float(rng.uniform(0.05, 0.95))
        width = 4.0 - 3.0 * quality
        lines = np.exp(-((xx - rng.uniform(0.2, 0.8) * size) ** 2) / (2 * width**2))
        image = rng.poisson(2 + 40 * quality * lines).astype(np.uint16)
        tifffile.imwrite(out / f"f{i:04d}.tif", image)
        rows.append({"path": f"f{i:04d}.tif", "score": round(quality, 4), "structure": "lines"})
    write_manifest(out, rows)
    return out


def run(cond: Condition, data: Path, model: Path, args: argparse.Namespace) -> None:
    train_args = [
        "train",
        str(data),
        "-o",
        str(model),
        "--epochs",
        str(args.epochs),
        "--input-size",
        str(args.size),
        "--batch-size",
        str(args.batch),
        "--device",
        "cpu",
        "--threads",
        str(cond.threads),
        "--seed",
        "0",
    ]
    env = {**os.environ, "OMP_NUM_THREADS": str(cond.threads)}
    if cond.processes == 1:
        command = [sys.executable, "-m", "stedloop.cli.main", *train_args]
    else:
        command = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--nnodes",
            "1",
            "--nproc-per-node",
            str(cond.processes),
            "--rdzv-backend",
            "c10d",
            "--rdzv-endpoint",
            "127.0.0.1:0",
            "--rdzv-id",
            uuid.uuid4().hex,
            "-m",
            "stedloop.cli.main",
            *train_args,
        ]
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=3600)
    wall = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if done.returncode != 0:
        raise SystemExit(f"{cond.name} failed:\n{done.stderr[-2000:]}")
    curves = model.with_name(model.stem + ".curves.csv")
    seconds = [float(r["seconds"]) for r in csv.DictReader(curves.open())]
    cond.epoch_s.append(statistics.median(seconds[1:] or seconds))
    cond.wall_s.append(wall)
    cond.cpu_s.append(after.ru_utime + after.ru_stime - before.ru_utime - before.ru_stime)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--work", type=Path, default=Path("/tmp/stedloop-bench-ddp"))
    parser.add_argument("--n", type=int, default=240)
    parser.add_argument("--size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--reps", type=int, default=2)
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 1)
    args = parser.parse_args()

    import torch

    data = make_set(args.work / f"set-{args.n}-{args.size}", args.n, args.size)
    conditions = [Condition(1, args.cores), Condition(1, 1)]
    processes = 2
    while processes <= args.cores:
        conditions.append(Condition(processes, max(1, args.cores // processes)))
        processes *= 2
    load_before = os.getloadavg()
    started = dt.datetime.now(dt.timezone.utc)
    for rep in range(args.reps):
        for index, cond in enumerate(conditions):
            run(cond, data, args.work / f"m{index}-{rep}.pt", args)
            print(f"  round {rep + 1}: {cond.name}: epoch {cond.epoch_s[-1]:.2f} s", flush=True)
    load_after = os.getloadavg()

    print("# bench_ddp")
    print(f"date: {started.isoformat(timespec='minutes')}")
    print(
        f"cpu: {cpu_name()} ({os.cpu_count()} logical cores on the machine; --cores {args.cores})"
    )
    print(f"python {platform.python_version()}, torch {torch.__version__}")
    print(f"load average (1/5/15 min) before {load_before}, after {load_after}")
    print(
        f"set: {args.n} frames {args.size}x{args.size} px (80/10/10 split), global batch "
        f"{args.batch}, {args.epochs} epochs, fp32, augmentation on; {args.reps} round(s)"
    )
    base = statistics.median(conditions[0].epoch_s)
    print(
        "| condition | epoch s (median; each round) | speed-up vs first | command wall s "
        "| command CPU s (all processes) |"
    )
    print("| --- | --- | --- | --- | --- |")
    for cond in conditions:
        epoch = statistics.median(cond.epoch_s)
        rounds = " / ".join(f"{s:.2f}" for s in cond.epoch_s)
        walls = " / ".join(f"{s:.1f}" for s in cond.wall_s)
        cpus = " / ".join(f"{s:.1f}" for s in cond.cpu_s)
        print(f"| {cond.name} | {epoch:.2f} ({rounds}) | {base / epoch:.2f}x | {walls} | {cpus} |")


if __name__ == "__main__":
    main()
