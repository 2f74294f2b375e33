"""API benchmark: listing recent matches, topic preview over recent articles, and SSE fan-out.

    .venv/bin/python -m bench.api [--matches 10000] [--seconds 5] [--concurrency 8] [--clients 200]

Starts a private Kafka + Redis (temp dir, free ports), seeds the recent-matches store, runs ``wirewatch api``
as a separate process (so the load generator does not share its interpreter), and prints a table.
Targets (issue 6): p99 < 100 ms listing; preview over 10,000 articles < 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests" / "integration"))


def pct(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    s = sorted(values)
    return s[min(len(s) - 1, int(round(p / 100 * (len(s) - 1))))]


def load(url: str, headers: dict[str, str], seconds: float, concurrency: int,
         make_request: Any) -> tuple[int, list[float], int]:
    lat: list[float] = []
    errors = [0]
    lock = threading.Lock()
    stop = time.monotonic() + seconds

    def worker(i: int) -> None:
        mine: list[float] = []
        with httpx.Client(base_url=url, headers=headers, timeout=30) as c:
            n = 0
            while time.monotonic() < stop:
                method, path, kw = make_request(i, n)
                t0 = time.perf_counter()
                r = c.request(method, path, **kw)
                mine.append(time.perf_counter() - t0)
                if r.status_code != 200:
                    errors[0] += 1
                n += 1
        with lock:
            lat.extend(mine)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(concurrency)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return int(len(lat) / (time.monotonic() - started)), lat, errors[0]


async def fanout(url: str, secret: str, clients: int, events: int, produce: Any, admin: str) -> dict[str, Any]:
    received: list[list[float]] = [[] for _ in range(clients)]
    connected = asyncio.Event()
    opened = [0]
    limits = httpx.Limits(max_connections=clients + 10, max_keepalive_connections=clients + 10)

    async def listen(i: int, client: httpx.AsyncClient) -> None:
        async with client.stream("GET", "/v1/stream", headers={"X-API-Key": secret}) as r:
            opened[0] += 1
            if opened[0] == clients:
                connected.set()
            async for line in r.aiter_lines():
                if line.startswith("data: "):
                    received[i].append(time.time())
                    if len(received[i]) >= events:
                        return

    async with httpx.AsyncClient(base_url=url, timeout=httpx.Timeout(60, connect=30), limits=limits) as client:
        tasks = [asyncio.create_task(listen(i, client)) for i in range(clients)]
        await asyncio.wait_for(connected.wait(), 60)
        for _ in range(100):  # wait until the server registered every stream
            m = (await client.get("/metrics", headers={"X-API-Key": admin})).text
            line = next((ln for ln in m.splitlines() if ln.startswith("wirewatch_api_stream_clients ")), "")
            if line and float(line.split()[1]) >= clients:
                break
            await asyncio.sleep(0.1)
        sent_at = time.time()
        await asyncio.to_thread(produce, events)
        produced = time.time()
        done, pending = await asyncio.wait(tasks, timeout=30)
        for t in pending:
            t.cancel()
    lat = [t - sent_at for r in received for t in r]
    last = max((max(r) for r in received if r), default=sent_at)
    return {"clients": clients, "events": events, "delivered": sum(len(r) for r in received),
            "expected": clients * events, "produce_s": produced - sent_at, "p50": pct(lat, 50),
            "p99": pct(lat, 99), "all_delivered_s": last - sent_at}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--matches", type=int, default=10000)
    ap.add_argument("--articles", type=int, default=10000)
    ap.add_argument("--seconds", type=float, default=5.0)
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--clients", type=int, default=200)
    ap.add_argument("--events", type=int, default=20)
    ap.add_argument("--json", action="store_true", help="print one JSON object on stdout (tables on stderr)")
    args = ap.parse_args()
    from bench import machine

    with machine.tables_to_stderr(args.json):
        print(machine.line(), flush=True)
        doc = bench(args)
    if args.json:
        machine.dump(doc)


def _num(text: str) -> float | None:
    try:
        return float(text)
    except ValueError:
        return None


def bench(args: argparse.Namespace) -> dict[str, Any]:

    from api_support import match

    from wirewatch import bus, stack, state
    from wirewatch.auth import KeyStore
    from wirewatch.log import configure
    from wirewatch.settings import load_settings
    from wirewatch.web.matches import MatchStore

    configure("warning", "console")
    tmp = tempfile.mkdtemp(prefix="ww-bench-api-")
    env_over = {
        "WIREWATCH_DATA_DIR": tmp,
        "WIREWATCH_STACK__KAFKA_PORT": str(stack.free_port()),
        "WIREWATCH_STACK__CONTROLLER_PORT": str(stack.free_port()),
        "WIREWATCH_STACK__REDIS_PORT": str(stack.free_port()),
        "WIREWATCH_REDIS__KEY_PREFIX": "bench:",
        "WIREWATCH_API__PORT": str(stack.free_port()),
        "WIREWATCH_API__RECENT_MATCHES": str(max(args.matches, 100)),
        "WIREWATCH_API__RATE_LIMIT_PER_MINUTE": "100000000",
        "WIREWATCH_API__SSE_QUEUE": "10000",
        "WIREWATCH_API__STREAMS_PER_KEY": "100000",
        "WIREWATCH_CLASSIFY__RECENT_STORE_SIZE": str(max(args.articles, 1)),
    }
    os.environ.update(env_over)
    settings = load_settings(None)
    print(f"starting Kafka and Redis in {tmp} ...", flush=True)
    stack.up(settings)
    server: subprocess.Popen[bytes] | None = None
    try:
        bus.ensure_default_topics(settings)
        r = state.connect(settings)
        keys = KeyStore(r, settings)
        _, admin = keys.create("bench", "admin")
        store = MatchStore(r, settings)
        print(f"seeding {args.matches} matches ...", flush=True)
        batch = [match(f"topic-{i % 10}", f"Story number {i} about things", minutes_ago=i / 10)
                 for i in range(args.matches)]
        for i in range(0, len(batch), 1000):
            store.add(batch[i:i + 1000])
        preview_ready = seed_articles(settings, r, args.articles)
        url = f"http://127.0.0.1:{settings.api.port}"
        from wirewatch.ops.roles import WIREWATCH

        server = subprocess.Popen([*WIREWATCH, "--log-level", "warning", "api"],
                                  env=os.environ.copy(), cwd=ROOT)
        wait_up(url)
        headers = {"X-API-Key": admin}
        rows: list[tuple[str, str, str, str, str]] = []

        def list_req(i: int, n: int) -> tuple[str, str, dict[str, Any]]:
            if n % 2:
                return "GET", "/v1/matches", {"params": {"topic": f"topic-{(i + n) % 10}", "limit": 50}}
            return "GET", "/v1/matches", {"params": {"limit": 50}}

        for conc in (1, args.concurrency):
            print(f"listing matches for {args.seconds}s with {conc} client(s) ...", flush=True)
            rps, lat, errs = load(url, headers, args.seconds, conc, list_req)
            rows.append((f"GET /v1/matches (limit 50), {conc} client(s)", f"{rps}", f"{pct(lat, 50) * 1000:.1f}",
                         f"{pct(lat, 99) * 1000:.1f}", f"{errs}"))

        first = httpx.get(url + "/v1/matches", params={"limit": 50}, headers=headers).json()["next_cursor"]

        def page_req(i: int, n: int) -> tuple[str, str, dict[str, Any]]:
            return "GET", "/v1/matches", {"params": {"limit": 50, "cursor": first}}

        rps, lat, errs = load(url, headers, args.seconds, args.concurrency, page_req)
        rows.append((f"GET /v1/matches (cursor page), {args.concurrency} clients", f"{rps}",
                     f"{pct(lat, 50) * 1000:.1f}", f"{pct(lat, 99) * 1000:.1f}", f"{errs}"))

        if preview_ready:
            body = {"id": "bench", "name": "Earthquakes", "description": "earthquake damage and aftershocks",
                    "examples": ["Strong earthquake shakes the capital"], "threshold": 0.4}
            schema = httpx.get(url + "/openapi.json").json()["paths"]
            if "/v1/topics/preview" in schema:
                def prev_req(i: int, n: int) -> tuple[str, str, dict[str, Any]]:
                    return "POST", "/v1/topics/preview", {"json": body | {"description": f"{body['description']} {n}"}}

                print("topic preview (first call loads the model; not timed) ...", flush=True)
                warm = httpx.post(url + "/v1/topics/preview", json=body, headers=headers, timeout=300)
                print(f"  warm-up: {warm.status_code}, {warm.json().get('articles')} articles scanned", flush=True)
                rps_f, lat, errs = load(url, headers, max(args.seconds, 5.0), 1, prev_req)
                n = len(lat)
                rows.append((f"POST /v1/topics/preview ({args.articles} articles)",
                             f"{n / max(args.seconds, 5.0):.2f}", f"{pct(lat, 50) * 1000:.0f}",
                             f"{pct(lat, 99) * 1000:.0f}", f"{errs}"))
            else:
                rows.append(("POST /v1/topics/preview", "-", "-", "-", "route not installed"))
        else:
            rows.append(("POST /v1/topics/preview", "-", "-", "-", "classify not installed"))

        producer = bus.Producer(settings, client_id="bench-api")
        producer.send_many([bus.Outgoing(settings.kafka.topics.matches, "warm", match("warm-up", "w").to_json())])

        def produce(n: int) -> None:
            live = [match("topic-0", f"Live {k}") for k in range(n)]
            producer.send_many([bus.Outgoing(settings.kafka.topics.matches, m.article.id, m.to_json()) for m in live])

        print(f"SSE fan-out to {args.clients} clients ...", flush=True)
        fo = asyncio.run(fanout(url, admin, args.clients, args.events, produce, admin))
        producer.close()

        ops = [{"operation": name, "req_per_s": _num(a), "p50_ms": _num(b), "p99_ms": _num(c), "errors": d}
               for name, a, b, c, d in rows]
        one, many = ops[0], ops[1]
        scaling = (many["req_per_s"] or 0) / max(one["req_per_s"] or 0, 1e-9)
        p99_ratio = max(o["p99_ms"] or 0 for o in ops[:3]) / 100
        print()
        print(f"ratios, same run: listing req/s at {args.concurrency} clients vs 1 client {scaling:.2f}; worst "
              f"listing p99 / 100 ms target {p99_ratio:.2f}; SSE delivered / expected "
              f"{fo['delivered'] / max(fo['expected'], 1):.3f}")
        doc = {"bench": "api", "operations": ops, "listing_scaling": scaling, "listing_p99_vs_target": p99_ratio,
               "sse": fo}
        print()
        print(f"{'operation':<52} {'req/s':>8} {'p50 ms':>8} {'p99 ms':>8} {'errors':>8}")
        for name, a, b, c, d in rows:
            print(f"{name:<52} {a:>8} {b:>8} {c:>8} {d:>8}")
        print()
        print(f"SSE fan-out: {fo['clients']} clients x {fo['events']} events: delivered {fo['delivered']}"
              f"/{fo['expected']}; produce->receive p50 {fo['p50'] * 1000:.0f} ms, p99 {fo['p99'] * 1000:.0f} ms; "
              f"all delivered {fo['all_delivered_s'] * 1000:.0f} ms after the first produce "
              f"({fo['delivered'] / max(fo['all_delivered_s'], 1e-9):.0f} events/s)")
        print("targets: listing p99 < 100 ms; preview over 10,000 articles < 1 s")
    finally:
        if server is not None:
            server.terminate()
            try:
                server.wait(10)
            except subprocess.TimeoutExpired:
                server.kill()
        stack.down(settings)
    return doc


def seed_articles(settings: Any, client: Any, n: int) -> bool:
    """Fill classify's recent-articles store (random unit vectors: scoring cost does not depend on values)."""
    try:
        from classify.recent import RecentStore
    except ImportError:
        return False
    import numpy as np
    from api_support import article

    print(f"seeding {n} recent articles ...", flush=True)
    store = RecentStore(client, settings, size=n)
    rng = np.random.default_rng(7)
    for start in range(0, n, 1000):
        arts = [article(f"Article {i}: {'earthquake damage' if i % 50 == 0 else 'market news'} report")
                for i in range(start, min(n, start + 1000))]
        vecs = rng.standard_normal((len(arts), 384)).astype(np.float32)
        vecs /= np.linalg.norm(vecs, axis=1, keepdims=True)
        store.add(arts, vecs)
    return True


def wait_up(url: str) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz", timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise SystemExit("the API did not start within 60 s")


if __name__ == "__main__":
    main()
