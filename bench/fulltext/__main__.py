"""Full-text benchmark: BBC articles served as pages behind a headline-only feed, on a local farm (127.0.0.1).

    .venv/bin/python -m bench.fulltext [--articles 400] [--poll-size 10] [--json]

Pages are built at run time from ../shared/eval/dev/bbc_topics.jsonl (never stored here): each article's text
inside a page with navigation, related links and a footer. Figures:

* pages/s and CPU ms per page through ingest's own path (robots, host slots, fetcher, trafilatura);
* extraction alone, trafilatura against jusText (its paragraph classifier, the cheap alternative): CPU ms
  per page and how much of the article's own text comes back (token recall / precision);
* added latency fetched -> produced when a poll holds its articles for their pages (p50/p99 per poll of
  ``--poll-size`` items, bounded by ``full_text_wait_s``), against 0 for produce-first-then-update;
* macro F1 on examples/bbc_topics.toml of headline-only items, and of the same items with their page text.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BBC = ROOT.parent / "shared" / "eval" / "dev" / "bbc_topics.jsonl"
BBC_TOPICS = ROOT / "examples" / "bbc_topics.toml"
_WORD = re.compile(r"\w+")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "unknown CPU"


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))] if s else float("nan")


def overlap(got: str, truth: str) -> tuple[float, float]:
    g, t = _WORD.findall(got.lower()), _WORD.findall(truth.lower())
    if not g or not t:
        return 0.0, 0.0
    common = sum(min(g.count(w), t.count(w)) for w in set(g) & set(t))
    return common / len(t), common / len(g)


def justext_text(body: bytes) -> str:
    import justext

    paras = justext.justext(body, justext.get_stoplist("English"))
    return " ".join(p.text for p in paras if not p.is_boilerplate)


async def fetch_all(site: Any, rows: list[dict[str, Any]], poll_size: int) -> dict[str, Any]:
    from ingest.fetcher import HttpFetcher
    from ingest.fulltext import FullText, MemoryPageCache
    from ingest.hosts import HostSlots
    from wirewatch.records import Article, utcnow
    from wirewatch.settings import IngestSettings

    cfg = IngestSettings(per_host_concurrency=4, full_text_timeout_s=10, full_text="always")
    fetcher = HttpFetcher(cfg, allow=["127.0.0.1"])
    ft = FullText(cfg, fetcher, MemoryPageCache(), slot=HostSlots(cfg.per_host_concurrency).slot)
    now = utcnow()
    arts = [Article(id=f"bbc{i}", url=site.url(f"/a/{i}"), title=r["title"], published_at=now, fetched_at=now,
                    feed_url=site.url("/feed"), feed_id="bench") for i, r in enumerate(rows)]
    await ft.page(Article(id="warm", url=site.url("/a/0"), title="w", published_at=now, fetched_at=now,
                          feed_url="x"))
    held: list[float] = []
    texts: list[str] = []
    t0, c0 = time.perf_counter(), time.process_time()
    for start in range(0, len(arts), poll_size):
        # One poll's new items: the poll holds them until the last page is in (bounded by full_text_wait_s).
        p0 = time.perf_counter()
        pages = await asyncio.gather(*(ft.page(a) for a in arts[start:start + poll_size]))
        held.append(min(time.perf_counter() - p0, cfg.full_text_wait_s))
        texts.extend(p.text for p in pages)
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    await ft.aclose()
    return {"pages_s": len(arts) / wall, "cpu_ms_page": cpu / len(arts) * 1000, "texts": texts,
            "held_p50_ms": pct(held, 50) * 1000, "held_p99_ms": pct(held, 99) * 1000,
            "usable": sum(1 for t in texts if t) / len(texts), "wait_s": cfg.full_text_wait_s}


def extraction(bodies: list[bytes], rows: list[dict[str, Any]]) -> dict[str, Any]:
    from ingest.extract import main_text

    out: dict[str, Any] = {}
    for name, fn in (("trafilatura", lambda b: main_text(b, None)), ("justext", justext_text)):
        c0 = time.process_time()
        texts = [fn(b) for b in bodies]
        cpu = time.process_time() - c0
        rp = [overlap(t, r["text"]) for t, r in zip(texts, rows, strict=True)]
        out[name] = {"cpu_ms_page": cpu / len(bodies) * 1000, "recall": sum(r for r, _ in rp) / len(rp),
                     "precision": sum(p for _, p in rp) / len(rp)}
    return out


def f1s(rows: list[dict[str, Any]], texts: list[str]) -> dict[str, float]:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from classify.background import shipped_background
    from classify.classifier import Classifier
    from classify.embedder import load_embedder
    from classify.evaluate import Labelled, evaluate
    from classify.topics import load_topic_file

    emb = load_embedder(cache_size=0, threads=2, batch_size=16)
    clf = Classifier(emb, shipped_background(emb))
    topics = load_topic_file(BBC_TOPICS)
    base = [Labelled(f"b{i}", r["title"], r["text"], tuple(r["labels"]), True) for i, r in enumerate(rows)]
    paged = [Labelled(f"b{i}", r["title"], t, tuple(r["labels"]), True)
             for i, (r, t) in enumerate(zip(rows, texts, strict=True))]
    out = {}
    for label, items, shape in (("headline", base, "headline"), ("headline+page", paged, "full"),
                                ("feed_teaser", base, "feed")):
        rep = evaluate(clf, topics, items, shape=shape)
        out[label] = float(rep.macro["f1"] or 0.0)
        out[label + "_best"] = float(rep.macro["best_f1"] or 0.0)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.fulltext")
    ap.add_argument("--articles", type=int, default=400)
    ap.add_argument("--poll-size", type=int, default=10)
    ap.add_argument("--no-f1", action="store_true")
    ap.add_argument("--json", action="store_true")
    args = ap.parse_args()
    from bench.fulltext.site import Route, Site, article_page
    from wirewatch.log import configure

    configure("warning", stream=sys.stderr)  # stdout is the figures (or the --json document) alone

    rows = [json.loads(line) for line in BBC.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = rows[:: max(1, len(rows) // args.articles)][: args.articles]  # every k-th: all five categories
    bodies = [article_page(r["title"], r["text"]) for r in rows]
    routes = {f"/a/{i}": Route(body=b) for i, b in enumerate(bodies)}
    routes["/robots.txt"] = Route(body=b"User-agent: *\nDisallow: /private/\n", headers={"Content-Type": "text/plain"})
    with Site(routes) as site:
        fetched = asyncio.run(fetch_all(site, rows, args.poll_size))
    ext = extraction(bodies, rows)
    out: dict[str, Any] = {"cpu": cpu_model(), "cores": os.cpu_count(), "articles": len(rows),
                           "pages_s": fetched["pages_s"], "cpu_ms_page": fetched["cpu_ms_page"],
                           "usable": fetched["usable"], "held_p50_ms": fetched["held_p50_ms"],
                           "held_p99_ms": fetched["held_p99_ms"], "wait_cap_s": fetched["wait_s"],
                           "extraction": ext}
    if not args.no_f1:
        out["f1"] = f1s(rows, fetched["texts"])
    if args.json:
        print(json.dumps(out, indent=2))  # noqa: T201 - a benchmark's output
        return
    p = print  # noqa: T201
    p(f"CPU: {out['cpu']} ({out['cores']} cores); {len(rows)} BBC pages on 127.0.0.1")
    p(f"ingest path: {out['pages_s']:.0f} pages/s, {out['cpu_ms_page']:.1f} CPU ms/page, usable {out['usable']:.1%}")
    p(f"added fetched->produced, held per poll of {args.poll_size}: p50 {out['held_p50_ms']:.0f} ms, "
      f"p99 {out['held_p99_ms']:.0f} ms (cap {out['wait_cap_s']:g} s); produce-first: 0 ms, 2x classify")
    t, j = ext["trafilatura"], ext["justext"]
    p(f"extraction CPU ms/page: trafilatura {t['cpu_ms_page']:.1f}, justext {j['cpu_ms_page']:.1f} "
      f"(ratio {t['cpu_ms_page'] / max(j['cpu_ms_page'], 1e-9):.2f}x); recall {t['recall']:.3f} vs {j['recall']:.3f}, "
      f"precision {t['precision']:.3f} vs {j['precision']:.3f}")
    if "f1" in out:
        f = out["f1"]
        p(f"macro F1 at threshold: headline {f['headline']:.3f} | headline+page {f['headline+page']:.3f} "
          f"(+{f['headline+page'] - f['headline']:.3f}) | feed teaser {f['feed_teaser']:.3f}; best-threshold "
          f"{f['headline_best']:.3f} | {f['headline+page_best']:.3f}")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
