"""The sweep's figures: how fast each optimizer setting gets close to the best achievable
value (median over seeds of the best expected value so far, as a share of the best), and its
decision time per frame. One panel per objective x sample."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from stedloop.sweep.plan import SweepResults

CURVES_NAME = "sweep_curves.png"
DECISIONS_NAME = "sweep_decision_ms.png"


def write_plots(results: SweepResults, folder: Path) -> list[Path]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    targets = list(results.best)
    budget = results.spec.budget_frames
    frames = np.arange(1, budget + 1)
    written = []
    for name, ylabel in (
        (CURVES_NAME, "best so far / best achievable"),
        (DECISIONS_NAME, "decision time (tell + ask), ms"),
    ):
        fig, axes = plt.subplots(
            1, len(targets), figsize=(4.2 * len(targets), 3.6), squeeze=False, sharey=True
        )
        for ax, (objective, sample) in zip(axes[0], targets, strict=True):
            best = results.best[(objective, sample)]
            for (o, s, setting), runs in results.runs.items():
                if (o, s) != (objective, sample):
                    continue
                if name == CURVES_NAME:
                    values = np.array([np.maximum.accumulate(r.judged) for _, r in runs]) / best
                else:
                    values = 1e3 * np.array([r.decision_s for _, r in runs])
                ax.plot(frames, np.median(values, axis=0), label=setting)
            if name == CURVES_NAME:
                ax.axhline(results.spec.threshold, color="0.6", linestyle="--", linewidth=1)
            ax.set_title(f"{objective}, {sample}", fontsize=10)
            ax.set_xlabel("frame count")
        axes[0][0].set_ylabel(ylabel, fontsize=8)
        axes[0][-1].legend(fontsize=8)
        fig.suptitle(
            f"{results.spec.name}: median over {len(results.spec.seeds)} seeds, {budget} frames",
            fontsize=10,
        )
        fig.tight_layout()
        path = folder / name
        fig.savefig(path, dpi=110)
        plt.close(fig)
        written.append(path)
    return written
