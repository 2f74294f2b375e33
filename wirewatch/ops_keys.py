"""``wirewatch keys create | list | revoke``: manage API keys (the secret is printed once, at creation)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from wirewatch.auth import KeyStore

keys_app = typer.Typer(no_args_is_help=True, help="API keys for the subscription API and dashboard.")


def _store() -> KeyStore:
    from wirewatch import state
    from wirewatch.auth import KeyStore
    from wirewatch.cli import settings_of

    s = settings_of()
    return KeyStore(state.connect(s), s)


@keys_app.command("create")
def create(
    name: Annotated[str, typer.Argument(help="Who or what uses the key (shown in listings).")],
    scope: Annotated[str, typer.Option("--scope", help="admin or subscriber.")] = "subscriber",
    topics: Annotated[int | None, typer.Option("--max-topics", help="Cap on topics the key may own.")] = None,
    subscriptions: Annotated[int | None, typer.Option("--max-subscriptions", help="Cap.")] = None,
    feeds: Annotated[int | None, typer.Option("--max-feeds", help="Cap on feeds the key may own.")] = None,
    rate: Annotated[int | None, typer.Option("--rate-per-minute", min=1, help="Requests per minute.")] = None,
) -> None:
    """Create a key and print its secret (shown only this once; only its hash is stored)."""
    from wirewatch.auth import ADMIN_CAPS, Caps

    if scope not in ("admin", "subscriber"):
        typer.echo(f"error: --scope must be admin or subscriber, got {scope!r}", err=True)
        raise typer.Exit(2)
    base = ADMIN_CAPS if scope == "admin" else Caps()
    caps = base.model_copy(update={k: v for k, v in
                                   {"topics": topics, "subscriptions": subscriptions, "feeds": feeds}.items()
                                   if v is not None})
    api_key, secret = _store().create(name, scope, caps, rate)  # type: ignore[arg-type]
    typer.echo(f"created key {api_key.id} ({api_key.scope}) for {api_key.name}")
    typer.echo(f"secret (shown once): {secret}")


@keys_app.command("list")
def list_keys() -> None:
    """List keys: id, scope, name, creation time and caps (never secrets)."""
    rows = _store().all()
    if not rows:
        typer.echo("no keys")
    for k in rows:
        caps = " ".join(f"{kind}={'-' if v is None else v}" for kind, v in k.caps.model_dump().items())
        typer.echo(f"{k.id}  {k.scope:<10}  {k.created_at:%Y-%m-%d %H:%M}  {k.name}  [{caps}]")


@keys_app.command("revoke")
def revoke(key_id: Annotated[str, typer.Argument(help="The key id (as in `keys list`).")]) -> None:
    """Revoke a key; requests with it are refused from the next one on. Exit 1 for an unknown id."""
    if not _store().revoke(key_id):
        typer.echo(f"error: no key {key_id}", err=True)
        raise typer.Exit(1)
    typer.echo(f"revoked {key_id}")


def register(app: typer.Typer) -> None:
    """Add ``keys`` and ``api`` to the CLI."""
    app.add_typer(keys_app, name="keys")

    @app.command("api")
    def api() -> None:
        """Serve the subscription API and dashboard (settings.api.host/port) with uvicorn."""
        from wirewatch.api import serve
        from wirewatch.cli import settings_of

        serve(settings_of())
