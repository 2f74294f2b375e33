"""The dashboard: server-rendered pages (Jinja2) with a little vanilla JavaScript, served under ``/ui``.

Signing in stores the API key in an HttpOnly, SameSite=Strict cookie; the pages' scripts then call the same
``/v1`` routes as any client (the cookie authenticates them; writes add the CSRF header). Nothing is loaded
from another origin: templates, script, style sheet and chart (inline SVG drawn by the script) ship here.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse, Response
from fastapi.staticfiles import StaticFiles
from fastapi.templating import Jinja2Templates

from wirewatch import registry
from wirewatch.auth import COOKIE, ApiContext, ApiKey, get_context, refuse_guessing
from wirewatch.records import Topic

HERE = Path(__file__).resolve().parent
templates = Jinja2Templates(directory=str(HERE / "templates"))
Ctx = Annotated[ApiContext, Depends(get_context)]
_CSP = ("default-src 'self'; img-src 'self' data:; style-src 'self'; script-src 'self'; connect-src 'self'; "
        "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def _signed_in(request: Request, ctx: ApiContext) -> ApiKey | None:
    secret = request.cookies.get(COOKIE)
    return ctx.keys.verify(secret) if secret else None


class _NotSignedIn(Exception):  # noqa: N818 - a control-flow signal, answered by a redirect
    """Raised by the :data:`SignedIn` dependency; :func:`mount` answers it with the sign-in redirect."""


def _require_sign_in(request: Request, ctx: Ctx) -> ApiKey:
    api_key = _signed_in(request, ctx)
    if api_key is None:
        raise _NotSignedIn
    return api_key


SignedIn = Annotated[ApiKey, Depends(_require_sign_in)]
"""The key of the signed-in dashboard user; a request without a valid cookie is sent to the sign-in form."""


def _page(request: Request, name: str, api_key: ApiKey, **data: Any) -> HTMLResponse:
    response = templates.TemplateResponse(request, name, {"key": api_key, "page": name.split(".")[0], **data})
    response.headers["Content-Security-Policy"] = _CSP
    response.headers["X-Content-Type-Options"] = "nosniff"
    response.headers["Referrer-Policy"] = "no-referrer"
    response.headers["Cache-Control"] = "no-store"
    return response


def window_days(topic: Topic) -> tuple[str, str]:
    """The topic's window as the editor's two date fields: its first day and its last (``until`` is exclusive)."""
    since = topic.since.date().isoformat() if topic.since else ""
    until = (topic.until - timedelta(microseconds=1)).date().isoformat() if topic.until else ""
    return since, until


def _login_redirect() -> RedirectResponse:
    return RedirectResponse("/ui/login", status_code=303)


def router() -> APIRouter:
    """The dashboard's pages (not part of the OpenAPI schema)."""
    r = APIRouter(prefix="/ui", include_in_schema=False)

    @r.get("/login", response_class=HTMLResponse)
    def login_form(request: Request) -> Response:
        response = templates.TemplateResponse(request, "login.html", {"error": None, "page": "login", "key": None})
        response.headers["Content-Security-Policy"] = _CSP
        return response

    @r.post("/login", response_class=HTMLResponse)
    def login(request: Request, ctx: Ctx, api_key: Annotated[str, Form(max_length=200)]) -> Response:
        found = ctx.keys.verify(api_key.strip())
        if found is None:
            refuse_guessing(request, ctx)
            return templates.TemplateResponse(request, "login.html",
                                              {"error": "That key is not valid.", "page": "login", "key": None},
                                              status_code=401)
        response = RedirectResponse("/ui/", status_code=303)
        response.set_cookie(COOKIE, api_key.strip(), httponly=True, samesite="strict",
                            secure=ctx.settings.api.cookie_secure, max_age=12 * 3600, path="/")
        return response

    @r.post("/logout")
    def logout() -> Response:
        response = _login_redirect()
        response.delete_cookie(COOKIE, path="/")
        return response

    @r.get("/", response_class=HTMLResponse)
    def live(request: Request, ctx: Ctx, api_key: SignedIn) -> Response:
        topics = registry.topics(ctx.redis, ctx.settings).all()
        recent, _ = ctx.extras["match_store"].page(limit=30)
        return _page(request, "live.html", api_key, topics=topics, recent=recent)

    @r.get("/topics", response_class=HTMLResponse)
    def topics_page(request: Request, ctx: Ctx, api_key: SignedIn) -> Response:
        return _page(request, "topics.html", api_key, topics=registry.topics(ctx.redis, ctx.settings).all(),
                     window=window_days)

    @r.get("/topics/new", response_class=HTMLResponse)
    def topic_new(request: Request, api_key: SignedIn) -> Response:
        return _page(request, "topic_edit.html", api_key, topic=None, window=("", ""))

    @r.get("/topics/{topic_id}", response_class=HTMLResponse)
    def topic_edit(topic_id: str, request: Request, ctx: Ctx, api_key: SignedIn) -> Response:
        topic = registry.topics(ctx.redis, ctx.settings).get(topic_id)
        if topic is None:
            return _page(request, "missing.html", api_key, what=f"topic {topic_id}")
        return _page(request, "topic_edit.html", api_key, topic=topic, window=window_days(topic))

    @r.get("/subscriptions", response_class=HTMLResponse)
    def subscriptions_page(request: Request, ctx: Ctx, api_key: SignedIn) -> Response:
        # The table comes from GET /v1/subscriptions, which masks secrets and credential-bearing URLs.
        topics = registry.topics(ctx.redis, ctx.settings).all()
        return _page(request, "subscriptions.html", api_key, topics=topics)

    @r.get("/feeds", response_class=HTMLResponse)
    def feeds_page(request: Request, ctx: Ctx, api_key: SignedIn) -> Response:
        return _page(request, "feeds.html", api_key, feeds=registry.feeds(ctx.redis, ctx.settings).all())

    @r.get("/deliveries", response_class=HTMLResponse)
    def deliveries_page(request: Request, api_key: SignedIn) -> Response:
        return _page(request, "deliveries.html", api_key)

    @r.get("/stories/{story_id}", response_class=HTMLResponse)
    def story_page(story_id: str, request: Request, api_key: SignedIn) -> Response:
        return _page(request, "story.html", api_key, story_id=story_id)

    return r


def mount(app: FastAPI) -> None:
    """Add the dashboard's pages, its static files, and ``/`` redirecting to it."""
    app.include_router(router())
    app.add_exception_handler(_NotSignedIn, lambda request, exc: _login_redirect())
    app.mount("/ui/static", StaticFiles(directory=str(HERE / "static")), name="static")

    @app.get("/", include_in_schema=False)
    def root() -> RedirectResponse:
        return RedirectResponse("/ui/", status_code=307)
