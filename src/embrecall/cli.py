"""The ``embrecall`` command line: init, demo, train, evaluate, tune, recommend, serve, publish, update, generate."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from embrecall.channel_table import EVALUATED
from embrecall.config import Config, SyntheticConfig, load_config, validated
from embrecall.errors import BundleError, ConfigError, EmbrecallError, GateBreach

if TYPE_CHECKING:
    from embrecall.export import Bundle

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    help="Embedding-based candidate retrieval: train two-tower models, index items, evaluate, recommend.",
)
console = Console(width=None if sys.stdout.isatty() else 200)  # a log file gets whole tables, not 80 columns

ConfigOpt = Annotated[Optional[Path], typer.Option("--config", "-c", help="TOML or YAML run config (default: demo).")]
SetOpt = Annotated[Optional[list[str]], typer.Option("--set", "-s", help="Override a field: section.field=value.")]
ProgressOpt = Annotated[bool, typer.Option("--progress/--no-progress", help="Show progress bars.")]


def _config(config: Path | None, sets: list[str] | None, **flags: Any) -> Config:
    overrides = list(sets or [])
    overrides += [f"{k}={v}" for k, v in flags.items() if v is not None]
    return load_config(config, overrides)


def _metrics_table(metrics: dict[str, dict[str, Any]], ks: list[int], title: str) -> Table:
    """One row per metric, one column per channel: fits a terminal however many channels run."""
    table = Table(title=title)
    table.add_column("metric")
    for name in metrics:
        table.add_column(escape(name), justify="right")  # "two_tower [scene=s1]" is not markup
    rows = (
        [f"HR@{k}" for k in ks]
        + [f"NDCG@{k}" for k in ks]
        + ["MRR", "AUC", "AUC_shown", "avg_position@100"]
        + [f"coverage@{k}" for k in ks]
    )
    if len({m.get("targets") for m in metrics.values()}) > 1:  # rows of a part of the targets (a scene)
        table.add_row("targets", *[f"{m['targets']:,.0f}" if "targets" in m else "" for m in metrics.values()])
    for r in rows:
        if any(r in m for m in metrics.values()):
            table.add_row(r, *[f"{m[r]:.4f}" if r in m else "" for m in metrics.values()])
    for key, label, fmt in (("train_seconds", "train time (s)", "{:.1f}"), ("peak_rss_mb", "peak RSS (MB)", "{:.0f}")):
        if any(key in m for m in metrics.values()):
            table.add_row(label, *[fmt.format(m[key]) if key in m else "" for m in metrics.values()])
    return table


MEASURES_NOTE = (
    "train time: what each column fitted (merged: only what the columns before it had not); peak RSS: "
    "the whole process's so far, so it includes the columns before (run one channel per process to "
    "compare memory)"
)


def _breakdown_table(metrics: dict[str, dict[str, Any]], grouping: str, ks: list[int]) -> Table:
    """HR@10 / HR@100 (or the cut-offs there are) of each channel, one row per group of targets."""
    shown = [k for k in ks if k in (10, 100)] or ks[:2]
    metrics = {name: m for name, m in metrics.items() if "breakdown" in m}  # not the per-scene rows
    first = next(iter(metrics.values()))["breakdown"][grouping]
    table = Table(title=f"hits by {grouping}: " + " / ".join(f"HR@{k}" for k in shown))
    table.add_column(grouping)
    table.add_column("targets", justify="right")
    for name in metrics:
        table.add_column(escape(name), justify="right")
    for label, row in first.items():
        cells = [
            " / ".join(f"{m['breakdown'][grouping][label][f'HR@{k}']:.3f}" for k in shown) for m in metrics.values()
        ]
        table.add_row(escape(label), f"{row['targets']:,}", *cells)
    return table


def _split_line(row: dict[str, Any]) -> str:
    """What the test targets allow: how many, against which catalog, and how many no channel can hit."""
    return (
        f"test: {row['targets']:,.0f} users, catalog {row['catalog_items']:,.0f} items; "
        f"{row['targets_outside_catalog']:,.0f} targets outside the catalog and "
        f"{row['targets_already_seen']:,.0f} already in the user's history (never hit): "
        f"HR@K can reach at most {row['hit_ceiling']:.4f}"
    )


def _recommendations_table(frame, user_id: str, version: str) -> Table:
    table = Table(title=f"user {user_id} — bundle {version}")
    first = [c for c in ("item_id", "title", "channel") if c in frame.columns]
    shown = (first + [c for c in frame.columns if c not in (*first, "score")])[:5]
    table.add_column("#", justify="right")
    table.add_column("score", justify="right")
    for c in shown:
        table.add_column(c)
    for i, row in enumerate(frame.itertuples(index=False), start=1):
        values = row._asdict()
        table.add_row(str(i), f"{values['score']:.3f}", *[str(values[c]) for c in shown])
    return table


def _run(fn):
    """Print embrecall errors as one clear message instead of a traceback: exit 3 when a gate
    refused (downstream tasks should stop), 2 for every other error."""
    try:
        return fn()
    except EmbrecallError as err:
        console.print(f"[bold red]error:[/] {escape(str(err))}", soft_wrap=True)  # '[data]' is text, not markup
        raise typer.Exit(3 if isinstance(err, GateBreach) else 2) from None


@app.command()
def train(
    config: ConfigOpt = None,
    set: SetOpt = None,
    out: Annotated[Optional[Path], typer.Option(help="Folder for bundles.")] = None,
    epochs: Annotated[Optional[int], typer.Option()] = None,
    seed: Annotated[Optional[int], typer.Option()] = None,
    start_from: Annotated[
        Optional[Path],
        typer.Option(
            "--from",
            help="Train on from this version (a bundle, or a registry's active version): its weights, "
            "encoders and optimiser state, on the events after it ([update] settings).",
        ),
    ] = None,
    align_to: Annotated[
        Optional[Path],
        typer.Option(help="Rotate the new version's vector space onto this version's (a bundle or a registry)."),
    ] = None,
    progress: ProgressOpt = True,
) -> None:
    """Train a two-tower model under the protocol, evaluate it, and write a versioned bundle."""
    from embrecall.pipeline import train as run_train

    def go() -> None:
        cfg = _config(config, set, **{"out": out, "train.epochs": epochs, "train.seed": seed})
        report = run_train(cfg, show_progress=progress, start_from=start_from, align_to=align_to)
        if report.bundle is None:  # a torchrun rank other than 0: rank 0 reports
            return
        if report.metrics:
            console.print(_metrics_table(report.metrics, cfg.evaluate.ks, "test metrics (BENCHMARK.md)"))
        console.print(f"best epoch {report.best_epoch}, training {report.seconds:.1f} s")
        console.print(f"bundle written: [bold]{report.bundle}[/]")

    _run(go)


@app.command()
def evaluate(
    config: ConfigOpt = None,
    set: SetOpt = None,
    seed: Annotated[Optional[int], typer.Option(help="Training seed (train.seed).")] = None,
    bundle: Annotated[
        Optional[Path], typer.Option(help="Evaluate the channels this bundle serves, as the service runs them.")
    ] = None,
    channel: Annotated[
        Optional[list[str]],
        typer.Option(
            help=f"{', '.join(EVALUATED)} (served: channels.serve merged as the service merges them, or a "
            "--bundle's); repeatable; default all (a channel that cannot run on the log is skipped with a note)."
        ),
    ] = None,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Write metrics as JSON.")] = None,
    report: Annotated[Optional[Path], typer.Option(help="Write a Markdown report with plots here.")] = None,
    cold: Annotated[bool, typer.Option("--cold/--no-cold", help="Add the cold-item evaluation.")] = False,
    on: Annotated[
        str,
        typer.Option(
            help="test, or validation: fitted on train, measured on the validation targets (to choose settings by)."
        ),
    ] = "test",
    per: Annotated[
        Optional[list[str]],
        typer.Option(
            help="An event column (such as scene): metrics for each of its values too (evaluate.per); repeatable."
        ),
    ] = None,
    target: Annotated[
        str,
        typer.Option(
            help="item, or an item attribute such as category: rank its values for each user (entity "
            "recall) against the held-out item's value."
        ),
    ] = "item",
    breakdown: Annotated[
        bool,
        typer.Option(
            help="Also hits per group of targets: by the target's popularity decile, the user's history "
            "length, and targets in the same basket as the last history event."
        ),
    ] = False,
    progress: ProgressOpt = True,
) -> None:
    """Run the BENCHMARK.md protocol on one or more channels and print a table."""
    from embrecall.evaluation.report import write_report
    from embrecall.pipeline import evaluate as run_evaluate
    from embrecall.pipeline import evaluate_cold_items, evaluate_entity_recall

    def go() -> None:
        cfg = _config(config, set, **{"train.seed": seed, "evaluate.per": json.dumps(per) if per else None})
        if target != "item":
            if channel or cold or report or per:
                raise ConfigError(
                    "--target ranks attribute values with two_tower, history and popular: it takes "
                    "no --channel, --cold, --report or --per"
                )
            found = evaluate_entity_recall(cfg, target, bundle, on=on, show_progress=progress)
            shape = found["two_tower"]
            console.print(
                escape(
                    f"{on}: {shape['targets']:,.0f} targets whose item has a {target}, "
                    f"{shape['values']:,.0f} values of {target}"
                )
            )
            console.print(
                _metrics_table(found, cfg.evaluate.ks, escape(f"{on} entity recall of {target} (BENCHMARK.md)"))
            )
            if json_out:
                json_out.write_text(json.dumps(found, indent=2))
                console.print(f"metrics written to {json_out}")
            return
        metrics: dict[str, dict[str, Any]] = {}

        def keep(name: str, row: dict[str, Any]) -> None:
            """Each row written as soon as it is measured: a failure later loses none."""
            metrics[name] = row
            if json_out:
                json_out.write_text(json.dumps(metrics, indent=2))

        try:
            run_evaluate(cfg, channel, bundle, on=on, show_progress=progress, on_row=keep, breakdown=breakdown)
        except EmbrecallError:
            if metrics:
                console.print(_metrics_table(metrics, cfg.evaluate.ks, f"{on} metrics measured before the error"))
            raise
        console.print(_split_line(next(iter(metrics.values()))).replace("test:", f"{on}:", 1))
        console.print(_metrics_table(metrics, cfg.evaluate.ks, f"{on} metrics (BENCHMARK.md)"))
        console.print(MEASURES_NOTE, style="dim", soft_wrap=True)
        if breakdown:
            for grouping in next(iter(metrics.values()))["breakdown"]:
                console.print(_breakdown_table(metrics, grouping, cfg.evaluate.ks))
        cold_metrics = {"two_tower": evaluate_cold_items(cfg, show_progress=progress)} if cold else None
        if cold_metrics:
            console.print(_metrics_table(cold_metrics, cfg.evaluate.ks, "cold items (new in the test period)"))
        if json_out:
            json_out.write_text(
                json.dumps(metrics if not cold_metrics else {**metrics, "cold_items": cold_metrics}, indent=2)
            )
            console.print(f"metrics written to {json_out}")
        if report:
            source = cfg.data.path or f"synthetic data (seed {cfg.data.synthetic.seed})"
            context = (
                f"Data: {source}. Split: {cfg.split.kind} (BENCHMARK.md). Full-catalog ranking, each user's "
                f"own items removed. Served: {cfg.channels.merge_mode} {dict(cfg.channels.serve)}. "
                f"Dithering epsilon: {cfg.channels.dither_epsilon}. Machine: {os.cpu_count()} cores."
            )
            path = write_report(
                report,
                metrics,
                cfg.evaluate.ks,
                title="embrecall channel comparison",
                context=context,
                cold=cold_metrics,
            )
            console.print(f"report written to {path}")

    _run(go)


@app.command()
def tune(
    config: ConfigOpt = None,
    set: SetOpt = None,
    channel: Annotated[
        Optional[str],
        typer.Option(
            help="The channel to tune (default: tune.channel); served: which channels serve, their weights "
            "and merge, chosen from every channel's validation lists; all: each channel in turn "
            "(--timeout each), then served."
        ),
    ] = None,
    metric: Annotated[Optional[str], typer.Option(help="Validation metric to maximise, e.g. NDCG@20.")] = None,
    trials: Annotated[Optional[int], typer.Option(help="Trials at most (default: tune.trials).")] = None,
    timeout: Annotated[Optional[float], typer.Option(help="Seconds before no new trial starts.")] = None,
    out: Annotated[
        Optional[Path],
        typer.Option(
            help="Folder for the study (tune.sqlite, resumed if there) and best.yaml; default <out>/tune-<channel>."
        ),
    ] = None,
    progress: ProgressOpt = True,
) -> None:
    """Choose a channel's settings, or the served merge, with Optuna, scored on validation targets only."""
    from embrecall.pipeline import read_split
    from embrecall.served_tuning import tune_served
    from embrecall.tune import tune as run_tune
    from embrecall.tune_all import tune_all

    def go() -> None:
        cfg = _config(
            config,
            set,
            **{"tune.channel": channel, "tune.metric": metric, "tune.trials": trials, "tune.timeout_s": timeout},
        )
        folder = out or cfg.out / f"tune-{cfg.tune.channel}"
        data, split = read_split(cfg, progress)
        if cfg.tune.channel == "all":
            result, studies = tune_all(cfg, data, split, folder, show_progress=progress)
            for name, study in studies.items():
                console.print(escape(f"{name}: {study.trials} trials ({study.pruned} pruned); {study.figures}"))
        else:
            run = tune_served if cfg.tune.channel == "served" else run_tune
            result = run(cfg, data, split, folder, show_progress=progress)
        figures = ", ".join(f"{m} = {v:.4f}" for m, v in result.figures.items())
        console.print(
            escape(
                f"{result.trials} trials ({result.pruned} pruned); best on validation: {figures}; {result.best_params}"
            )
        )
        console.print(
            f"best config written: [bold]{result.config_path}[/] — next: embrecall evaluate "
            f"--config {result.config_path}"
        )

    _run(go)


