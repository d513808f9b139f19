"""Start time and memory of `embrecall serve`: seconds from launch to ready, resident memory once
ready and its peak during loading, and whether the training side (torch, gensim) was loaded.

    python bench/serve_start.py [--src OTHER/src] [--runs 3] [--bundle DIR]

Trains a small synthetic bundle with the code under test (``--src``: another checkout's ``src``
folder, put first on PYTHONPATH, to compare two versions of embrecall in one run), or serves
``--bundle`` (both trees serve the same one: bench/serve.py's 1M-item bundle, say), then starts
the service on it ``--runs`` times.  Each row is one code tree; compare rows of one run only.
"""

from __future__ import annotations

import argparse
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx
import numpy as np
from rich.console import Console
from rich.table import Table

ROOT = Path(__file__).resolve().parents[1]
TRAIN = """
import sys
from embrecall import load_config, train
print(train(load_config(None, ["data.synthetic.users=2000", "data.synthetic.items=5000", "data.synthetic.events=60000",
                               "train.epochs=1", f"out={sys.argv[1]}"]), show_progress=False).bundle)
"""
LOADED = "import sys, embrecall.serve.app; print(' '.join(m for m in ('torch', 'gensim') if m in sys.modules) or '-')"


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _rss_mb(pid: int, field: str = "VmRSS") -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(f"{field}:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def _start(bundle: str, env: dict[str, str]) -> tuple[float, float, float]:
    """Seconds from launch to /readyz answering 200, resident MB then, and the peak so far."""
    port = _port()
    started = time.perf_counter()
    proc = subprocess.Popen(
        [sys.executable, "-m", "embrecall.cli", "serve", "--bundle", bundle, "--port", str(port)], env=env
    )
    try:
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"serve exited with {proc.returncode}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                    return time.perf_counter() - started, _rss_mb(proc.pid), _rss_mb(proc.pid, "VmHWM")
            except httpx.HTTPError:
                time.sleep(0.02)
    finally:
        proc.terminate()
        proc.wait(timeout=30)


def measure(src: Path | None, runs: int, out: Path, given: Path | None) -> dict[str, object]:
    env = {**os.environ, "PYTHONPATH": str(src)} if src else dict(os.environ)
    run = [sys.executable, "-c", TRAIN, str(out)]
    bundle = str(given) if given else subprocess.run(run, env=env, capture_output=True, text=True, check=True).stdout
    bundle = bundle.strip().splitlines()[-1]
    loaded = subprocess.run(
        [sys.executable, "-c", LOADED], env=env, capture_output=True, text=True, check=True
    ).stdout.strip()
    times, rss, peak = zip(*(_start(bundle, env) for _ in range(runs)))
    return {"tree": str(src or ROOT / "src"), "seconds": times, "rss": rss, "peak": peak, "loaded": loaded}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--src", type=Path, help="another checkout's src folder, measured beside this one")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--bundle", type=Path, help="serve this bundle instead of training a small one")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        rows = [measure(None, args.runs, Path(tmp) / "this", args.bundle)]
        if args.src:
            rows.append(measure(args.src.resolve(), args.runs, Path(tmp) / "other", args.bundle))
    table = Table(title=f"embrecall serve start-up, {os.cpu_count()} cores, {args.runs} starts each")
    columns = (
        "code tree",
        "start to ready s (median)",
        "min / max s",
        "RSS MB (median)",
        "peak RSS MB (median)",
        "training side loaded",
    )
    for col in columns:
        table.add_column(col, justify="right")
    for r in rows:
        s, m, p = np.asarray(r["seconds"]), np.asarray(r["rss"]), np.asarray(r["peak"])
        table.add_row(
            str(r["tree"]),
            f"{np.median(s):.2f}",
            f"{s.min():.2f} / {s.max():.2f}",
            f"{np.median(m):.0f}",
            f"{np.median(p):.0f}",
            str(r["loaded"]),
        )
    Console(width=160).print(table)


if __name__ == "__main__":
    main()
