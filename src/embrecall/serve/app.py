"""The HTTP service: recall for one user or a batch, item changes, version, health, metrics.

Errors in a request come back as 4xx with a message saying what is wrong (422: a list of
problems, each with its location; other codes: one ``detail`` string), as the OpenAPI document
says; bodies over ``max_body_bytes`` (1 MiB unless set) are refused with 413 (counted as read, chunked bodies too);
admin endpoints need ``Authorization: Bearer <admin token>``, user events a client token.
"""

from __future__ import annotations

import hmac
import logging
import math
import threading
import time
from contextlib import asynccontextmanager
from typing import Annotated, Any

import anyio
import token_bucket
from fastapi import Depends, FastAPI, HTTPException, Request
from fastapi import Path as PathParam
from fastapi.exception_handlers import http_exception_handler
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from pydantic import AfterValidator
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from embrecall.errors import BundleError, DataError, EmbrecallError, Unavailable
from embrecall.serve.cache import RedisVectorCache, VectorCache
from embrecall.serve.events import Histories, MemoryHistories, RedisHistories
from embrecall.serve.feed import ChangeFeed
from embrecall.serve.schemas import (
    BatchRecallRequest,
    BatchRecallResponse,
    ErrorMessage,
    ItemUpsert,
    RecallRequest,
    RecallResponse,
    UserEvents,
    ValidationErrors,
    check_text,
)
from embrecall.serve.service import ServingVersion
from embrecall.serve.settings import ServeConfig
from embrecall.serve.state import ServiceState

__all__ = ["create_app"]

PathId = Annotated[str, PathParam(min_length=1, max_length=256), AfterValidator(check_text)]  # an item or user id
_REFUSED: dict[int | str, dict[str, Any]] = {
    413: {"model": ErrorMessage, "description": "The body is larger than the service's max_body_bytes"},
    422: {"model": ValidationErrors, "description": "The request cannot be used as given"},
    503: {"model": ErrorMessage, "description": "The active version or the event store cannot answer"},
}
_ADMIN: dict[int | str, dict[str, Any]] = {
    401: {"model": ErrorMessage, "description": "Missing or wrong bearer token"},
    403: {"model": ErrorMessage, "description": "The endpoint is disabled: no token was set for it"},
    429: {
        "model": ErrorMessage,
        "description": "The token made more requests than limits.rate_per_s allows: wait Retry-After seconds",
        "headers": {"Retry-After": {"description": "Seconds to wait", "schema": {"type": "integer"}}},
    },
}


# Users a batch answers at a time, the GIL handed to the event loop between: measured on 3.11, a
# batch of 256 in one call held the GIL for up to 80 ms in its Python loops (the event loop's
# forced switch did not come through), which single recalls waited for (bench/batch_isolation.py).
BATCH_CHUNK = 4
# Answers a batch serialises at a time, likewise: 256 answers of 100 items in one pydantic call
# held the GIL for 8-9 ms.
DUMP_CHUNK = 16


def _printable(part: object) -> str | int:
    """A location part or message as JSON can carry it back (lone surrogates escaped)."""
    return part if isinstance(part, int) else str(part).encode("utf-8", "backslashreplace").decode("utf-8")


def _problems(errors: list[dict], prefix: tuple = ()) -> JSONResponse:
    """422 with where and what, never echoing the input: a NaN, an overflowing number or a lone
    surrogate in it would make the answer itself unwritable (a 500)."""
    detail = [
        {
            "loc": [_printable(p) for p in (*prefix, *e.get("loc", ()))],
            "msg": _printable(e.get("msg", "")),
            "type": str(e.get("type", "value_error")),
        }
        for e in errors
    ]
    return JSONResponse({"detail": detail}, status_code=422)


