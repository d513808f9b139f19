"""Do batches slow single recalls? Single-recall latency alone, beside a CPU-burning control, and
beside one and two clients looping on the largest batch, against one `embrecall serve` process.

    python bench/batch_isolation.py [--bundle DIR] [--seconds 20] [--rate 40]

A single-recall client sends one request at a time at a fixed rate (open loop: a late answer
does not delay the next send). The control burns as many CPU cores as the batch clients, in
processes that never touch the service, so a row with batches can be read against the same loss
of CPU without them. The bundle is built once, into bench/out/isolation-bundles: a synthetic log
of 20,000 items and 5,000 users. Each batch asks for 256 users at k=100 (the largest allowed).
Data: synthetic. The clients and the server share this machine's cores.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

OUT = Path(__file__).parent / "out" / "isolation-bundles"
BUILD = [
    "data.synthetic.users=5000",
    "data.synthetic.items=20000",
    "data.synthetic.events=200000",
    "train.epochs=2",
    "train.refit=false",
    f"out={OUT}",
]
console = Console(width=140)


def _bundle(given: Path | None) -> Path:
    if given:
        return given
    built = sorted(p for p in OUT.glob("2*") if (p / "manifest.json").is_file()) if OUT.is_dir() else []
    if built:
        return built[-1]
    from embrecall import load_config, train

    console.print("building the bundle (once; about a minute)...")
    return train(load_config(None, BUILD), show_progress=False).bundle


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _users(bundle: Path) -> list[str]:
    import pandas as pd

    return [str(u) for u in pd.read_parquet(bundle / "users.parquet", columns=["user_id"])["user_id"]]


def _singles(url: str, users: list[str], rate: float, seconds: float, out: mp.Queue) -> None:
    """One request at a time at ``rate`` per second; each latency in ms."""
    rng = np.random.default_rng(0)
    latencies, errors = [], 0
    with httpx.Client(timeout=10) as client:
        start = time.perf_counter()
        for n in range(int(rate * seconds)):
            wait = start + n / rate - time.perf_counter()
            if wait > 0:
                time.sleep(wait)
            sent = time.perf_counter()
            r = client.post(url + "/v1/recall", json={"user_id": users[rng.integers(len(users))], "k": 100})
            latencies.append((time.perf_counter() - sent) * 1000)
            errors += r.status_code != 200
    out.put((latencies, errors))


def _batches(url: str, users: list[str], stop: mp.Event, out: mp.Queue) -> None:
    """Loop on the largest batch until told to stop; how many were answered."""
    rng = np.random.default_rng(os.getpid())
    done = 0
    with httpx.Client(timeout=60) as client:
        while not stop.is_set():
            chosen = rng.choice(len(users), 256, replace=False)
            body = {"requests": [{"user_id": users[i], "k": 100} for i in chosen]}
            done += client.post(url + "/v1/recall/batch", json=body).status_code == 200
    out.put(done)


def _burn(stop: mp.Event) -> None:
    x = 0
    while not stop.is_set():
        for _ in range(100_000):
            x += 1


def _row(url: str, users: list[str], rate: float, seconds: float, batch_clients: int, burners: int) -> dict:
    stop, results, batch_counts = mp.Event(), mp.Queue(), mp.Queue()
    side = [mp.Process(target=_batches, args=(url, users, stop, batch_counts)) for _ in range(batch_clients)]
    side += [mp.Process(target=_burn, args=(stop,)) for _ in range(burners)]
    for p in side:
        p.start()
    time.sleep(1.0 if side else 0.0)  # the load is on before the measurement starts
    single = mp.Process(target=_singles, args=(url, users, rate, seconds, results))
    single.start()
    latencies, errors = results.get()
    single.join()
    stop.set()
    batches = sum(batch_counts.get() for _ in range(batch_clients))
    for p in side:
        p.join()
    return {
        "p50": float(np.percentile(latencies, 50)),
        "p99": float(np.percentile(latencies, 99)),
        "errors": errors,
        "batches_per_s": batches / (seconds + 1.0),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bundle", type=Path)
    ap.add_argument("--seconds", type=float, default=20)
    ap.add_argument("--rate", type=float, default=40, help="single recalls per second")
    args = ap.parse_args()
    bundle = _bundle(args.bundle)
    users = _users(bundle)
    port = _port()
    url = f"http://127.0.0.1:{port}"
    server = subprocess.Popen(
        [sys.executable, "-m", "embrecall.cli", "serve", "--bundle", str(bundle), "--port", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if httpx.get(url + "/readyz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"the server did not start: {server.stderr.read().decode()[-2000:]}")
            time.sleep(0.3)
        rows = {
            "alone": _row(url, users, args.rate, args.seconds, 0, 0),
            "beside 1 CPU burnt (control)": _row(url, users, args.rate, args.seconds, 0, 1),
            "beside 1 batch client": _row(url, users, args.rate, args.seconds, 1, 0),
            "beside 2 CPUs burnt (control)": _row(url, users, args.rate, args.seconds, 0, 2),
            "beside 2 batch clients": _row(url, users, args.rate, args.seconds, 2, 0),
        }
    finally:
        server.terminate()
        server.wait(10)
    table = Table(title=f"single recalls (k=100) at {args.rate:g}/s for {args.seconds:g} s; bundle {bundle.name}")
    for col in ("beside", "p50 ms", "p99 ms", "p99 / its control", "errors", "batches/s"):
        table.add_column(col)
    controls = {"1": rows["beside 1 CPU burnt (control)"], "2": rows["beside 2 CPUs burnt (control)"]}
    for name, r in rows.items():
        ratio = f"{r['p99'] / controls[name.split()[1]]['p99']:.2f}" if "batch" in name else ""
        table.add_row(
            name,
            f"{r['p50']:.1f}",
            f"{r['p99']:.1f}",
            ratio,
            str(r["errors"]),
            f"{r['batches_per_s']:.2f}" if "batch" in name else "",
        )
    console.print(table)
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