@app.command()
def init(
    data: Annotated[Path, typer.Argument(help="A log (CSV, TSV or Parquet) or a MovieLens folder.")],
    out: Annotated[Path, typer.Option(help="Where to write the config.")] = Path("embrecall.toml"),
    force: Annotated[bool, typer.Option(help="Overwrite an existing file.")] = False,
    user: Annotated[Optional[str], typer.Option(help="The column of user ids (else inferred).")] = None,
    item: Annotated[Optional[str], typer.Option(help="The column of item ids (else inferred).")] = None,
    time: Annotated[Optional[str], typer.Option(help="The column of event times (else inferred).")] = None,
) -> None:
    """Look at a log and write a commented config that runs as it is."""
    from embrecall.starter import starter_config

    def go() -> None:
        if out.exists() and not force:
            raise ConfigError(f"{out} exists; pass --force to overwrite it, or --out another file")
        with console.status(f"reading {data}"):
            starter = starter_config(data, out.parent, {"user": user, "item": item, "timestamp": time})
        console.print("[bold]inferred[/]")
        for line in starter.said:
            console.print(f"  {escape(line)}", highlight=False)
        if starter.left_out:
            console.print("[bold]left out[/]")
            for line in starter.left_out:
                console.print(f"  {escape(line)}", highlight=False)
        out.write_text(starter.toml)
        console.print(f"config written to [bold]{out}[/]; next: embrecall evaluate --config {out}")

    _run(go)


