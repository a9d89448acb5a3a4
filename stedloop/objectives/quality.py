"""The learned quality score of the STED image (the default objective)."""

from __future__ import annotations

import numpy as np

from stedloop.config.schema import StedloopConfig
from stedloop.frame import Frame
from stedloop.objectives.base import BaseObjective
from stedloop.quality.scorer_protocol import Scorer


class QualityObjective(BaseObjective):
    """The quality network's score of the STED image, in [0, 1] (higher is better)."""

    name = "quality"
    unit = "score"
    direction = "maximize"
    bounds = (0.0, 1.0)

    def __init__(self, scorer: Scorer) -> None:
        self.scorer = scorer

    @classmethod
    def from_config(cls, config: StedloopConfig, scorer: Scorer | None = None) -> QualityObjective:
        """Use ``scorer`` (e.g. the daemon's, loaded once) or the configured one: the local
        network, or the scoring service of ``quality.endpoint``."""
        if scorer is None:
            from stedloop.scoring_service.configured import configured_scorer

            scorer = configured_scorer(config.quality)
        return cls(scorer)

    def evaluate(self, frame: Frame) -> float:
        scores = np.asarray(self.scorer.score([np.asarray(frame.sted)]), dtype=float)
        return float(scores[0])
