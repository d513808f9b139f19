"""The comparison report: every channel on the same split, as Markdown with PNG plots.

Plots where plots beat tables: HR@K curves, NDCG and coverage side by side, and how popular
each channel's recommendations are (long-tail share against accuracy).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import matplotlib

from embrecall.evaluation.protocol import profile_depth

matplotlib.use("Agg")  # files only, no display
import matplotlib.pyplot as plt  # noqa: E402

__all__ = ["write_report"]


def _hr_curves(metrics: dict[str, dict[str, Any]], ks: list[int], path: Path) -> None:
    fig, ax = plt.subplots(figsize=(6, 4))
    for name, m in metrics.items():
        ax.plot(ks, [m[f"HR@{k}"] for k in ks], marker="o", label=name)
    ax.set_xlabel("K")
    ax.set_ylabel("HR@K (recall of the held-out item)")
    ax.set_xscale("log")
    ax.set_xticks(ks, [str(k) for k in ks])
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("HR@K by channel")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _bars(metrics: dict[str, dict[str, Any]], keys: list[str], path: Path, title: str) -> None:
    names = list(metrics)
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.6))
    for ax, key in zip(axes, keys):
        ax.bar(names, [metrics[n].get(key, 0.0) for n in names], color="#4c72b0")
        ax.set_title(key)
        ax.tick_params(axis="x", rotation=30)
        ax.grid(axis="y", alpha=0.3)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _accuracy_vs_tail(metrics: dict[str, dict[str, Any]], k: int, path: Path) -> None:
    """HR@k against the long-tail share at the popularity profile's depth ``k``."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for name, m in metrics.items():
        ax.scatter(m[f"long_tail@{k}"], m[f"HR@{k}"], s=60)
        ax.annotate(name, (m[f"long_tail@{k}"], m[f"HR@{k}"]), textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel(f"long-tail share of top-{k} slots (items outside the popular 20 %)")
    ax.set_ylabel(f"HR@{k}")
    ax.grid(alpha=0.3)
    ax.set_title("accuracy against popularity bias")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _table(metrics: dict[str, dict[str, Any]], columns: list[str]) -> str:
    lines = ["| channel | " + " | ".join(columns) + " |", "| --- |" + " --- |" * len(columns)]
    for name, m in metrics.items():
        cells = [f"{m[c]:.4f}" if isinstance(m.get(c), float) else str(m.get(c, "")) for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def write_report(
    out_dir: Path,
    metrics: dict[str, dict[str, Any]],
    ks: list[int],
    *,
    title: str,
    context: str,
    cold: dict[str, dict[str, Any]] | None = None,
) -> Path:
    """Write ``report.md``, ``metrics.json`` and the PNG plots into ``out_dir``; returns the Markdown path."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    k, deepest = profile_depth(ks), max(ks)
    _hr_curves(metrics, ks, out_dir / "hr_at_k.png")
    _bars(
        metrics,
        [f"NDCG@{ks[0]}", f"NDCG@{k}", f"coverage@{deepest}"],
        out_dir / "ndcg_coverage.png",
        "ranking quality and catalog coverage",
    )
    _accuracy_vs_tail(metrics, k, out_dir / "popularity.png")
    (out_dir / "metrics.json").write_text(json.dumps({"channels": metrics, "cold_items": cold}, indent=2))
    accuracy = [f"HR@{x}" for x in ks] + [f"NDCG@{x}" for x in ks] + ["MRR"]
    spread = [f"coverage@{x}" for x in ks] + [f"long_tail@{k}", f"popularity_pct@{k}"]
    cost = ["train_seconds", "peak_rss_mb"]
    parts = [
        f"# {title}",
        "",
        context,
        "",
        "## Accuracy",
        "",
        _table(metrics, accuracy),
        "",
        "![HR@K](hr_at_k.png)",
        "",
        "## Coverage and popularity",
        "",
        f"`long_tail@{k}`: share of top-{k} slots given to items outside the most popular 20 % of the "
        f"catalog; `popularity_pct@{k}`: mean popularity percentile of recommended items (1 = most popular).",
        "",
        _table(metrics, spread),
        "",
        "![NDCG and coverage](ndcg_coverage.png)",
        "",
        "![accuracy against popularity](popularity.png)",
        "",
        "## Cost",
        "",
        _table(metrics, cost),
        "",
    ]
    if cold:
        parts += [
            "## Cold items",
            "",
            "Test users whose held-out item first appears in the test period; the "
            "candidates are the training catalog plus those new items.",
            "",
            _table(cold, [c for c in next(iter(cold.values())) if c.startswith(("HR@", "users"))]),
            "",
        ]
    path = out_dir / "report.md"
    path.write_text("\n".join(parts))
    return path
