"""Feedback benchmark: does a topic get better as an editor judges its alerts?

    .venv/bin/python -m bench.feedback [--sets kobani kobani-plain bbc] [--seeds 5] [--plot P.png] [--json out.json]

Replays labelled streams in order through the real classifier (the settings' default embedder; each item
embedded once): ../shared/eval/dev/kobani_window.jsonl (Guardian headlines in time order) with
examples/kobani/topics.toml and, as ``kobani-plain``, with examples/kobani/plain.toml (the topic as a new user
writes it: a sentence, three headlines, the town's names, no counter-examples), and
../shared/eval/dev/bbc_topics.jsonl (no time order: shuffled, one replay per seed) cut to what feeds deliver
(title + first sentence, ~300 characters) with examples/bbc_topics.toml. A
simulated editor who knows the labels judges every alert of a topic relevant or not, and in every
``--miss-every``-th judgement slot reports one miss found on the dashboard. Each judgement goes the API's way
(``TopicStore.feedback`` on a throwaway redis-server: a new topic version) and the classifier picks it up through
the registry watcher before the next item is scored. Prints F1 at each topic's own threshold after 0, 5, 10, 20
and 50 judgements, on a fixed evaluation tail (the headline: the last ``--tail`` of the stream, never judged)
and on the rest of the stream. Goal: F1 never falls on average after a judgement, and rises >= 0.05 after 20.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import machine

ROOT = Path(__file__).resolve().parents[2]
EVAL = ROOT.parent / "shared" / "eval" / "dev"
SETS = {
    "kobani": (EVAL / "kobani_window.jsonl", ROOT / "examples" / "kobani" / "topics.toml",
               "Guardian headlines in time order"),
    "kobani-plain": (EVAL / "kobani_window.jsonl", ROOT / "examples" / "kobani" / "plain.toml",
                     "the same headlines, the topic as a new user writes it (no counter-examples)"),
    "bbc": (EVAL / "bbc_topics.jsonl", ROOT / "examples" / "bbc_topics.toml",
            "BBC articles as feed items (title + first sentence), shuffled per seed"),
}


def cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return "unknown CPU"


def tree() -> str:
    """The commit measured, and whether the classifier's code differs from it (others change it meanwhile)."""
    try:
        head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                              check=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", "classify"], cwd=ROOT, capture_output=True,
                               text=True, check=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    return f"{head}{' (classify/ modified)' if dirty else ''}"


_last = [0.0]


def progress(msg: str, force: bool = False) -> None:
    now = time.monotonic()
    if force or now - _last[0] >= 0.5:
        _last[0] = now
        sys.stderr.write(f"\r{msg:<100}")
        sys.stderr.flush()


@contextlib.contextmanager
def throwaway_redis() -> Iterator[str]:
    """A private redis-server on a free 127.0.0.1 port, without persistence; stopped and removed on exit."""
    from wirewatch import stack

    port = stack.free_port()
    tmp = tempfile.mkdtemp(prefix="ww-bench-feedback-")
    proc = subprocess.Popen([stack.redis_server_binary(), "--bind", "127.0.0.1", "--port", str(port),
                             "--save", "", "--appendonly", "no", "--dir", tmp],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 10
        while not stack.port_open(port):
            if proc.poll() is not None or time.monotonic() > deadline:
                raise stack.StackError(f"redis-server on port {port} did not start (exit {proc.poll()})")
            time.sleep(0.05)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.feedback", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sets", nargs="+", choices=list(SETS), default=list(SETS))
    ap.add_argument("--kobani", type=Path, default=SETS["kobani"][0], help="the Kobani stream (JSON lines)")
    ap.add_argument("--kobani-topics", type=Path, default=SETS["kobani"][1])
    ap.add_argument("--kobani-plain-topics", type=Path, default=SETS["kobani-plain"][1])
    ap.add_argument("--bbc", type=Path, default=SETS["bbc"][0], help="the BBC set (JSON lines)")
    ap.add_argument("--bbc-topics", type=Path, default=SETS["bbc"][1])
    ap.add_argument("--seeds", type=int, default=5, help="replay orders of sets without time order")
    ap.add_argument("--seed", type=int, default=0, help="first seed")
    ap.add_argument("--tail", type=float, default=0.4, help="share of the stream kept as the fixed evaluation tail")
    ap.add_argument("--checkpoints", type=int, nargs="+", default=[0, 5, 10, 20, 50])
    ap.add_argument("--miss-every", type=int, default=10, help="every k-th judgement slot is a reported miss; 0 = none")
    ap.add_argument("--feed-chars", type=int, default=300, help="title + first sentence, at most this long")
    ap.add_argument("--redis", default=None, help="an existing Redis URL (default: a throwaway redis-server)")
    ap.add_argument("--reload-interval", type=float, default=0.01, help="registry watcher poll interval, s")
    ap.add_argument("--wait-s", type=float, default=10.0, help="longest wait for the classifier to reload a topic")
    ap.add_argument("--plot", type=Path, default=None, help="write the F1 curves here (PNG)")
    ap.add_argument("--json", nargs="?", const="-", default=None,
                    help="write the figures as JSON here (alone or '-': stdout, tables to stderr)")
    args = ap.parse_args()
    if not 0 < args.tail < 1:
        ap.error("--tail must be between 0 and 1")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))  # so the redis-server is stopped on SIGTERM too

    from bench.feedback.data import DataMissing, load_stream
    from classify.topics import TopicFileError, load_topic_file

    paths = {"kobani": (args.kobani, args.kobani_topics), "kobani-plain": (args.kobani, args.kobani_plain_topics),
             "bbc": (args.bbc, args.bbc_topics)}
    streams, topic_sets = {}, {}
    try:
        for name in args.sets:
            data_path, topics_path = paths[name]
            streams[name] = load_stream(data_path, name, limit=args.feed_chars)
            topic_sets[name] = load_topic_file(topics_path)
    except (DataMissing, TopicFileError, ValueError) as exc:
        sys.exit(f"error: {exc}")

    from wirewatch.log import configure

    configure("warning", "console")
    started = time.monotonic()
    load = os.getloadavg()[0]
    with contextlib.ExitStack() as stack:
        url = args.redis or stack.enter_context(throwaway_redis())
        results, model = run(args, streams, topic_sets, url)
    elapsed = time.monotonic() - started
    emit(args, results, model, elapsed, load)


