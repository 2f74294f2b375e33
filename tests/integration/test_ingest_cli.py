"""``wirewatch feeds ...`` and ``wirewatch ingest --once`` through the real command, on the real Redis/Kafka."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from ingest_server import FeedServer, rss, static
from test_ingest_faults import _toml
from typer.testing import CliRunner

from wirewatch import bus
from wirewatch.cli import app
from wirewatch.records import Article, decode
from wirewatch.settings import Settings
from wirewatch.stack import free_port

pytestmark = pytest.mark.integration
FEEDS = Path(__file__).resolve().parents[1] / "fixtures" / "feeds"


@pytest.fixture
def cli(make_settings: Callable[..., Settings], tmp_path: Path) -> Callable[..., object]:
    s = make_settings(ingest={"min_interval_s": 1, "max_interval_s": 5})
    bus.ensure_default_topics(s)
    cfg = tmp_path / "cli.toml"
    cfg.write_text(_toml(s, free_port()).replace('format = "json"', 'format = "console"'))
    runner = CliRunner()

    def run(*args: str) -> object:
        return runner.invoke(app, ["--config", str(cfg), "--log-level", "warning", *args])

    return run


def test_parse_prints_json_lines_and_exits_0_when_entries(cli: Callable[..., object]) -> None:
    r = cli("feeds", "parse", str(FEEDS / "rss20.xml"), "--json")
    assert r.exit_code == 0, r.output  # type: ignore[attr-defined]
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith("{")]  # type: ignore[attr-defined]
    arts = [decode(Article, ln) for ln in lines]
    assert [a.title for a in arts] == ["Ceasefire agreed in Aleppo", "Markets rally", "From the future"]


def test_parse_of_a_bozo_feed_with_entries_still_exits_0(cli: Callable[..., object]) -> None:
    r = cli("feeds", "parse", str(FEEDS / "malformed_with_entries.xml"))
    assert r.exit_code == 0 and "First item survives" in r.stdout  # type: ignore[attr-defined]


@pytest.mark.parametrize("content,reason", [
    (b"<html><body>nope</body></html>", "no entries"),
    (b'<?xml version="1.0"?><rss version="2.0"><channel><title>t</title></channel></rss>', "lists none"),
    (b"", "empty"),
])
def test_parse_without_entries_exits_nonzero_with_one_line_reason(
        cli: Callable[..., object], tmp_path: Path, content: bytes, reason: str) -> None:
    f = tmp_path / "feed.xml"
    f.write_bytes(content)
    r = cli("feeds", "parse", str(f))
    assert r.exit_code == 1  # type: ignore[attr-defined]
    err = r.stderr.strip().splitlines()  # type: ignore[attr-defined]
    assert len(err) == 1 and reason in err[0]


def test_parse_missing_file_and_url_fetch(cli: Callable[..., object], server: FeedServer) -> None:
    r = cli("feeds", "parse", "/nonexistent/feed.xml")
    assert r.exit_code == 1 and "cannot read" in r.stderr  # type: ignore[attr-defined]
    server.routes["/f"] = static(rss([{"title": "Over HTTP", "link": "https://x.example/1"}]))
    r = cli("feeds", "parse", server.url("/f"), "--json")
    assert r.exit_code == 0 and "Over HTTP" in r.stdout  # type: ignore[attr-defined]
    r = cli("feeds", "parse", server.url("/missing"))
    assert r.exit_code == 1 and "4xx" in r.stderr  # type: ignore[attr-defined]


def test_add_list_import_export_remove_status_and_ingest_once(
        cli: Callable[..., object], server: FeedServer, tmp_path: Path) -> None:
    server.routes["/a"] = static(rss([{"title": "From A", "link": "https://a.example/1"}]))
    server.routes["/b"] = static(b"", 500)
    r = cli("feeds", "add", server.url("/a"), "--name", "Feed A", "--tag", "world")
    assert r.exit_code == 0, r.output  # type: ignore[attr-defined]
    assert cli("feeds", "add", "file:///etc/passwd").exit_code == 2  # type: ignore[attr-defined]
    opml = tmp_path / "in.opml"
    opml.write_text(f'<opml version="2.0"><body><outline text="B" xmlUrl="{server.url("/b")}"/>'
                    f'<outline text="A again" xmlUrl="{server.url("/a")}"/></body></opml>')
    r = cli("feeds", "import", str(opml))
    assert r.exit_code == 0 and "imported 1 new feed(s) of 2" in r.stdout  # type: ignore[attr-defined]
    r = cli("feeds", "list", "--json")
    listed = [json.loads(ln) for ln in r.stdout.splitlines()]  # type: ignore[attr-defined]
    assert sorted(f["url"] for f in listed) == sorted([server.url("/a"), server.url("/b")])
    out = tmp_path / "out.opml"
    assert cli("feeds", "export", str(out)).exit_code == 0  # type: ignore[attr-defined]
    assert server.url("/a") in out.read_text() and 'category="world"' in out.read_text()

    r = cli("ingest", "--once")
    assert r.exit_code == 0, r.output  # type: ignore[attr-defined]
    assert "new=1" in r.stdout and "5xx" in r.stdout  # type: ignore[attr-defined]
    r = cli("feeds", "status", "--json")
    rows = {row["url"]: row for row in map(json.loads, r.stdout.splitlines())}  # type: ignore[attr-defined]
    assert rows[server.url("/a")]["status"] == "ok" and rows[server.url("/a")]["items_new"] == 1
    assert rows[server.url("/b")]["status"] == "failing" and "HTTP 500" in rows[server.url("/b")]["last_error"]
    assert rows[server.url("/b")]["next_due"] is not None
    r = cli("feeds", "status")
    assert "1 failing" in r.stdout  # type: ignore[attr-defined]

    assert cli("feeds", "remove", server.url("/b")).exit_code == 0  # type: ignore[attr-defined]
    assert cli("feeds", "remove", "nope").exit_code == 1  # type: ignore[attr-defined]
    r = cli("feeds", "list")
    assert server.url("/b") not in r.stdout  # type: ignore[attr-defined]
