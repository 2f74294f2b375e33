"""Classify's commands: the worker, ``eval topics``, and ``topics`` (list, test, preview, feedback, put)."""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from classify.classifier import Classifier
    from wirewatch.records import Topic
    from wirewatch.settings import Settings

topics_app = typer.Typer(no_args_is_help=True, help="Topics: list, try on text or recent news, give feedback.")


def _settings() -> Settings:
    from wirewatch.clistate import settings_of

    return settings_of()


def _classifier(settings: Settings) -> Classifier:
    from classify.classifier import Classifier
    from classify.embedder import EmbedderError, embedder_for

    c = settings.classify
    try:
        embedder = embedder_for(c)
    except EmbedderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(1) from exc
    return Classifier(embedder, content_chars=c.content_chars)


def _load_topics(path: Path) -> list[Topic]:
    from classify.topics import TopicFileError, load_topic_file

    try:
        return load_topic_file(path)
    except TopicFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from exc


def _find_topic(settings: Settings, topic_id: str, topics_file: Path | None) -> Topic:
    """The topic from a file, else the shared store, else the config."""
    import redis

    from classify.topics import TopicStore

    if topics_file is not None:
        found = [t for t in _load_topics(topics_file) if t.id == topic_id]
    else:
        try:
            from wirewatch import state

            topic = TopicStore(state.connect(settings), settings).get(topic_id)
            found = [topic] if topic else []
        except (redis.RedisError, OSError):
            print("note: topic store unreachable; using the config's topics", file=sys.stderr)
            found = [t for t in settings.classify.topics if t.id == topic_id]
    if not found:
        print(f"error: no topic {topic_id!r}", file=sys.stderr)
        raise typer.Exit(2)
    return found[0]


def classify_command() -> None:
    """Run the classify worker: articles in, matches out (until SIGTERM/SIGINT)."""
    from wirewatch.startup import exit_cleanly_until_running

    exit_cleanly_until_running()  # while the model loads; the worker installs its own handlers when it runs
    from classify.embedder import EmbedderError
    from classify.worker import run

    try:
        run(_settings())
    except EmbedderError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(1) from exc


def eval_topics(
    data: Annotated[Path, typer.Option("--data", help="JSON lines: id, title, text, labels (topic ids).")],
    topics: Annotated[Path, typer.Option("--topics", help="TOML file with [[topics]] tables.")],
    shape: Annotated[list[str] | None, typer.Option(
        "--shape", help="How items are presented: full, feed (title + first sentence), headline, or all "
                        "(repeatable; default all).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object; shapes.<shape> for each shape.")] = False,
    errors: Annotated[bool, typer.Option("--errors", help="List misses and false alarms with their evidence.")] = False,
    errors_limit: Annotated[int, typer.Option(help="With --errors: at most this many per topic and kind.")] = 15,
    languages: Annotated[bool, typer.Option("--languages", help="Figures per language (given or detected).")] = False,
    write: Annotated[bool, typer.Option("--write-thresholds", help="Store the first shape's best thresholds.")] = False,
    plot_file: Annotated[Path | None, typer.Option("--plot", help="Draw precision-recall curves to this PNG.")] = None,
    percentile: Annotated[float, typer.Option(help="Without labels: suggest this background percentile.")] = 99.0,
    cache: Annotated[bool, typer.Option(
        "--cache/--no-cache", help="Keep the items' vectors in ~/.cache/wirewatch/eval (per model and exact "
                                   "texts), so a rerun with other topics skips the embedding.")] = True,
) -> None:
    """Precision, recall and F1 per topic at its threshold, the best threshold, and macro averages, per shape."""
    from tqdm import tqdm

    from classify import evaluate as ev

    shapes = _shapes(shape)
    settings = _settings()
    topic_list = _load_topics(topics)
    try:
        items = ev.load_labelled(data)
    except ev.DataError as exc:
        print(f"error: {exc}", file=sys.stderr)
        raise typer.Exit(2) from exc
    classifier = _classifier(settings)
    reports = {}
    for name in shapes:
        with tqdm(total=len(items), desc=f"embedding ({name})", unit="article", file=sys.stderr,
                  disable=None) as bar:
            reports[name] = ev.evaluate(classifier, topic_list, items, progress=bar.update, percentile=percentile,
                                        shape=name, errors=errors, languages=languages,
                                        cache_dir=ev.EVAL_CACHE if cache else None)
    first = reports[shapes[0]]
    if as_json:
        out = first.to_json()
        out["shapes"] = {name: r.to_json() for name, r in reports.items()}
        print(json.dumps(out, indent=2, ensure_ascii=False))
    else:
        for name, report in reports.items():
            print(f"\n== {name}: {_SHAPE_HELP[name]} ({report.articles} items)")
            _print_report(report)
            if languages and report.languages:
                _print_languages(report)
            if errors:
                _print_errors(report, errors_limit)
        if len(reports) > 1 and first.labelled:
            _print_shapes(reports)
    if write:
        thresholds = {tid: r.suggested_threshold for tid, r in first.topics.items()
                      if r.suggested_threshold is not None}
        n = ev.write_thresholds(topics, thresholds)
        print(f"wrote {n} threshold(s) to {topics} (from the {shapes[0]} shape)", file=sys.stderr)
    if plot_file is not None:
        ev.plot(first, plot_file)
        print(f"plot written to {plot_file}", file=sys.stderr)


