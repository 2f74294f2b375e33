"""The FastAPI app: each stage's ``/v1`` router, the API's own routes, health, metrics and the dashboard.

``create_app(settings)`` assembles it top to bottom; ``wirewatch api`` serves it with uvicorn. A stage whose
``<stage>.api`` module is not installed is skipped, so the app runs with whichever stages are present.

Every route but ``/healthz`` and ``/readyz`` needs an API key (see :mod:`wirewatch.auth`). Reads of topics,
subscriptions and feeds carry an ETag; a write with a stale ``If-Match`` gets 412 (:mod:`wirewatch.etag`).
Bad payloads get 422 with a message naming each bad field; bodies over ``api.max_body_bytes`` get 413; refused URLs
(:mod:`wirewatch.netguard`) get 422; Redis or Kafka being down gets 503, never a bare 500.
"""

from __future__ import annotations

import importlib
import socket
import time
from collections.abc import AsyncIterator, Awaitable, Callable, MutableMapping
from contextlib import asynccontextmanager
from typing import Annotated, Any

import redis
from fastapi import APIRouter, Depends, FastAPI, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from kafka.errors import KafkaError
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from starlette.exceptions import HTTPException as StarletteHTTPException

from wirewatch import __version__, metrics, state
from wirewatch.auth import AdminKey, ApiContext, ApiKey, current_key
from wirewatch.log import describe_error, get_logger
from wirewatch.netguard import UnsafeURLError
from wirewatch.records import RecordError
from wirewatch.registry import Conflict, Contended
from wirewatch.settings import Settings
from wirewatch.web import pages, routes
from wirewatch.web.matches import Hub, MatchFollower, MatchStore

log = get_logger("api")
STAGE_ROUTERS = ("ingest.api", "classify.api", "alerts.api")
Scope = MutableMapping[str, Any]
ASGIApp = Callable[[Scope, Callable[[], Awaitable[Any]], Callable[[Any], Awaitable[None]]], Awaitable[None]]


def create_app(settings: Settings, *, client: redis.Redis | None = None,
               follow_matches: bool | None = None) -> FastAPI:
    """The whole API. ``follow_matches`` (default ``api.consume_matches``) starts the matches reader."""
    ctx = ApiContext.build(settings, client or state.connect(settings))
    store, hub = MatchStore(ctx.redis, settings), Hub(settings.api.sse_queue, settings.api.streams_per_key)
    follow = settings.api.consume_matches if follow_matches is None else follow_matches
    follower = MatchFollower(settings, store, hub, ctx.redis) if follow else None
    ctx.extras.update(match_store=store, hub=hub, follower=follower)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        if follower is not None:
            follower.start()
        log.info("api_started", stages=[m for m in loaded], follow_matches=follow)
        yield
        if follower is not None:
            follower.stop()

    app = FastAPI(title="Wirewatch", version=__version__, lifespan=lifespan, docs_url=None, redoc_url=None,
                  openapi_url=None,
                  description="Topics, subscriptions, feeds, matches and feedback. Send your key in X-API-Key.")
    app.state.ww = ctx
    _install_errors(app)
    app.include_router(_health_router(ctx))
    app.include_router(routes.router())
    loaded = _include_stages(app)
    pages.mount(app)
    _mount_docs(app)
    app.add_middleware(_Metrics)  # type: ignore[arg-type]
    app.add_middleware(_BodyLimit, max_bytes=settings.api.max_body_bytes)  # type: ignore[arg-type]
    return app


def _mount_docs(app: FastAPI) -> None:
    """Swagger UI at ``/docs`` from the installed ``swagger_ui_bundle`` (FastAPI's default loads it from a CDN).

    The schema and the docs page answer only with a key (header or the dashboard's sign-in cookie): no route
    but health answers a stranger.
    """
    import swagger_ui_bundle
    from fastapi.openapi.docs import get_swagger_ui_html
    from fastapi.staticfiles import StaticFiles

    app.mount("/docs/static", StaticFiles(directory=swagger_ui_bundle.swagger_ui_path), name="docs-static")

    @app.get("/openapi.json", include_in_schema=False)
    def openapi(_: Annotated[ApiKey, Depends(current_key)]) -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get("/docs", include_in_schema=False)
    def docs(_: Annotated[ApiKey, Depends(current_key)]) -> Response:
        return get_swagger_ui_html(openapi_url="/openapi.json", title="Wirewatch API",
                                   swagger_js_url="/docs/static/swagger-ui-bundle.js",
                                   swagger_css_url="/docs/static/swagger-ui.css",
                                   swagger_favicon_url="/docs/static/favicon-32x32.png")


def _include_stages(app: FastAPI) -> list[str]:
    loaded = []
    for name in STAGE_ROUTERS:
        try:
            module = importlib.import_module(name)
        except ModuleNotFoundError as exc:
            if exc.name not in (name, name.split(".")[0]):
                raise
            continue
        router: APIRouter = module.router()
        app.include_router(router)
        loaded.append(name)
    return loaded


