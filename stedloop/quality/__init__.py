"""The STED quality network: model, checkpoints, data sets, training, evaluation, scoring."""

from __future__ import annotations

from pathlib import Path

SHIPPED_MODEL_NAME = "quality_default.pt"


def shipped_model_path() -> Path:
    """Where the shipped default model lives (``models/quality_default.pt``).

    The file may be absent (e.g. a source checkout before the model was trained);
    ``CNNScorer.from_checkpoint(None)`` then fails with a clear error.
    """
    import stedloop.models

    return Path(stedloop.models.__file__).resolve().parent / SHIPPED_MODEL_NAME
