"""How a service is run: one settings object, from a TOML file, the environment and flags.

    embrecall serve --config serve.toml            # every setting below, in the file
    EMBRECALL_PORT=9000 EMBRECALL_FEED__URL=redis://... embrecall serve --config serve.toml

A flag beats an environment variable (``EMBRECALL_`` + the field, ``__`` between nested
names), which beats the file, which beats the default; tokens belong in the environment
(``EMBRECALL_ADMIN_TOKEN``, ``EMBRECALL_CLIENT_TOKEN``).  ``create_app`` builds the whole
service from one of these.
"""

from __future__ import annotations

from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict, TomlConfigSettingsSource

from embrecall.errors import ConfigError

__all__ = ["ServeConfig", "CacheSettings", "FeedSettings", "EventsSettings", "IndexSettings"]

_FILE: ContextVar[Path | None] = ContextVar("embrecall_serve_file", default=None)


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CacheSettings(_Section):
    """The user-vector cache: in process, or in Redis shared by replicas."""

    redis: str | None = None  # a Redis URL: shared by replicas
    ttl_s: float = Field(60.0, gt=0)
    size: int = Field(100_000, ge=0)  # entries kept in process (0: none)


class FeedSettings(_Section):
    """The item change stream every replica follows (see ``serve.feed``)."""

    url: str | None = None  # a Redis URL; none: changes stay in the replica that took them
    stream: str = "embrecall:items"
    max_len: int = Field(10_000, ge=100)  # entries above which a snapshot is written and acknowledged ones trimmed


class EventsSettings(_Section):
    """Where users' events (``POST /v1/events``) are kept (see ``serve.events``)."""

    url: str | None = None  # a Redis URL shared by replicas; none: in this process
    stream: str = "embrecall:events"
    keep: int = Field(200, ge=1)  # events kept per user
    max_users: int = Field(100_000, ge=1)  # in process: users kept (least recently active dropped first)
    max_bytes: int = Field(256 << 20, ge=1 << 20)  # in process: about this much memory at most


class LimitSettings(_Section):
    """Requests per second each token may make (a token bucket): more get 429 with Retry-After."""

    rate_per_s: float = Field(200.0, gt=0)
    burst: int = Field(400, ge=1)


class IndexSettings(_Section):
    """What holds the item vectors while serving."""

    backend: Literal["faiss", "milvus"] = "faiss"  # faiss: in this process
    uri: str | None = None  # milvus: a milvus-lite file or a server like http://host:19530
    # milvus: an alias kept on the served version's collection, moved at each swap and rollback, so
    # that other readers of the server (batch jobs, tools) search what the service serves
    alias: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]{0,254}$")

    @model_validator(mode="after")
    def _milvus_has_an_address(self) -> IndexSettings:
        if self.backend == "milvus" and not self.uri:
            raise ValueError("index.backend = 'milvus' needs index.uri (a milvus-lite file or http://host:19530)")
        if self.alias and self.backend != "milvus":
            raise ValueError("index.alias names a Milvus alias: it needs index.backend = 'milvus'")
        return self


class ServeConfig(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMBRECALL_", env_nested_delimiter="__", extra="forbid")

    source: Path  # a bundle, or a registry whose active version is followed
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=1, le=65_535)
    workers: int = Field(
        1, ge=1
    )  # processes on the port; more than one needs feed.url and events.url for the tokens set
    replica: str = "embrecall-1"  # this replica's name on the feed and events streams; keep it across restarts
    watch_interval_s: float = Field(1.0, gt=0)  # how often a registry's ACTIVE is read
    max_body_bytes: int = Field(1 << 20, ge=1024)  # larger request bodies get 413
    admin_token: SecretStr | None = None  # item changes and user lookups; none: those endpoints are off
    client_token: SecretStr | None = None  # user events; none: that endpoint is off
    cache: CacheSettings = CacheSettings()
    feed: FeedSettings = FeedSettings()
    events: EventsSettings = EventsSettings()
    index: IndexSettings = IndexSettings()
    limits: LimitSettings = LimitSettings()

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        file = _FILE.get()
        return (
            init_settings,
            env_settings,
            *([TomlConfigSettingsSource(settings_cls, toml_file=file)] if file else []),
        )

    @classmethod
    def load(cls, file: Path | None = None, **given: Any) -> ServeConfig:
        """The settings from ``file`` (TOML), the environment and ``given`` (flags; None: not given)."""
        if file is not None and not Path(file).is_file():
            raise ConfigError(f"serve config {file} does not exist")
        token = _FILE.set(Path(file) if file is not None else None)
        try:
            return cls(**{k: v for k, v in given.items() if v is not None})
        except ValidationError as err:
            where = (
                f"{file} (and EMBRECALL_* variables)" if file else "the serve settings (flags, EMBRECALL_* variables)"
            )
            problems = "; ".join(f"{'.'.join(map(str, e['loc'])) or 'settings'}: {e['msg']}" for e in err.errors())
            raise ConfigError(f"{where}: {problems}") from None
        except ValueError as err:  # a TOML file that does not parse
            raise ConfigError(f"serve config {file}: {err}") from None
        finally:
            _FILE.reset(token)

    def secret(self, name: Literal["admin_token", "client_token"]) -> str | None:
        """A token's value; an empty one counts as none."""
        value = getattr(self, name)
        return value.get_secret_value() or None if value is not None else None

    def for_workers(self) -> dict[str, Any]:
        """Everything, tokens included, as JSON values (what worker processes rebuild it from)."""
        return {
            **self.model_dump(mode="json"),
            "admin_token": self.secret("admin_token"),
            "client_token": self.secret("client_token"),
        }
