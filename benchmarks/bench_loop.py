"""Session loop overhead: everything except the acquisition, as a share of a realistic frame.

A realistic frame is 224 × 224 px, three images (confocal before, STED, confocal after) at
10 µs dwell: about 1.5 s of scanning. The simulator computes its images in milliseconds, so
the driver here is the simulator padded with a sleep to exactly ``--frame-s`` seconds; the
session does not know and runs as it would on a microscope (the optimizer's background
hyper-parameter fit overlaps that time, as it would overlap a real scan).

Overhead per frame = (wall time of ``Session.run`` − time inside ``driver.acquire``) / frames:
the proposal, the ledger writes (SQLite, synchronous=FULL), the OME-TIFF, the objectives and
the tell. Reported for the default objective (the quality CNN on this CPU; a randomly
initialised network of the shipped architecture when no trained model is installed: same
cost) and for FRC resolution + bleaching + signal ratio (no network).

Run: ``python benchmarks/bench_loop.py`` (``--frames 20 --frame-s 1.5``).
"""

from __future__ import annotations

import argparse
import datetime
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from stedloop.config import load_config
from stedloop.driver import AcquireRequest
from stedloop.drivers import create_driver
from stedloop.events import FrameOutcome, SessionEvent
from stedloop.frame import Frame
from stedloop.objectives import build_objectives
from stedloop.session import Session
from stedloop.store import SessionStore


class PaddedDriver:
    """The simulator, each acquisition padded to a fixed, realistic duration."""

    def __init__(self, inner: Any, frame_s: float) -> None:
        self.inner = inner
        self.frame_s = frame_s
        self.acquire_s: list[float] = []

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)

    def acquire(self, request: AcquireRequest) -> Frame:
        started = time.perf_counter()
        frame = self.inner.acquire(request)
        remaining = self.frame_s - (time.perf_counter() - started)
        if remaining > 0:
            time.sleep(remaining)
        self.acquire_s.append(time.perf_counter() - started)
        return frame


def quality_scorer() -> tuple[Any, str]:
    from stedloop.quality import shipped_model_path
    from stedloop.quality.scorer import CNNScorer

    if shipped_model_path().is_file():
        return CNNScorer.from_checkpoint(None, device="cpu"), "shipped model"
    import torch

    from stedloop.quality.checkpoint import Checkpoint, Normalization
    from stedloop.quality.model import QualityNet

    torch.manual_seed(0)
    checkpoint = Checkpoint(QualityNet(), Normalization(0.0, 1e-3))
    return CNNScorer(checkpoint, device="cpu"), "untrained network of the shipped architecture"


def measure(names: list[str], frames: int, frame_s: float, scorer: Any) -> dict[str, float]:
    home = Path(tempfile.mkdtemp(prefix="stedloop-bench-loop-"))
    loaded = load_config(
        overrides={
            "session": {"budget_frames": frames},
            "optimizer": {"random_seed": 3},
            "objectives": {"names": names},
            "drivers": {"simulator": {"sample_fields": 6}},
        }
    )
    inner = create_driver(loaded.config)
    inner.connect()
    driver = PaddedDriver(inner, frame_s)
    objectives = build_objectives(loaded.config, scorer=scorer)
    session = Session.start(loaded, driver, store=SessionStore(home), objectives=objectives)
    timings: list[dict[str, float]] = []

    def on_event(event: SessionEvent) -> None:
        if isinstance(event, FrameOutcome) and event.timings_ms:
            timings.append(dict(event.timings_ms))

    started = time.perf_counter()
    summary = session.run(on_event=on_event)
    wall_s = time.perf_counter() - started
    session.close()
    decisions = [
        e.payload["decision_ms"]
        for e in SessionStore(home).open(session.id, readonly=True).ledger.events()
        if e.kind == "proposed"
    ]
    overhead_s = (wall_s - sum(driver.acquire_s)) / summary.frames
    return {
        "frames": summary.frames,
        "overhead_ms": overhead_s * 1e3,
        "overhead_pct": 100 * overhead_s / frame_s,
        "decision_ms_median": statistics.median(decisions),
        "decision_ms_max": max(decisions),
        "write_ms_median": statistics.median(t["write_ms"] for t in timings),
        "score_ms_median": statistics.median(t["score_ms"] for t in timings),
        "decision_ms_mean": statistics.fmean(decisions),
        "write_ms_mean": statistics.fmean(t["write_ms"] for t in timings),
        "score_ms_mean": statistics.fmean(t["score_ms"] for t in timings),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=20)
    parser.add_argument("--frame-s", type=float, default=1.5)
    args = parser.parse_args(argv)

    import torch

    scorer, model = quality_scorer()
    load = os.getloadavg() if hasattr(os, "getloadavg") else ("n/a",)
    print("# bench_loop")
    print(f"date: {datetime.datetime.now().isoformat(timespec='seconds')}")
    print(
        f"cpu: {platform.processor() or platform.machine()}; {os.cpu_count()} logical cores; load {load}"
    )
    print(
        f"python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), scorer device {scorer.device}"
    )
    print(
        f"frames: {args.frames} per run, each acquisition padded to {args.frame_s} s; 224 x 224 px"
    )
    for label, names in (
        (f"quality (CNN: {model})", ["quality"]),
        (
            "resolution (FRC) + bleaching + signal_ratio",
            ["resolution", "bleaching", "signal_ratio"],
        ),
    ):
        result = measure(names, args.frames, args.frame_s, scorer)
        print(
            f"  {label}: overhead {result['overhead_ms']:.0f} ms per frame = "
            f"{result['overhead_pct']:.1f} % of {args.frame_s} s; decision median "
            f"{result['decision_ms_median']:.0f} ms (max {result['decision_ms_max']:.0f}); "
            f"TIFF + ledger {result['write_ms_median']:.0f} ms; objectives "
            f"{result['score_ms_median']:.0f} ms (medians)"
        )
        rest = result["overhead_ms"] - sum(
            result[k] for k in ("decision_ms_mean", "write_ms_mean", "score_ms_mean")
        )
        print(
            f"    means per frame: decision {result['decision_ms_mean']:.0f} ms, TIFF + ledger "
            f"{result['write_ms_mean']:.0f} ms, objectives {result['score_ms_mean']:.0f} ms, "
            f"the rest (other ledger writes, tell, events) {rest:.0f} ms"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