_SHAPE_HELP = {"full": "title and the lead of the whole text", "feed": "title and the first sentence",
               "headline": "title alone"}


def _shapes(values: list[str] | None) -> list[str]:
    from classify.evaluate import SHAPES

    wanted = [v.strip() for raw in (values or ["all"]) for v in raw.split(",") if v.strip()]
    out: list[str] = []
    for v in wanted:
        if v == "all":
            out += [s for s in SHAPES if s not in out]
        elif v in SHAPES:
            out += [v] if v not in out else []
        else:
            print(f"error: --shape {v!r}: expected one of {', '.join(SHAPES)} or all", file=sys.stderr)
            raise typer.Exit(2)
    return out


def _fmt(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _print_shapes(reports: dict[str, Any]) -> None:
    print("\n== macro F1 by shape (at each topic's own threshold; best = threshold picked in hindsight)")
    desks = any(r.macro.get("desk_f1") is not None for r in reports.values())
    print(f"{'shape':<10} {'F1':>6} {'best':>6} {'cosine':>7} {'keywords':>8}"
          + (f" {'desk F1':>8} {'nearest':>7}" if desks else ""))
    for name, r in reports.items():
        m = r.macro
        print(f"{name:<10} {_fmt(m.get('f1')):>6} {_fmt(m.get('best_f1')):>6} {_fmt(m.get('cosine_best_f1')):>7} "
              f"{_fmt(m.get('keyword_f1')):>8}"
              + (f" {_fmt(m.get('desk_f1')):>8} {_fmt(m.get('nearest_f1')):>7}" if desks else ""))
    if desks:
        print("nearest = a naive peer: every item to the desk topic with the closest example, no threshold")


def _print_languages(report: Any) -> None:
    print(f"{'language':<10} {'items':>6} {'pos':>5} {'P':>6} {'R':>6} {'F1':>6}   (micro over topics, as matched)")
    for lang, f in report.languages.items():
        print(f"{lang:<10} {f['items']:>6} {f['positives']:>5} {f['precision']:>6.3f} {f['recall']:>6.3f} "
              f"{f['f1']:>6.3f}")


def _print_errors(report: Any, limit: int) -> None:
    for kind in ("miss", "false alarm"):
        by_topic: dict[str, list[Any]] = {}
        for e in report.errors:
            if e.kind == kind:
                by_topic.setdefault(e.topic_id, []).append(e)
        for tid, errs in by_topic.items():
            print(f"-- {kind}es of {tid}: {len(errs)}" if kind == "miss" else f"-- false alarms of {tid}: {len(errs)}")
            for e in errs[:limit]:
                first_line = e.text.splitlines()[0] if e.text else ""
                print(f"   {e.score:.3f}  {first_line[:110]}")
                why = [f"closest {e.closest_kind} {e.similarity:.2f}: {e.closest.splitlines()[0][:60]!r}"]
                if e.counter_example is not None and e.counter_margin is not None:
                    why.append(f"margin {e.counter_margin:+.2f} over {e.counter_example.splitlines()[0][:50]!r}")
                why.append(f"keywords: {', '.join(e.keywords) or 'none'}"
                           + (f" ({e.keyword_logit:+.1f})" if e.keyword_logit else ""))
                if e.roundup and e.keywords:
                    why.append("a roundup: keywords not counted")
                if e.unread:
                    why.append(f"in {e.language}, which the model does not read: keywords unfaded")
                if e.outranked_by:
                    why.append(f"went to {e.outranked_by}")
                print("          " + "; ".join(why))
            if len(errs) > limit:
                print(f"   ... {len(errs) - limit} more (--errors-limit)")


def _print_report(report: object) -> None:
    from classify.evaluate import Report

    assert isinstance(report, Report)
    if not report.labelled:
        print(f"no labels in the data: thresholds suggested from the background distribution of scores "
              f"({report.articles} articles)")
        print(f"{'topic':<24} {'threshold':>9} {'would match':>11} {'suggested':>9}  from")
        for tid, r in report.topics.items():
            print(f"{tid:<24} {r.threshold:>9.3f} {r.predicted:>11} {_fmt(r.suggested_threshold):>9}  "
                  f"{r.suggested_from}")
        return
    desks = any(r.desk for r in report.topics.values())
    desk_head = f" {'desk P':>6} {'desk R':>6} {'desk F1':>7} {'nearest':>7}" if desks else ""
    print(f"{'topic':<24} {'thr':>5} {'P':>6} {'R':>6} {'F1':>6} {'best thr':>8} {'best F1':>7} "
          f"{'cosine':>7} {'keywords':>8} {'pos':>5}{desk_head}")
    for tid, r in report.topics.items():
        desk = (f" {_fmt(r.desk_precision):>6} {_fmt(r.desk_recall):>6} {_fmt(r.desk_f1):>7} {_fmt(r.nearest_f1):>7}"
                if desks else "")
        print(f"{tid:<24} {r.threshold:>5.2f} {_fmt(r.precision):>6} {_fmt(r.recall):>6} {_fmt(r.f1):>6} "
              f"{_fmt(r.best_threshold):>8} {_fmt(r.best_f1):>7} {_fmt(r.cosine_best_f1):>7} "
              f"{_fmt(r.keyword_f1):>8} {r.positives:>5}{desk}")
    m = report.macro
    desk = (f" {_fmt(m.get('desk_precision')):>6} {_fmt(m.get('desk_recall')):>6} {_fmt(m.get('desk_f1')):>7}"
            f" {_fmt(m.get('nearest_f1')):>7}" if desks else "")
    print(f"{'macro':<24} {'':>5} {_fmt(m.get('precision')):>6} {_fmt(m.get('recall')):>6} {_fmt(m.get('f1')):>6} "
          f"{'':>8} {_fmt(m.get('best_f1')):>7} {_fmt(m.get('cosine_best_f1')):>7} {_fmt(m.get('keyword_f1')):>8}"
          f" {'':>5}{desk}")
    peer = ("; desk = as the desk runs them (best topic only); nearest = every item to the desk topic with the "
            "closest example, no threshold (a naive peer)")
    print("cosine = best F1 of cosine similarity alone (threshold picked in hindsight); keywords = the topic's "
          "keyword query alone" + (peer if desks else ""))
    for tid, r in report.topics.items():
        if r.outside_window:
            print(f"{tid}: {r.outside_window} items published outside the topic's window (since/until), matched by "
                  "none of the above")


@topics_app.command("list")
def topics_list() -> None:
    """List the topics in the shared store with version, threshold and size."""
    from classify.topics import TopicStore
    from wirewatch import state

    s = _settings()
    for t in TopicStore(state.connect(s), s).all():
        window = "".join(f" {k} {v:%Y-%m-%d %H:%M}" for k, v in (("since", t.since), ("until", t.until)) if v)
        print(f"{t.id:<24} v{t.version:<4} thr {t.threshold:.2f} {'on ' if t.enabled else 'off'} "
              f"{len(t.examples)} examples, {len(t.counter_examples)} counter-examples  {t.name}{window}")


@topics_app.command("test")
def topics_test(
    topic: Annotated[str, typer.Argument(help="Topic id.")],
    text: Annotated[str, typer.Argument(help="Text to score (title, then summary).")],
    topics_file: Annotated[Path | None, typer.Option("--topics", help="Take the topic from this file.")] = None,
) -> None:
    """Score a text against one topic and show the evidence."""
    from classify.model import describe
    from wirewatch.records import Article, utcnow

    s = _settings()
    t = _find_topic(s, topic, topics_file)
    classifier = _classifier(s)
    index = classifier.index_for([t.model_copy(update={"since": None, "until": None})])  # the text, not the date
    title, _, summary = text.partition("\n")
    now = utcnow()
    article = Article(id="test", title=title, summary=summary, published_at=now, fetched_at=now, feed_url="cli:")
    batch = classifier.classify([article], index=index)
    score = float(batch.scores.scores[0, 0])
    ev = index.evidence(batch.vectors[0], batch.docs[0], 0, batch.scores, 0)
    verdict = "MATCH" if batch.matches else ("excluded" if batch.scores.excluded[0, 0] else "no match")
    print(f"{t.id} v{t.version}: score {score:.3f} (threshold {t.threshold:.2f}) -> {verdict}")
    if not t.in_window(now):
        bounds = " and ".join(f"{k} {v.isoformat()}" for k, v in (("since", t.since), ("until", t.until)) if v)
        print(f"  outside the topic's window now ({bounds}): an article arriving now would not alert")
    print(f"  closest {ev.closest_kind}: {ev.closest.splitlines()[0][:100]!r} (cosine {ev.similarity:.3f})")
    if ev.counter_example is not None:
        print(f"  closest counter-example: {ev.counter_example.splitlines()[0][:100]!r} "
              f"(margin {ev.counter_margin:+.3f})")
    print(f"  keywords fired: {', '.join(ev.keywords) or 'none'}")
    print(f"  features: {json.dumps(ev.features)}")
    print(f"  model: {json.dumps(describe(index.entries[0][1]))}")
    info = classifier.model_info
    print(f"  embedder: {info.name} ({info.backend}, rev {info.revision})")


@topics_app.command("preview")
def topics_preview(
    topic_file: Annotated[Path, typer.Argument(help="TOML file with the topic(s) to try.")],
    hours: Annotated[float, typer.Option("--hours", help="How far back to look.")] = 24.0,
    near: Annotated[float, typer.Option("--near", help="Near miss: this far below the threshold.")] = 0.15,
    show: Annotated[int, typer.Option("--show", help="Rows to list per section.")] = 15,
) -> None:
    """Score recent articles against topic(s) not yet saved: what would match, per day, and near misses."""
    from classify.recent import RecentStore
    from wirewatch import state

    s = _settings()
    topic_list = _load_topics(topic_file)
    recent = RecentStore(state.connect(s), s).recent(hours)
    if not len(recent):
        print(f"no recent articles in the last {hours:g} h (the classify worker keeps them)")
        return
    classifier = _classifier(s)
    index = classifier.index_for(topic_list)
    docs = [classifier.doc_of(a) for a in recent.articles]
    scores = index.score(recent.vectors, docs)
    print(f"{len(recent)} articles from the last {hours:g} h")
    for col, t in enumerate(index.topics):
        col_scores = scores.scores[:, col]
        hit = [i for i in range(len(recent)) if col_scores[i] >= t.threshold and not scores.excluded[i, col]]
        miss = [i for i in range(len(recent)) if t.threshold - near <= col_scores[i] < t.threshold]
        per_day = Counter(recent.articles[i].published_at.date().isoformat() for i in hit)
        print(f"\n== {t.id} (threshold {t.threshold:.2f}): {len(hit)} would match")
        for day, n in sorted(per_day.items()):
            print(f"  {day}: {n}")
        for i in sorted(hit, key=lambda i: -col_scores[i])[:show]:
            a = recent.articles[i]
            print(f"  {col_scores[i]:.3f}  {a.published_at:%m-%d %H:%M}  {a.title[:90]}  [{a.source}]")
        print(f"-- near misses ({len(miss)}):")
        for i in sorted(miss, key=lambda i: -col_scores[i])[:show]:
            a = recent.articles[i]
            print(f"  {col_scores[i]:.3f}  {a.published_at:%m-%d %H:%M}  {a.title[:90]}  [{a.source}]")


@topics_app.command("feedback")
def topics_feedback(
    topic: Annotated[str, typer.Argument(help="Topic id.")],
    relevant: Annotated[bool, typer.Option("--relevant/--not-relevant", help="Was the match relevant?")],
    text: Annotated[str | None, typer.Option("--text", help="The article's text (title, then summary).")] = None,
    article_id: Annotated[str | None, typer.Option("--article", help="An article id from the recent store.")] = None,
) -> None:
    """Add a delivered match to the topic's examples (relevant) or counter-examples, as a new version."""
    from classify.recent import RecentStore
    from classify.topics import TopicStore
    from wirewatch import state

    s = _settings()
    client = state.connect(s)
    if (text is None) == (article_id is None):
        print("error: give exactly one of --text or --article", file=sys.stderr)
        raise typer.Exit(2)
    if article_id is not None:
        found = [a for a in RecentStore(client, s).recent().articles if a.id == article_id]
        if not found:
            print(f"error: article {article_id!r} is not in the recent store", file=sys.stderr)
            raise typer.Exit(2)
        text = f"{found[0].title}\n{found[0].summary}".strip()
    assert text is not None
    try:
        updated = TopicStore(client, s).feedback(topic, text, relevant)
    except (KeyError, ValueError) as exc:
        print(f"error: {exc.args[0]}", file=sys.stderr)
        raise typer.Exit(2) from exc
    side = "examples" if relevant else "counter-examples"
    print(f"{updated.id}: added to {side}; now version {updated.version} "
          f"({len(updated.examples)} examples, {len(updated.counter_examples)} counter-examples)")


@topics_app.command("put")
def topics_put(topic_file: Annotated[Path, typer.Argument(help="TOML file with [[topics]] tables.")]) -> None:
    """Save topics from a file to the shared store (a changed topic gets the next version)."""
    from classify.topics import TopicStore
    from wirewatch import state

    s = _settings()
    store = TopicStore(state.connect(s), s)
    for t in _load_topics(topic_file):
        saved = store.save(t)
        print(f"{saved.id}: version {saved.version}")


def register(app: typer.Typer) -> None:
    """Add classify's commands to the ``wirewatch`` app (the ``eval`` group is shared with alerts)."""
    app.command("classify")(classify_command)
    eval_app = next((g.typer_instance for g in app.registered_groups if g.name == "eval"), None)
    if eval_app is None:
        eval_app = typer.Typer(no_args_is_help=True, help="Measure classification and de-duplication.")
        app.add_typer(eval_app, name="eval")
    eval_app.command("topics")(eval_topics)
    app.add_typer(topics_app, name="topics")
