"""Shared fixtures: the shared MovieLens folder (read in place, never copied), tiny runs, the
machine's Redis server (tests that need it skip, saying so, where none runs), and a Milvus server."""

from __future__ import annotations

import importlib.util
import os
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from embrecall.config import Config, load_config

ML100K = Path(__file__).resolve().parents[2] / "shared" / "datasets" / "ml-100k"
REDIS_URL = "redis://127.0.0.1:6379/0"


def _redis_up() -> bool:
    try:
        return bool(redis.Redis.from_url(REDIS_URL, socket_connect_timeout=0.5).ping())
    except redis.RedisError:
        return False


requires_redis = pytest.mark.skipif(not _redis_up(), reason="no Redis server on 127.0.0.1:6379 (start redis-server)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_server(port: int) -> subprocess.Popen:
    """A private redis-server that keeps nothing on disk, answering when this returns."""
    server = subprocess.Popen(
        ["redis-server", "--port", str(port), "--save", "", "--appendonly", "no"], stdout=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            redis.Redis.from_url(f"redis://127.0.0.1:{port}/0").ping()
            return server
        except redis.RedisError:
            time.sleep(0.05)
    server.kill()
    raise AssertionError("redis-server did not start")


needs_redis_server = pytest.mark.skipif(
    shutil.which("redis-server") is None, reason="redis-server binary not installed"
)


@pytest.fixture(scope="session")
def ml100k() -> Path:
    if not (ML100K / "u.data").is_file():
        pytest.skip(f"MovieLens 100K not found at {ML100K} (the shared datasets folder sits beside the repo)")
    return ML100K


def tiny_config(tmp_path: Path, *extra: str) -> Config:
    """A synthetic run small enough to train in a few seconds."""
    return load_config(
        None,
        [
            "data.synthetic.users=300",
            "data.synthetic.items=200",
            "data.synthetic.events=6000",
            "train.epochs=2",
            "train.batch_size=256",
            f"out={tmp_path / 'runs'}",
            *extra,
        ],
    )


@pytest.fixture(scope="session")
def _tiny_bundles(tmp_path_factory) -> tuple[Path, Path]:
    from embrecall.pipeline import train

    root = tmp_path_factory.mktemp("tiny-bundles")
    first, second = (train(tiny_config(root, f"train.seed={s}"), show_progress=False).bundle for s in (0, 1))
    assert first is not None and second is not None
    return first, second


@pytest.fixture(scope="module")
def tiny_bundles(_tiny_bundles, tmp_path_factory) -> list[Path]:
    """The bundles of ``tiny_config`` with seeds 0 and 1: trained once a session, copied for each
    module (its tests change them: tampering, publishing)."""
    root = tmp_path_factory.mktemp("bundles") / "runs"
    return [Path(shutil.copytree(bundle, root / bundle.name)) for bundle in _tiny_bundles]


def sharded_config(tmp_path: Path, *extra: str, count: int = 3) -> Config:
    """``tiny_config``'s synthetic log written to Parquet and read as a sharded table log
    (``read_rows`` small, so the log is read in several pieces)."""
    from embrecall.data.synthetic import write_parquet

    base = tiny_config(tmp_path)
    paths = write_parquet(base.data.synthetic, tmp_path / "log")
    return load_config(
        None,
        [
            "data.format=table",
            f"data.path={paths['events']}",
            f"data.users.path={paths['users']}",
            "data.users.key=user_id",
            f"data.items.path={paths['items']}",
            "data.items.key=item_id",
            f"data.shards.count={count}",
            "data.shards.read_rows=1000",
            "data.shards.eval_users=200",
            "train.epochs=2",
            "train.batch_size=256",
            f"out={tmp_path / 'runs'}",
            *extra,
        ],
    )


@pytest.fixture
def write(tmp_path: Path):
    """Write a text file under tmp_path and return its path."""

    def _write(name: str, text: str, encoding: str = "utf-8") -> Path:
        p = tmp_path / name
        p.write_text(text, encoding=encoding)
        return p

    return _write


def wait_ready(proc: subprocess.Popen, port: int, timeout: float = 120) -> subprocess.Popen:
    """``proc`` (an `embrecall serve` on ``port``) once its /readyz answers 200."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert proc.poll() is None, f"service exited with {proc.returncode}"
        try:
            if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=1).status_code == 200:
                return proc
        except httpx.HTTPError:
            time.sleep(0.2)
    proc.kill()
    raise AssertionError(f"service not ready after {timeout:.0f} s")


@pytest.fixture(scope="session")
def milvus_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A Milvus server's URI: ``EMBRECALL_MILVUS_URI`` when set, else a standalone server started
    for this session from the ``milvus`` package (which the test extra installs)."""
    given = os.environ.get("EMBRECALL_MILVUS_URI")
    if given:
        yield given
        return
    if importlib.util.find_spec("milvus") is None:
        pytest.skip("no Milvus server: pip install milvus (a local standalone server), or set EMBRECALL_MILVUS_URI")
    with socket.socket() as s:
        if s.connect_ex(("127.0.0.1", 9091)) == 0:  # the health port every such server takes
            pytest.skip("port 9091 is taken (another Milvus server?): set EMBRECALL_MILVUS_URI to test against it")
    from bench.milvus_server import local_milvus

    with local_milvus(tmp_path_factory.mktemp("milvus-server"), free_port()) as uri:
        yield uri
