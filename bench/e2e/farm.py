"""The end-to-end benchmark's feed farm: many RSS feeds on 127.0.0.1, items appearing on a schedule.

Each item is given to one feed (round robin) and an appearance time; a feed serves the newest ``Farm.WINDOW``
items that have appeared, newest first, with an ETag (``304`` when unchanged), so the real ingest worker polls
it as it would a publisher. Items come from ../shared/eval/dev/bbc_topics.jsonl when present (title and first
sentences, read at run time, never copied into the repository), else from generated sentences.
"""

from __future__ import annotations

import bisect
import json
import math
import random
import re
import threading
import time
from dataclasses import dataclass
from email.utils import formatdate
from html import escape
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

BBC = Path(__file__).resolve().parents[3] / "shared" / "eval" / "dev" / "bbc_topics.jsonl"
WORDS = ("ministry harbour election drought vaccine pipeline bridge strike tariff festival satellite court railway "
         "budget league striker album premiere chip software merger shares inflation parliament minister").split()


@dataclass(frozen=True)
class Item:
    """One story the farm will publish: ``n`` is unique within a run."""

    n: int
    title: str
    summary: str


def load_items(n: int, seed: int = 11) -> list[Item]:
    """``n`` distinct items: BBC title + first two sentences when the set is there, else generated text."""
    rows: list[tuple[str, str]] = []
    if BBC.is_file():
        seen: set[str] = set()
        for line in BBC.read_text().splitlines():
            r = json.loads(line)
            sentences = re.split(r"(?<=[.!?])\s+", r["text"].strip())
            row = (r["title"], " ".join(sentences[:2])[:320])
            # The set repeats some articles word for word; a repeat would fold into the first one's story
            # (one alert per story), and the benchmark counts each item as its own story.
            if row[0].lower() not in seen and row[1].lower() not in seen:
                seen.update((row[0].lower(), row[1].lower()))
                rows.append(row)
        random.Random(seed).shuffle(rows)
    rng = random.Random(seed)
    out = []
    for i in range(n):
        if i < len(rows):
            title, summary = rows[i]
        else:
            title = " ".join(rng.sample(WORDS, 6)).capitalize()
            summary = " ".join(rng.sample(WORDS, 20)).capitalize() + "."
        # Reused rows (n larger than the set) get a marker: every item is a distinct text and URL.
        out.append(Item(i, title if i < len(rows) else f"{title} ({i})", summary))
    return out


def feeds_for(items: int, feeds: int | None = None, least: int = 30) -> int:
    """How many feeds a backlog of ``items`` released at once needs: ``feeds`` if given, else at least ``least``
    and enough that every item fits in some feed's window (an item pushed out of it is never fetched).

    Raises:
        ValueError: when ``feeds`` is given and too few for the backlog.
    """
    need = math.ceil(items / Farm.WINDOW)
    if feeds is None:
        return max(least, need)
    if feeds < need:
        raise ValueError(f"{feeds} feeds show at most {feeds * Farm.WINDOW} items at once "
                         f"({Farm.WINDOW} each); a backlog of {items} needs at least {need}")
    return feeds


class Farm:
    """``feeds`` feeds over ``items``; after :meth:`release`, item i appears at ``start + i / rate`` (all at once
    when rate is 0)."""

    # A feed carries its newest 50 items, as publishers' feeds carry 10 to 50.
    WINDOW = 50

    def __init__(self, items: list[Item], feeds: int, rate: float) -> None:
        self.feeds = feeds
        self.items = items
        self.rate = rate
        self.appear: dict[int, float] = {}
        self.per_feed: list[list[tuple[float, Item]]] = [[] for _ in range(feeds)]
        self.times: list[list[float]] = [[] for _ in range(feeds)]
        self.served = {"200": 0, "304": 0}
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(target=self._httpd.serve_forever, name="e2e-farm", daemon=True)

    @property
    def port(self) -> int:
        return int(self._httpd.server_address[1])

    def url(self, i: int) -> str:
        return f"http://127.0.0.1:{self.port}/f/{i}"

    def release(self, start: float) -> None:
        """Schedule the items from ``start`` on (before this, every feed is empty)."""
        per_feed: list[list[tuple[float, Item]]] = [[] for _ in range(self.feeds)]
        for it in self.items:
            t = start + (it.n / self.rate if self.rate > 0 else 0.0)
            self.appear[it.n] = t
            per_feed[it.n % self.feeds].append((t, it))
        self.per_feed, self.times = per_feed, [[t for t, _ in f] for f in per_feed]

    def start(self) -> Farm:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()

    def body(self, i: int, now: float) -> tuple[str, bytes]:
        k = bisect.bisect_right(self.times[i], now)
        visible = self.per_feed[i][max(0, k - self.WINDOW):k]
        etag = f'"{i}-{k}"'
        parts = [f'<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel><title>Farm {i}</title>'
                 f"<link>https://e2e{i}.example/</link>"]
        for t, it in reversed(visible):
            parts.append(f"<item><title>{escape(it.title)}</title><link>https://e2e{i}.example/story/{it.n}</link>"
                         f"<guid>e2e-{it.n}</guid><pubDate>{formatdate(t, usegmt=True)}</pubDate>"
                         f"<description>{escape(it.summary)}</description></item>")
        parts.append("</channel></rss>")
        return etag, "".join(parts).encode()

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        farm = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def do_GET(self) -> None:  # noqa: N802
                try:
                    i = int(self.path.rsplit("/", 1)[-1])
                    etag, body = farm.body(i, time.time())
                except (ValueError, IndexError):
                    self.send_response(404)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                if self.headers.get("If-None-Match") == etag:
                    with farm._lock:
                        farm.served["304"] += 1
                    self.send_response(304)
                    self.send_header("ETag", etag)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                with farm._lock:
                    farm.served["200"] += 1
                self.send_response(200)
                self.send_header("Content-Type", "application/rss+xml")
                self.send_header("ETag", etag)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *args: object) -> None:
                pass

        return Handler