class _Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.stage = Histogram(
            "embrecall_stage_seconds",
            "Time per recall stage",
            ["stage"],
            registry=self.registry,
            buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 1.0),
        )
        self.errors = Counter(
            "embrecall_errors_total", "Requests answered with an error", ["status"], registry=self.registry
        )
        self.index_size = Gauge("embrecall_index_items", "Items in the live index", registry=self.registry)
        self.cache_hits = Gauge(
            "embrecall_user_vector_cache_hit_ratio", "User-vector cache hit ratio", registry=self.registry
        )
        self.cache_failures = Gauge(
            "embrecall_cache_backend_failures", "Redis cache calls that failed", registry=self.registry
        )
        self.version = Gauge(
            "embrecall_active_version_info", "Active bundle version", ["version"], registry=self.registry
        )
        self.feed_lag = Gauge(
            "embrecall_change_feed_lag_ms", "Age of the newest applied item change when applied", registry=self.registry
        )
        self.feed_applied = Gauge(
            "embrecall_change_feed_applied", "Item changes applied from the feed", registry=self.registry
        )
        self.feed_replayed = Gauge(
            "embrecall_change_feed_replayed",
            "Feed entries replayed at start (after the snapshot)",
            registry=self.registry,
        )
        self.feed_resets = Gauge(
            "embrecall_change_feed_resets_total",
            "Times the feed's stream or group was gone and re-created",
            registry=self.registry,
        )
        self.feed_dead = Gauge(
            "embrecall_change_feed_dead", "Feed entries set aside as malformed", registry=self.registry
        )
        self.events = Counter("embrecall_user_events_total", "User events accepted", registry=self.registry)
        self.events_users = Gauge(
            "embrecall_user_events_users", "Users whose events this process keeps", registry=self.registry
        )
        self.events_bytes = Gauge(
            "embrecall_user_events_bytes", "Memory those events take, estimated", registry=self.registry
        )
        self.events_dropped = Gauge(
            "embrecall_user_events_dropped_users",
            "Users dropped (least recently active first) to stay within events.max_users and max_bytes",
            registry=self.registry,
        )
        self.events_failures = Gauge(
            "embrecall_user_events_backend_failures", "Event store (Redis) calls that failed", registry=self.registry
        )


class _CountErrors:
    """Counts responses with status >= 400 by status (a plain ASGI middleware: Starlette's
    ``BaseHTTPMiddleware`` costs more per request than the recall work it would wrap)."""

    def __init__(self, app: ASGIApp, counter: Counter):
        self.app, self.counter = app, counter

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return await self.app(scope, receive, send)

        async def counting(message: Message) -> None:
            if message["type"] == "http.response.start" and message["status"] >= 400:
                self.counter.labels(str(message["status"])).inc()
            await send(message)

        await self.app(scope, receive, counting)


def _watch(state: ServiceState, stop: threading.Event, interval: float, metrics: _Metrics) -> None:
    """Follow the registry's ACTIVE pointer; a failed load keeps the current version serving, and
    is logged and counted once until ACTIVE or the version's folder changes what it says."""
    failed: str | None = None
    while not stop.wait(interval):
        old = state.current.version
        try:
            if state.refresh():
                metrics.version.labels(old).set(0)
                metrics.version.labels(state.current.version).set(1)
            failed = None
        except Exception as err:  # a broken bundle must never take the service down
            if str(err) != failed:
                failed = str(err)
                metrics.errors.labels("swap").inc()
                logging.getLogger("embrecall.serve").error("version swap failed, still serving %s: %s", old, err)


def _share(request: Request, op: str, item_id: str, attributes: dict | None = None) -> None:
    """Send an item change made here through the change feed, when there is one, to the other replicas."""
    feed = request.app.state.feed
    if feed is not None:
        feed.publish(op, item_id, attributes)


def _bearer(token: str | None, what: str, variable: str, limiter: token_bucket.Limiter, retry_s: int):
    """A dependency that admits requests carrying ``token`` as a bearer credential (RFC 6750: the
    scheme in any case; a token without it is no credential), at most ``limiter``'s rate for the
    token: above it, 429 with ``Retry-After``."""
    scheme = HTTPBearer(auto_error=False, description=f"The service's {variable}", scheme_name=variable)

    def check(credentials: HTTPAuthorizationCredentials | None = Depends(scheme)) -> None:
        if not token:
            raise HTTPException(403, f"{what} are disabled: start the service with {variable} set")
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode(), token.encode()):
            raise HTTPException(401, "missing or wrong bearer token", headers={"WWW-Authenticate": "Bearer"})
        if not limiter.consume(variable):
            raise HTTPException(
                429, f"more requests than this token may make ({what})", headers={"Retry-After": str(retry_s)}
            )

    return check


