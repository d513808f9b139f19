"""The command line: train, evaluate --json, recommend, and clear errors (exit 2, no traceback)."""

from __future__ import annotations

import json

from typer.testing import CliRunner

from embrecall.cli import app

runner = CliRunner()
TINY = [
    "--set",
    "data.synthetic.users=300",
    "--set",
    "data.synthetic.items=200",
    "--set",
    "data.synthetic.events=6000",
    "--set",
    "train.epochs=2",
    "--no-progress",
]


def test_train_then_recommend(tmp_path):
    result = runner.invoke(app, ["train", "--out", str(tmp_path), *TINY])
    assert result.exit_code == 0, result.output
    assert "HR@10" in result.output and "bundle written" in result.output
    bundle = next(p for p in tmp_path.iterdir() if p.is_dir() and not p.name.startswith((".", "checkpoints")))
    result = runner.invoke(app, ["recommend", "--bundle", str(bundle), "--user", "u1", "-k", "7"])
    assert result.exit_code == 0, result.output
    assert "title" in result.output and result.output.count("│ i") >= 7
    result = runner.invoke(app, ["recommend", "--bundle", str(bundle), "--user", "nobody"])
    assert result.exit_code == 0 and "not in this bundle" in result.output


def test_evaluate_writes_json_keyed_by_channel_and_metric(tmp_path):
    out = tmp_path / "m.json"
    result = runner.invoke(app, ["evaluate", "--channel", "popular", "--json", str(out), *TINY])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert set(metrics) == {"popular"}
    assert {"HR@10", "NDCG@100", "MRR", "coverage@50", "train_seconds", "peak_rss_mb"} <= set(metrics["popular"])
    assert metrics["popular"]["hit_ceiling"] <= 1.0 and "HR@K can reach at most" in result.output


def test_tune_writes_a_config_that_evaluate_takes(tmp_path):
    result = runner.invoke(app, ["tune", "--channel", "ease", "--trials", "2", "--out", str(tmp_path / "t"), *TINY])
    assert result.exit_code == 0, result.output
    assert "2 trials" in result.output and (tmp_path / "t" / "best.yaml").is_file()
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--config",
            str(tmp_path / "t" / "best.yaml"),
            "--channel",
            "ease",
            "--seed",
            "3",
            "--no-progress",
        ],
    )
    assert result.exit_code == 0, result.output


def test_errors_are_one_clear_line(tmp_path):
    result = runner.invoke(
        app, ["train", "--set", "data.format=table", "--set", f"data.path={tmp_path / 'missing.csv'}", "--no-progress"]
    )
    assert result.exit_code == 2
    assert "missing.csv: file not found" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["recommend", "--bundle", str(tmp_path), "--user", "1"])
    assert result.exit_code == 2 and "is not a bundle" in result.output
    result = runner.invoke(app, ["evaluate", "--channel", "magic", *TINY])
    assert result.exit_code == 2 and "unknown channel(s) ['magic']" in result.output


def test_nonsense_options_are_refused_with_the_field(tmp_path):
    result = runner.invoke(app, ["generate", "--out", str(tmp_path / "g"), "--items", "0"])
    assert result.exit_code == 2 and "items" in result.output and "Traceback" not in result.output
    result = runner.invoke(app, ["evaluate", "--set", "evaluate.ks=[-5, 0]", *TINY])
    assert result.exit_code == 2 and "evaluate.ks" in result.output and "greater than or equal to 1" in result.output


def test_bracketed_text_survives_in_error_messages(tmp_path):
    log = tmp_path / "log.csv"
    log.write_text("a,b,c\n1,2,3\n")
    result = runner.invoke(app, ["train", "--set", "data.format=table", "--set", f"data.path={log}", "--no-progress"])
    assert result.exit_code == 2 and "[data] section" in result.output


def test_progress_goes_to_a_log_file_line_by_line(tmp_path):
    """Output redirected to a file: each epoch and step is a plain timed line as it happens."""
    import subprocess
    import sys

    with (tmp_path / "run.log").open("w") as log:
        done = subprocess.run(
            [sys.executable, "-m", "embrecall.cli", "train", *TINY[:-1], "--set", f"out={tmp_path / 'runs'}"],
            stdout=log,
            stderr=subprocess.STDOUT,
            timeout=600,
        )
    text = (tmp_path / "run.log").read_text()
    assert done.returncode == 0, text
    assert "… reading synthetic data and splitting" in text and "✓ reading synthetic data and splitting (" in text
    assert "batches an epoch, about" in text  # the estimate before the long work
    assert "interactions of " in text and "validation " in text  # what was read, with counts
    epochs = [line for line in text.splitlines() if " epoch " in line and "pairs/s" in line]
    assert len(epochs) >= 2 and all(line.rstrip().endswith(" s") for line in epochs), text


def test_every_channel_has_validation_figures(tmp_path):
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--on",
            "validation",
            "--channel",
            "itemcf",
            "--channel",
            "popular",
            "--json",
            str(tmp_path / "v.json"),
            *TINY,
        ],
    )
    assert result.exit_code == 0, result.output
    assert "validation metrics" in result.output and "validation: " in result.output
    valid = json.loads((tmp_path / "v.json").read_text())
    assert (
        runner.invoke(app, ["evaluate", "--channel", "popular", "--json", str(tmp_path / "t.json"), *TINY]).exit_code
        == 0
    )
    test = json.loads((tmp_path / "t.json").read_text())
    assert valid["popular"]["HR@10"] != test["popular"]["HR@10"]  # other targets, other history


