"""The static-embedding first pass (classify/prefilter.py) measured against the full classifier.

    HF_HUB_OFFLINE=1 .venv/bin/python -m bench.classify.prefilter [--slacks 0 0.5 1 2] [--speed-articles 256] [--json]

(also run by ``python -m bench.classify --prefilter`` in the default backend's process). Three topic sets, each
on its own stream: the Kobani topic on the real headline stream (../shared/eval/dev/kobani_window.jsonl), the
five BBC desk topics on feed-shaped BBC items (title + first sentence), and two sets of 100 topics on both
streams together: those six with 94 synthetic ones, and the Kobani topic with 99 synthetic ones (narrow topics
only, no broad desk). For each slack: the share of articles that skip the transformer,
the share of the full classifier's matches lost (the same classifier on the same stream, desk rules applied),
with margins per topic as classify/prefilter.py calibrates them plus each ``--slacks`` value,
and the labelled macro-F1 minus the full classifier's. Then, batch by batch in one process (64 articles),
three paths on the same texts: the worker path with the first pass, without it, and sentence-transformers'
torch fp32 encode; their ratios are what to quote.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
DEV = ROOT.parent / "shared" / "eval" / "dev"
KOBANI_TOPICS = ROOT / "examples" / "kobani" / "topics.toml"
BBC_TOPICS = ROOT / "examples" / "bbc_topics.toml"
BATCH = 64


def _streams(bbc_items: int) -> dict[str, tuple[list[Any], list[Any]]]:
    """Stream name -> (labelled items, articles in the shape a feed delivers them)."""
    from classify.evaluate import load_labelled

    kobani = load_labelled(DEV / "kobani_window.jsonl")
    rows = load_labelled(DEV / "bbc_topics.jsonl")
    bbc = rows[:: max(1, len(rows) // max(bbc_items, 1))][:bbc_items]  # grouped by category: keep all five
    return {"kobani": (kobani, [it.article("headline") for it in kobani]),
            "bbc-feed": (bbc, [it.article("feed") for it in bbc])}


def _topic_sets(classifier: Any, streams: dict[str, Any]) -> dict[str, tuple[list[Any], str]]:
    """Topic set name -> (topics, stream name).

    The synthetic topics take their examples from BBC articles outside the stream, and their thresholds sit at
    the 99.5th percentile of their full scores on further BBC articles (outside the stream and the examples: a
    topic's own examples would top the percentile), so that each matches a sliver of the news as real topics do.
    """
    import numpy as np

    from bench.classify.__main__ import BBC, summary_text, synthetic_topics
    from classify.topics import Doc, load_topic_file

    kobani, bbc = load_topic_file(KOBANI_TOPICS), load_topic_file(BBC_TOPICS)
    rows = [json.loads(line) for line in BBC.read_text().splitlines()]
    used = {it.id for it in streams["bbc-feed"][0]}
    rest = ["\n".join(summary_text(r)) for r in rows if r["id"] not in used]
    pool, calibration = rest[1::3][:400], rest[2::3][:400]
    synth = synthetic_topics(99, pool)
    index = classifier.index_for(synth)
    pool_scores = index.score(classifier.embed(calibration), [Doc.of(t) for t in calibration]).scores
    thresholds = np.percentile(pool_scores, 99.5, axis=0)
    synth = [t.model_copy(update={"threshold": round(float(x), 4)}) for t, x in zip(synth, thresholds, strict=True)]
    return {"1 topic (Kobani)": (kobani, "kobani"), "5 topics (BBC desk)": (bbc, "bbc-feed"),
            "100: desk+Kobani+94": (kobani + bbc + synth[:94], "both"),
            "100: Kobani+99 narrow": (kobani + synth, "both")}


def _macro_f1(passed: Any, truth: Any, cols: list[int]) -> float:
    f1s = []
    for c in cols:
        tp = float((passed[:, c] & truth[:, c]).sum())
        denom = float(passed[:, c].sum() + truth[:, c].sum())
        f1s.append(2 * tp / denom if denom else 0.0)
    return sum(f1s) / len(f1s) if f1s else float("nan")


def quality(classifier: Any, first: Any, topics: list[Any], items: list[Any], articles: list[Any],
            slacks: list[float]) -> dict[str, Any]:
    """Skip share, matches lost and F1 delta per slack, for one topic set on one stream."""
    import numpy as np

    from classify.topics import Doc

    texts = [classifier.text_of(a) for a in articles]
    index = classifier.index_for(topics)
    scores = index.score(classifier.embed(texts), [Doc.of(t) for t in texts])
    passed = np.zeros(scores.scores.shape, dtype=bool)
    for row, col in scores.passed(index.thresholds):
        passed[row, col] = True
    alone = (scores.scores >= index.thresholds[None, :]) & ~scores.excluded  # each topic on its own, as F1 is
    t0 = time.process_time()
    static, excluded = first.scores(texts, topics)
    first_cpu_s = time.process_time() - t0
    truth = np.array([[t.id in it.labels for t in index.topics] for it in items], dtype=bool)
    labelled = [c for c in range(len(index.topics)) if truth[:, c].any()]
    out: dict[str, Any] = {"articles": len(texts), "topics": len(topics), "full_matches": int(passed.sum()),
                           "articles_matched": int(passed.any(axis=1).sum()), "labelled_topics": len(labelled),
                           "first_pass_per_cpu_s": len(texts) / max(first_cpu_s, 1e-9), "margins": {}}
    f1_full = _macro_f1(alone, truth, labelled)
    out["f1"] = f1_full
    for m in slacks:
        keep = ((static >= first.gate(index, m)[None, :]) & ~excluded).any(axis=1)
        lost = passed & ~keep[:, None]
        per_topic = lost.sum(axis=0)
        worst = int(np.argmax(per_topic)) if len(per_topic) else 0
        out["margins"][m] = {
            "skipped": float(1 - keep.mean()), "lost": int(lost.sum()),
            "lost_share": float(lost.sum() / max(passed.sum(), 1)),
            "worst_topic": index.topics[worst].id if per_topic.any() else None,
            "worst_topic_lost": int(per_topic[worst]) if len(per_topic) else 0,
            "f1_delta": _macro_f1(alone & keep[:, None], truth, labelled) - f1_full if labelled else None,
        }
    return out


def speed(classifier: Any, first: Any, torch_emb: Any, topics: list[Any], articles: list[Any],
          rounds: int) -> dict[str, Any]:
    """With the first pass, without it, and torch's encode, alternated batch by batch on the same texts."""
    index = classifier.index_for(topics)
    first.index_for(topics)
    texts = [classifier.text_of(a) for a in articles]
    keys = ("first_pass", "worker", "torch")
    wall: dict[str, list[float]] = {k: [] for k in keys}
    cpu: dict[str, list[float]] = {k: [] for k in keys}
    for _ in range(rounds):
        w = dict.fromkeys(keys, 0.0)
        c = dict.fromkeys(keys, 0.0)
        for s in range(0, len(articles), BATCH):
            batch, batch_texts = articles[s:s + BATCH], texts[s:s + BATCH]
            for k in keys:
                t0, c0 = time.perf_counter(), time.process_time()
                if k == "first_pass":
                    mask = first.keep(batch_texts, index)
                    classifier.classify([a for a, keep in zip(batch, mask, strict=True) if keep], index=index)
                elif k == "worker":
                    classifier.classify(batch, index=index)
                else:
                    torch_emb.embed(batch_texts)
                w[k] += time.perf_counter() - t0
                c[k] += time.process_time() - c0
        for k in keys:
            wall[k].append(w[k])
            cpu[k].append(c[k])

    def ratio(a: str, b: str, d: dict[str, list[float]]) -> float:
        return statistics.median(x / max(y, 1e-9) for x, y in zip(d[b], d[a], strict=True))

    return {"articles": len(articles), "rounds": rounds,
            "first_pass_per_s": len(articles) / statistics.median(wall["first_pass"]),
            "worker_per_s": len(articles) / statistics.median(wall["worker"]),
            "torch_per_s": len(articles) / statistics.median(wall["torch"]),
            "speedup_vs_torch": ratio("first_pass", "torch", wall),
            "speedup_vs_torch_cpu": ratio("first_pass", "torch", cpu),
            "worker_vs_torch": ratio("worker", "torch", wall),
            "worker_vs_torch_cpu": ratio("worker", "torch", cpu),
            "speedup_vs_worker": ratio("first_pass", "worker", wall),
            "speedup_vs_worker_cpu": ratio("first_pass", "worker", cpu)}


def measure(classifier: Any, args: argparse.Namespace) -> dict[str, Any]:
    """Every figure of this bench for ``classifier`` (the default backend's, embedding cache off)."""
    from classify.embedder import SentenceTransformerEmbedder, resolve_model_path
    from classify.prefilter import FirstPass, distilled

    t0 = time.perf_counter()
    first = FirstPass(distilled())
    out: dict[str, Any] = {"static_model": first.static.name, "static_dim": first.static.dim,
                           "load_s": time.perf_counter() - t0, "default_slack": first.slack, "sets": {}}
    streams = _streams(args.bbc_items)
    streams["both"] = (streams["kobani"][0] + streams["bbc-feed"][0], streams["kobani"][1] + streams["bbc-feed"][1])
    sets = _topic_sets(classifier, streams)
    for name, (topics, stream) in sets.items():
        items, articles = streams[stream]
        out["sets"][name] = {"stream": stream, **quality(classifier, first, topics, items, articles, args.slacks)}
        print(f"  first pass, {name}: quality measured", file=sys.stderr, flush=True)
    if args.speed_articles:
        os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
        torch_emb = SentenceTransformerEmbedder(resolve_model_path("all-MiniLM-L6-v2"), threads=args.threads,
                                                batch_size=16)
        torch_emb.embed(["warm-up"])
        for name, (topics, stream) in sets.items():
            articles = streams[stream][1]
            step = max(1, len(articles) // args.speed_articles)  # spread over the stream, not its first hours
            out["sets"][name]["speed"] = speed(classifier, first, torch_emb, topics,
                                               articles[::step][: args.speed_articles], args.rounds)
            print(f"  first pass, {name}: speed measured", file=sys.stderr, flush=True)
    return out


def headline(doc: dict[str, Any]) -> dict[str, Any]:
    """Per topic set, the figures at the shipped slack: ``skipped``, ``lost_share``, ``f1_delta`` and the
    paired ``speedup_vs_torch`` (worker path with the first pass over torch's encode) and ``speedup_vs_worker``."""
    out: dict[str, Any] = {"slack": doc["default_slack"], "sets": {}}
    for name, s in doc["sets"].items():
        at = next((v for k, v in s["margins"].items() if float(k) == float(doc["default_slack"])), None)
        row = {k: at[k] for k in ("skipped", "lost_share", "f1_delta")} if at else {}
        row["topics"] = s["topics"]
        for k in ("speedup_vs_torch", "speedup_vs_torch_cpu", "worker_vs_torch", "speedup_vs_worker"):
            row[k] = s.get("speed", {}).get(k)
        out["sets"][name] = row
    return out


def report(doc: dict[str, Any]) -> None:
    print(f"\nfirst pass ({doc['static_model']}, {doc['static_dim']} dims; shipped slack {doc['default_slack']} "
          "logits over each topic's calibrated gap): skipped = share of articles that skip the transformer; "
          "lost = share of the full classifier's matches on the same stream that the first pass drops")
    print(f"{'topic set':<22}{'stream':>10}{'arts':>6}{'matches':>8}{'slack':>7}{'skipped':>8}{'lost':>6}"
          f"{'lost %':>7}{'dF1':>7}  worst topic")
    for name, s in doc["sets"].items():
        for m, r in s["margins"].items():
            d = "" if r["f1_delta"] is None else format(r["f1_delta"], "+.3f")
            print(f"{name:<22}{s['stream']:>10}{s['articles']:>6}{s['full_matches']:>8}{float(m):>7.1f}"
                  f"{r['skipped']:>8.1%}{r['lost']:>6}{r['lost_share']:>7.2%}{d:>7}  "
                  f"{r['worst_topic'] or '-'} {r['worst_topic_lost'] or ''}")
    rows = [(n, s["speed"]) for n, s in doc["sets"].items() if "speed" in s]
    if rows:
        print(f"\nbatch by batch in one process ({BATCH} articles, shipped slack): ratios per second (per CPU-second)")
        print(f"{'topic set':<22}{'with/torch':>16}{'without/torch':>16}{'with/without':>16}{'with/s':>8}"
              f"{'without/s':>10}{'torch/s':>8}")
        for n, v in rows:
            print(f"{n:<22}{v['speedup_vs_torch']:>8.2f} ({v['speedup_vs_torch_cpu']:.2f})"
                  f"{v['worker_vs_torch']:>8.2f} ({v['worker_vs_torch_cpu']:.2f})"
                  f"{v['speedup_vs_worker']:>8.2f} ({v['speedup_vs_worker_cpu']:.2f})"
                  f"{v['first_pass_per_s']:>8.0f}{v['worker_per_s']:>10.0f}{v['torch_per_s']:>8.0f}")


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--slacks", type=float, nargs="+", default=[0.0, 0.5, 1.0, 2.0],
                    help="first-pass slacks to measure: logits added to each topic's calibrated margin")
    ap.add_argument("--bbc-items", type=int, default=400, help="feed-shaped BBC items in the BBC stream")
    ap.add_argument("--speed-articles", type=int, default=256,
                    help="articles per stream in the paired rounds (0: none)")
    ap.add_argument("--rounds", type=int, default=3, help="paired rounds (median)")


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.classify.prefilter")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout (tables on stderr)")
    add_arguments(ap)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if not (DEV / "kobani_window.jsonl").exists():
        sys.exit(f"needs {DEV} (the dev sets); they are read from ../shared/eval, never copied here")
    from threadpoolctl import threadpool_limits

    from bench import machine
    from classify.classifier import Classifier
    from classify.embedder import choose_backend, load_embedder
    from wirewatch.log import configure

    configure("warning", "console")
    threadpool_limits(1, user_api="blas")  # as the worker does
    with machine.tables_to_stderr(args.json):
        print(machine.line(), flush=True)
        backend = choose_backend("auto")
        classifier = Classifier(load_embedder(backend=backend, cache_size=0, threads=args.threads, batch_size=16))
        doc = {"bench": "classify.prefilter", "backend": backend, "load_avg_before": list(os.getloadavg()),
               **measure(classifier, args)}
        doc["load_avg_after"] = list(os.getloadavg())
        doc["headline"] = headline(doc)
        report(doc)
    if args.json:
        machine.dump(doc)


if __name__ == "__main__":
    main()
