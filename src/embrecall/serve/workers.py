"""``embrecall serve --workers N``: N processes on one port, each a replica of the service.

uvicorn's supervisor starts the processes, shares the listening socket between them and
replaces one that dies.  Each process builds its own app (``worker_app``) from the service's
settings, and takes a numbered slot (a lock file per port and slot number, held while
it lives), so worker ``i`` is the replica ``<replica>-i`` on the change feed and the events
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
from typing import IO

import uvicorn
from fastapi import FastAPI
from threadpoolctl import threadpool_limits
from uvicorn.config import STARTUP_FAILURE

from embrecall.errors import ConfigError, EmbrecallError
from embrecall.serve.settings import ServeConfig

__all__ = ["run", "worker_app"]

_SETTINGS = "EMBRECALL_SERVE_SETTINGS"  # the service's settings, as JSON, for the worker processes
_held: list[IO[str]] = []  # this worker's slot lock: open (and locked) for as long as the process lives


def run(config: ServeConfig) -> None:
    """Serve with ``config.workers`` processes."""
    if config.feed.url is None and config.secret("admin_token"):
        raise ConfigError(
            "workers > 1 with an admin token needs feed.url (--feed): an item change sent to one worker "
            "reaches the others through the change feed"
        )
    if config.events.url is None and config.secret("client_token"):
        raise ConfigError(
            "workers > 1 with a client token needs events.url (--events): a user's events must reach every worker"
        )
    os.environ[_SETTINGS] = json.dumps(config.for_workers())
    failed = _folder(config.port) / "failed"
    failed.unlink(missing_ok=True)
    uvicorn.run(
        "embrecall.serve.workers:worker_app",
        factory=True,
        host=config.host,
        port=config.port,
        workers=config.workers,
        log_level="warning",
        timeout_worker_healthcheck=30,
    )  # a worker loading a large bundle answers late
    if failed.is_file():
        raise EmbrecallError(failed.read_text())


def worker_app() -> FastAPI:
    """The app of one worker process (uvicorn calls this in each)."""
    from embrecall.serve.app import create_app

    settings = json.loads(os.environ[_SETTINGS])
    port = settings["port"]
    slot = _claim_slot(port, settings["workers"])
    threadpool_limits(1)  # as the single-process server does: requests are many and small
    try:
        return create_app(ServeConfig.load(None, **{**settings, "replica": f"{settings['replica']}-{slot}"}))
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
