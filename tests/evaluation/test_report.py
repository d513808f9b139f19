"""The comparison report: Markdown with the tables, and real PNG plots beside it."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from embrecall.cli import app
from tests.test_cli import TINY


def test_evaluate_report_has_every_channel_and_plots(tmp_path):
    out = tmp_path / "report"
    result = CliRunner().invoke(
        app,
        [
            "evaluate",
            "--channel",
            "popular",
            "--channel",
            "itemcf",
            "--channel",
            "item2vec",
            "--set",
            "channels.item2vec.min_count=1",
            "--report",
            str(out),
            *TINY,
        ],
    )
    assert result.exit_code == 0, result.output
    text = (out / "report.md").read_text()
    for name in ("popular", "itemcf", "item2vec"):
        assert f"| {name} |" in text
    assert "long_tail@100" in text
    for png in ("hr_at_k.png", "ndcg_coverage.png", "popularity.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    metrics = json.loads((out / "metrics.json").read_text())["channels"]
    assert metrics["popular"]["long_tail@100"] < metrics["itemcf"]["long_tail@100"]  # popularity stays in the head