@app.command()
def recommend(
    bundle: Annotated[Path, typer.Option(help="A bundle folder written by `embrecall train`.")],
    user: Annotated[str, typer.Option(help="The user id, as in the data.")],
    k: Annotated[int, typer.Option("-k", min=1, max=10_000)] = 20,
    json_out: Annotated[Optional[Path], typer.Option("--json", help="Also write the list as JSON.")] = None,
) -> None:
    """Print the top-k items for a user as the service answers them (the bundle's channels merged by its
    quotas), seen items removed, with the channel that found each and their titles or attributes."""
    from embrecall.pipeline import recommend as run_recommend

    def go() -> None:
        found = run_recommend(bundle, user, k)
        if not found.attrs["known_user"]:
            console.print(f"[yellow]user {user!r} is not in this bundle: recommending from features alone[/]")
        console.print(_recommendations_table(found, user, found.attrs["version"]))
        if json_out is not None:
            json_out.write_text(found.to_json(orient="records"))

    _run(go)


@app.command()
def demo(
    out: Annotated[Path, typer.Option(help="Folder for the demo bundle.")] = Path("runs/demo"),
    progress: ProgressOpt = True,
) -> None:
    """Synthetic data -> train -> index -> evaluate -> sample recommendations, with nothing downloaded."""
    from embrecall.pipeline import recommend as run_recommend
    from embrecall.pipeline import train as run_train
    from embrecall.serve.cache import VectorCache
    from embrecall.serve.service import ServingVersion

    def go() -> None:
        cfg = _config(None, None, out=out)
        s = cfg.data.synthetic
        console.print(
            f"[bold]embrecall demo[/]: synthetic log of {s.events:,} events, {s.users:,} users, "
            f"{s.items:,} items in {s.categories} categories"
        )
        report = run_train(cfg, show_progress=progress)
        if report.bundle is None:  # a torchrun rank other than 0
            return
        console.print(_metrics_table(report.metrics, cfg.evaluate.ks, "test metrics (BENCHMARK.md protocol)"))
        version = ServingVersion(report.bundle, VectorCache(size=0))
        users = list(version.bundle.users.index[:2])
        for user in users:  # the lists `embrecall recommend` and the service answer with
            console.print(_recommendations_table(run_recommend(version, str(user), 5), user, version.version))
        console.print(
            f"bundle: [bold]{report.bundle}[/]  — try: embrecall recommend --bundle {report.bundle} "
            f"--user {users[0]} -k 20"
        )

    _run(go)


