"""The sequence encoder against an outside SASRec (RecBole's) on ml-100k, on the same targets.

    python bench/outside_sasrec.py [--seeds 0 1 2] [--epochs 100]

Run it in its own virtualenv (RecBole is no dependency of embrecall; this reads ml-100k from
../shared): `pip install torch recbole "numpy<2" "pandas<2.3" "scipy<1.14" "setuptools<70"`
(RecBole 1.2.1 and the ray it imports predate numpy 2 and need pkg_resources), and run with
`TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD=1` (RecBole reloads its own best checkpoint, from the temporary
folder, with torch.load's old default). It writes ml-100k's ratings as RecBole atomic
files in a temporary folder, each user's events numbered in embrecall's order (by time, file
order among equal times), so that RecBole's leave-one-out split (`LS`, time order) holds out the
same validation and test item per user as embrecall's leave-last-out. RecBole's SASRec keeps its
defaults (2 layers, 64-d, 50 items, cross-entropy over every item, early stopping on validation
NDCG@10 after 10 epochs without gain); ranking is over every item. Unlike embrecall's protocol,
RecBole's full ranking for sequential models does not leave the user's earlier items out (its
FullSortEvalDataLoader masks history for general models only): its figures are a lower bound of
what its model scores under embrecall's protocol. On this 2-core machine its first epoch took
210 s (2026-12-08), so a run to convergence takes hours. Prints test HR@10 / NDCG@10 / HR@50 /
HR@100 per seed, their mean, and training seconds; compare with `python bench/sequence_shards.py`
(embrecall's encoder, in memory).
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

import pandas as pd

ML100K = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "ml-100k"
METRICS = ["hit@10", "ndcg@10", "hit@50", "hit@100"]


def write_atomic(folder: Path) -> None:
    """u.data as ``ml100k.inter``, times replaced by each user's event order (ties kept in file order)."""
    events = pd.read_csv(ML100K / "u.data", sep="\t", names=["user_id", "item_id", "rating", "timestamp"])
    events["line"] = range(len(events))
    events = events.sort_values(["user_id", "timestamp", "line"], kind="stable")
    events["timestamp"] = range(len(events))  # strictly increasing inside each user: one order, no ties
    (folder / "ml100k").mkdir()
    with open(folder / "ml100k" / "ml100k.inter", "w") as out:
        out.write("user_id:token\titem_id:token\ttimestamp:float\n")
        events[["user_id", "item_id", "timestamp"]].to_csv(out, sep="\t", header=False, index=False)


def main() -> None:
    from recbole.quick_start import run_recbole

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--epochs", type=int, default=100)
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        os.chdir(tmp)  # RecBole writes log/ and log_tensorboard/ under the working directory
        write_atomic(Path(tmp))
        for seed in args.seeds:
            config = {
                "data_path": tmp,
                "dataset": "ml100k",
                "load_col": {"inter": ["user_id", "item_id", "timestamp"]},
                "eval_args": {"split": {"LS": "valid_and_test"}, "order": "TO", "mode": "full", "group_by": "user"},
                "metrics": ["Hit", "NDCG"],
                "topk": [10, 50, 100],
                "valid_metric": "NDCG@10",
                "epochs": args.epochs,
                "train_neg_sample_args": None,
                "loss_type": "CE",
                "seed": seed,
                "reproducibility": True,
                "use_gpu": False,
                "show_progress": False,
                "checkpoint_dir": str(Path(tmp) / "saved"),
            }
            started = time.perf_counter()
            result = run_recbole(model="SASRec", config_dict=config, saved=True)
            seconds = time.perf_counter() - started
            test = {k: float(result["test_result"][k]) for k in METRICS}
            rows.append((seed, test, seconds))
            print(seed, {k: round(v, 4) for k, v in test.items()}, f"{seconds:.0f} s", flush=True)
    print("| seed | HR@10 | NDCG@10 | HR@50 | HR@100 | seconds |")
    print("| --- | --- | --- | --- | --- | --- |")
    for seed, test, seconds in rows:
        print(f"| {seed} | " + " | ".join(f"{test[k]:.4f}" for k in METRICS) + f" | {seconds:.0f} |")
    means = [statistics.mean(t[k] for _, t, _ in rows) for k in METRICS]
    sds = [statistics.stdev(t[k] for _, t, _ in rows) if len(rows) > 1 else 0.0 for k in METRICS]
    print("| mean ± sd | " + " | ".join(f"{m:.4f} ± {s:.4f}" for m, s in zip(means, sds)) + " | |")


if __name__ == "__main__":
    main()
