"""Alerts' commands.

The worker, a test notification, the delivery audit trail, stories, and ``eval duplicates``.
"""

from __future__ import annotations

import json
import sys
import uuid
from datetime import UTC
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from wirewatch.records import Subscription
    from wirewatch.settings import Settings

alerts_app = typer.Typer(help="The alerts worker (no subcommand) and its tools.")
deliveries_app = typer.Typer(no_args_is_help=True, help="The delivery audit trail: sent, failed, suppressed.")
stories_app = typer.Typer(no_args_is_help=True, help="Stories: near-duplicate articles folded per topic.")


def _settings() -> Settings:
    from wirewatch.clistate import settings_of

    return settings_of()


@alerts_app.callback(invoke_without_command=True)
def alerts_command(ctx: typer.Context) -> None:
    """Run the alerts worker: matches in, notifications out (until SIGTERM/SIGINT)."""
    if ctx.invoked_subcommand is not None:
        return
    from wirewatch.startup import exit_cleanly_until_running

    exit_cleanly_until_running()  # until the worker's own handlers are in (below)
    from alerts.worker import AlertsWorker
    from wirewatch import bus, metrics

    s = _settings()
    bus.ensure_default_topics(s)
    metrics.serve(s.alerts.metrics_port, s.ops.metrics_addr)
    worker = AlertsWorker(s)
    worker.loop.install_signal_handlers()  # SIGTERM: finish the batch, commit, drain sends, flush records
    worker.run()


def _subscription(s: Settings, sid: str) -> Subscription:
    from wirewatch import registry, state

    sub = registry.subscriptions(state.connect(s), s).get(sid)
    sub = sub or next((x for x in s.alerts.subscriptions if x.id == sid), None)
    if sub is None:
        print(f"error: no subscription {sid!r}", file=sys.stderr)
        raise typer.Exit(2)
    return sub


@alerts_app.command("test")
def alerts_test(subscription: Annotated[str, typer.Argument(help="Subscription id.")]) -> None:
    """Send a clearly marked test notification through a subscription's channel (with retries)."""
    from alerts.ledger import idempotency_key
    from alerts.testsend import send_now

    s = _settings()
    sub = _subscription(s, subscription)
    key = idempotency_key(sub.id, "test", uuid.uuid4().hex)
    ok, attempts, detail = send_now(s, sub, key)
    print(f"{'sent' if ok else 'failed'} test notification to {sub.id} ({sub.channel.type.value}) "
          f"after {attempts} attempt(s): {detail}")
    if not ok:
        raise typer.Exit(1)


@deliveries_app.command("tail")
def deliveries_tail(
    subscription: Annotated[str | None, typer.Option("--subscription", help="Only this subscription.")] = None,
    last: Annotated[int, typer.Option("--last", "-n", help="Records to show from before now (per partition).")] = 20,
    follow: Annotated[bool, typer.Option("--follow/--no-follow", help="Keep printing new records.")] = True,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON record a line.")] = False,
) -> None:
    """Print the delivery audit trail: what was sent, failed or suppressed, and why."""
    from kafka import KafkaConsumer, TopicPartition

    from wirewatch.records import Delivery, RecordError, decode

    s = _settings()
    topic = s.kafka.topics.deliveries
    consumer = KafkaConsumer(bootstrap_servers=s.bootstrap_servers.split(","), enable_auto_commit=False)
    try:
        parts = [TopicPartition(topic, p) for p in sorted(consumer.partitions_for_topic(topic) or [])]
        consumer.assign(parts)
        ends = consumer.end_offsets(parts)
        for tp in parts:
            consumer.seek(tp, max(0, ends[tp] - last))
        idle = 0
        while follow or idle < 2:
            polled = consumer.poll(timeout_ms=500)
            idle = 0 if polled else idle + 1
            for batch in polled.values():
                for r in batch:
                    try:
                        d = decode(Delivery, r.value)
                    except RecordError as exc:
                        print(f"unreadable record at {r.partition}:{r.offset}: {exc}", file=sys.stderr)
                        continue
                    if subscription and d.subscription_id != subscription:
                        continue
                    if as_json:
                        print(d.model_dump_json())
                    else:
                        print(f"{d.recorded_at:%Y-%m-%d %H:%M:%S} {d.status.value:<10} {d.subscription_id:<16} "
                              f"story={d.story_id[:16]:<16} attempts={d.attempts} {d.reason}")
    except KeyboardInterrupt:
        pass
    finally:
        consumer.close()


@stories_app.command("list")
def stories_list(
    topic: Annotated[str, typer.Option("--topic", help="Topic id.")],
    limit: Annotated[int, typer.Option("--limit", help="Most recent stories to show.")] = 30,
) -> None:
    """List a topic's stories, newest first, with their article and source counts."""
    from alerts.stories import StoryFolder
    from wirewatch import state

    s = _settings()
    stories = StoryFolder(state.connect(s), s).list(topic, limit)
    if not stories:
        print(f"no stories for topic {topic!r} in the last {s.alerts.story_window_s // 3600} h")
        return
    print(f"{'updated (UTC)':<17} {'articles':>8} {'sources':>7}  title")
    for st in stories:
        print(f"{st.updated_at.astimezone(UTC):%Y-%m-%d %H:%M} {st.article_count:>8} {len(st.sources):>7}  "
              f"{st.title[:90]}  [{st.id}]")


def eval_duplicates(
    data: Annotated[Path, typer.Option("--data", help="JSONL pairs: a, b, is_duplicate.")],
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    threshold: Annotated[float | None, typer.Option("--threshold", help="Instead of alerts.story_similarity.")] = None,
) -> None:
    """Precision, recall and F1 of the same-story decision on labelled pairs, and the best threshold."""
    import numpy as np

    from alerts.embed import Embedder, ModelNotFound
    from alerts.evaluate import PairsError, evaluate, read_pairs, score_pairs

    s = _settings()
    try:
        pairs = read_pairs(data)
        texts = sorted({p.a for p in pairs} | {p.b for p in pairs})
        vectors = Embedder().embed(texts)
    except (PairsError, ModelNotFound) as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from exc
    scores = score_pairs(pairs, dict(zip(texts, vectors, strict=True)))
    labels = np.array([p.is_duplicate for p in pairs])
    report = evaluate(scores, labels, s.alerts.story_similarity if threshold is None else threshold)
    if as_json:
        print(json.dumps(report.as_dict()))
        return
    print(f"pairs: {report.pairs} ({int(labels.sum())} duplicates)")
    print(f"{'':<22}{'threshold':>10}{'precision':>11}{'recall':>8}{'F1':>7}")
    print(f"{'configured':<22}{report.threshold:>10.3f}{report.precision:>11.3f}{report.recall:>8.3f}{report.f1:>7.3f}")
    print(f"{'best F1':<22}{report.best_threshold:>10.3f}{'':>11}{'':>8}{report.best_f1:>7.3f}")


def register(app: typer.Typer) -> None:
    """Add ``alerts``, ``deliveries``, ``stories`` and ``eval duplicates`` to the ``wirewatch`` command."""
    app.add_typer(alerts_app, name="alerts")
    app.add_typer(deliveries_app, name="deliveries")
    app.add_typer(stories_app, name="stories")
    eval_app = next((g.typer_instance for g in app.registered_groups if g.name == "eval"), None)
    if eval_app is None:
        eval_app = typer.Typer(no_args_is_help=True, help="Measure classification and de-duplication.")
        app.add_typer(eval_app, name="eval")
    eval_app.command("duplicates")(eval_duplicates)

