"""The evaluation protocol of BENCHMARK.md, on any channel."""

from embrecall.evaluation.metrics import ranking_metrics
from embrecall.evaluation.protocol import evaluate_channel, build_queries

__all__ = ["ranking_metrics", "evaluate_channel", "build_queries"]