@app.command()
def serve(
    config: Annotated[
        Optional[Path],
        typer.Option(
            "--config", "-c", help="A serve config (TOML): every setting below and more (see the README's Serving)."
        ),
    ] = None,
    source: Annotated[
        Optional[Path],
        typer.Option("--bundle", "--registry", help="A bundle, or a registry whose active version is followed."),
    ] = None,
    host: Annotated[Optional[str], typer.Option(help="Address to listen on [default: 127.0.0.1].")] = None,
    port: Annotated[Optional[int], typer.Option(help="Port [default: 8000].")] = None,
    workers: Annotated[
        Optional[int],
        typer.Option(
            min=1,
            help="Processes serving on the port (each loads the version; more than one needs --feed and "
            "--events for the tokens that are set) [default: 1].",
        ),
    ] = None,
    redis: Annotated[Optional[str], typer.Option(help="Redis URL for a shared user-vector cache.")] = None,
    feed: Annotated[Optional[str], typer.Option(help="Redis URL of the item change stream.")] = None,
    events: Annotated[
        Optional[str],
        typer.Option(
            help="Redis URL keeping users' events (POST /v1/events), shared by replicas; default: in process."
        ),
    ] = None,
    replica: Annotated[
        Optional[str],
        typer.Option(
            help="This replica's name on the change feed and the events stream (its consumer groups); keep it "
            "across restarts [default: embrecall-1]."
        ),
    ] = None,
    milvus: Annotated[
        Optional[str],
        typer.Option(help="Keep item vectors in Milvus: a milvus-lite file or a server URI like http://host:19530."),
    ] = None,
) -> None:
    """Serve recall over HTTP (OpenAPI docs at /docs).  Settings come from flags, then EMBRECALL_* environment
    variables, then --config; item changes need $EMBRECALL_ADMIN_TOKEN, user events $EMBRECALL_CLIENT_TOKEN."""
    import uvicorn
    from threadpoolctl import threadpool_limits

    from embrecall.serve.app import create_app
    from embrecall.serve.settings import ServeConfig
    from embrecall.serve.workers import run

    def go() -> None:
        settings = ServeConfig.load(
            config,
            source=source,
            host=host,
            port=port,
            workers=workers,
            replica=replica,
            cache={"redis": redis} if redis else None,
            feed={"url": feed} if feed else None,
            events={"url": events} if events else None,
            index={"backend": "milvus", "uri": milvus} if milvus else None,
        )
        if settings.workers > 1:
            return run(settings)
        # Requests are many and small: a second BLAS or OpenMP thread inside one only spins against the
        # event loop and the other requests (it took more CPU than the requests themselves at 100/s).
        threadpool_limits(1)
        # create_app loads the bundle: a bad bundle or registry fails here with its message, before the server starts
        uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning")

    _run(go)


