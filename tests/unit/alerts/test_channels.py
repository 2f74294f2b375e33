"""Channel rendering: escaping for each markup, limits, signatures, and the kind registry."""

from __future__ import annotations

import json
import time

import pytest
from pydantic import ValidationError

from alerts.channels import REGISTRY, Item, Notification, PermanentSendError, build, slack, teams, webhook
from alerts.channels import email as email_ch
from alerts.channels._http import MAX_RETRY_AFTER_S
from alerts.channels.apprise import body as apprise_body
from alerts.channels.base import clip, plain, redact, safe_url, target_label
from wirewatch.records import ChannelKind, ChannelSpec
from wirewatch.retryafter import retry_after
from wirewatch.settings import AlertsSettings

HOSTILE = ("<!channel> Breaking <https://evil.example|click here> *bold* [x](https://evil.example) "
           "<script>alert(1)</script> & more\r\nBcc: victim@example.com")


def note(**kw: object) -> Notification:
    base: dict[str, object] = dict(key="k1", subscription_id="s", topic_id="t", topic_name="Syria",
                                   story_id="st", items=(Item(title=HOSTILE, url="https://news.example/a",
                                                              source="Src <b>", summary=HOSTILE * 50),))
    base.update(kw)
    return Notification.model_validate(base)


def _strings(obj: object) -> list[str]:
    if isinstance(obj, str):
        return [obj]
    if isinstance(obj, dict):
        return [s for v in obj.values() for s in _strings(v)]
    if isinstance(obj, list | tuple):
        return [s for v in obj for s in _strings(v)]
    return []


def test_registry_has_one_class_per_kind() -> None:
    assert set(REGISTRY) == set(ChannelKind)
    for kind, cls in REGISTRY.items():
        assert cls.kind == kind.value and cls.budget >= 1


def test_slack_feed_text_is_plain_text_only_and_cut_to_limits() -> None:
    p = slack.payload(note())
    for block in p["blocks"]:
        for obj in [block.get("text"), *block.get("elements", [])]:
            if obj and obj["type"] == "mrkdwn":
                # the only mrkdwn is our own link, to the article URL
                assert obj["text"] == "<https://news.example/a|Open article>"
    header = p["blocks"][0]["text"]
    assert header["type"] == "plain_text" and len(header["text"]) <= slack.HEADER_LIMIT
    assert all(len(s) <= slack.TEXT_LIMIT for s in _strings(p))
    assert p["unfurl_links"] is False
    assert "\n" not in header["text"] and "\r" not in header["text"]


def test_slack_mrkdwn_escape_neutralizes_mentions_and_links() -> None:
    assert slack.mrkdwn_escape("<!channel> <https://x|y> a&b") == "&lt;!channel&gt; &lt;https://x|y&gt; a&amp;b"


def test_teams_card_escapes_markdown_and_html_and_links_only_to_article() -> None:
    p = teams.payload(note())
    card = p["attachments"][0]["content"]
    assert card["type"] == "AdaptiveCard" and p["attachments"][0]["contentType"].endswith("card.adaptive")
    texts = [b["text"] for b in card["body"] if b["type"] == "TextBlock"]
    for t in texts:
        assert "<" not in t and "](" not in t
    assert any("\\*bold\\*" in t for t in texts)
    assert [a["url"] for a in card["actions"]] == ["https://news.example/a"]
    assert len(json.dumps(p).encode()) <= teams.MAX_BYTES


def test_teams_digest_shrinks_to_fit_size_limit() -> None:
    items = tuple(Item(title=f"story {i} " + "x" * 290, summary="y" * 1500, url=f"https://n.example/{i}")
                  for i in range(60))
    p = teams.payload(note(kind="digest", items=items))
    assert len(json.dumps(p).encode()) <= teams.MAX_BYTES


