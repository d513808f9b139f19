"""The service's settings: a flag beats the environment, which beats the file, which beats the
default; a wrong setting is refused naming it."""

from __future__ import annotations

import pytest

from embrecall.errors import ConfigError
from embrecall.serve.settings import ServeConfig


def test_flags_beat_the_environment_which_beats_the_file(tmp_path, monkeypatch):
    file = tmp_path / "serve.toml"
    file.write_text(
        'source = "reg"\nport = 9000\nworkers = 3\n\n[feed]\nurl = "redis://file"\nmax_len = 500\n'
        '[index]\nbackend = "milvus"\nuri = "items.db"\n'
    )
    monkeypatch.setenv("EMBRECALL_PORT", "9100")
    monkeypatch.setenv("EMBRECALL_FEED__STREAM", "from-env")
    monkeypatch.setenv("EMBRECALL_ADMIN_TOKEN", "s3cret")
    got = ServeConfig.load(file, workers=2, host=None)  # None: a flag not given
    assert (got.port, got.workers, got.host) == (9100, 2, "127.0.0.1")
    assert (got.feed.url, got.feed.stream, got.feed.max_len) == ("redis://file", "from-env", 500)
    assert got.index.uri == "items.db" and str(got.source) == "reg"
    assert got.secret("admin_token") == "s3cret" and "s3cret" not in repr(got)
    again = ServeConfig.load(None, **got.for_workers())  # what a worker process rebuilds
    assert again == got and again.secret("admin_token") == "s3cret"


@pytest.mark.parametrize(
    "text, named",
    [
        ('source = "b"\nport = "eighty"\n', "port"),
        ('source = "b"\n[feed]\nmax_len = 3\n', "feed.max_len"),
        ('source = "b"\n[index]\nbackend = "milvus"\n', "index.uri"),
        ('source = "b"\n[index]\nalias = "live"\n', "index.alias"),  # an alias needs Milvus
        ('source = "b"\n[index]\nbackend = "milvus"\nuri = "x.db"\nalias = "2x"\n', "index.alias"),
        ('source = "b"\ncolour = "red"\n', "colour"),
        ("port = 80\n", "source"),
        ('source = "b\n', "serve.toml"),  # not TOML
    ],
)
def test_a_wrong_setting_is_refused_naming_it(tmp_path, text, named):
    file = tmp_path / "serve.toml"
    file.write_text(text)
    with pytest.raises(ConfigError, match=named.replace(".", r"\.")):
        ServeConfig.load(file)


def test_an_empty_token_counts_as_none(monkeypatch):
    monkeypatch.setenv("EMBRECALL_CLIENT_TOKEN", "")
    assert ServeConfig.load(None, source="b").secret("client_token") is None
