"""Time to ready of a restarted service with a long change feed (a real `embrecall serve` process).

    python bench/feed_restart.py [--entries 100000] [--items 1000]

Over the soak bundle (bench/soak.py; 20,000 catalog items), measures seconds from process start
to ``/readyz`` = 200 for: an empty stream; ``--entries`` changes of ``--items`` items sent while
the service was down (no snapshot yet: all of them replayed); and a restart after kill -9 of a
service that had consumed them and written its snapshot (the stream trimmed: only the tail
replayed).  Also checks the first answers after ready against the last change of every item.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import time
import uuid

import httpx
import redis
from rich.console import Console
from rich.table import Table
from serve import (  # bench/ is on sys.path when run as a script
    REDIS,
    _port,
    _wait_ready,
)
from soak import _bundle

from embrecall.serve.feed import send_item_change


def _start(bundle, stream: str) -> tuple[subprocess.Popen, str, float]:
    port = _port()
    t = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "embrecall.cli", "serve", "--bundle", str(bundle), "--port", str(port), "--feed", REDIS],
        env={**os.environ, "EMBRECALL_FEED__STREAM": stream, "EMBRECALL_FEED__MAX_LEN": "1000"},
    )
    base = f"http://127.0.0.1:{port}"
    _wait_ready(base + "/readyz", proc)
    return proc, base, time.perf_counter() - t


def _replayed(base: str) -> int:
    text = httpx.get(base + "/metrics", timeout=10).text
    return int(next(float(x.split()[-1]) for x in text.splitlines() if x.startswith("embrecall_change_feed_replayed")))


def _current(base: str, user: str, items: list[str]) -> bool:
    """Whether every item shows its last change: category 'last' (the final round sets it)."""
    r = httpx.post(
        base + "/v1/recall", timeout=30, json={"user_id": user, "k": len(items), "filters": {"category": ["last"]}}
    )
    return {i["item_id"] for i in r.json()["items"]} == set(items)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--items", type=int, default=1_000)
    args = parser.parse_args()
    bundle = _bundle()
    from embrecall.export import Bundle

    user = str(Bundle.load(bundle, verify=False).users.index[0])
    client = redis.Redis.from_url(REDIS)
    empty, full = (f"embrecall:restart:{uuid.uuid4().hex[:8]}" for _ in range(2))
    items = [f"churn-{j}" for j in range(args.items)]
    rows = []
    try:
        proc, base, seconds = _start(bundle, empty)
        rows.append(("empty stream", 0, _replayed(base), seconds, None))
        proc.kill()
        pipe = client.pipeline(transaction=False)
        rounds = args.entries // args.items
        for r in range(rounds):
            for item in items:
                send_item_change(pipe, full, "upsert", item, {"category": "last" if r == rounds - 1 else f"r{r % 40}"})
        pipe.execute()
        length = client.xlen(full)
        proc, base, seconds = _start(bundle, full)
        rows.append(
            ("entries sent while down (no snapshot)", length, _replayed(base), seconds, _current(base, user, items))
        )
        deadline = time.monotonic() + 60
        while client.xlen(full) > 1000 and time.monotonic() < deadline:
            time.sleep(0.2)
        for item in items[: args.items // 10]:  # a tail after the snapshot
            send_item_change(client, full, "upsert", item, {"category": "last"})
        time.sleep(1)
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
        length = client.xlen(full)
        proc, base, seconds = _start(bundle, full)
        rows.append(("after kill -9, snapshot + tail", length, _replayed(base), seconds, _current(base, user, items)))
        proc.kill()
    finally:
        for s in (empty, full):
            client.delete(s, f"{s}:snapshot", f"{s}:snapshot:at", f"{s}:dead")
    table = Table(
        title=f"restart with a change feed: {args.entries:,} changes of {args.items:,} items, "
        f"{os.cpu_count()} cores (process start to /readyz 200)"
    )
    for column in ("start", "stream entries", "replayed", "seconds to ready", "vs empty", "current at ready"):
        table.add_column(column, justify="right")
    for name, length, replayed, seconds, current in rows:
        table.add_row(
            name,
            f"{length:,}",
            f"{replayed:,}",
            f"{seconds:.1f}",
            f"{seconds - rows[0][3]:+.1f}",
            {None: "-", True: "yes", False: "NO"}[current],
        )
    Console(width=140).print(table)


if __name__ == "__main__":
    main()