def _drift_compare(users: int) -> Callable[[Bundle, Path], dict] | None:
    """The drift report of a candidate against the active version on ``users`` sampled users and items."""
    from embrecall.serve.drift import drift_report

    return (lambda new, old: drift_report(new, old, users=users, items=users)) if users else None


@app.command()
def publish(
    bundle: Annotated[Path, typer.Argument(help="The bundle to activate.")],
    registry: Annotated[Path, typer.Option(help="The registry folder.")] = Path("registry"),
    gate: Annotated[
        Optional[list[str]], typer.Option(help="Metric gate, e.g. 'HR@10>=0.15' or 'popular.HR@10<0.2' (repeatable).")
    ] = None,
    sigma: Annotated[
        float,
        typer.Option(
            min=0,
            help="Refuse a ranking metric this many σ below, or a daily data volume this many σ off, the "
            "last published versions' mean (0: off).",
        ),
    ] = 3.0,
    window: Annotated[int, typer.Option(min=1, help="Published versions the σ rule compares with.")] = 5,
    force: Annotated[
        Optional[str],
        typer.Option(
            help="Publish despite gate breaches, or over a broken ACTIVE file; the reason is recorded in the "
            "registry's history."
        ),
    ] = None,
    drift_users: Annotated[
        int,
        typer.Option(
            min=0, help="Users (and items) sampled for the drift report against the active version (0: none)."
        ),
    ] = 500,
) -> None:
    """Activate a bundle if it passes the gates (fixed thresholds, and the 3σ rule against earlier versions);
    serving services follow within a second.  Every attempt is kept in the registry's HISTORY.json."""
    from embrecall.export.gate import parse_gate
    from embrecall.export.registry import Registry
    from embrecall.serve.drift import describe_drift

    def go() -> None:
        reg = Registry(registry)
        version = reg.publish(
            bundle,
            [parse_gate(g) for g in gate or []],
            sigma=sigma,
            window=window,
            force=force,
            compare=_drift_compare(drift_users),
        )
        console.print(
            f"active version: [bold]{version}[/] ({registry})"
            + (f" [yellow]forced: {escape(force)}[/]" if force else "")
        )
        drift = reg.history()[-1].get("drift")
        if drift:
            said = f"no drift report: {drift['error']}" if "error" in drift else describe_drift(drift)
            console.print(escape(said), soft_wrap=True)

    _run(go)


