"""Topics: topic files, and the shared topic store with hot reload and feedback.

The keyword rules a topic carries are matched in :mod:`classify.keywords` (their names are importable from
here too).
"""

from __future__ import annotations

import tomllib
from collections.abc import Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any

import redis

from classify.keywords import Doc, KeywordHits, KeywordIndex, KeywordRules, Spelling, Term, fold
from wirewatch import registry
from wirewatch.log import get_logger
from wirewatch.records import Topic, utcnow
from wirewatch.settings import Settings

__all__ = [
    "Doc",
    "KeywordHits",
    "KeywordIndex",
    "KeywordRules",
    "Spelling",
    "Term",
    "TopicFileError",
    "TopicStore",
    "apply_feedback",
    "dump_topics",
    "enabled",
    "fold",
    "load_topic_file",
    "topic_text",
]

log = get_logger("classify.topics")


class TopicFileError(ValueError):
    """A topics file that cannot be read; the message names the file and the bad entry."""


def load_topic_file(path: Path) -> list[Topic]:
    """Topics from a TOML file: ``[[topics]]`` tables, or a config file's ``[[classify.topics]]``.

    Raises:
        TopicFileError: when the file is missing, not TOML, or a topic is invalid (named by index and id).
    """
    try:
        data = tomllib.loads(path.read_text())
    except FileNotFoundError as exc:
        raise TopicFileError(f"topics file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise TopicFileError(f"topics file {path} is not valid TOML: {exc}") from exc
    entries = data.get("topics", data.get("topic", data.get("classify", {}).get("topics")))
    if not isinstance(entries, list) or not entries:
        raise TopicFileError(f"{path}: no [[topics]] (or [[classify.topics]]) tables")
    out = []
    for i, entry in enumerate(entries):
        try:
            topic = Topic.model_validate(entry)
            KeywordRules(topic)
        except ValueError as exc:
            raise TopicFileError(f"{path}: topic #{i + 1} ({entry.get('id', '?')}): {exc}") from exc
        out.append(topic)
    return out


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime):
        return value.isoformat()  # a TOML offset date-time
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'
    if isinstance(value, list | tuple):
        if not value:
            return "[]"
        return "[\n" + "".join(f"  {_toml_value(v)},\n" for v in value) + "]"
    raise TypeError(f"cannot write {type(value).__name__} to TOML")


def dump_topics(topics: Iterable[Topic]) -> str:
    """TOML text for ``topics`` as ``[[topics]]`` tables (readable back by :func:`load_topic_file`)."""
    blocks = []
    for topic in topics:
        data = topic.model_dump(exclude={"v", "updated_at", "owner"}, exclude_none=True)
        blocks.append("[[topics]]\n" + "".join(f"{k} = {_toml_value(v)}\n" for k, v in data.items()))
    return "\n".join(blocks)


class TopicStore:
    """The topics every worker shares: the registry of kind ``topics``, seeded from the config."""

    def __init__(self, client: redis.Redis, settings: Settings) -> None:
        self.registry = registry.topics(client, settings)
        self._settings = settings

    def seed(self) -> int:
        """Add the config's topics that the store lacks (API edits are never overwritten)."""
        added = self.registry.seed(self._settings.classify.topics)
        if added:
            log.info("topics_seeded", added=added)
        return added

    def watch(self, on_change: Callable[[list[Topic]], None], interval_s: float = 1.0) -> registry.Watcher[Topic]:
        """Call ``on_change(topics)`` now and after every change (within ``interval_s``)."""
        return registry.Watcher(self.registry, on_change, interval_s).start()

    def get(self, topic_id: str) -> Topic | None:
        """The topic, or None."""
        return self.registry.get(topic_id)

    def all(self) -> list[Topic]:
        """All topics."""
        return self.registry.all()

    def put(self, topic: Topic) -> Topic:
        """Store ``topic`` as given."""
        return self.registry.put(topic)

    def save(self, topic: Topic) -> Topic:
        """Create ``topic``, or replace the stored one as its next version (``topic.version`` at the least).

        The replacement is a compare-and-set, so two saves of one topic never share a version.
        """
        def bump(old: Topic) -> Topic:
            return topic.model_copy(update={"version": max(topic.version, old.version + 1), "updated_at": utcnow()})

        while True:
            done = self.registry.update(topic.id, bump)
            if done is not None:
                return done[0]
            fresh = topic.model_copy(update={"updated_at": utcnow()})
            if self.registry.put_if_absent(fresh):
                return fresh

    def feedback(self, topic_id: str, text: str, relevant: bool) -> Topic:
        """Add ``text`` to the topic's examples (relevant) or counter-examples, as a new version.

        Raises:
            KeyError: when the topic does not exist.
            ValueError: when ``text`` is empty.
        """
        if not text.strip():
            raise ValueError("feedback text is empty")
        # Read, change and write as one compare-and-set: concurrent judgements of one topic all land.
        done = self.registry.update(topic_id, lambda topic: apply_feedback(topic, text, relevant))
        if done is None:
            raise KeyError(f"no topic {topic_id!r}")
        return done[0]


def apply_feedback(topic: Topic, text: str, relevant: bool) -> Topic:
    """``topic`` with ``text`` added to its examples or counter-examples, one version later.

    A text already on the other side moves over, so the newest judgement wins.

    Raises:
        ValueError: when ``text`` is empty.
    """
    text = text.strip()
    if not text:
        raise ValueError("feedback text is empty")
    examples = [e for e in topic.examples if e != text]
    counters = [c for c in topic.counter_examples if c != text]
    (examples if relevant else counters).append(text)
    return topic.model_copy(update={"examples": tuple(examples), "counter_examples": tuple(counters),
                                    "version": topic.version + 1, "updated_at": utcnow()})


def topic_text(topic: Topic) -> str:
    """The text that stands for the topic's description: its name and description."""
    return f"{topic.name}. {topic.description}".strip() if topic.description else topic.name


def enabled(topics: Sequence[Topic]) -> list[Topic]:
    """The enabled topics, in id order."""
    return sorted((t for t in topics if t.enabled), key=lambda t: t.id)