def run(args: argparse.Namespace, streams: dict[str, Any], topic_sets: dict[str, Any],
        url: str) -> tuple[list[Any], dict[str, Any]]:
    import numpy as np
    from threadpoolctl import threadpool_limits

    from bench.feedback.core import build_classifier, run_set
    from wirewatch.settings import load_settings

    threadpool_limits(1, user_api="blas")  # as the classify worker does
    settings = load_settings()
    settings = settings.model_copy(update={"redis": settings.redis.model_copy(update={"url": url})})
    total = sum(len(s) for s in streams.values())
    progress("loading the embedder ...", force=True)
    classifier = build_classifier(settings, cache_size=total + 10_000)
    results = []
    ns = uuid.uuid4().hex[:8]
    for name, stream in streams.items():
        seeds = [None] if stream.ordered else list(range(args.seed, args.seed + args.seeds))
        orders = [np.arange(len(stream)) if s is None else np.random.default_rng(s).permutation(len(stream))
                  for s in seeds]
        results.append(run_set(classifier, settings, stream, topic_sets[name], orders, seeds,
                               title=SETS[name][2], namespace=f"bench-feedback-{ns}-{name}", tail=args.tail,
                               checkpoints=args.checkpoints, miss_every=args.miss_every,
                               interval_s=args.reload_interval, wait_s=args.wait_s, progress=progress))
    progress("", force=True)
    sys.stderr.write("\r")
    return results, classifier.model_info.model_dump(mode="json")


def emit(args: argparse.Namespace, results: list[Any], model: dict[str, Any], elapsed: float, load: float) -> None:
    from bench.feedback.report import plot, summarize, tables

    summaries = {r.name: summarize(r) for r in results}
    to_stdout = args.json != "-"
    out = sys.stdout if to_stdout else sys.stderr
    print(machine.line(), file=out)
    print(f"feedback benchmark at {tree()}: {cpu_model()}, {os.cpu_count()} CPU(s), load average {load:.2f} at "
          f"start, {elapsed:.0f} s in all; model {model.get('name')} ({model.get('backend')})", file=out)
    print(tables(summaries, tail=args.tail, miss_every=args.miss_every), file=out)
    for name, s in summaries.items():
        print(f"{name}: {s['reload_ms']['count']} hot reloads, median {s['reload_ms']['p50']} ms from feedback "
              f"to the classifier's index (watcher polls every {args.reload_interval * 1000:g} ms); replays "
              f"{s['seconds']:.1f} s", file=out)
    if args.plot:
        plot(results, summaries, args.plot)
        print(f"plot written to {args.plot}", file=out)
    if args.json:
        doc = {"bench": "feedback", "tree": tree(), "cpu": machine.describe(), "cpus": os.cpu_count(),
               "seconds": round(elapsed, 1),
               "options": {"tail": args.tail, "checkpoints": args.checkpoints, "miss_every": args.miss_every,
                           "seeds": args.seeds, "seed": args.seed, "feed_chars": args.feed_chars},
               "model": model, "sets": summaries}
        text = json.dumps(doc, indent=2)
        if args.json == "-":
            print(text)
        else:
            Path(args.json).write_text(text + "\n")
            print(f"figures written to {args.json}", file=out)


if __name__ == "__main__":
    main()
