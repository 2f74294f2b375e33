"""Feed bytes made safe before a parser sees them: hostile DOCTYPE, impossible character references, huge text.

Hostile XML is defused before feedparser sees it: a DOCTYPE with an internal subset (where entity
declarations live: billion laughs, external entities pointing at local files) is cut out of the prolog, so
nothing is expanded and nothing is read; references to the removed entities stay inert text. feedparser's
own SAX parser additionally has external general entities switched off, and expat (>= 2.4) refuses
amplification attacks on its own, so each layer would hold by itself.

Numeric character references outside Unicode become U+FFFD (:func:`valid_charrefs`), and text runs over
:data:`MAX_TEXT_BYTES` are cut (:func:`cut_long_text`): both once lost a whole feed or the worker's memory.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Mapping

# -- hostile DOCTYPE removal -----------------------------------------------------------------------------
_DOCTYPE_HINT = re.compile(rb"<!doctype", re.IGNORECASE)
_ENC_DECL = re.compile(r"""(<\?xml[^>]*?encoding\s*=\s*)(["'])[^"']*\2""")


def _skip_subset(s: str, i: int) -> tuple[int, bool]:
    """Index just past the internal subset's closing ``]`` and whether it declares entities."""
    n = len(s)
    entities = False
    while i < n:
        c = s[i]
        if c in "\"'":
            j = s.find(c, i + 1)
            i = n if j < 0 else j + 1
        elif s.startswith("<!--", i):
            j = s.find("-->", i + 4)
            i = n if j < 0 else j + 3
        elif s.startswith("<?", i):
            j = s.find("?>", i + 2)
            i = n if j < 0 else j + 2
        elif c == "]":
            return i + 1, entities
        else:
            if c == "%" or s[i:i + 8].upper() == "<!ENTITY":
                entities = True
            i += 1
    return n, True


def find_doctype(s: str) -> tuple[int, int, bool, bool] | None:
    """Locate the DOCTYPE in the prolog of ``s``: (start, end, has internal subset, declares entities)."""
    i, n = 0, len(s)
    while i < n:
        if s[i].isspace() or s[i] == "\ufeff":
            i += 1
        elif s.startswith("<?", i):
            j = s.find("?>", i + 2)
            if j < 0:
                return None
            i = j + 2
        elif s.startswith("<!--", i):
            j = s.find("-->", i + 4)
            if j < 0:
                return None
            i = j + 3
        elif s[i:i + 9].upper() == "<!DOCTYPE":
            start, i = i, i + 9
            subset = entities = False
            while i < n:
                c = s[i]
                if c in "\"'":
                    j = s.find(c, i + 1)
                    i = n if j < 0 else j + 1
                elif c == "[":
                    subset = True
                    i, entities = _skip_subset(s, i + 1)
                elif c == ">":
                    return start, i + 1, subset, entities
                else:
                    i += 1
            return start, n, subset, True
        else:
            return None
    return None


def _wide_codec(data: bytes) -> str | None:
    for bom, codec in ((codecs.BOM_UTF32_LE, "utf-32"), (codecs.BOM_UTF32_BE, "utf-32"),
                       (codecs.BOM_UTF16_LE, "utf-16"), (codecs.BOM_UTF16_BE, "utf-16")):
        if data.startswith(bom):
            return codec
    head = data[:4]
    if head in (b"\x00\x00\x00<", b"<\x00\x00\x00"):
        return "utf-32-be" if head[0] == 0 else "utf-32-le"
    if head in (b"\x00<\x00?", b"<\x00?\x00"):
        return "utf-16-be" if head[0] == 0 else "utf-16-le"
    return None


def defuse(data: bytes, headers: Mapping[str, str]) -> tuple[bytes, dict[str, str], bool]:
    """Cut a DOCTYPE that has an internal subset out of the prolog.

    Returns the bytes to parse, the headers to parse them with (the charset is rewritten when a UTF-16/32
    document had to be transcoded) and whether entity declarations were found.
    """
    hdrs = dict(headers)
    wide = _wide_codec(data)
    if wide is None:
        if not _DOCTYPE_HINT.search(data):
            return data, hdrs, False
        text = data.decode("latin-1")  # one char per byte: indices stay byte offsets
        found = find_doctype(text[3:] if data.startswith(codecs.BOM_UTF8) else text)
        if not found or not found[2]:
            return data, hdrs, False
        off = 3 if data.startswith(codecs.BOM_UTF8) else 0
        start, end, _, entities = found
        return data[:start + off] + data[end + off:], hdrs, entities
    text = data.decode(wide, errors="replace")
    found = find_doctype(text)
    if not found or not found[2]:
        return data, hdrs, False
    start, end, _, entities = found
    text = _ENC_DECL.sub(r"\1\2utf-8\2", text[:start] + text[end:], count=1).lstrip("\ufeff")
    hdrs["content-type"] = "application/xml; charset=utf-8"
    return text.encode("utf-8"), hdrs, entities


_CHARREF = re.compile(rb"&#(?:[xX]([0-9a-fA-F]{1,16})|([0-9]{1,20}));")


def valid_charrefs(data: bytes) -> bytes:
    """Numeric character references outside Unicode (``&#xFFFFFFFF;``, ``&#0;``) as U+FFFD.

    feedparser calls ``chr()`` on them and raises OverflowError, losing the whole feed for one bad reference.
    """
    if b"&#" not in data:
        return data

    def fix(m: re.Match[bytes]) -> bytes:
        value = int(m.group(1), 16) if m.group(1) else int(m.group(2))
        return m.group(0) if 0 < value <= 0x10FFFF else b"&#xFFFD;"

    return _CHARREF.sub(fix, data)


# -- overlong text ---------------------------------------------------------------------------------------
# A text run is cut to this many bytes before parsing. Normalization reads at most 64x a field's kept length
# (256,000 characters of a 4,000-character content, 64 KiB of a title) and drops a link past 8,192: a run this
# long still holds all of that at eight bytes a character. A 10 MB title cost 60 MiB in feedparser (lxml refuses
# text nodes over 10 MB), and three such feeds at once took the worker past its 300 MiB.
MAX_TEXT_BYTES = 2 << 20
# Text between a tag's end and the next tag's start, with no ``>`` in it: never inside a tag, a comment's
# or CDATA section's terminator, or a processing instruction, so cutting it keeps the document's structure.
_LONG_TEXT = re.compile(rb">([^<>]{%d,})<" % MAX_TEXT_BYTES)
# Encodings in which ``<``, ``>`` and ``&`` are always those characters and a cut at a UTF-8 character start
# splits no character (single-byte codecs have no multi-byte characters to split).
_CUTTABLE = re.compile(r"utf-?8|us-ascii|ascii|iso-?8859-\d+|latin-?1|windows-125\d|cp125\d")
_CHARSET = re.compile(r"charset\s*=\s*[\"']?([A-Za-z0-9._-]+)", re.IGNORECASE)
_DECLARED = re.compile(rb"""^\s*<\?xml[^>]*encoding\s*=\s*["']([A-Za-z0-9._-]+)["']""")


def cut_long_text(data: bytes, headers: Mapping[str, str]) -> tuple[bytes, int]:
    """``data`` with every text run over :data:`MAX_TEXT_BYTES` cut to that length; and how many were cut.

    A cut never splits a UTF-8 character or a character reference. Documents in UTF-16/32 or a multi-byte
    legacy charset (Shift_JIS, GB18030, ...) are left alone: a byte-level cut could split their characters.
    """
    if len(data) <= MAX_TEXT_BYTES or _wide_codec(data) is not None:
        return data, 0
    m = _CHARSET.search(headers.get("content-type", ""))
    declared = _DECLARED.match(data.removeprefix(codecs.BOM_UTF8))
    for name in (m.group(1) if m else None, declared.group(1).decode() if declared else None):
        if name is not None and not _CUTTABLE.fullmatch(name.lower()):
            return data, 0
    pieces: list[bytes] = []
    last = 0
    for run in _LONG_TEXT.finditer(data):
        keep = run.start(1) + MAX_TEXT_BYTES
        while keep > run.start(1) and data[keep] & 0xC0 == 0x80:  # back to a UTF-8 character's first byte
            keep -= 1
        amp = data.rfind(b"&", keep - 32, keep)
        if amp >= 0 and b";" not in data[amp:keep]:
            keep = amp
        pieces.append(data[last:keep])
        last = run.end(1)
    if not pieces:
        return data, 0
    pieces.append(data[last:])
    return b"".join(pieces), len(pieces) - 1