@app.command()
def update(
    config: ConfigOpt = None,
    set: SetOpt = None,
    registry: Annotated[Path, typer.Option(help="The registry folder.")] = Path("registry"),
    gate: Annotated[Optional[list[str]], typer.Option(help="Metric gate, e.g. 'HR@100>=0.3' (repeatable).")] = None,
    sigma: Annotated[
        float, typer.Option(min=0, help="Refuse data volumes or ranking metrics this many σ off (0: off).")
    ] = 3.0,
    window: Annotated[int, typer.Option(min=1, help="Published versions the σ rule compares with.")] = 5,
    drift_users: Annotated[int, typer.Option(min=0, help="Users (and items) sampled for the drift report.")] = 500,
    progress: ProgressOpt = True,
) -> None:
    """check-data, train on from the active version, evaluate, publish through the gate: one run of a
    schedule (cron, Airflow).  Exit 0 when published or when nothing is new, 3 when a gate refused
    (the active version keeps serving), 2 on errors.  Each run is kept in the registry's UPDATES.json."""
    from embrecall.export.gate import parse_gate
    from embrecall.export.registry import Registry
    from embrecall.serve.drift import describe_drift
    from embrecall.update import update as run_update

    def go() -> None:
        cfg = _config(config, set)
        out = run_update(
            cfg,
            registry,
            [parse_gate(g) for g in gate or []],
            sigma=sigma,
            window=window,
            compare=_drift_compare(drift_users),
            show_progress=progress,
        )
        if out.outcome != "published":
            console.print(f"{out.outcome}: {escape(out.why)}", soft_wrap=True)
            return
        if out.metrics:
            console.print(_metrics_table(out.metrics, cfg.evaluate.ks, "test metrics (BENCHMARK.md)"))
        start = f"trained on from {out.parent}" if out.parent else "trained from scratch (no active version)"
        console.print(f"published [bold]{out.version}[/] ({start}, {out.seconds:.0f} s in all)")
        drift = Registry(registry).history()[-1].get("drift")
        if drift and "error" not in drift:
            console.print(escape(describe_drift(drift)), soft_wrap=True)

    _run(go)


