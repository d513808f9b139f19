"""The evaluation protocol of BENCHMARK.md, on any channel."""

from embrecall.evaluation.metrics import ranking_metrics
from embrecall.evaluation.protocol import build_queries, evaluate_channel

__all__ = ["ranking_metrics", "evaluate_channel", "build_queries"]