def test_email_has_text_and_html_parts_with_html_escaped_and_no_header_injection() -> None:
    msg = email_ch.render(note(thread_key="first"), "ww@example.org", ["desk@example.org"])
    assert msg.get_content_type() == "multipart/alternative"
    parts = {p.get_content_type(): p.get_content() for p in msg.iter_parts()}
    assert set(parts) == {"text/plain", "text/html"}
    assert "<script>" not in parts["text/html"] and "&lt;script&gt;" in parts["text/html"]
    assert '<a href="https://news.example/a">' in parts["text/html"]
    assert "\n" not in msg["Subject"] and msg["Bcc"] is None
    assert len(msg["Subject"]) <= email_ch.SUBJECT_LIMIT
    assert msg["In-Reply-To"] == "<first@wirewatch>" and msg["Message-ID"] == "<k1@wirewatch>"


def test_email_target_with_header_characters_is_refused_permanently() -> None:
    target = "a@example.org\r\nBcc: b@example.org"
    with pytest.raises(ValidationError, match="target\n.*control characters"):
        ChannelSpec(type=ChannelKind.EMAIL, target=target)
    spec = ChannelSpec.model_construct(type=ChannelKind.EMAIL, target=target)  # stored before records checked it
    with pytest.raises(PermanentSendError):
        build(spec, AlertsSettings())


def test_webhook_signature_roundtrip_and_rejects_tampering_and_stale_timestamps() -> None:
    body = json.dumps(webhook.payload(note())).encode()
    ts = str(int(time.time()))
    sig = webhook.sign("k", ts, body)
    assert webhook.verify("k", ts, body, sig)
    assert not webhook.verify("k", ts, body + b" ", sig)
    assert not webhook.verify("other", ts, body, sig)
    old = str(int(time.time()) - 3600)
    assert not webhook.verify("k", old, body, webhook.sign("k", old, body))
    assert not webhook.verify("k", "not-a-number", body, sig)


def test_webhook_payload_limits_and_plain_text() -> None:
    p = webhook.payload(note())
    item = p["items"][0]
    assert len(item["summary"]) <= 2000 and "\r" not in item["title"] and "\n" not in item["title"]
    assert p["idempotency_key"] == "k1"


def test_unsafe_urls_are_dropped() -> None:
    assert safe_url("javascript:alert(1)") is None
    assert safe_url("https://x.example/a|b") is None
    assert safe_url("https://x.example/a b") is None
    assert safe_url("https://x.example/ok?a=1") == "https://x.example/ok?a=1"


def test_apprise_body_fits_tightest_service() -> None:
    assert len(apprise_body(note())) <= 1900


def test_apprise_url_it_cannot_parse_is_permanent() -> None:
    with pytest.raises(PermanentSendError):
        build(ChannelSpec(type=ChannelKind.APPRISE, target="nonsense-scheme://x"), AlertsSettings())


def test_helpers_clip_plain_redact_and_labels() -> None:
    assert clip("word " * 100, 20).endswith("…") and len(clip("word " * 100, 20)) <= 20
    assert plain("a\u202eb\x00c \n\t d") == "abc d"
    assert redact("https://user:pw@h/x token=abc", "abc") == "https://***@h/x token=***"
    spec = ChannelSpec(type=ChannelKind.SLACK, target="https://hooks.slack.com/services/T0/B0/SECRET")
    assert target_label(spec) == "slack:https://hooks.slack.com" and "SECRET" not in target_label(spec)


@pytest.mark.parametrize(("value", "expected"), [("7", 7.0), (None, None), ("soon", None), ("999999", 3600.0)])
def test_retry_after_parsing(value: str | None, expected: float | None) -> None:
    assert retry_after(value, cap_s=MAX_RETRY_AFTER_S) == expected


def test_retry_after_http_date() -> None:
    from email.utils import formatdate

    got = retry_after(formatdate(time.time() + 30, usegmt=True), cap_s=MAX_RETRY_AFTER_S)
    assert got is not None and 25 <= got <= 31