@app.command("check-data")
def check_data(
    config: ConfigOpt = None,
    set: SetOpt = None,
    registry: Annotated[Path, typer.Option(help="The registry folder.")] = Path("registry"),
    sigma: Annotated[float, typer.Option(min=0, help="Refuse a daily volume this many σ off.")] = 3.0,
    window: Annotated[int, typer.Option(min=1, help="Published versions to compare with.")] = 5,
) -> None:
    """Compare the config's log with the training logs of the last published versions (events, users
    and items per day; the share of items the active version lacks) before training on it: exit 3
    with each breach, so that a scheduler halts train and publish; exit 4 when fewer published
    versions than the σ rule needs leave nothing to compare with."""
    from embrecall.export.gate import MIN_HISTORY
    from embrecall.export.registry import Registry
    from embrecall.pipeline import read_split

    def go() -> None:
        cfg = _config(config, set)
        _, split = read_split(cfg, show_progress=False)  # what a bundle's profile is counted on: train + validation
        reg = Registry(registry)
        figures = reg.check_volumes(split.train_full, sigma=sigma, window=window)
        compared = len(reg.published(window))
        if compared < MIN_HISTORY:
            console.print(
                f"[yellow]too little history to check:[/] {compared} published version(s) in {registry}, the σ "
                f"rule needs {MIN_HISTORY}; nothing was compared (exit 4)"
            )
            raise typer.Exit(4)
        console.print(
            "data volumes in line with the published versions: " + ", ".join(f"{k} {v:.4g}" for k, v in figures.items())
        )

    _run(go)


@app.command()
def versions(registry: Annotated[Path, typer.Option(help="The registry folder.")] = Path("registry")) -> None:
    """Every publish attempt, oldest first: its figures, breaches, and whether it went live."""
    from embrecall.export.registry import Registry

    def go() -> None:
        reg = Registry(registry)
        try:
            active = reg.state()["active"]
        except BundleError as err:  # the history is still there to read
            active = None
            console.print(f"[yellow]{escape(str(err))}[/]", soft_wrap=True)
        table = Table(title=f"versions in {registry}")
        for col in ("version", "at", "status", "two_tower HR@10", "events/day", "new items", "breaches / reason"):
            table.add_column(col)
        for r in reg.history():
            f = r["figures"]
            status = ("active" if r["version"] == active else "published") if r.get("published") else "refused"
            status = "rolled back to" if r.get("rollback") else status
            said = "; ".join(r.get("breaches") or []) + (f" — forced: {r['forced']}" if r.get("forced") else "")
            said += f" — replaced a broken ACTIVE: {r['repaired']}" if r.get("repaired") else ""
            table.add_row(
                r["version"],
                str(r.get("at", "")),
                status,
                _figure(f.get("two_tower.HR@10")),
                _figure(f.get("events_per_day")),
                _figure(f.get("new_item_share")),
                escape(said),
            )
        console.print(table)

    _run(go)


