"""A feed farm on 127.0.0.1: N RSS feeds of 50 items behind one small asyncio HTTP/1.1 server.

``GET /f/<i>`` serves feed ``i`` with an ETag (``304`` when ``If-None-Match`` matches). After
``GET /_start?rate=R`` the farm publishes R new items per second, each to a random feed, and stamps the
appearance time into the item's description (``appeared=<unix seconds>``) so the bench can measure
appearance-to-Kafka latency. ``GET /_stats`` returns counters as JSON.

Run: ``python -m bench.ingest.farm --feeds 10000 --port 8765``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import time
from email.utils import formatdate

ITEMS = 50


class Farm:
    def __init__(self, feeds: int, seed: int = 7) -> None:
        self.n = feeds
        self.version = [0] * feeds
        self.published: dict[int, list[tuple[int, float]]] = {}
        self.rng = random.Random(seed)
        self.base = time.time() - 3600 * ITEMS
        self.rate = 0.0
        self.count = {"200": 0, "304": 0, "new_items": 0}

    def items(self, i: int) -> list[tuple[int, float]]:
        extra = self.published.get(i, [])
        initial = [(n, self.base + 3600 * n) for n in range(ITEMS)]
        return (initial + extra)[-ITEMS:]

    def body(self, i: int) -> bytes:
        parts = [f'<?xml version="1.0" encoding="utf-8"?>\n<rss version="2.0"><channel><title>Farm feed {i}</title>'
                 f"<link>https://farm{i % 97}.example/</link><ttl>1</ttl>"]
        for n, t in reversed(self.items(i)):
            parts.append(
                f"<item><title>Farm {i} story {n}: officials announce measures after talks</title>"
                f"<link>https://farm{i % 97}.example/{i}/story-{n}?utm_source=rss</link>"
                f"<guid>farm-{i}-{n}</guid><pubDate>{formatdate(t, usegmt=True)}</pubDate>"
                f"<description>&lt;p&gt;Story {n} of feed {i}. appeared={t:.3f} Lorem ipsum dolor sit amet, "
                f"consectetur adipiscing elit, sed do eiusmod tempor incididunt ut labore.&lt;/p&gt;</description>"
                f"</item>")
        parts.append("</channel></rss>")
        return "".join(parts).encode()

    def publish_one(self) -> None:
        i = self.rng.randrange(self.n)
        items = self.published.setdefault(i, [])
        n = ITEMS + len(items)
        items.append((n, time.time()))
        del items[:-ITEMS]
        self.version[i] += 1
        self.count["new_items"] += 1

    async def publisher(self) -> None:
        while True:
            if self.rate <= 0:
                await asyncio.sleep(0.1)
                continue
            self.publish_one()
            await asyncio.sleep(self.rng.expovariate(self.rate))

    def respond(self, path: str, inm: str | None) -> tuple[int, bytes, dict[str, str]]:
        if path.startswith("/_start"):
            self.rate = float(path.partition("rate=")[2] or "1")
            return 200, b"started", {}
        if path.startswith("/_stats"):
            return 200, json.dumps(self.count).encode(), {}
        if not path.startswith("/f/"):
            return 404, b"", {}
        try:
            i = int(path[3:])
        except ValueError:
            return 404, b"", {}
        if not 0 <= i < self.n:
            return 404, b"", {}
        etag = f'"{i}-{self.version[i]}"'
        if inm == etag:
            self.count["304"] += 1
            return 304, b"", {"ETag": etag}
        self.count["200"] += 1
        return 200, self.body(i), {"ETag": etag, "Content-Type": "application/rss+xml; charset=utf-8"}


class _Http(asyncio.Protocol):
    def __init__(self, farm: Farm) -> None:
        self.farm = farm
        self.buf = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while b"\r\n\r\n" in self.buf:
            head, _, self.buf = self.buf.partition(b"\r\n\r\n")
            lines = head.decode("latin-1").split("\r\n")
            parts = lines[0].split(" ")
            path = parts[1] if len(parts) > 1 else "/"
            inm = None
            for line in lines[1:]:
                name, _, value = line.partition(":")
                if name.strip().lower() == "if-none-match":
                    inm = value.strip()
            status, body, headers = self.farm.respond(path, inm)
            reason = {200: "OK", 304: "Not Modified", 404: "Not Found"}[status]
            out = [f"HTTP/1.1 {status} {reason}", f"Content-Length: {len(body)}"]
            out += [f"{k}: {v}" for k, v in headers.items()]
            assert self.transport is not None
            self.transport.write(("\r\n".join(out) + "\r\n\r\n").encode() + body)


async def serve(feeds: int, port: int) -> None:
    farm = Farm(feeds)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Http(farm), "127.0.0.1", port, backlog=1024)
    asyncio.create_task(farm.publisher())
    async with server:
        await server.serve_forever()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--feeds", type=int, default=10000)
    ap.add_argument("--port", type=int, required=True)
    args = ap.parse_args()
    try:
        asyncio.run(serve(args.feeds, args.port))
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
