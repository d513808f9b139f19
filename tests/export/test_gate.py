"""The statistical publish gate: a registry walked through versions, each candidate compared
with the last published ones (3σ), every attempt kept in HISTORY.json and shown by `versions`."""

from __future__ import annotations

import json
import re
import shutil

import pytest
from typer.testing import CliRunner

from embrecall.cli import app
from embrecall.data.log import data_profile
from embrecall.errors import GateBreach
from embrecall.export.bundle import MANIFEST_HASH, sha256
from embrecall.export.gate import sigma_breaches
from embrecall.export.registry import Registry


@pytest.fixture(scope="module")
def bundle(tiny_bundles):
    return tiny_bundles[0]


def _variant(bundle, root, version: str, hr10: float, events_per_day: float):
    """The bundle under another version name, with these figures in its (re-hashed) manifest."""
    folder = root / version
    shutil.copytree(bundle, folder)
    manifest = json.loads((folder / "manifest.json").read_text())
    manifest["version"] = version
    manifest["metrics"]["two_tower"]["HR@10"] = hr10
    manifest["data"]["profile"]["events_per_day"] = events_per_day
    (folder / "manifest.json").write_text(json.dumps(manifest))
    (folder / MANIFEST_HASH).write_text(sha256(folder / "manifest.json"))
    return folder


def test_a_registry_refuses_a_4_sigma_drop_and_half_the_events_and_names_each_breach(bundle, tmp_path):
    reg, made = Registry(tmp_path / "reg"), tmp_path / "made"
    for i, (hr, volume) in enumerate([(0.200, 1000), (0.205, 1010), (0.195, 990), (0.202, 1005)]):
        reg.publish(_variant(bundle, made, f"v{i}", hr, volume))
    with pytest.raises(GateBreach) as drop:  # mean 0.2005, σ 0.0042: 0.18 is 4.9σ below
        reg.publish(_variant(bundle, made, "v4", 0.180, 1000))
    assert re.search(
        r"two_tower\.HR@10 = 0\.18 is 4\.\dσ below the mean 0\.2005 of the last 4 published versions", str(drop.value)
    )
    assert "events_per_day" not in str(drop.value)
    with pytest.raises(GateBreach) as half:
        reg.publish(_variant(bundle, made, "v5", 0.201, 500))
    assert "events_per_day = 500 is" in str(half.value) and "below the mean 1001" in str(half.value)
    assert "HR@10" not in str(half.value)
    assert reg.publish(_variant(bundle, made, "v6", 0.201, 1000)) == "v6"
    assert reg.state()["active"] == "v6"
    history = reg.history()
    assert [(r["version"], r["published"]) for r in history] == [
        ("v0", True),
        ("v1", True),
        ("v2", True),
        ("v3", True),
        ("v4", False),
        ("v5", False),
        ("v6", True),
    ]
    assert history[-1]["figures"]["new_item_share"] == 0.0
    # A forced publish goes live with its reason recorded; `versions` shows all of it.
    result = CliRunner().invoke(
        app, ["publish", str(made / "v4"), "--registry", str(reg.root), "--force", "metric change expected: new loss"]
    )
    assert result.exit_code == 0, result.output
    assert reg.history()[-1]["forced"] == "metric change expected: new loss" and reg.state()["active"] == "v4"
    shown = CliRunner().invoke(app, ["versions", "--registry", str(reg.root)])
    assert shown.exit_code == 0 and shown.output.count("refused") == 2 and "forced:" in shown.output
    assert "metric change expected" in shown.output and "active" in shown.output
    refused = CliRunner().invoke(app, ["publish", str(made / "v5"), "--registry", str(reg.root)])
    assert refused.exit_code == 3 and "not published" in refused.output and "Traceback" not in refused.output


def test_an_incoming_log_with_half_the_events_halts_before_training(bundle, tmp_path):
    reg, made = Registry(tmp_path / "reg"), tmp_path / "made"
    usual = json.loads((bundle / "manifest.json").read_text())["data"]["profile"]["events_per_day"]
    tiny = ["--set", "data.synthetic.users=300", "--set", "data.synthetic.items=200", "--registry", str(reg.root)]
    for i, factor in enumerate([1.0, 1.01, 0.99, 1.005]):
        if i == 2:  # two published versions: too few to compare with, which is said (exit 4), not "in line"
            early = CliRunner().invoke(app, ["check-data", "--set", "data.synthetic.events=3000", *tiny])
            assert early.exit_code == 4 and "too little history" in early.output and "in line" not in early.output
        reg.publish(_variant(bundle, made, f"v{i}", 0.2, usual * factor))
    same = CliRunner().invoke(app, ["check-data", "--set", "data.synthetic.events=6000", *tiny])
    assert same.exit_code == 0, same.output
    assert "in line" in same.output
    half = CliRunner().invoke(app, ["check-data", "--set", "data.synthetic.events=3000", *tiny])
    assert half.exit_code == 3 and "events_per_day" in half.output and "below the mean" in half.output
    assert len(reg.history()) == 4  # a check is no publish attempt


def test_too_little_history_or_a_flat_one_is_no_breach():
    assert sigma_breaches({"two_tower.HR@10": 0.1}, [{"two_tower.HR@10": 0.2}] * 2, 3.0) == []
    flat = [{"two_tower.HR@10": 0.2}] * 5  # identical versions: a 1 % spread is assumed
    assert sigma_breaches({"two_tower.HR@10": 0.199}, flat, 3.0) == []
    assert sigma_breaches({"two_tower.HR@10": 0.19}, flat, 3.0)
    assert sigma_breaches({"two_tower.HR@10": 0.3}, flat, 3.0) == []  # better is never a breach


def test_the_data_profile_counts_daily_volumes():
    import pandas as pd

    events = pd.DataFrame(
        {"user_id": ["a", "a", "b", "c"], "item_id": ["x", "y", "x", "z"], "timestamp": [0, 10, 100, 86_400 + 5]}
    )
    assert data_profile(events) == {"days": 2.0, "events_per_day": 2.0, "users_per_day": 1.5, "items_per_day": 1.5}


def test_a_damaged_active_version_does_not_hold_its_replacement_back(bundle, tmp_path):
    reg, made = Registry(tmp_path / "reg"), tmp_path / "made"
    reg.publish(_variant(bundle, made, "v0", 0.2, 1000))
    (reg.root / "v0" / "manifest.json").unlink()
    assert reg.publish(_variant(bundle, made, "v1", 0.2, 1000)) == "v1"
    assert "new_item_share" not in reg.history()[-1]["figures"]
