"""OPML in and out: subscription lists from other readers, parsed with defusedxml (no entities, no DTDs)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import defusedxml.ElementTree as DET
from defusedxml import DefusedXmlException

from ingest.fetcher import check_url
from wirewatch.identity import feed_id
from wirewatch.records import Feed


class OpmlError(ValueError):
    """An OPML document that cannot be read; the message says why."""


@dataclass(frozen=True)
class Imported:
    """Feeds read from an OPML document, and the outlines skipped with the reason."""

    feeds: list[Feed]
    skipped: list[tuple[str, str]]


def _walk(node: Any, categories: tuple[str, ...], out: list[tuple[Any, tuple[str, ...]]]) -> None:
    for child in node:
        if child.tag != "outline":
            continue
        url = child.get("xmlUrl") or child.get("xmlurl")
        if url:
            out.append((child, categories))
        label = child.get("title") or child.get("text") or ""
        _walk(child, (*categories, label) if label and not url else categories, out)


def parse_opml(data: bytes) -> Imported:
    """The feeds in an OPML document (nested folders become tags, as does a ``category`` attribute).

    Raises:
        OpmlError: when the document is not well-formed XML, declares entities or a DTD, or is not OPML.
    """
    try:
        root = DET.fromstring(data, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise OpmlError(f"OPML refused: {type(exc).__name__} (entity or DTD declarations are not allowed)") from exc
    except ET.ParseError as exc:
        raise OpmlError(f"not well-formed XML: {exc}") from exc
    if root.tag != "opml":
        raise OpmlError(f"not OPML: root element is <{root.tag}>")
    body = root.find("body")
    if body is None:
        raise OpmlError("OPML has no <body>")
    found: list[tuple[Any, tuple[str, ...]]] = []
    _walk(body, (), found)
    feeds: list[Feed] = []
    skipped: list[tuple[str, str]] = []
    seen: set[str] = set()
    for node, cats in found:
        url = (node.get("xmlUrl") or node.get("xmlurl") or "").strip()
        problem = check_url(url)
        if problem:
            skipped.append((url, problem))
            continue
        fid = feed_id(url)
        if fid in seen:
            skipped.append((url, "duplicate"))
            continue
        seen.add(fid)
        extra = tuple(c.strip() for c in (node.get("category") or "").split(",") if c.strip().strip("/"))
        tags = tuple(dict.fromkeys(t.strip("/") for t in (*cats, *extra) if t.strip("/")))
        name = node.get("title") or node.get("text") or ""
        feeds.append(Feed(id=fid, url=url, name=name[:200], tags=tags))
    return Imported(feeds, skipped)


def export_opml(feeds: Iterable[Feed], title: str = "Wirewatch feeds") -> bytes:
    """An OPML 2.0 document listing ``feeds`` (tags become the ``category`` attribute)."""
    root = ET.Element("opml", version="2.0")
    head = ET.SubElement(root, "head")
    ET.SubElement(head, "title").text = title
    ET.SubElement(head, "dateCreated").text = datetime.now(UTC).strftime("%a, %d %b %Y %H:%M:%S GMT")
    body = ET.SubElement(root, "body")
    for f in feeds:
        attrs = {"type": "rss", "text": f.name or f.url, "title": f.name or f.url, "xmlUrl": f.url}
        if f.tags:
            attrs["category"] = ",".join(f.tags)
        ET.SubElement(body, "outline", attrs)
    ET.indent(root)
    text: bytes = ET.tostring(root, encoding="utf-8", xml_declaration=False)
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + text + b"\n"
