"""End to end on MovieLens 100K: config file -> train -> bundle -> evaluate the served model.

Floors sit below what bench/ml100k.py measures (HR@10 about 0.22), so the test catches a broken
pipeline, not seed noise; a shorter schedule keeps it around half a minute.
"""

from __future__ import annotations

from pathlib import Path

from embrecall import evaluate, load_config, recommend, train

CONFIG = Path(__file__).resolve().parents[1] / "configs" / "ml100k.toml"


def test_ml100k_two_tower_beats_popularity_by_far(ml100k, tmp_path):
    cfg = load_config(CONFIG, [f"data.path={ml100k}", f"out={tmp_path}", "train.epochs=5", "train.refit=false"])
    report = train(cfg, show_progress=False)
    tt, pop = report.metrics["two_tower"], report.metrics["popular"]
    assert tt["HR@10"] >= 0.17 and tt["NDCG@10"] >= 0.085 and tt["HR@100"] >= 0.55
    assert tt["HR@10"] > 1.8 * pop["HR@10"]
    # The bundle, served through ONNX + FAISS, ranks as the in-memory model did.
    served = evaluate(cfg, ["two_tower"], bundle=report.bundle, show_progress=False)["two_tower"]
    assert abs(served["HR@10"] - tt["HR@10"]) < 0.005
    recs = recommend(report.bundle, "196", k=10)
    assert recs["title"].notna().all() and len(recs) == 10
