"""From several objective values to the one number the optimizer maximises.

Normalisation: each objective declares ``bounds = (lo, hi)`` in its own unit (overridable in
``[objectives] bounds``). A value v becomes a utility u in [0, 1], 1 being best:
``u = (v − lo) / (hi − lo)`` when maximised, ``u = (hi − v) / (hi − lo)`` when minimised,
clipped to [0, 1]. Fixed bounds (not the min/max seen so far) keep every told value
unchanged for the whole session, which the ledger-derived optimizer state relies on.

Weights ``w`` (config, missing names weigh 1) are normalised to sum to 1 for:

* ``weighted_sum``: ``s = Σ w_i u_i``.
* ``chebyshev`` (augmented, ρ = 0.05): ``s = 1 − max_i w_i (1 − u_i) − ρ Σ_i w_i (1 − u_i)``;
  it reaches points in concave parts of the Pareto front a weighted sum cannot.

and used as they are, as exponents, for:

* ``product``: ``s = Π_i u_i ** w_i``; a poor value of any objective sinks the frame. With
  quality and bleaching, ``weights = {bleaching = 9}`` gives ``s = q (1 − b)**9``: the quality
  of a frame times the fraction of the signal left after nine more such frames, the figure of
  merit of a ten-frame time series or z-stack.

All give s = 1 at the ideal point; with one objective of bounds (0, 1) and weight 1 the
weighted sum and the product are the objective itself.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Literal

from stedloop.errors import ConfigError
from stedloop.objectives.base import Objective

CHEBYSHEV_RHO = 0.05


class Scalariser:
    def __init__(
        self,
        objectives: Sequence[Objective],
        weights: Mapping[str, float] | None = None,
        method: Literal["weighted_sum", "chebyshev", "product"] = "weighted_sum",
        bounds: Mapping[str, Sequence[float]] | None = None,
    ) -> None:
        names = [o.name for o in objectives]
        weights = dict(weights or {})
        bounds = dict(bounds or {})
        for label, table in (("weights", weights), ("bounds", bounds)):
            unknown = sorted(set(table) - set(names))
            if unknown:
                raise ConfigError(
                    f"objectives.{label} names {', '.join(unknown)}, which is not among the "
                    f"session's objectives ({', '.join(names)})"
                )
        raw = [float(weights.get(n, 1.0)) for n in names]
        if any(w < 0 or not math.isfinite(w) for w in raw) or sum(raw) <= 0:
            raise ConfigError(
                f"objectives.weights must be non-negative with a positive sum, got {raw}"
            )
        self.names = names
        self.directions = {o.name: o.direction for o in objectives}
        total = 1.0 if method == "product" else sum(raw)
        self.weights = {n: w / total for n, w in zip(names, raw, strict=True)}
        self.bounds: dict[str, tuple[float, float]] = {}
        for objective in objectives:
            lo, hi = bounds.get(objective.name, getattr(objective, "bounds", None) or (0.0, 1.0))
            if not hi > lo:
                raise ConfigError(
                    f"bounds of objective {objective.name!r} need lo < hi, got ({lo}, {hi})"
                )
            self.bounds[objective.name] = (float(lo), float(hi))
        self.method = method

    def utility(self, name: str, value: float) -> float:
        lo, hi = self.bounds[name]
        u = (value - lo) / (hi - lo)
        if self.directions[name] == "minimize":
            u = 1.0 - u
        return min(1.0, max(0.0, u))

    def combine(self, values: Mapping[str, float | None]) -> float:
        """The combined score; NaN when any value is missing or not finite."""
        known = {n: v for n in self.names if (v := values.get(n)) is not None and math.isfinite(v)}
        if any(n not in known for n in self.names):
            return float("nan")
        utilities = {n: self.utility(n, known[n]) for n in self.names}
        if self.method == "weighted_sum":
            return float(sum(self.weights[n] * utilities[n] for n in self.names))
        if self.method == "product":
            return float(math.prod(utilities[n] ** self.weights[n] for n in self.names))
        shortfalls = [self.weights[n] * (1.0 - utilities[n]) for n in self.names]
        return 1.0 - max(shortfalls) - CHEBYSHEV_RHO * sum(shortfalls)

    def describe(self) -> dict[str, object]:
        return {
            "method": self.method,
            "weights": self.weights,
            "bounds": {n: list(b) for n, b in self.bounds.items()},
        }
