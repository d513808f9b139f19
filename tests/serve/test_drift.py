"""The drift report between two versions: what changes for users and items when a version replaces another."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from embrecall.cli import app
from embrecall.export.registry import Registry
from embrecall.serve.drift import drift_report


@pytest.fixture(scope="module")
def bundles(tiny_bundles):
    return tiny_bundles


def test_a_version_against_itself_has_not_drifted(bundles):
    report = drift_report(bundles[0], bundles[0], users=100, items=50, k=20)
    assert report["users"] == 100 and report["items"] == 50
    assert report["top20_overlap"] == 1.0 and report["neighbours_changed"] == 0.0
    assert report["coverage@20_active"] == report["coverage@20_candidate"] > 0
    assert report["popularity_pct@20_active"] == report["popularity_pct@20_candidate"]


def test_another_seed_moves_lists_and_neighbourhoods_and_publish_keeps_the_report(bundles, tmp_path):
    report = drift_report(bundles[1], bundles[0], users=100, items=50, k=20)
    assert 0.0 < report["top20_overlap"] < 1.0 and 0.0 < report["neighbours_changed"] <= 1.0
    reg = tmp_path / "reg"
    Registry(reg).publish(bundles[0])
    result = CliRunner().invoke(app, ["publish", str(bundles[1]), "--registry", str(reg), "--drift-users", "100"])
    assert result.exit_code == 0, result.output
    assert "drift vs" in result.output and "top-100 overlap" in result.output
    kept = Registry(reg).history()[-1]["drift"]
    assert kept["users"] == 100 and 0.0 < kept["top100_overlap"] < 1.0
