"""Soak test of the recall service on loopback: steady traffic for a long time, errors, p99 and RSS over time.

    pip install -e ".[bench]"; python bench/soak.py [--minutes 30] [--rate 100] [--changes 20] [--batches 1]
        [--events 50 --event-users 1000 --store-bytes 4194304]

Trains (once, into bench/out/soak-bundles) a two-tower bundle over a synthetic log of 20,000
items, starts `embrecall serve` with the Redis change feed (snapshot and trim above 1,000
entries), and keeps up, open loop: ``--rate`` recall requests per second (k=100, known users),
``--changes`` item changes per second through the feed (upserts of catalog and new items,
some deletes), ``--batches`` batch requests of 16 users per second, and ``--events`` user events
per second from ``--event-users`` distinct users into the in-process event store, bounded at
``--store-bytes`` so that the bound is reached within the soak.  Prints one row per minute
(requests, errors, p50/p99 of single and batch requests, server RSS, stream length, feed lag,
the event store's users and bytes) and exits non-zero on any error.  Data: synthetic.  Client
and server share this machine's cores.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import subprocess
import sys
import time
import uuid
from pathlib import Path

import aiohttp
import redis
from rich.console import Console
from rich.table import Table
from serve import (  # bench/ is on sys.path when run as a script
    REDIS,
    _pct,
    _port,
    _wait_ready,
)

from embrecall.serve.feed import send_item_change

OUT = Path(__file__).resolve().parent / "out" / "soak-bundles"
BUILD = [
    "data.synthetic.users=5000",
    "data.synthetic.items=20000",
    "data.synthetic.events=200000",
    "data.synthetic.categories=50",
    "features.catalog=items",
    "train.epochs=2",
    "train.refit=false",
    f"out={OUT}",
]
TOKEN, CLIENT = "soak", "soak-client"
console = Console(width=160)


def _bundle() -> Path:
    built = sorted(p for p in OUT.glob("2*") if (p / "manifest.json").is_file()) if OUT.is_dir() else []
    if built:
        return built[-1]
    from embrecall import load_config, train

    console.print("training the soak bundle (once)...")
    return train(load_config(None, BUILD), show_progress=False).bundle


def _rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _metric(text: str, name: str) -> float:
    return next((float(line.split()[-1]) for line in text.splitlines() if line.startswith(name)), float("nan"))


class Minute:
    """What one minute of traffic gave."""

    def __init__(self) -> None:
        self.single: list[float] = []
        self.batch: list[float] = []
        self.errors = 0
        self.changes = 0


async def _soak(base: str, pid: int, users: list[str], items: list[str], stream: str, args) -> list[dict]:
    client = redis.Redis.from_url(REDIS)
    minutes: list[Minute] = [Minute()]
    rows: list[dict] = []
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=256), timeout=aiohttp.ClientTimeout(total=10)
    ) as http:

        async def call(path: str, body: dict, into: list[float]) -> None:
            minute = minutes[-1]
            t = time.perf_counter()
            try:
                async with http.post(base + path, json=body) as r:
                    await r.read()
                    ok = r.status == 200
            except (aiohttp.ClientError, TimeoutError):
                ok = False
            into.append((time.perf_counter() - t) * 1000)
            minute.errors += not ok

        async def steady(rate: float, make) -> None:
            start, i, tasks = time.perf_counter(), 0, set()
            while time.perf_counter() - start < args.minutes * 60:
                delay = start + i / rate - time.perf_counter()
                if delay > 0:
                    await asyncio.sleep(delay)
                task = asyncio.create_task(make())
                tasks.add(task)
                task.add_done_callback(tasks.discard)
                i += 1
            await asyncio.gather(*tasks)

        def recall():
            return call("/v1/recall", {"user_id": random.choice(users), "k": 100}, minutes[-1].single)

        def batch():
            body = {"requests": [{"user_id": random.choice(users), "k": 100} for _ in range(16)]}
            return call("/v1/recall/batch", body, minutes[-1].batch)

        async def event() -> None:
            body = {
                "events": [
                    {"user_id": f"soak-user-{random.randrange(args.event_users)}", "item_id": random.choice(items)}
                ]
            }
            minute = minutes[-1]
            try:
                async with http.post(
                    base + "/v1/events", json=body, headers={"Authorization": f"Bearer {CLIENT}"}
                ) as r:
                    await r.read()
                    minute.errors += r.status != 202
            except (aiohttp.ClientError, TimeoutError):
                minute.errors += 1

        async def change() -> None:
            item = random.choice(items) if random.random() < 0.8 else f"new-{random.randrange(2000)}"
            if random.random() < 0.1:
                await asyncio.to_thread(send_item_change, client, stream, "delete", item)
            else:
                attrs = {
                    "category": f"c{random.randrange(50)}",
                    "city": f"city{random.randrange(10)}",
                    "price": round(random.uniform(1, 100), 2),
                }
                await asyncio.to_thread(send_item_change, client, stream, "upsert", item, attrs)
            minutes[-1].changes += 1

        async def report() -> None:
            started = time.perf_counter()
            while time.perf_counter() - started < args.minutes * 60:
                await asyncio.sleep(60 - (time.perf_counter() - started) % 60)
                done = minutes[-1]
                minutes.append(Minute())
                try:
                    async with http.get(base + "/metrics") as r:
                        text = await r.text()
                except (aiohttp.ClientError, TimeoutError):  # a stalled server: an error of its minute, not the end
                    text = ""
                    done.errors += 1
                rows.append(
                    {
                        "minute": len(rows) + 1,
                        "requests": len(done.single) + len(done.batch),
                        "errors": done.errors,
                        "changes": done.changes,
                        "p50": _pct(done.single, 50),
                        "p99": _pct(done.single, 99),
                        "batch p99": _pct(done.batch, 99),
                        "rss": _rss_mb(pid),
                        "stream": client.xlen(stream),
                        "lag": _metric(text, "embrecall_change_feed_lag_ms"),
                        "store users": _metric(text, "embrecall_user_events_users"),
                        "store MB": _metric(text, "embrecall_user_events_bytes") / 2**20,
                    }
                )
                console.print(
                    " ".join(f"{k}={v:.1f}" if isinstance(v, float) else f"{k}={v}" for k, v in rows[-1].items())
                )

        await asyncio.gather(
            steady(args.rate, recall),
            steady(args.changes, change),
            steady(args.batches, batch),
            *([steady(args.events, event)] if args.events else []),
            report(),
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30)
    parser.add_argument("--rate", type=float, default=100, help="recall requests per second")
    parser.add_argument("--changes", type=float, default=20, help="item changes per second")
    parser.add_argument("--batches", type=float, default=1, help="batch requests (16 users) per second")
    parser.add_argument("--events", type=float, default=50, help="user events per second (0: none)")
    parser.add_argument("--event-users", type=int, default=1000, help="distinct users sending them")
    parser.add_argument("--store-bytes", type=int, default=4 << 20, help="the event store's bound")
    args = parser.parse_args()
    bundle = _bundle()
    from embrecall.export import Bundle

    b = Bundle.load(bundle, verify=False)
    users, items = [str(u) for u in b.users.index[:2000]], [str(i) for i in b.encoders.catalog_[:5000]]
    stream, port = f"embrecall:soak:{uuid.uuid4().hex[:8]}", _port()
    server = subprocess.Popen(
        [sys.executable, "-m", "embrecall.cli", "serve", "--bundle", str(bundle), "--port", str(port), "--feed", REDIS],
        env={
            **os.environ,
            "EMBRECALL_ADMIN_TOKEN": TOKEN,
            "EMBRECALL_CLIENT_TOKEN": CLIENT,
            "EMBRECALL_EVENTS__MAX_BYTES": str(args.store_bytes),
            "EMBRECALL_FEED__STREAM": stream,
            "EMBRECALL_FEED__MAX_LEN": "1000",
        },
    )
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_ready(base + "/readyz", server)
        start_rss = _rss_mb(server.pid)
        rows = asyncio.run(_soak(base, server.pid, users, items, stream, args))
    finally:
        server.kill()
        redis.Redis.from_url(REDIS).delete(stream, f"{stream}:snapshot", f"{stream}:snapshot:at", f"{stream}:dead")
    table = Table(
        title=f"soak: {args.rate:g} recall/s, {args.changes:g} changes/s, {args.batches:g} batches of 16/s, "
        f"{args.events:g} events/s from {args.event_users:,} users, "
        f"{args.minutes:g} min, {os.cpu_count()} cores (RSS at ready {start_rss:.0f} MB)"
    )
    for column in rows[0]:
        table.add_column(column, justify="right")
    for row in rows:
        table.add_row(*[f"{v:.1f}" if isinstance(v, float) else str(v) for v in row.values()])
    console.print(table)
    errors = sum(r["errors"] for r in rows)
    console.print(f"errors: {errors} of {sum(r['requests'] for r in rows):,} requests")
    sys.exit(1 if errors else 0)


if __name__ == "__main__":
    main()
