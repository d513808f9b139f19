"""One model for several scenes (DeWu) against a model per scene, on the synthetic log with scenes.

    python bench/scenes.py [--seeds 0 1] [--epochs 10]

`configs/scenes.toml`: 4 scenes, s3 the smallest (~5 % of events), each scene with its own
featured categories and its own popular items inside a category.  Three ways, same split, same
test targets (each user's last event, whatever its scene):

- one model without the scene feature;
- one model with the scene as a user-tower context feature (min_count, mask_rate as configured);
- one model per scene, trained on that scene's events only and asked with that scene's history.

Prints HR@10 and NDCG@10 per scene (mean over seeds), and the targets per scene.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from rich.console import Console
from rich.table import Table

from embrecall import load_config
from embrecall.config import Config
from embrecall.data.split import Split
from embrecall.evaluation import evaluate_channel
from embrecall.evaluation.protocol import split_by
from embrecall.pipeline import build_channel, read_split

ROOT = Path(__file__).resolve().parents[1]
METRICS = ("HR@10", "NDCG@10")


def _without_scene(cfg: Config) -> Config:
    user = [f for f in cfg.features.user if f.name != "scene"]
    return cfg.model_copy(update={"features": cfg.features.model_copy(update={"user": user})})


def _scene_only(split: Split, scene: str) -> Split:
    """Train, validation and history of one scene; its test targets."""

    def keep(frame):
        return frame[(frame["scene"] == scene).to_numpy()].reset_index(drop=True)

    return Split(keep(split.train), keep(split.valid), keep(split.train_full), keep(split.test))


def run(seed: int, epochs: int) -> dict[str, dict[str, dict[str, float]]]:
    """way -> scene -> metric for one seed."""
    cfg = load_config(ROOT / "configs" / "scenes.toml", [f"train.seed={seed}", f"train.epochs={epochs}"])
    data, split = read_split(cfg, show_progress=False)
    scenes = split_by(split, "scene")
    out: dict[str, dict[str, dict[str, float]]] = {}
    for way, way_cfg in (("one model, no scene feature", _without_scene(cfg)), ("one model + scene feature", cfg)):
        channel = build_channel("two_tower", way_cfg, data, split, show_progress=False)
        out[way] = {
            "all": evaluate_channel(channel, split, [10]),
            **{s: evaluate_channel(channel, part, [10]) for s, part in scenes.items()},
        }
    per: dict[str, dict[str, float]] = {}
    for scene in scenes:
        part = _scene_only(split, scene)
        channel = build_channel("two_tower", _without_scene(cfg), data, part, show_progress=False)
        per[scene] = evaluate_channel(channel, part, [10])
    targets = np.array([per[s]["targets"] for s in scenes])
    per["all"] = {m: float(np.average([per[s][m] for s in scenes], weights=targets)) for m in METRICS}
    out["one model per scene"] = per
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1])
    parser.add_argument("--epochs", type=int, default=10)
    args = parser.parse_args()
    runs = [run(seed, args.epochs) for seed in args.seeds]
    ways = list(runs[0])
    scenes = list(runs[0][ways[0]])
    console = Console()
    for metric in METRICS:
        table = Table(title=f"test {metric} per scene (mean of seeds {args.seeds})")
        table.add_column("scene")
        table.add_column("targets", justify="right")
        for way in ways:
            table.add_column(way, justify="right")
        for scene in scenes:
            cells = []
            for way in ways:
                values = [r[way][scene][metric] for r in runs]
                cells.append(f"{np.mean(values):.4f}" + (f" ± {np.std(values):.4f}" if len(values) > 1 else ""))
            table.add_row(scene, f"{runs[0][ways[0]][scene]['targets']:,.0f}", *cells)
        console.print(table)


if __name__ == "__main__":
    main()