def create_app(config: ServeConfig) -> FastAPI:
    """The service ``config`` describes (see ``serve.settings``): its source's active version
    loaded here, so a bad bundle fails before a server starts; the feed catches up before the
    service says it is ready."""
    token, client = config.secret("admin_token"), config.secret("client_token")
    metrics = _Metrics()
    cache = (
        RedisVectorCache(config.cache.redis, ttl_s=config.cache.ttl_s, size=config.cache.size)
        if config.cache.redis
        else VectorCache(size=config.cache.size, ttl_s=config.cache.ttl_s)
    )
    histories: Histories = (
        RedisHistories(
            config.events.url,
            config.events.stream,
            config.replica,
            keep=config.events.keep,
            local_users=config.events.max_users,
        )
        if config.events.url
        else MemoryHistories(config.events.keep, config.events.max_users, config.events.max_bytes)
    )
    milvus_uri = config.index.uri if config.index.backend == "milvus" else None
    state = ServiceState(config.source, cache, milvus_uri=milvus_uri, histories=histories, alias=config.index.alias)

    @asynccontextmanager
    async def lifespan(app: FastAPI):
        app.state.service = state
        metrics.version.labels(state.current.version).set(1)
        feed = None
        if config.feed.url:
            feed = ChangeFeed(
                state, config.feed.url, config.feed.stream, consumer=config.replica, max_len=config.feed.max_len
            )
            feed.start()
        app.state.feed = feed
        if isinstance(histories, RedisHistories):
            histories.start()
        stop = threading.Event()
        watcher = None
        if state.registry is not None:
            watcher = threading.Thread(target=_watch, args=(state, stop, config.watch_interval_s, metrics), daemon=True)
            watcher.start()
        yield
        stop.set()
        if watcher is not None:
            watcher.join(timeout=5)
        if feed is not None:
            feed.stop()
        if isinstance(histories, RedisHistories):
            histories.stop()

    app = FastAPI(
        title="embrecall",
        version="1",
        lifespan=lifespan,
        max_body_size=config.max_body_bytes,
        description="Candidate recall: a user in, a few hundred items out.",
    )

    app.add_middleware(_CountErrors, counter=metrics.errors)

    @app.exception_handler(RequestValidationError)
    async def invalid_request(_: Request, err: RequestValidationError) -> JSONResponse:
        return _problems(list(err.errors()))

    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, err: StarletteHTTPException) -> Response:
        """FastAPI answers a body that is not UTF-8 with an undocumented 400: it is a body that
        cannot be used as given, the documented 422."""
        if err.status_code == 400 and isinstance(err.__cause__, UnicodeDecodeError):
            problem = {
                "loc": ("body",),
                "msg": "the body is not UTF-8 text; JSON must be UTF-8",
                "type": "json_invalid",
            }
            return _problems([problem])
        return await http_exception_handler(request, err)

    @app.exception_handler(EmbrecallError)
    async def domain_error(_: Request, err: EmbrecallError) -> JSONResponse:
        if isinstance(err, (BundleError, Unavailable)):
            return JSONResponse({"detail": _printable(err)}, status_code=503)
        return _problems([{"loc": (), "msg": str(err), "type": "value_error"}], prefix=("body",))

    limits = config.limits
    limiter = token_bucket.Limiter(limits.rate_per_s, limits.burst, token_bucket.MemoryStorage())
    retry_s = max(1, math.ceil(1 / limits.rate_per_s))
    admin = _bearer(token, "admin endpoints", "EMBRECALL_ADMIN_TOKEN", limiter, retry_s)
    client_only = _bearer(client, "user events", "EMBRECALL_CLIENT_TOKEN", limiter, retry_s)

    async def serving(request: Request) -> ServingVersion:
        return request.app.state.service.current  # read once per request: the request keeps this version

    def _observe(response: RecallResponse) -> RecallResponse:
        for stage, ms in response.timings_ms.items():
            metrics.stage.labels(stage).observe(ms / 1000)
        return response

    # One recall runs on the event loop: it is CPU work of about half a millisecond, which a thread
    # pool would only slow down (GIL hand-offs). A client's batch (up to 256 users) goes to a thread,
    # so that it does not hold single requests up, and shares one tower run and one index search;
    # batches take turns (one thread), so several clients' batches cannot crowd single requests out.
    one_batch_at_a_time = anyio.CapacityLimiter(1)

    # Responses are serialised once by pydantic-core; response_model documents them.
    @app.post("/v1/recall", response_model=RecallResponse, responses=_REFUSED)
    async def recall(req: RecallRequest, v: ServingVersion = Depends(serving)) -> Response:
        return Response(_observe(v.recall(req)).model_dump_json(), media_type="application/json")

    @app.post("/v1/recall/batch", response_model=BatchRecallResponse, responses=_REFUSED)
    async def recall_batch(req: BatchRecallRequest, v: ServingVersion = Depends(serving)) -> Response:
        def answer() -> str | list[dict]:
            answers: list[RecallResponse | DataError] = []
            for start in range(0, len(req.requests), BATCH_CHUNK):
                answers += v.recall_many(req.requests[start : start + BATCH_CHUNK])
                time.sleep(0)  # hand the GIL to the event loop between chunks (see BATCH_CHUNK)
            bad = [
                {"loc": ("body", "requests", i), "msg": str(a), "type": "value_error"}
                for i, a in enumerate(answers)
                if isinstance(a, DataError)
            ]
            if bad:
                return bad
            good = [_observe(a) for a in answers if not isinstance(a, DataError)]
            parts = []  # BatchRecallResponse's JSON, written DUMP_CHUNK answers at a time
            for n, a in enumerate(good):
                parts.append(a.model_dump_json())
                if n % DUMP_CHUNK == DUMP_CHUNK - 1:
                    time.sleep(0)
            return '{"responses":[' + ",".join(parts) + "]}"

        got = await anyio.to_thread.run_sync(answer, limiter=one_batch_at_a_time)
        return _problems(got) if isinstance(got, list) else Response(got, media_type="application/json")

    @app.post("/v1/events", status_code=202, dependencies=[Depends(client_only)], responses={**_REFUSED, **_ADMIN})
    async def events(body: UserEvents) -> dict:
        """Users' events (clicks...): each joins its user's history for the next recall.  On the event
        loop, as recalls are: a thread hop would cost more than the store's one round trip."""
        accepted = histories.add(body.events)
        metrics.events.inc(accepted)
        return {"accepted": accepted}

    @app.get("/v1/users/{user_id}", dependencies=[Depends(admin)], responses={**_REFUSED, **_ADMIN})
    def user(user_id: PathId, v: ServingVersion = Depends(serving)) -> dict:
        """What a recall for this user starts from: the stored history and the events since, most recent last."""
        return {"user_id": user_id, "known": user_id in v.profiles, "history": list(v.history(user_id))}

    @app.put("/v1/items/{item_id}", dependencies=[Depends(admin)], responses={**_REFUSED, **_ADMIN})
    def put_item(item_id: PathId, body: ItemUpsert, request: Request) -> dict:
        """Searchable here when this returns; with a change feed, every other replica applies it from there."""
        started = time.perf_counter()
        v = request.app.state.service.upsert(item_id, body.attributes)
        _share(request, "upsert", item_id, body.attributes)
        return {"item_id": item_id, "version": v.version, "ms": (time.perf_counter() - started) * 1000}

    @app.delete(
        "/v1/items/{item_id}",
        dependencies=[Depends(admin)],
        responses={**_REFUSED, **_ADMIN, 404: {"model": ErrorMessage, "description": "The item is not in the index"}},
    )
    def delete_item(item_id: PathId, request: Request) -> dict:
        state = request.app.state.service
        if not state.delete(item_id):
            raise HTTPException(404, f"item {item_id!r} is not in the index")
        _share(request, "delete", item_id)
        return {"item_id": item_id, "deleted": True, "version": state.current.version}

    @app.api_route("/v1/items/{item_id}", methods=["GET", "POST", "PATCH", "HEAD", "OPTIONS"], include_in_schema=False)
    def other_item_method() -> Response:
        """Starlette's 405 names the methods of the first route that matched the path (PUT): this
        one names both."""
        return Response(status_code=405, headers={"Allow": "PUT, DELETE"})

    @app.get("/v1/version")
    def version(v: ServingVersion = Depends(serving)) -> dict:
        m = v.bundle.manifest
        return {
            "version": v.version,
            "created_at": m["created_at"],
            "items": len(v.index),
            "channels": list(v.channels),
            "quotas": v.quotas,
            "fallback": v.fallback,
            "metrics": m.get("metrics", {}),
        }

    @app.get("/healthz")
    def healthz() -> dict:
        return {"status": "ok", "replica": config.replica}

    @app.get("/readyz")
    def readyz(request: Request) -> JSONResponse:
        feed = getattr(request.app.state, "feed", None)
        ready = getattr(request.app.state, "service", None) is not None and (feed is None or feed.ready.is_set())
        return JSONResponse({"ready": ready}, status_code=200 if ready else 503)

    @app.get("/metrics", response_class=PlainTextResponse)
    def prometheus(request: Request, v: ServingVersion = Depends(serving)) -> PlainTextResponse:
        feed = request.app.state.feed
        if feed is not None:
            metrics.feed_lag.set(feed.lag_ms)
            metrics.feed_applied.set(feed.applied)
            metrics.feed_replayed.set(feed.replayed)
            metrics.feed_resets.set(feed.resets)
            metrics.feed_dead.set(feed.dead)
        metrics.index_size.set(len(v.index))
        total = v.cache.hits + v.cache.misses
        metrics.cache_hits.set(v.cache.hits / total if total else 0.0)
        metrics.cache_failures.set(getattr(v.cache, "failures", 0))
        metrics.events_failures.set(getattr(histories, "failures", 0))
        if isinstance(histories, MemoryHistories):
            metrics.events_users.set(histories.users)
            metrics.events_bytes.set(histories.bytes)
            metrics.events_dropped.set(histories.dropped)
        return PlainTextResponse(generate_latest(metrics.registry).decode())

    return app