def _health_router(ctx: ApiContext) -> APIRouter:
    r = APIRouter(tags=["health"])

    @r.get("/healthz")
    def healthz() -> dict[str, str]:
        """Liveness: the process answers (no key needed)."""
        return {"status": "ok", "version": __version__}

    @r.get("/readyz", responses={503: {"description": "Kafka or Redis unreachable"}})
    def readyz() -> JSONResponse:
        """Readiness: Redis answers PING and Kafka accepts connections (no key needed)."""
        checks = {"redis": _redis_ok(ctx), "kafka": _kafka_ok(ctx)}
        ok = all(v == "ok" for v in checks.values())
        return JSONResponse({"status": "ready" if ok else "unavailable", "checks": checks}, 200 if ok else 503)

    @r.get("/metrics", response_class=Response, responses={200: {"content": {"text/plain": {}}}})
    def prometheus(_: AdminKey) -> Response:
        """Prometheus metrics (admin key; Prometheus sends it as a bearer token)."""
        return Response(generate_latest(), media_type=CONTENT_TYPE_LATEST)

    return r


def _redis_ok(ctx: ApiContext) -> str:
    try:
        ctx.redis.ping()
        return "ok"
    except (redis.RedisError, OSError) as exc:
        return f"unreachable: {type(exc).__name__}"


def _kafka_ok(ctx: ApiContext) -> str:
    follower: MatchFollower | None = ctx.extras.get("follower")
    if follower is not None and follower.connected():
        return "ok"
    for hostport in ctx.settings.bootstrap_servers.split(","):
        host, _, port = hostport.strip().rpartition(":")
        try:
            with socket.create_connection((host, int(port)), timeout=1.0):
                return "ok"
        except OSError:
            continue
    return "unreachable"


def _field_errors(exc: RequestValidationError) -> list[dict[str, str]]:
    out = []
    for err in exc.errors():
        loc = [str(p) for p in err.get("loc", ())]
        out.append({"field": ".".join(loc) or "<body>", "message": str(err.get("msg", "invalid"))})
    return out


def _install_errors(app: FastAPI) -> None:
    @app.exception_handler(RequestValidationError)
    async def _invalid(_: Request, exc: RequestValidationError) -> JSONResponse:
        errors = _field_errors(exc)
        detail = "; ".join(f"{e['field']}: {e['message']}" for e in errors)
        return JSONResponse({"detail": detail, "errors": errors}, 422)

    @app.exception_handler(UnsafeURLError)
    async def _unsafe(_: Request, exc: UnsafeURLError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, 422)

    @app.exception_handler(Conflict)
    async def _conflict(_: Request, exc: Conflict) -> JSONResponse:
        # If-Match named a version that is no longer current (412); or, without one, the record kept changing
        return JSONResponse({"detail": str(exc)}, 409 if isinstance(exc, Contended) else 412)

    @app.exception_handler(RecordError)
    async def _record(_: Request, exc: RecordError) -> JSONResponse:
        return JSONResponse({"detail": str(exc)}, 422)

    @app.exception_handler(StarletteHTTPException)
    async def _http(_: Request, exc: StarletteHTTPException) -> Response:
        if exc.status_code in (401, 403, 429):
            metrics.API_AUTH_FAILURES.labels(str(exc.status_code)).inc()
        return JSONResponse({"detail": exc.detail}, exc.status_code, headers=exc.headers)

    async def _unavailable(_: Request, exc: Exception) -> JSONResponse:
        log.error("api_backend_unavailable", error=describe_error(exc))
        return JSONResponse({"detail": f"a backend is unavailable ({type(exc).__name__}); retry later"}, 503,
                            headers={"Retry-After": "5"})

    app.add_exception_handler(redis.RedisError, _unavailable)
    app.add_exception_handler(KafkaError, _unavailable)


class _BodyLimit:
    """413 for a body over ``max_bytes``, declared or streamed (chunked bodies are counted as they come)."""

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http" or scope["method"] in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None and (not declared.isdigit() or int(declared) > self.max_bytes):
            await _too_large(send, self.max_bytes)
            return
        body, more = bytearray(), True
        while more:
            message = await receive()
            if message["type"] != "http.request":
                await self.app(scope, receive, send)  # disconnect: let the app see it
                return
            body += message.get("body", b"")
            more = message.get("more_body", False)
            if len(body) > self.max_bytes:
                await _too_large(send, self.max_bytes)
                return
        sent = False

        async def replay() -> Any:
            nonlocal sent
            if not sent:
                sent = True
                return {"type": "http.request", "body": bytes(body), "more_body": False}
            return await receive()

        await self.app(scope, replay, send)


async def _too_large(send: Callable[[Any], Awaitable[None]], limit: int) -> None:
    payload = f'{{"detail":"body: request body larger than {limit} bytes"}}'.encode()
    await send({"type": "http.response.start", "status": 413,
                "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode())]})
    await send({"type": "http.response.body", "body": payload})


class _Metrics:
    """Counts requests by route template and status class, and times non-streaming ones."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Callable[[], Awaitable[Any]],
                       send: Callable[[Any], Awaitable[None]]) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = [500]

        async def record(message: Any) -> None:
            if message["type"] == "http.response.start":
                status[0] = int(message["status"])
                route = scope.get("route")
                path = getattr(route, "path", "unmatched")
                if path != "/v1/stream":
                    metrics.API_REQUEST_SECONDS.labels(path).observe(time.perf_counter() - started)
                metrics.API_REQUESTS.labels(path, scope["method"], f"{status[0] // 100}xx").inc()
            await send(message)

        await self.app(scope, receive, record)


def serve(settings: Settings) -> None:
    """Run the API with uvicorn on ``api.host:api.port`` until interrupted."""
    import uvicorn

    app = create_app(settings)
    uvicorn.run(app, host=settings.api.host, port=settings.api.port, log_level=settings.log.level,
                proxy_headers=False, server_header=False, timeout_graceful_shutdown=5, access_log=False)
