"""``embrecall serve --workers N``: N processes on one port, each a replica of the service.

uvicorn's supervisor starts the processes, shares the listening socket between them and
replaces one that dies.  Each process builds its own app (``worker_app``) from the options the
command line gave, and takes a numbered slot (a lock file per port and slot number, held while
it lives), so worker ``i`` is the replica ``<feed consumer>-i`` on the change feed and the events
stream, under the same name after a restart: item changes and user events sent to any worker
reach all of them through Redis.
"""

from __future__ import annotations

import fcntl
import json
import os
import signal
import sys
import tempfile
import time
from pathlib import Path
from typing import IO, Any

import uvicorn
from fastapi import FastAPI
from threadpoolctl import threadpool_limits
from uvicorn.config import STARTUP_FAILURE

from embrecall.errors import ConfigError, EmbrecallError

__all__ = ["run", "worker_app"]

_OPTIONS = "EMBRECALL_SERVE_OPTIONS"  # create_app's arguments, as JSON, for the worker processes
_held: list[IO[str]] = []  # this worker's slot lock: open (and locked) for as long as the process lives


def run(options: dict[str, Any], host: str, port: int, workers: int) -> None:
    """Serve with ``workers`` processes; ``options``: ``create_app``'s keyword arguments."""
    if workers > 1 and options.get("feed_url") is None and os.environ.get("EMBRECALL_ADMIN_TOKEN"):
        raise ConfigError("--workers > 1 with EMBRECALL_ADMIN_TOKEN needs --feed: an item change sent to one worker "
                          "reaches the others through the change feed")
    if workers > 1 and options.get("events_url") is None and os.environ.get("EMBRECALL_CLIENT_TOKEN"):
        raise ConfigError("--workers > 1 with EMBRECALL_CLIENT_TOKEN needs --events: a user's events must reach "
                          "every worker")
    os.environ[_OPTIONS] = json.dumps({**options, "source": str(options["source"]), "port": port, "workers": workers})
    failed = _folder(port) / "failed"
    failed.unlink(missing_ok=True)
    uvicorn.run("embrecall.serve.workers:worker_app", factory=True, host=host, port=port, workers=workers,
                log_level="warning", timeout_worker_healthcheck=30)  # a worker loading a large bundle answers late
    if failed.is_file():
        raise EmbrecallError(failed.read_text())


def worker_app() -> FastAPI:
    """The app of one worker process (uvicorn calls this in each)."""
    from embrecall.serve.app import create_app

    options = json.loads(os.environ[_OPTIONS])
    port = options.pop("port")
    slot = _claim_slot(port, options.pop("workers"))
    threadpool_limits(1)  # as the single-process server does: requests are many and small
    try:
        return create_app(**{**options, "feed_consumer": f"{options.get('feed_consumer', 'embrecall-1')}-{slot}"})
    except Exception as err:  # a version that cannot load: the command stops and says why, once
        (_folder(port) / "failed").write_text(str(err))
        os.kill(os.getppid(), signal.SIGTERM)  # the supervisor would otherwise wait on its dead worker
        sys.exit(STARTUP_FAILURE)


def _folder(port: int) -> Path:
    """Where the workers of the server on ``port`` keep their slot locks and a start-up failure."""
    folder = Path(tempfile.gettempdir()) / f"embrecall-{port}"
    folder.mkdir(exist_ok=True)
    return folder


def _claim_slot(port: int, workers: int, wait_s: float = 60.0) -> int:
    """The lowest slot number no live worker of this port holds (a dead worker's lock is released
    with its process)."""
    folder = _folder(port)
    deadline = time.monotonic() + wait_s
    while time.monotonic() < deadline:
        for slot in range(workers):
            fh = (folder / f"worker-{slot}.lock").open("w")
            try:
                fcntl.flock(fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                fh.close()
                continue
            _held.append(fh)
            return slot
        time.sleep(0.1)
    raise RuntimeError(f"no free worker slot among {workers} for port {port} after {wait_s:.0f} s")
