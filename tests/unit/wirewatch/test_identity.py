"""Article identity and URL canonicalization: properties that dedup relies on."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from wirewatch.identity import article_id, canonical_url

segment = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-._~%20", min_size=0, max_size=12)
hosts = st.sampled_from(["Example.COM", "news.example.org", "BBC.co.uk", "127.0.0.1", "xn--bcher-kva.example"])
params = st.lists(
    st.tuples(
        st.sampled_from(["id", "page", "q", "utm_source", "utm_medium", "fbclid", "gclid", "x"]),
        st.text(alphabet="abc123", max_size=5),
    ),
    max_size=5,
)


def build(scheme: str, host: str, port: str, path: list[str], query: list[tuple[str, str]], frag: str) -> str:
    q = "&".join(f"{k}={v}" for k, v in query)
    return f"{scheme}://{host}{port}/{'/'.join(path)}" + (f"?{q}" if q else "") + (f"#{frag}" if frag else "")


urls = st.builds(
    build,
    st.sampled_from(["http", "https", "HTTP", "HttpS"]),
    hosts,
    st.sampled_from(["", ":80", ":443", ":8080"]),
    st.lists(segment, max_size=4),
    params,
    st.text(alphabet="abc", max_size=4),
)


@given(urls)
def test_canonical_url_is_idempotent(url: str) -> None:
    once = canonical_url(url)
    assert canonical_url(once) == once


@given(urls)
def test_canonical_url_drops_tracking_fragment_and_case(url: str) -> None:
    c = canonical_url(url)
    assert "utm_" not in c and "fbclid" not in c and "gclid" not in c and "#" not in c
    assert c.split("://")[0] in ("http", "https")
    host = c.split("://")[1].split("/")[0]
    assert host == host.lower()


@given(urls, st.sampled_from(["utm_source=rss", "utm_campaign=x&fbclid=abc", "gclid=1"]))
def test_tracking_parameters_do_not_change_identity(url: str, tracking: str) -> None:
    base, _, frag = url.partition("#")
    joined = base + ("&" if "?" in base else "?") + tracking
    assert article_id(url=joined, feed_url="https://f/") == article_id(url=url, feed_url="https://f/")


@given(urls)
def test_http_https_flip_keeps_identity(url: str) -> None:
    flipped = "https" + url[url.index(":") :] if url.lower().startswith("http:") else "http" + url[url.index(":") :]
    a = article_id(url=url, feed_url="https://f/")
    b = article_id(url=flipped.replace(":443", "").replace(":80", ""), feed_url="https://f/")
    if ":443" not in url and ":80" not in url:
        assert a == b


@pytest.mark.parametrize(
    ("raw", "canon"),
    [
        ("HTTPS://Example.COM:443/a/b?utm_source=x&id=3#top", "https://example.com/a/b?id=3"),
        ("http://example.com:80", "http://example.com/"),
        ("http://example.com:8080/x?", "http://example.com:8080/x"),
        ("https://example.com/a%2fb?q=a%20b&fbclid=Z", "https://example.com/a/b?q=a%20b"),
        ("https://example.com/p?b=2&a=1", "https://example.com/p?b=2&a=1"),
    ],
)
def test_canonical_examples(raw: str, canon: str) -> None:
    assert canonical_url(raw) == canon


@pytest.mark.parametrize(
    "bad", ["file:///etc/passwd", "/relative/path", "ftp://x/y", "javascript:alert(1)", "https://"]
)
def test_non_http_urls_are_refused(bad: str) -> None:
    with pytest.raises(ValueError):
        canonical_url(bad)


def test_identity_fallbacks() -> None:
    by_guid = article_id(url=None, feed_url="https://f.example/rss", guid="tag:x,2016:1")
    assert by_guid == article_id(url="not a url", feed_url="https://F.example/rss", guid=" tag:x,2016:1 ")
    by_title = article_id(url=None, feed_url="https://f.example/rss", title="A  Title", published="2016-12-13")
    assert by_title == article_id(url=None, feed_url="https://f.example/rss", title="a title", published="2016-12-13")
    assert len({by_guid, by_title}) == 2
    with pytest.raises(ValueError, match="no link, GUID or title"):
        article_id(url=None, feed_url="https://f.example/rss")


@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40))
def test_different_guids_give_different_ids(a: str, b: str) -> None:
    if a.strip() != b.strip() and a.strip() and b.strip():
        assert article_id(url=None, feed_url="https://f/", guid=a) != article_id(
            url=None, feed_url="https://f/", guid=b
        )
