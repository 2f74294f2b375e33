"""``wirewatch demo``: the whole pipeline on one machine, fed by bundled sample news, in one command.

It starts the local stack, a feed server and a webhook receiver on 127.0.0.1, writes a demo config into the
data dir, and runs every installed role under the supervisor. It prints what really happens: each alert
the receiver gets, where the dashboard, metrics and logs are, and a summary at the end. Ctrl-C (or
``--duration``) stops everything it started.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Annotated, Any

import typer

from wirewatch.demo.feeds import FeedServer
from wirewatch.demo.receiver import Received, WebhookReceiver, describe
from wirewatch.log import describe_error


def _say(text: str = "") -> None:
    typer.echo(text)
    sys.stdout.flush()


def demo(
    duration: Annotated[float | None, typer.Option("--duration", min=1, help="Stop by itself after this many "
                                                   "seconds (default: run until Ctrl-C).")] = None,
    keep_stack: Annotated[bool, typer.Option("--keep-stack", help="Leave Kafka and Redis running at the "
                                             "end.")] = False,
    speed: Annotated[float, typer.Option("--speed", min=0.1, help="Release the sample articles this many "
                                         "times faster.")] = 1.0,
    keep_data: Annotated[bool, typer.Option("--keep-data", help="Keep this run's Kafka topics and Redis keys "
                                            "(to inspect them with `status` afterwards).")] = False,
) -> None:
    """Run the pipeline on bundled sample news with a local feed server and webhook receiver."""
    from wirewatch import bus, stack
    from wirewatch import log as logmod
    from wirewatch.cli import State, app, settings_of
    from wirewatch.demo import config as democonfig
    from wirewatch.ops import runner
    from wirewatch.ops.lag import pipeline_topics, wait_for_leaders

    s = settings_of()
    # The workers log to files; on this terminal only warnings (a crashed worker) join the demo's own lines.
    logmod.configure(State.log_level or "warning", s.log.format)
    if not State.log_level:
        # kafka-python's own warnings (slow event-loop ticks on a busy machine) are noise on the demo screen.
        logging.getLogger("kafka").setLevel(logging.ERROR)
    began = time.monotonic()
    stop = threading.Event()
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}

    def stamp() -> str:
        secs = int(time.monotonic() - began)
        return f"[{secs // 60:02d}:{secs % 60:02d}]"

    _say("Wirewatch demo: sample news -> ingest -> Kafka -> classify -> Kafka -> alerts -> webhook")
    was_up = all(r.ok for r in stack.status(s))
    try:
        rows = stack.up(s) if (s.local_kafka or s.local_redis) else stack.status(s)
    except stack.StackError as exc:
        _say(f"error: the local stack did not start: {exc}")
        raise typer.Exit(1) from exc
    for r in rows:
        _say(f"  {r.name:<6} {r.state} at {r.endpoint}" + (f" (version {r.version})" if r.version else ""))

    alerts: list[Received] = []

    def on_alert(item: Received) -> None:
        alerts.append(item)
        _say(f"{stamp()} {describe(item.body)}")

    feeds = FeedServer(speed=speed).start()
    receiver = WebhookReceiver(on_alert).start()
    run_id = uuid.uuid4().hex[:8]
    workdir = Path(s.data_dir).expanduser() / "demo"
    log_dir = workdir / "logs" / run_id
    try:
        cfg = democonfig.build(s, feeds=feeds, receiver_url=receiver.url, run_id=run_id)
        cfg_path = democonfig.write(cfg.data, workdir / "wirewatch-demo.toml")
        bus.ensure_default_topics(cfg.settings)
        wait_for_leaders(cfg.settings, pipeline_topics(cfg.settings))
        chosen = runner.plan(app, cfg.settings, config=cfg_path, log_level=State.log_level or "info",
                             log_format="json")
    except Exception:
        # Nothing is supervised yet: stop what this command started before reporting the error.
        feeds.stop()
        receiver.stop()
        if not was_up and not keep_stack:
            stack.down(s)
        raise
    children = chosen.children

    _say(f"  feed server:  {feeds.base_url}/  ({len(feeds.outlets)} outlets + 1 malformed feed, "
         f"{len(feeds.items)} articles released over {feeds.duration_s():.0f}s)")
    _say(f"  webhook:      {receiver.url}  (alerts are printed below as they arrive)")
    _say(f"  topic:        {cfg.topic_id} ({cfg.topic_source})")
    _say(f"  config:       {cfg_path}")
    roles = {c.role for c in children}
    if "api" in roles:
        _say(f"  dashboard:    http://127.0.0.1:{cfg.api_port}/ui/  (sign in with the demo key "
             f"{_demo_key(cfg.settings)}; it is removed when the demo ends)")
    else:
        _say("  dashboard:    not started (no `wirewatch api` command is installed yet)")
    _say(f"  metrics:      http://127.0.0.1:{cfg.metrics_ports['ops']}/metrics (supervisor, consumer lag)"
         + "".join(f", :{cfg.metrics_ports[r]} {r}" for r in ("ingest", "classify", "alerts") if r in roles))
    _say(f"  logs:         {log_dir}/<role>.log (JSON lines)")
    _say(f"  status:       wirewatch --config {cfg_path} status")
    for role, why in chosen.skipped.items():
        _say(f"  skipped:      {role}: {why}")
    if children:
        _say(f"  running:      {', '.join(sorted(roles))}")
    else:
        _say("  running:      nothing: no pipeline stage is installed yet, so only the feed server and the "
             "receiver run")

    holder: list[Any] = []
    result: list[int] = []
    worker = threading.Thread(
        target=lambda: result.append(runner.supervise(cfg.settings, children, log_dir=log_dir,
                                                      install_signals=False, supervisor_out=holder)),
        name="demo-supervisor", daemon=True,
    )
    if children:
        worker.start()
        # Hold Ctrl-C handling until the supervisor exists, so a very early Ctrl-C still drains the workers.
        while not holder and worker.is_alive():
            time.sleep(0.01)
    deadline = began + duration if duration else None
    next_report = time.monotonic() + 10
    try:
        while not stop.wait(0.2):
            now = time.monotonic()
            if deadline is not None and now >= deadline:
                break
            if now >= next_report:
                next_report = now + 15
                _say(f"{stamp()} {_progress(feeds, receiver)}")
    finally:
        _say(f"{stamp()} stopping" + (" (Ctrl-C again is ignored; draining workers)" if children else ""))
        if holder:
            holder[0].stop()
        if children:
            worker.join(timeout=cfg.settings.ops.drain_timeout_s + 15)
        feeds.stop()
        receiver.stop()
        health = _feed_health(cfg.settings, feeds)
        grown = _stories_now(cfg.settings, alerts)  # read before the run's data is removed
        cleaned = [] if keep_data else democonfig.cleanup(cfg.settings)
        stopped: list[str] = []
        if not was_up and not keep_stack:
            stopped = stack.down(s)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    _say("")
    _say("Summary")
    _say(f"  {_progress(feeds, receiver)}")
    for line in _story_summary(feeds, alerts) + grown:
        _say(f"  {line}")
    for line in health:
        _say(f"  {line}")
    if cleaned:
        _say(f"  removed this run's data: {', '.join(cleaned)} (--keep-data keeps them)")
    if stopped:
        _say(f"  stopped the local {' and '.join(stopped)}")
    elif was_up or keep_stack:
        _say("  left the local stack running (`wirewatch stack down` stops it)")


def _demo_key(settings: Any) -> str:
    """An admin API key in this run's Redis namespace, for the dashboard."""
    from wirewatch import state
    from wirewatch.auth import KeyStore

    client = state.connect(settings)
    try:
        _, secret = KeyStore(client, settings).create("demo", "admin")
    finally:
        client.close()
    return secret


