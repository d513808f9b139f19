"""A Milvus standalone server on this machine for as long as a `with` lasts, from the `milvus`
package (the test extra installs it): used by the tests' `milvus_server` fixture and by
`bench/milvus_scale.py --milvus server`."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

__all__ = ["local_milvus"]


@contextmanager
def local_milvus(folder: Path, port: int) -> Iterator[str]:
    """The server's URI; its data under ``folder``, stopped on leaving."""
    from milvus import MilvusServer

    server = MilvusServer()
    server.set_base_dir(str(folder))
    server.listen_port = port
    server.start()
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.stop()
