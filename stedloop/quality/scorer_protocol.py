"""What the quality objective, the session and the daemon need from a scorer.

``CNNScorer`` (``scorer.py``) is one; anything with this ``score`` method (a plugin in group
``stedloop.scorers``, a test's fake) is another. Importing this module costs nothing: numpy is
named for the type checker only, so the CLI and the daemon stay free of torch and numpy until
a scorer is actually loaded.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import numpy as np


class Scorer(Protocol):
    def score(self, images: Sequence[np.ndarray], names: Sequence[str] | None = None) -> np.ndarray:
        """One score per 2-D image, in [0, 1] (higher is better)."""
        ...
