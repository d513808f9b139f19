"""`embrecall update`: a schedule's run publishes once per new data, says so when nothing is new,
and leaves the active version serving when a gate refuses."""

from __future__ import annotations

import fcntl
import json
from pathlib import Path

from typer.testing import CliRunner

from embrecall import load_config
from embrecall.cli import app
from embrecall.export.registry import Registry
from embrecall.update import LOCK, update
from tests.training.test_warm_start import CONFIG, DAY, clustered_log

runner = CliRunner()


def test_update_trains_on_from_the_active_version_once_per_new_data(tmp_path: Path) -> None:
    log, config, registry = tmp_path / "log.csv", tmp_path / "run.toml", tmp_path / "registry"
    config.write_text(CONFIG.format(out=tmp_path / "runs", log=log))
    events = clustered_log()
    command = ["update", "--config", str(config), "--registry", str(registry), "--drift-users", "0", "--no-progress"]

    def run(until_day: int, *extra: str) -> tuple[int, str]:
        events[events["timestamp"] < until_day * DAY].to_csv(log, index=False)
        result = runner.invoke(app, [*command, *extra])
        return result.exit_code, result.output

    code, said = run(8)
    assert code == 0 and "trained from scratch" in said, said
    first = Registry(registry).state()["active"]
    code, said = run(9)
    assert code == 0 and f"trained on from {first}" in said, said
    second = Registry(registry).state()["active"]
    assert second != first
    code, said = run(9)  # the same data again: nothing to do, nothing published
    assert code == 0 and "nothing new" in said, said
    assert Registry(registry).state()["active"] == second
    trained = runner.invoke(app, ["train", "--config", str(config), "--from", str(registry), "--no-progress"])
    assert trained.exit_code == 2 and "nothing new" in trained.output  # train --from says so too, as an error
    code, said = run(10, "--gate", "HR@10>=0.99")
    assert code == 3 and "HR@10" in said, said
    assert Registry(registry).state()["active"] == second  # the refused version never went live
    kept = [(u["outcome"], u["parent"]) for u in Registry(registry).updates()]
    assert kept == [("published", None), ("published", first), ("nothing new", second), ("refused", second)]
    manifest = json.loads((registry / second / "manifest.json").read_text())
    assert manifest["training"]["parent"]["version"] == first


def test_a_second_update_while_one_runs_does_nothing(tmp_path: Path) -> None:
    registry = tmp_path / "registry"
    registry.mkdir()
    with (registry / LOCK).open("w") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)  # a run in progress
        out = update(load_config(None, [f"out={tmp_path / 'runs'}"]), registry, show_progress=False)
    assert out.outcome == "busy" and not (tmp_path / "runs").exists()
