"""embrecall: embedding-based candidate retrieval (recall) for recommender systems.

The Python API mirrors the CLI: ``load_config`` -> ``train`` (writes a bundle) -> ``evaluate``
and ``recommend``; ``Bundle`` opens a trained version.
"""

__version__ = "0.1.0"

from embrecall.config import Config, load_config  # noqa: E402
from embrecall.errors import EmbrecallError  # noqa: E402
from embrecall.export import Bundle  # noqa: E402
from embrecall.pipeline import TrainReport, evaluate, recommend, train  # noqa: E402

__all__ = ["Config", "load_config", "EmbrecallError", "Bundle", "TrainReport", "train", "evaluate", "recommend"]
