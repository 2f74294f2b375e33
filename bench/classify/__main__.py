"""Classify benchmark: embedding backends side by side, with their F1 on the BBC set, and topic scaling.

    .venv/bin/python -m bench.classify [--threads 2] [--articles 384] [--f1-articles 2225] [--backends ...]
        [--levers] [--prefilter] [--json]

Each backend runs in its own child process (so RSS is its own): it embeds ``--articles`` distinct
title+summary texts (from ../shared/eval/dev/bbc_topics.jsonl: the title and the article's first sentences,
~60-90 tokens) at several model batch sizes, then runs the worker's path (embed + score + evidence + Match)
on batches of 64 with 10, 100 and 1,000 topics for articles/s and p50/p99 batch latency, then scores the BBC
set against examples/bbc_topics.toml for F1 (full articles and feed-shaped items). The embedding cache is off:
every text is new. In the default backend's process, its worker path and torch's encode then alternate batch
by batch (``--pair-torch``, the ratio the goal names); ``--levers`` measures each tuning of the ONNX embedder
(token budget per model call, length sorting, token cap, threads, graph optimisation) beside the shipped one;
``--prefilter`` measures the static first pass there too (bench/classify/prefilter.py: share of articles that
skip the transformer, matches lost, F1 delta and speed-up, per topic count).
Target: >= 300 articles/s with 100 topics on the default backend on 2 cores.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
BBC = ROOT.parent / "shared" / "eval" / "dev" / "bbc_topics.jsonl"
BBC_TOPICS = ROOT / "examples" / "bbc_topics.toml"
WORKER_BATCH = 64


def summary_text(row: dict[str, Any]) -> tuple[str, str]:
    sentences = re.split(r"(?<=[.!?])\s+", row["text"].strip())
    summary = " ".join(sentences[:2])[:320]
    return row["title"], summary


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def pct(values: list[float], p: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))] if s else float("nan")


def synthetic_topics(n: int, pool: list[str]) -> list[Any]:
    from wirewatch.records import Topic

    words = ["market", "election", "match", "film", "phone", "court", "storm", "bank", "strike", "vaccine"]
    out = []
    for i in range(n):
        ex = tuple(pool[(i * 7 + k * 13) % len(pool)] for k in range(5))
        out.append(Topic(id=f"t{i:04d}", name=f"Synthetic topic {i}", description=f"News about {pool[i % len(pool)]}",
                         examples=ex, counter_examples=(pool[(i * 11 + 3) % len(pool)],),
                         include_any=(words[i % len(words)],), threshold=0.9))
    return out


def child(backend: str, args: argparse.Namespace) -> dict[str, Any]:
    """Measure one backend in this process; returns the figures."""
    import numpy as np
    from threadpoolctl import threadpool_limits

    from classify.background import headline, shipped_background
    from classify.classifier import Classifier
    from classify.embedder import load_embedder
    from classify.evaluate import Labelled, evaluate
    from classify.model import TopicVectors, fit, name_rules
    from classify.scorer import TopicIndex
    from classify.topics import Doc, KeywordRules, load_topic_file
    from wirewatch.records import Article, utcnow

    threadpool_limits(1, user_api="blas")  # as the worker does
    rows = [json.loads(line) for line in BBC.read_text().splitlines()]
    now = utcnow()
    articles = []
    for i, row in enumerate(rows[: args.articles * 2]):
        title, summary = summary_text(row)
        articles.append(Article(id=f"b{i}", title=title, summary=summary, published_at=now, fetched_at=now,
                                feed_url="bench:"))
    speed_set, topic_pool = articles[: args.articles], [a.text() for a in articles[args.articles:]]
    out: dict[str, Any] = {"backend": backend}
    device = None
    name = backend
    if backend == "torch-cuda":
        name, device = "torch", "cuda"
    t0 = time.perf_counter()
    emb = load_embedder(backend=name, cache_size=0, threads=args.threads, batch_size=16)
    if device:
        emb.inner._model.to(device)  # type: ignore[attr-defined]
    out["load_s"] = time.perf_counter() - t0
    texts = [a.text() for a in speed_set]
    emb.embed(texts[:16])  # warm-up
    out["embed"] = {}
    out["embed_cpu"] = {}
    for bs in args.batch_sizes:
        emb.inner._batch = bs  # type: ignore[attr-defined]
        t0, c0 = time.perf_counter(), time.process_time()
        emb.embed(texts)
        out["embed"][bs] = len(texts) / (time.perf_counter() - t0)
        # Articles per CPU-second of this process: what the backend costs, whatever else runs on the machine.
        out["embed_cpu"][bs] = len(texts) / max(time.process_time() - c0, 1e-9)
        print(f"  {backend}: model batch {bs}: {out['embed'][bs]:.0f} articles/s", file=sys.stderr, flush=True)
    # The worker path and F1 run at the configured model batch: int8 quantizes activations per call, so
    # the batch (its padding, its neighbours) nudges vectors; the figures are those of the shipped setting.
    emb.inner._batch = args.model_batch  # type: ignore[attr-defined]
    out["model_batch"] = args.model_batch

    classifier = Classifier(emb)
    bg = classifier.background
    pool_vecs = emb.embed(topic_pool)
    vec_of = dict(zip(topic_pool, pool_vecs, strict=True))
    heads = sorted({headline(p) for p in topic_pool} - set(topic_pool))
    vec_of.update(zip(heads, emb.embed(heads), strict=True))
    out["topics"] = {}
    paired_index: tuple[int, Any] | None = None
    for n in args.topic_counts:
        topics = synthetic_topics(n, topic_pool)
        t0 = time.perf_counter()
        entries = []
        descs = emb.embed([f"{t.name}. {t.description}" for t in topics])
        for t, desc in zip(topics, descs, strict=True):
            # Example vectors come from the pool already embedded: building 1,000 topics measures the fit,
            # not 6,000 more embeddings.
            tv = TopicVectors(t, desc, np.stack([vec_of[e] for e in t.examples]),
                              np.stack([vec_of[c] for c in t.counter_examples]), KeywordRules(t), name_rules(t),
                              np.stack([vec_of[headline(e)] for e in t.examples]),
                              np.stack([vec_of[headline(c)] for c in t.counter_examples]))
            entries.append((tv, fit(tv, bg)))
        index = TopicIndex(entries, emb.dim)
        build_s = time.perf_counter() - t0
        # Synthetic topics built from BBC articles all look alike next to everyday background news, so at 0.5
        # each would match most articles. Real topics match a sliver of the news: set each threshold at the
        # 99.5th percentile of its scores on the (disjoint) pool, as `eval topics` suggests without labels.
        pool_scores = index.score(pool_vecs, [Doc.of(t) for t in topic_pool]).scores
        index.thresholds = np.percentile(pool_scores, 99.5, axis=0)
        lat: list[float] = []
        score_s = 0.0
        started, cpu_started = time.perf_counter(), time.process_time()
        score_cpu = 0.0
        matches = 0
        for s in range(0, len(speed_set), WORKER_BATCH):
            b0 = time.perf_counter()
            batch = classifier.classify(speed_set[s:s + WORKER_BATCH], index=index)
            lat.append(time.perf_counter() - b0)
            matches += len(batch.matches)
            v = batch.vectors
            s0, sc0 = time.perf_counter(), time.process_time()
            index.score(v, batch.docs)
            score_s += time.perf_counter() - s0
            score_cpu += time.process_time() - sc0
        total = time.perf_counter() - started - score_s  # the extra scoring pass is not part of the path
        cpu = time.process_time() - cpu_started - score_cpu
        if paired_index is None or abs(n - 100) < abs(paired_index[0] - 100):
            paired_index = (n, index)
        out["topics"][n] = {"articles_s": len(speed_set) / total, "p50_ms": pct(lat, 50) * 1000,
                            "p99_ms": pct(lat, 99) * 1000, "score_ms_per_article": score_s / len(speed_set) * 1000,
                            "build_s": build_s, "matches": matches, "articles_cpu_s": len(speed_set) / max(cpu, 1e-9)}
        print(f"  {backend}: {n} topics: {out['topics'][n]['articles_s']:.0f} articles/s", file=sys.stderr, flush=True)

    # The file is grouped by category: a subset takes every k-th row to keep all five.
    bbc_rows = rows[:: max(1, len(rows) // max(args.f1_articles, 1))][: args.f1_articles]
    items = [Labelled(r["id"], r["title"], r["text"], tuple(r["labels"]), True) for r in bbc_rows]
    t0 = time.perf_counter()
    scorer = Classifier(emb, shipped_background(emb))
    bbc_topics = load_topic_file(BBC_TOPICS)
    report = evaluate(scorer, bbc_topics, items)
    # Feed items carry the title and a first sentence, not the article: measured apart, as a user sees them.
    feed = evaluate(scorer, bbc_topics, items, shape="feed")
    out["f1_s"] = time.perf_counter() - t0
    out["f1"] = report.macro["f1"]
    out["best_f1"] = report.macro["best_f1"]
    out["f1_feed"] = feed.macro["f1"]
    out["best_f1_feed"] = feed.macro["best_f1"]
    out["cosine_f1"] = report.macro["cosine_best_f1"]
    out["keyword_f1"] = report.macro["keyword_f1"]
    out["rss_mb"] = rss_mb()
    if args.pair_torch and paired_index is not None:
        out["paired"] = paired(classifier, paired_index, speed_set, args)
    if args.levers and backend.startswith("onnx"):
        out["levers"] = levers(backend, args, speed_set, bbc_rows, f1=(out["f1"], out["f1_feed"]))
    if args.prefilter and args.pair_torch:
        from bench.classify import prefilter

        out["prefilter"] = prefilter.measure(classifier, args)
    return out


def paired(classifier: Any, paired_index: tuple[int, Any], speed_set: list[Any],
           args: argparse.Namespace) -> dict[str, Any]:
    """This backend's worker path against sentence-transformers' torch fp32 encode, alternated in one process.

    Batch by batch (64 articles), the worker path and then torch's encode of the same texts: whatever else
    runs on a shared machine weighs on both alike, so the ratio holds where the absolute rates do not. Torch
    encodes at ``--pair-batch``. Its OpenMP threads are told not to spin after each call
    (``OMP_WAIT_POLICY=PASSIVE``): spinning would bill torch's idle threads to the worker path's CPU time.
    """
    import statistics

    preloaded = "torch" in sys.modules
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    from classify.embedder import SentenceTransformerEmbedder, resolve_model_path

    torch_emb = SentenceTransformerEmbedder(resolve_model_path("all-MiniLM-L6-v2"), threads=args.threads,
                                            batch_size=args.pair_batch)
    texts = [a.text() for a in speed_set]
    torch_emb.embed(texts[:16])
    n, index = paired_index
    ratios, ratios_cpu, ours, theirs = [], [], [], []
    for rnd in range(args.pair_rounds):
        w_ours = c_ours = w_theirs = c_theirs = 0.0
        for s in range(0, len(speed_set), WORKER_BATCH):
            t0, c0 = time.perf_counter(), time.process_time()
            classifier.classify(speed_set[s:s + WORKER_BATCH], index=index)
            t1, c1 = time.perf_counter(), time.process_time()
            torch_emb.embed(texts[s:s + WORKER_BATCH])
            t2, c2 = time.perf_counter(), time.process_time()
            w_ours, c_ours = w_ours + t1 - t0, c_ours + c1 - c0
            w_theirs, c_theirs = w_theirs + t2 - t1, c_theirs + c2 - c1
        ours.append(len(texts) / w_ours)
        theirs.append(len(texts) / w_theirs)
        ratios.append(w_theirs / w_ours)
        ratios_cpu.append(c_theirs / max(c_ours, 1e-9))
        print(f"  paired round {rnd + 1}/{args.pair_rounds}: worker path {ours[-1]:.0f}/s, torch encode "
              f"{theirs[-1]:.0f}/s, x{ratios[-1]:.2f} (x{ratios_cpu[-1]:.2f} per CPU-s)", file=sys.stderr, flush=True)
    return {"topics": n, "rounds": args.pair_rounds, "torch_batch": args.pair_batch,
            "omp_passive": not preloaded, "worker_path_per_s": statistics.median(ours),
            "torch_encode_per_s": statistics.median(theirs), "speedup": statistics.median(ratios),
            "speedup_cpu": statistics.median(ratios_cpu)}


LEVERS: dict[str, dict[str, Any]] = {
    "shipped": {},
    "fixed batch 16, sorted": {"token_budget": None, "batch_size": 16},
    "fixed batch 16, unsorted": {"token_budget": None, "batch_size": 16, "sort_by_length": False},
    "fixed batch 64, sorted": {"token_budget": None, "batch_size": 64},
    "budget 256 tokens": {"token_budget": 256},
    "budget 1024 tokens": {"token_budget": 1024},
    "1 intra-op thread": {"threads": 1},
    "one call at a time on every thread (before)": {"parallel_calls": 1},
    "graph level basic": {"graph_level": "basic"},
    "graph level extended": {"graph_level": "extended"},
    "no token cap (model's 256)": {"token_cap": None},
    "cap 96 tokens": {"token_cap": 96},
}


def levers(backend: str, args: argparse.Namespace, speed_set: list[Any], bbc_rows: list[dict[str, Any]],
           f1: tuple[float, float]) -> dict[str, Any]:
    """Each lever of the ONNX embedder beside the shipped setting, interleaved round by round in this process.

    Speed on feed items (the speed set) and on full articles (title + 600 characters of content, what the
    worker embeds for a full-text entry), in worker batches of 64, per second and per CPU-second (median of
    ``--lever-rounds``); token caps also get their BBC F1 (full and feed-shaped) beside the shipped one's.
    """
    from classify.background import shipped_background
    from classify.classifier import Classifier
    from classify.embedder import CachedEmbedder, resolve_model_path
    from classify.evaluate import Labelled, evaluate
    from classify.onnx_backend import OnnxEmbedder
    from classify.topics import load_topic_file
    from wirewatch.records import Article

    path = resolve_model_path("all-MiniLM-L6-v2")
    embs = {}
    for name, opts in LEVERS.items():
        o = {"threads": args.threads, "batch_size": args.model_batch} | opts
        embs[name] = OnnxEmbedder.from_model(path, name="all-MiniLM-L6-v2", int8=backend == "onnx-int8", **o)
    feed = [a.text() for a in speed_set]
    full = [Article(id=f"f{i}", title=r["title"], summary="", content=r["text"], published_at=a.published_at,
                    fetched_at=a.fetched_at, feed_url="bench:").text(600)
            for i, (r, a) in enumerate(zip(bbc_rows, speed_set, strict=False))][: len(feed)]
    runs: dict[str, dict[str, list[float]]] = {n: {"feed": [], "feed_cpu": [], "full": [], "full_cpu": []}
                                               for n in embs}
    for rnd in range(args.lever_rounds):
        for name, e in embs.items():
            for kind, texts in (("feed", feed), ("full", full)):
                t0, c0 = time.perf_counter(), time.process_time()
                for s in range(0, len(texts), WORKER_BATCH):
                    e.embed(texts[s:s + WORKER_BATCH])
                runs[name][kind].append(len(texts) / (time.perf_counter() - t0))
                runs[name][kind + "_cpu"].append(len(texts) / max(time.process_time() - c0, 1e-9))
        print(f"  levers: round {rnd + 1}/{args.lever_rounds}", file=sys.stderr, flush=True)
    import statistics

    out: dict[str, Any] = {}
    for name, r in runs.items():
        out[name] = {k: statistics.median(v) for k, v in r.items()}
    items = [Labelled(r["id"], r["title"], r["text"], tuple(r["labels"]), True) for r in bbc_rows]
    topics = load_topic_file(BBC_TOPICS)
    for name in [n for n in LEVERS if "token_cap" in LEVERS[n]]:
        emb = CachedEmbedder(embs[name], 0)
        c = Classifier(emb, shipped_background(emb))
        out[name]["f1_delta_full"] = evaluate(c, topics, items).macro["f1"] - f1[0]
        out[name]["f1_delta_feed"] = evaluate(c, topics, items, shape="feed").macro["f1"] - f1[1]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(prog="python -m bench.classify")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--articles", type=int, default=384)
    ap.add_argument("--f1-articles", type=int, default=2225)
    ap.add_argument("--batch-sizes", type=int, nargs="+", default=[8, 16, 32, 64])
    ap.add_argument("--topic-counts", type=int, nargs="+", default=[10, 100, 1000])
    ap.add_argument("--model-batch", type=int, default=None,
                    help="model batch for the worker path and F1 (default: classify.embed_batch_size)")
    ap.add_argument("--backends", nargs="+", default=None)
    ap.add_argument("--levers", action="store_true",
                    help="also measure each lever of the ONNX embedder beside the shipped setting (ONNX backends)")
    ap.add_argument("--lever-rounds", type=int, default=3)
    ap.add_argument("--pair-torch", action=argparse.BooleanOptionalAction, default=True,
                    help="in the default backend's process, alternate its worker path with torch's encode")
    ap.add_argument("--pair-rounds", type=int, default=3)
    ap.add_argument("--pair-batch", type=int, default=16, help="torch's model batch in the paired rounds")
    ap.add_argument("--prefilter", action="store_true",
                    help="also measure the static first pass in the default backend's process")
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout (tables on stderr)")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    from bench.classify import prefilter

    prefilter.add_arguments(ap)
    args = ap.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.model_batch is None:
        from wirewatch.settings import ClassifySettings

        args.model_batch = ClassifySettings().embed_batch_size
    if not BBC.exists():
        sys.exit(f"needs {BBC} (the BBC evaluation set); it is read from ../shared/eval, never copied here")
    if args.child:
        print(json.dumps(child(args.child, args)))
        return

    from bench import machine
    from wirewatch.log import configure

    configure("warning", "console")
    with machine.tables_to_stderr(args.json):
        print(machine.line(), flush=True)
        doc = run_all(args)
    if args.json:
        machine.dump(doc)


def run_all(args: argparse.Namespace) -> dict[str, Any]:
    from classify.embedder import choose_backend

    backends = args.backends
    if backends is None:
        backends = ["torch", "onnx", "onnx-int8"]
        try:
            import torch

            if torch.cuda.is_available():
                backends.append("torch-cuda")
        except ImportError:
            pass
    load_before = os.getloadavg()
    results = []
    for b in backends:
        print(f"{b} ...", file=sys.stderr, flush=True)
        cmd = [sys.executable, "-m", "bench.classify", "--child", b, "--threads", str(args.threads),
               "--articles", str(args.articles), "--f1-articles", str(args.f1_articles),
               "--batch-sizes", *map(str, args.batch_sizes), "--topic-counts", *map(str, args.topic_counts),
               "--model-batch", str(args.model_batch), "--lever-rounds", str(args.lever_rounds),
               *(["--levers"] if args.levers else []), "--pair-rounds", str(args.pair_rounds),
               *(["--prefilter", "--slacks", *map(str, args.slacks), "--bbc-items", str(args.bbc_items),
                  "--speed-articles", str(args.speed_articles), "--rounds", str(args.rounds)]
                 if args.prefilter else []),
               "--pair-batch", str(args.pair_batch),
               *(["--pair-torch"] if args.pair_torch and b == choose_backend("auto") else ["--no-pair-torch"])]
        env = os.environ | {"WIREWATCH_LOG__LEVEL": "warning"}
        proc = subprocess.run(cmd, stdout=subprocess.PIPE, text=True, cwd=ROOT, env=env, check=False)
        if proc.returncode != 0:
            print(f"{b}: failed (exit {proc.returncode})", file=sys.stderr)
            continue
        results.append(json.loads(proc.stdout.strip().splitlines()[-1]))
    load_after = os.getloadavg()
    doc = summary(results, args, load_before, load_after)
    report(results, args, load_before, load_after, doc)
    return doc


def summary(results: list[dict[str, Any]], args: argparse.Namespace, before: tuple[float, ...],
            after: tuple[float, ...]) -> dict[str, Any]:
    """The JSON figures: per backend, and the default backend's ratios to torch fp32 measured in this run.

    ``speedup_vs_torch`` is the goal's ratio: the default backend's worker path (embed + score + evidence +
    Match) with 100 topics (else the closest count) over sentence-transformers' own torch fp32 encode of the
    same texts at its best model batch; ``_cpu`` variants divide per CPU-second instead of per second (steadier
    when other work shares the cores). ``f1_delta_vs_torch`` is the worse of the full-article and feed-item
    deltas in BBC macro-F1 at the topics' thresholds.
    """
    from classify.embedder import choose_backend

    default = choose_backend("auto")
    doc: dict[str, Any] = {"bench": "classify", "default_backend": default, "articles": args.articles,
                           "f1_articles": args.f1_articles, "threads": args.threads, "model_batch": args.model_batch,
                           "load_avg_before": [round(x, 2) for x in before],
                           "load_avg_after": [round(x, 2) for x in after], "backends": results,
                           "speedup_vs_torch": None, "speedup_vs_torch_cpu": None, "speedup_measured": None,
                           "speedup_vs_torch_separate": None, "speedup_vs_torch_separate_cpu": None,
                           "speedup_vs_torch_worker_path": None, "f1_delta_vs_torch": None,
                           "f1_delta_vs_torch_full": None, "f1_delta_vs_torch_feed": None}
    ref = next((r for r in results if r["backend"] == "torch"), None)
    dflt = next((r for r in results if r["backend"] == default), None)
    if not (ref and dflt and dflt["topics"]):
        return doc
    n = min(dflt["topics"], key=lambda k: abs(int(k) - 100))
    doc["worker_topics"] = int(n)
    w = dflt["topics"][n]
    doc["speedup_vs_torch_separate"] = w["articles_s"] / max(ref["embed"].values())
    doc["speedup_vs_torch_separate_cpu"] = w["articles_cpu_s"] / max(ref["embed_cpu"].values())
    pair = dflt.get("paired")
    doc["speedup_vs_torch"] = pair["speedup"] if pair else doc["speedup_vs_torch_separate"]
    doc["speedup_vs_torch_cpu"] = pair["speedup_cpu"] if pair else doc["speedup_vs_torch_separate_cpu"]
    doc["speedup_measured"] = "paired in one process" if pair else "separate processes"
    if n in ref["topics"]:
        doc["speedup_vs_torch_worker_path"] = w["articles_s"] / ref["topics"][n]["articles_s"]
    doc["f1_delta_vs_torch_full"] = dflt["f1"] - ref["f1"]
    doc["f1_delta_vs_torch_feed"] = dflt["f1_feed"] - ref["f1_feed"]
    doc["f1_delta_vs_torch"] = min(doc["f1_delta_vs_torch_full"], doc["f1_delta_vs_torch_feed"])
    if dflt.get("prefilter"):
        from bench.classify import prefilter

        doc["prefilter"] = prefilter.headline(dflt["prefilter"])
    return doc


def report(results: list[dict[str, Any]], args: argparse.Namespace, before: tuple[float, ...],
           after: tuple[float, ...], doc: dict[str, Any]) -> None:
    from classify.embedder import choose_backend

    ref = next((r for r in results if r["backend"] == "torch"), None)
    print()
    if doc["speedup_vs_torch"] is not None:
        print(f"ratios, same run ({doc['default_backend']} = the default backend, against sentence-transformers "
              f"torch fp32):")
        print(f"  worker path with {doc['worker_topics']} topics / torch encode: {doc['speedup_vs_torch']:.2f}x "
              f"per second, {doc['speedup_vs_torch_cpu']:.2f}x per CPU-second (goal >= 4x; "
              f"{doc['speedup_measured']})")
        print(f"  the same from the separate runs below: {doc['speedup_vs_torch_separate']:.2f}x per second, "
              f"{doc['speedup_vs_torch_separate_cpu']:.2f}x per CPU-second")
        if doc["speedup_vs_torch_worker_path"] is not None:
            print(f"  worker path / torch worker path: {doc['speedup_vs_torch_worker_path']:.2f}x")
        print(f"  BBC macro-F1 at threshold minus torch's: full articles {doc['f1_delta_vs_torch_full']:+.3f}, "
              f"feed items {doc['f1_delta_vs_torch_feed']:+.3f} (goal within 0.01)")
    print(f"classify benchmark: {args.articles} title+summary articles, {args.threads} thread(s), "
          f"{os.cpu_count()} CPU(s); load average before {before[0]:.2f}, after {after[0]:.2f}")
    bs_cols = "".join(f"{'b' + str(b):>7}" for b in args.batch_sizes)
    print(f"\nembedding only, articles/s by model batch size (BBC F1 macro over {args.f1_articles} articles, "
          f"5 topics; 'best' = best threshold in hindsight)")
    print(f"{'backend':<11}{bs_cols} {'/CPU-s':>7} {'F1@thr':>7} {'best':>6} {'dF1':>6} {'feedF1':>7} {'dF1':>6} "
          f"{'x fp32':>7} {'RSS MB':>7} {'load s':>7}")
    for r in results:
        best = max(r["embed"].values())
        per_cpu = max(r.get("embed_cpu", {0: 0}).values())
        speed = "".join(f"{v:>7.0f}" for v in r["embed"].values()) + f" {per_cpu:>7.0f}"
        d = r["f1"] - ref["f1"] if ref else float("nan")
        df = r["f1_feed"] - ref["f1_feed"] if ref else float("nan")
        ratio = best / max(ref["embed"].values()) if ref else float("nan")
        print(f"{r['backend']:<11}{speed} {r['f1']:>7.3f} {r['best_f1']:>6.3f} {d:>+6.3f} {r['f1_feed']:>7.3f} "
              f"{df:>+6.3f} {ratio:>7.2f} "
              f"{r['rss_mb']:>7.0f} {r['load_s']:>7.1f}")
    print(f"\nworker path (embed + score + evidence + Match), batches of {WORKER_BATCH} articles, model batch "
          f"{args.model_batch}; F1 above also at model batch {args.model_batch}")
    print(f"{'backend':<11}{'topics':>7}{'art/s':>8}{'/CPU-s':>8}{'p50 ms':>8}{'p99 ms':>8}{'score ms/art':>13}"
          f"{'build s':>8}{'matches/art':>12}")
    for r in results:
        for n, t in r["topics"].items():
            print(f"{r['backend']:<11}{n:>7}{t['articles_s']:>8.0f}{t.get('articles_cpu_s', 0):>8.0f}"
                  f"{t['p50_ms']:>8.0f}{t['p99_ms']:>8.0f}"
                  f"{t['score_ms_per_article']:>13.3f}{t['build_s']:>8.1f}{t['matches'] / args.articles:>12.2f}")
    if ref:
        print(f"\nbaselines on the BBC set (torch fp32 embeddings): cosine alone best F1 {ref['cosine_f1']:.3f}, "
              f"keywords alone {ref['keyword_f1']:.3f}")
        ok = [r for r in results if r["backend"] in ("onnx", "onnx-int8", "torch") and r["f1"] >= ref["f1"] - 0.01]
        fastest = max(ok, key=lambda r: max(r["embed"].values()))
        print(f"fastest CPU backend within 0.01 F1 of torch fp32: {fastest['backend']}; "
              f"'auto' chooses {choose_backend('auto')} here")
    for r in results:
        if not r.get("levers"):
            continue
        ship = r["levers"]["shipped"]
        print(f"\nlevers of the {r['backend']} embedder, each beside the shipped setting in the same process "
              f"(median of {args.lever_rounds} interleaved rounds; worker batches of {WORKER_BATCH}; ratio > 1 = "
              "faster than shipped)")
        print(f"{'lever':<28}{'feed/s':>8}{'/CPU-s':>8}{'x ship':>7}{'full/s':>8}{'/CPU-s':>8}{'x ship':>7}"
              f"{'dF1 full':>9}{'dF1 feed':>9}")
        for name, v in r["levers"].items():
            d1, d2 = v.get("f1_delta_full"), v.get("f1_delta_feed")
            print(f"{name:<28}{v['feed']:>8.0f}{v['feed_cpu']:>8.0f}{v['feed_cpu'] / ship['feed_cpu']:>7.2f}"
                  f"{v['full']:>8.0f}{v['full_cpu']:>8.0f}{v['full_cpu'] / ship['full_cpu']:>7.2f}"
                  f"{'' if d1 is None else format(d1, '+.3f'):>9}{'' if d2 is None else format(d2, '+.3f'):>9}")
    for r in results:
        if r.get("prefilter"):
            from bench.classify import prefilter

            prefilter.report(r["prefilter"])
    print("target: >= 300 articles/s with 100 topics on the default backend (2 cores)")
    print("/CPU-s = articles per CPU-second of the benchmark process (all its threads): the cost of a backend "
          "independent of other load; a dedicated machine gives at most threads x that per second")


if __name__ == "__main__":
    main()