def _feed_health(settings: Any, feeds: FeedServer) -> list[str]:
    """What ``wirewatch status`` says about the demo's feeds (the malformed one should be in error)."""
    from wirewatch.ops import status

    report = status.Report(at="")
    try:
        status.collect_feeds(settings, report, time.time())
    except Exception as exc:  # noqa: BLE001 - the summary must not fail on an unreachable Redis
        return [f"feed health unavailable: {describe_error(exc)}"]
    names = {url: name for name, url in feeds.feed_urls().items()}
    problems = [f"{names.get(f.url, f.url)}: {f.problem} ({f.detail[:90]})" for f in report.feeds]
    return [f"feeds needing a look ({len(problems)} of {report.feeds_total}): " + "; ".join(problems)] if problems \
        else [f"feeds needing a look: none of {report.feeds_total}"]


def _progress(feeds: FeedServer, receiver: WebhookReceiver) -> str:
    released = sum(len(feeds.released(o.slug)) for o in feeds.outlets)
    return (f"feeds: {released}/{len(feeds.items)} articles released, {len(feeds.served_items)} fetched "
            f"({feeds.requests} requests, {feeds.not_modified} not modified); "
            f"alerts received: {len(receiver.received)}" + (f" (+{receiver.repeats} repeats dropped)"
                                                           if receiver.repeats else ""))


def _stories_now(settings: Any, alerts: list[Received]) -> list[str]:
    """What each alerted story became: the reports folded into it after its alert, and their outlets."""
    from alerts.stories import StoryFolder
    from wirewatch import state

    ids = sorted({str(a.body["story_id"]) for a in alerts if a.body.get("story_id")})
    lines = []
    try:
        folder = StoryFolder(state.connect(settings), settings)
        for sid in ids:
            story = folder.find(sid)
            if story is not None:
                lines.append(f"story {sid}: {story.article_count} report(s) from {len(story.sources)} outlet(s): "
                             f"{', '.join(story.sources)}")
    except Exception as exc:  # noqa: BLE001 - the summary must not fail on an unreachable Redis
        return [f"stories unavailable: {describe_error(exc)}"]
    return lines


def _story_summary(feeds: FeedServer, alerts: list[Received]) -> list[str]:
    expect = {i.title: i.expect for i in feeds.items}
    by_story: dict[str, list[Received]] = {}
    for a in alerts:
        titles = [str(it.get("title", "")) for it in a.body.get("items") or [] if isinstance(it, dict)]
        kinds = [expect[t] for t in titles if t in expect] or ["unknown"]
        by_story.setdefault(max(set(kinds), key=kinds.count), []).append(a)
    lines = []
    for kind in ("aleppo", "daraya", "other", "unknown"):
        got = by_story.get(kind, [])
        if not got:
            continue
        sources = sorted({str(s) for a in got for s in a.body.get("sources") or []})
        stories = {a.body.get("story_id") for a in got}
        lines.append(f"{kind}: {len(got)} notification(s) for {len(stories)} story id(s); "
                     f"sources: {', '.join(sources) or '?'}")
    if not alerts:
        lines.append("no alert reached the receiver")
    return lines
