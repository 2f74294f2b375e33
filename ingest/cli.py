"""``wirewatch ingest`` (the worker) and ``wirewatch feeds ...`` (the feed registry, health and a parse check)."""

from __future__ import annotations

import asyncio
import json
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, Any

import typer

feeds_app = typer.Typer(no_args_is_help=True, help="Feeds: list, add, remove, import/export OPML, health, parse.")


def _settings() -> Any:
    from wirewatch.clistate import settings_of

    return settings_of()


def _registry() -> Any:
    from wirewatch import registry, state

    s = _settings()
    return registry.feeds(state.connect(s), s)


def _find(reg: Any, ident: str) -> Any:
    from wirewatch.identity import feed_id

    return reg.get(ident) or reg.get(feed_id(ident))


def ingest_command(
    once: Annotated[bool, typer.Option("--once", help="Poll every feed once, then exit.")] = False,
) -> None:
    """Run the ingest worker: poll feeds, publish new entries to Kafka (SIGTERM stops it gracefully)."""
    from wirewatch.startup import exit_cleanly_until_running

    exit_cleanly_until_running()  # until the worker's own handlers are in (below)
    from ingest.worker import IngestWorker
    from wirewatch import bus, metrics

    s = _settings()
    bus.ensure_topics(s, {s.kafka.topics.articles: s.kafka.partitions})
    worker = IngestWorker(s)
    if once:
        asyncio.run(_once(worker))
        return
    port = metrics.serve(s.ingest.metrics_port, s.ops.metrics_addr)
    if port:
        print(f"metrics on http://127.0.0.1:{port}/metrics", file=sys.stderr)
    worker.install_signal_handlers()
    asyncio.run(worker.run())


async def _once(worker: Any) -> None:
    await worker.startup()
    feeds = list(worker.feeds.values())
    limit = asyncio.Semaphore(worker.cfg.concurrency)

    async def one(feed: Any) -> Any:
        async with limit:
            return await worker.poll(feed)

    reports = await asyncio.gather(*(one(f) for f in feeds))
    await worker.close()
    for r in reports:
        print(f"{r.feed_id}  {r.outcome:<12} new={r.new} updated={r.updated} seen={r.seen}"
              + (f"  {r.error[:120]}" if r.error else ""))


@feeds_app.command("list")
def feeds_list(as_json: Annotated[bool, typer.Option("--json", help="JSON lines.")] = False) -> None:
    """List registered feeds."""
    for f in _registry().all():
        if as_json:
            print(f.to_json().decode())
        else:
            flag = "on " if f.enabled else "off"
            interval = f"{f.interval_s:g}s" if f.interval_s else "adaptive"
            print(f"{f.id}  {flag}  {interval:<9} {f.name[:30]:<30} {f.url}")


@feeds_app.command("add")
def feeds_add(
    url: Annotated[str, typer.Argument(help="Feed URL (http or https).")],
    name: Annotated[str, typer.Option("--name", help="Display name.")] = "",
    interval: Annotated[float | None, typer.Option("--interval", help="Fixed poll interval in seconds.")] = None,
    tag: Annotated[list[str] | None, typer.Option("--tag", help="Tag (repeatable).")] = None,
) -> None:
    """Register a feed (running workers pick it up within seconds)."""
    from wirewatch import netguard
    from wirewatch.identity import feed_id
    from wirewatch.records import Feed

    try:
        netguard.check_url(url, _settings().api.url_allowlist)
    except netguard.UnsafeURLError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from exc
    feed = Feed(id=feed_id(url), url=url, name=name, interval_s=interval, tags=tuple(tag or ()),
                updated_at=datetime.now(UTC))
    _registry().put(feed)
    print(f"added {feed.id} {url}")


@feeds_app.command("remove")
def feeds_remove(ident: Annotated[str, typer.Argument(help="Feed id or URL.")]) -> None:
    """Remove a feed."""
    reg = _registry()
    feed = _find(reg, ident)
    if feed is None or not reg.delete(feed.id):
        print(f"error: no feed {ident!r}", file=sys.stderr)
        raise typer.Exit(1)
    print(f"removed {feed.id} {feed.url}")


@feeds_app.command("import")
def feeds_import(file: Annotated[Path, typer.Argument(help="OPML file.")]) -> None:
    """Add the feeds of an OPML file (existing ones are left as they are)."""
    from ingest.opml import OpmlError, parse_opml

    try:
        imported = parse_opml(file.read_bytes())
    except (OSError, OpmlError) as exc:
        print(f"error: {file}: {exc}", file=sys.stderr)
        raise typer.Exit(1) from exc
    added = _registry().seed(imported.feeds)
    for url, why in imported.skipped:
        print(f"skipped {url[:200]!r}: {why}", file=sys.stderr)
    print(f"imported {added} new feed(s) of {len(imported.feeds)} in {file}"
          + (f"; {len(imported.skipped)} skipped" if imported.skipped else ""))


