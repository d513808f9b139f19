"""Drift between versions on MovieLens 100K: what a retrain changes for users and items.

    python bench/drift.py [--users 500]

Trains `configs/ml100k.toml` six times — seed 0, seed 0 again, seed 1, seed 1 aligned onto
seed 0 (`--align-to`), seed 0 on the log without its last day (a copy of
../shared/datasets/ml-100k in a temporary folder, deleted afterwards), and that version trained
on (`--from`) with the last day — and prints the drift report (`embrecall.serve.drift`) of each
candidate against its predecessor: the overlap of the served top 100 of sampled users, the share
of sampled items whose 10 nearest items changed by more than half, how comparable the two spaces
are (the same items' vector cosine; the top 100 of the candidate's items under the active
version's user vectors against its own), coverage and popularity.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

import pandas as pd
from rich.console import Console
from rich.table import Table

from embrecall import load_config, train
from embrecall.serve.drift import drift_report

ROOT = Path(__file__).resolve().parents[1]
ML100K = ROOT.parent / "shared" / "datasets" / "ml-100k"


def _without_last_day(folder: Path) -> Path:
    """ml-100k minus the events of its last 24 hours, in the same layout."""
    folder.mkdir()
    for name in ("u.item", "u.user", "u.genre"):
        if (ML100K / name).is_file():
            shutil.copy(ML100K / name, folder / name)
    log = pd.read_csv(ML100K / "u.data", sep="\t", header=None)
    log[log[3] <= log[3].max() - 86_400].to_csv(folder / "u.data", sep="\t", header=False, index=False)
    return folder


def _bundle(path: Path, out: Path, seed: int, **how: Path) -> Path:
    """A version trained on ``path``; ``how``: ``start_from`` or ``align_to`` another version."""
    cfg = load_config(ROOT / "configs" / "ml100k.toml", [f"data.path={path}", f"out={out}", f"train.seed={seed}"])
    return train(cfg, show_progress=False, **how).bundle


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--users", type=int, default=500)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        tmp_path = Path(tmp)
        shorter = _without_last_day((tmp_path / "ml-100k-less-a-day").resolve())
        a = _bundle(ML100K, tmp_path / "a", 0)
        c = _bundle(shorter, tmp_path / "c", 0)
        pairs = {
            "same data, same seed (retrained)": (_bundle(ML100K, tmp_path / "a2", 0), a),
            "same data, seed 1 vs seed 0": (_bundle(ML100K, tmp_path / "b", 1), a),
            "same data, seed 1 aligned onto seed 0": (_bundle(ML100K, tmp_path / "b2", 1, align_to=a), a),
            "one more day of data (seed 0, full retrain)": (a, c),
            "one more day of data (train --from)": (_bundle(ML100K, tmp_path / "d", 0, start_from=c), c),
        }
        rows = {name: drift_report(new, old, users=args.users, items=args.users) for name, (new, old) in pairs.items()}
    table = Table(title=f"drift between ml-100k versions ({args.users} users, {args.users} items sampled)")
    for col in (
        "candidate vs active",
        "top-100 overlap",
        "items whose 10 neighbours changed > half",
        "item-vector cosine",
        "top-100 overlap, active's user vectors",
        "coverage@100 active -> candidate",
        "popularity pct active -> candidate",
    ):
        table.add_column(col, justify="right")
    for name, r in rows.items():
        table.add_row(
            name,
            f"{r['top100_overlap']:.3f}",
            f"{r['neighbours_changed']:.3f}",
            f"{r['vector_cosine']:.3f}",
            f"{r['cross_top100_overlap']:.3f}",
            f"{r['coverage@100_active']:.3f} -> {r['coverage@100_candidate']:.3f}",
            f"{r['popularity_pct@100_active']:.3f} -> {r['popularity_pct@100_candidate']:.3f}",
        )
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
