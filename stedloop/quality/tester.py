"""A simulated expert tester for the paper's user study (confusion and domination).

Each tester has their own opinion of an image's quality: the image's *true* score (the
noiseless synthetic-expert score when the data set has one, else the target label) plus a
personal bias and per-image noise. Shown the target and the prediction (order is
irrelevant to this tester), they:

1. **discard** the image when neither score is within ``discard_distance`` (0.35) of
   their opinion (the paper's "neither score is right, a labelling error");
2. call them **equivalent** when the two scores are within ``tolerance`` of each other
   *or* equally close to their opinion (distances within ``tolerance``);
3. otherwise pick the score **closer** to their opinion.

Tester parameters are drawn once per tester: bias ~ N(0, 0.03), opinion noise
sd ~ U(0.05, 0.12), tolerance ~ U(0.04, 0.08). Many testers (default 11, as in the paper)
give a mean ± std of each metric per target bin, computed with ``stedloop.metrics``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from stedloop.metrics import Choice, confusion, domination, mean_std, tally

DISCARD_DISTANCE = 0.35


@dataclass(frozen=True)
class SimulatedTester:
    bias: float
    noise_sd: float
    tolerance: float
    discard_distance: float = DISCARD_DISTANCE

    @classmethod
    def draw(cls, rng: np.random.Generator) -> SimulatedTester:
        return cls(
            bias=float(rng.normal(0.0, 0.03)),
            noise_sd=float(rng.uniform(0.05, 0.12)),
            tolerance=float(rng.uniform(0.04, 0.08)),
        )

    def choose(
        self, true_score: float, target: float, prediction: float, rng: np.random.Generator
    ) -> Choice:
        opinion = float(np.clip(true_score + self.bias + rng.normal(0.0, self.noise_sd), 0, 1))
        d_target, d_pred = abs(opinion - target), abs(opinion - prediction)
        if min(d_target, d_pred) > self.discard_distance:
            return "discard"
        if abs(target - prediction) <= self.tolerance or abs(d_target - d_pred) <= self.tolerance:
            return "equivalent"
        return "target" if d_target < d_pred else "prediction"


def user_study(
    targets: Sequence[float] | np.ndarray,
    predictions: Sequence[float] | np.ndarray,
    true_scores: Sequence[float] | np.ndarray,
    n_testers: int,
    seed: int,
) -> dict[str, list[dict[str, float | int | None]]]:
    """Confusion and domination per target bin, mean ± std over simulated testers."""
    rng = np.random.default_rng(seed)
    per_tester_c: list[list[float | None]] = []
    per_tester_d: list[list[float | None]] = []
    for _ in range(n_testers):
        tester = SimulatedTester.draw(rng)
        trials = [
            (float(t), tester.choose(float(s), float(t), float(p), rng))
            for t, p, s in zip(targets, predictions, true_scores, strict=True)
        ]
        bins = tally(trials)
        per_tester_c.append([confusion(b) for b in bins])
        per_tester_d.append([domination(b) for b in bins])
    out: dict[str, list[dict[str, float | int | None]]] = {"confusion": [], "domination": []}
    for name, table in (("confusion", per_tester_c), ("domination", per_tester_d)):
        for b in range(len(table[0])):
            mean, std, n = mean_std([row[b] for row in table])
            out[name].append({"mean": mean, "std": std, "testers": n})
    return out