def _figure(value: object) -> str:
    return f"{value:.4g}" if isinstance(value, (int, float)) else "-"


@app.command()
def rollback(
    registry: Annotated[Path, typer.Option(help="The registry folder.")] = Path("registry"),
    force: Annotated[
        Optional[str],
        typer.Option(
            help="Replace a broken ACTIVE file, reading the versions from HISTORY.json; the reason is recorded there."
        ),
    ] = None,
) -> None:
    """Re-activate the version that was active before the current one."""
    from embrecall.export.registry import Registry

    def go() -> None:
        if force is not None and not force.strip():
            raise ConfigError("--force needs a reason, recorded in the registry's history")
        console.print(f"active version: [bold]{Registry(registry).rollback(force)}[/] ({registry})")

    _run(go)


@app.command()
def sign(bundles: Annotated[list[Path], typer.Argument(help="Bundle folders to sign (or sign again).")]) -> None:
    """Sign bundles with the first key of EMBRECALL_BUNDLE_KEYS (or EMBRECALL_BUNDLE_KEY_FILE), after
    checking every file against the manifest: publish, rollback and serve accept only signed
    bundles once a key is configured. Signing again under a new first key rotates it."""
    from embrecall.export.bundle import Bundle
    from embrecall.export.signing import KEYS_VARIABLE, bundle_keys, sign_manifest

    def go() -> None:
        keys = bundle_keys()
        if not keys:
            raise ConfigError(f"no bundle key configured: set {KEYS_VARIABLE} (or EMBRECALL_BUNDLE_KEY_FILE)")
        for folder in bundles:
            Bundle.manifest_of(folder, verify=True, signed=False)  # sign only what is intact
            sign_manifest(folder, keys)
            console.print(f"signed {folder}")

    _run(go)


@app.command()
def generate(
    out: Annotated[Path, typer.Option(help="Folder for events/users/items.parquet.")],
    users: int = 100_000,
    items: int = 1_000_000,
    events: int = 10_000_000,
    categories: int = 200,
    cities: int = 50,
    seed: int = 0,
) -> None:
    """Write a synthetic log as Parquet (power-law popularity, categories, cities, sessions)."""
    from embrecall.data.synthetic import write_parquet

    def go() -> None:
        cfg = validated(
            SyntheticConfig,
            {
                "users": users,
                "items": items,
                "events": events,
                "categories": categories,
                "cities": cities,
                "seed": seed,
            },
            "the generate options",
        )
        with console.status("generating"):
            paths = write_parquet(cfg, out)
        for name, p in paths.items():
            console.print(f"{name}: {p}")

    _run(go)


TRAINING_ONLY = ("torch", "gensim", "optuna", "matplotlib", "onnx", "onnxscript")  # the `train` extra


def main() -> None:
    """The console entry point: a command that needs what the serving install leaves out says so."""
    try:
        app(sys.argv[1:])
    except ModuleNotFoundError as err:
        if (err.name or "").split(".")[0] not in TRAINING_ONLY:
            raise
        console.print(
            f"[bold red]error:[/] this command needs {err.name}, which the serving install leaves out: "
            + escape("pip install 'embrecall[train]'"),
            soft_wrap=True,
        )
        raise SystemExit(2) from None


if __name__ == "__main__":  # pragma: no cover - `python -m embrecall.cli`
    main()