def test_evaluate_per_scene_gives_each_scene_its_row(tmp_path):
    out = tmp_path / "m.json"
    result = runner.invoke(
        app,
        [
            "evaluate",
            "--channel",
            "popular",
            "--per",
            "scene",
            "--json",
            str(out),
            "--set",
            "data.synthetic.scenes=3",
            *TINY,
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    scenes = [name for name in metrics if name.startswith("popular [scene=")]
    assert scenes == ["popular [scene=s0]", "popular [scene=s1]", "popular [scene=s2]"]
    assert sum(metrics[s]["targets"] for s in scenes) == metrics["popular"]["targets"]
    assert "scene=" in result.output  # the column names are text, not rich markup
    missing = runner.invoke(app, ["evaluate", "--channel", "popular", "--per", "brand", *TINY])
    assert missing.exit_code == 2 and "evaluate.per names 'brand'" in missing.output


def test_evaluate_target_ranks_an_item_attribute(tmp_path):
    out = tmp_path / "m.json"
    result = runner.invoke(app, ["evaluate", "--target", "category", "--json", str(out), *TINY])
    assert result.exit_code == 0, result.output
    metrics = json.loads(out.read_text())
    assert list(metrics) == ["two_tower", "history", "popular"] and metrics["popular"]["values"] == 20
    assert "entity recall of category" in result.output
    refused = runner.invoke(app, ["evaluate", "--target", "category", "--channel", "itemcf", *TINY])
    assert refused.exit_code == 2 and "--target" in refused.output


def test_evaluate_skips_a_default_channel_that_cannot_run_and_keeps_the_others(tmp_path):
    out = tmp_path / "m.json"
    small = ["--set", "channels.ease.max_items=5", "--set", "channels.serve={two_tower: 2, itemcf: 1, ease: 1}"]
    result = runner.invoke(app, ["evaluate", "--json", str(out), *small, *TINY])
    assert result.exit_code == 0, result.output
    assert "skipping ease: the ease channel holds a dense item x item matrix" in " ".join(result.output.split())
    assert "skipping served: it merges ['ease']" in result.output
    rows = json.loads(out.read_text())
    assert {"two_tower", "popular", "itemcf", "swing", "item2vec"} <= set(rows) and "ease" not in rows
    named = runner.invoke(app, ["evaluate", "--channel", "popular", "--channel", "ease", *small, *TINY])
    assert named.exit_code == 2 and "ease: the ease channel holds" in named.output and "evaluating" not in named.output


def _failing_fit(monkeypatch, channel: str, message: str) -> None:
    """Fitting ``channel`` fails with a DataError saying ``message``; every other fits as usual."""
    import embrecall.pipeline as pipeline
    from embrecall.errors import DataError

    built = pipeline.build_channel

    def failing(name, *args, **kwargs):
        if name == channel:
            raise DataError(message)
        return built(name, *args, **kwargs)

    monkeypatch.setattr(pipeline, "build_channel", failing)


def test_evaluate_keeps_the_rows_measured_before_a_failure(tmp_path, monkeypatch):
    _failing_fit(monkeypatch, "itemcf", "the disk went away")
    out = tmp_path / "m.json"
    result = runner.invoke(app, ["evaluate", "--channel", "popular", "--channel", "itemcf", "--json", str(out), *TINY])
    assert result.exit_code == 2 and "the disk went away" in result.output
    assert "metrics measured before the error" in " ".join(result.output.split())
    assert set(json.loads(out.read_text())) == {"popular"}


def test_evaluate_breakdown_groups_the_targets(tmp_path):
    out = tmp_path / "b.json"
    result = runner.invoke(
        app, ["evaluate", "--channel", "popular", "--channel", "itemcf", "--breakdown", "--json", str(out), *TINY]
    )
    assert result.exit_code == 0, result.output
    assert "hits by popularity" in result.output and "hits by basket" in result.output
    rows = json.loads(out.read_text())
    for grouping in ("popularity", "history", "basket"):
        groups = rows["itemcf"]["breakdown"][grouping]
        assert sum(g["targets"] for g in groups.values()) == rows["itemcf"]["targets"]
        hits = sum(g["targets"] * g["HR@100"] for g in groups.values())
        assert abs(hits / rows["itemcf"]["targets"] - rows["itemcf"]["HR@100"]) < 1e-9


def test_evaluate_by_default_skips_a_channel_whose_fit_fails(tmp_path, monkeypatch):
    _failing_fit(monkeypatch, "item2vec", "no session of two or more events is left")
    out = tmp_path / "m.json"
    result = runner.invoke(app, ["evaluate", "--json", str(out), *TINY])
    assert result.exit_code == 0, result.output
    assert "skipping item2vec: no session" in result.output
    rows = json.loads(out.read_text())
    assert {"two_tower", "itemcf", "served"} <= set(rows) and "item2vec" not in rows