@feeds_app.command("export")
def feeds_export(file: Annotated[Path | None, typer.Argument(help="Write here (default: stdout).")] = None) -> None:
    """Write all registered feeds as OPML 2.0."""
    from ingest.opml import export_opml

    data = export_opml(_registry().all())
    if file is None:
        sys.stdout.write(data.decode())
    else:
        file.write_bytes(data)
        print(f"exported to {file}", file=sys.stderr)


@feeds_app.command("status")
def feeds_status(as_json: Annotated[bool, typer.Option("--json", help="JSON lines.")] = False) -> None:
    """Per-feed health: last success, last error and why, items, next due, observed rate, quiet flag."""
    from ingest.health import feed_health
    from ingest.scheduler import Policy
    from ingest.state import StateStore
    from wirewatch import state

    s = _settings()
    client = state.connect(s)
    from wirewatch import registry

    states = StateStore(client, s).load_all()
    policy = Policy(s.ingest)
    now = time.time()
    rows = [feed_health(f, states.get(f.id), policy, now) for f in registry.feeds(client, s).all()]
    if as_json:
        for row in rows:
            print(json.dumps(row))
        return
    print(f"{'id':<16}  {'status':<8} {'last success':<20} {'next due':<20} {'rate/h':>7} {'new':>6}  last error")
    for r in rows:
        rate = f"{r['rate_per_hour']:.2f}" if r["rate_per_hour"] is not None else "-"
        err = (r["last_error"] or "")[:60]
        print(f"{r['id']:<16}  {r['status']:<8} {r['last_success'] or '-':<20} {r['next_due'] or '-':<20} "
              f"{rate:>7} {r['items_new']:>6}  {err}")
    quiet = sum(1 for r in rows if r["quiet"])
    failing = sum(1 for r in rows if r["status"] == "failing")
    print(f"{len(rows)} feed(s), {failing} failing, {quiet} quiet")


@feeds_app.command("parse")
def feeds_parse(
    source: Annotated[str, typer.Argument(help="A feed file, or an http(s) URL to fetch once.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print each article as a JSON line.")] = False,
) -> None:
    """Print the normalized articles of one feed; exit 0 when it yields entries, 1 with the reason when not."""
    from ingest.fetcher import HttpFetcher
    from ingest.normalize import normalize
    from ingest.parser import ParseError, parse
    from wirewatch.settings import IngestSettings

    cfg = IngestSettings()
    if source.startswith(("http://", "https://")):
        settings = _settings()
        cfg = settings.ingest

        async def _get() -> Any:
            fetcher = HttpFetcher(cfg, allow=settings.api.url_allowlist)
            try:
                return await fetcher.fetch(source)
            finally:
                await fetcher.aclose()

        result = asyncio.run(_get())
        if not result.ok:
            print(f"no entries: fetch failed: {result.outcome.value}: {result.error}"[:300], file=sys.stderr)
            raise typer.Exit(1)
        body, headers, feed_url = result.body, result.headers, result.url
    else:
        path = Path(source)
        try:
            body = path.read_bytes()
        except OSError as exc:
            print(f"no entries: cannot read {source}: {exc.strerror or exc}", file=sys.stderr)
            raise typer.Exit(1) from exc
        headers, feed_url = {}, str(path.resolve())
    try:
        parsed = parse(body, headers, feed_url)
    except ParseError as exc:
        print(f"no entries: {exc}", file=sys.stderr)
        raise typer.Exit(1) from exc
    items, bad = normalize(parsed, feed_url=feed_url, fetched_at=datetime.now(UTC), cfg=cfg)
    for n in items:
        a = n.article
        if as_json:
            print(a.to_json().decode())
        else:
            est = "~" if a.published_estimated else " "
            print(f"{a.published_at:%Y-%m-%d %H:%M}{est} {a.title[:90]}  {a.url or ''}")
    note = f" ({parsed.problem}: {parsed.problem_detail[:120]})" if parsed.problem else ""
    if not items:
        why = f"{len(bad)} unidentifiable" if bad else "the feed lists none"
        print(f"no entries: {parsed.format} document, {why}{note}"[:300], file=sys.stderr)
        raise typer.Exit(1)
    print(f"{len(items)} entries, format {parsed.format}{note}"
          + (f", {len(bad)} skipped without link/guid/title" if bad else ""), file=sys.stderr)


def register(app: typer.Typer) -> None:
    """Add ``ingest`` and ``feeds`` to the ``wirewatch`` command."""
    app.command("ingest")(ingest_command)
    app.add_typer(feeds_app, name="feeds")
