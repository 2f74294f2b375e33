"""Every Prometheus metric Wirewatch exports, defined here and nowhere else.

Names follow Prometheus conventions (``wirewatch_<stage>_..._total`` / ``_seconds``); label values are
low-cardinality (outcomes, stages, topic ids chosen by operators) and never a URL, article or user id.
Each stage adds its metrics in its own section below.
"""

from __future__ import annotations

import os

from prometheus_client import Counter, Gauge, Histogram, Info, start_http_server

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 3600)

# --- bus: shared Kafka consumer/producer loop -------------------------------------------------------------
BUS_CONSUMED = Counter("wirewatch_bus_consumed_total", "Messages consumed.", ["group", "topic"])
BUS_PRODUCED = Counter("wirewatch_bus_produced_total", "Messages produced and acknowledged.", ["topic"])
BUS_DLQ = Counter("wirewatch_bus_dlq_total", "Messages sent to a dead-letter topic.", ["group", "topic", "reason"])
BUS_BATCH_SECONDS = Histogram(
    "wirewatch_bus_batch_seconds", "Time to handle one consumed batch, commit included.", ["group"],
    buckets=LATENCY_BUCKETS,
)
BUS_DLQ_RETRIES = Counter("wirewatch_bus_dlq_retries_total",
                          "Dead-letter writes retried (the batch waits uncommitted until its DLQ write succeeds).",
                          ["group"])
BUS_BATCH_RETRIES = Counter("wirewatch_bus_batch_retries_total", "Batches retried after a handler error.", ["group"])
BUS_COMMITS = Counter("wirewatch_bus_commits_total", "Offset commits.", ["group", "trigger"])
BUS_POLL_STALLS = Counter(
    "wirewatch_bus_poll_stalls_total", "Kafka polls stuck past the watchdog limit (the worker exits to be restarted).",
    ["group"],
)
BUS_STALLS = Counter(
    "wirewatch_bus_stalls_total", "Consumer loops found not alive, by reason (poll_stuck, not_member, not_consuming); "
    "a worker process exits to be restarted.", ["group", "reason"],
)
BUS_REJOINS = Counter(
    "wirewatch_bus_rejoins_total", "Rejoins a consumer loop asked its client for, by reason: heartbeat_task_gone "
    "(the heartbeat task ended while the client believed itself a stable member) or join_abandoned (a join the "
    "client started and would never finish); the worker stays up.", ["group", "reason"],
)
BUS_LAG = Gauge("wirewatch_consumer_lag_messages", "Consumer lag per partition.", ["group", "topic", "partition"])

# --- ingest: feed polling -------------------------------------------------------------------------------
INGEST_FETCHES = Counter(
    "wirewatch_ingest_fetches_total",
    "Feed fetches by outcome (200, 304, 4xx, 5xx, timeout, too_large, parse_error, ...).", ["outcome"],
)
INGEST_ITEMS = Counter(
    "wirewatch_ingest_items_total", "Feed entries by fate: new, updated, seen, stale, invalid, busy.", ["kind"]
)
INGEST_PARSE_PROBLEMS = Counter(
    "wirewatch_ingest_parse_problems_total", "Feeds parsed with problems (bozo), by error type.", ["error"]
)
INGEST_FETCH_SECONDS = Histogram(
    "wirewatch_ingest_fetch_seconds", "Time of one fetch, redirects and body included.", buckets=LATENCY_BUCKETS
)
INGEST_PROCESS_SECONDS = Histogram(
    "wirewatch_ingest_process_seconds", "Fetch to Kafka acknowledgement of one feed's new entries.",
    buckets=LATENCY_BUCKETS,
)
INGEST_FEEDS = Gauge("wirewatch_ingest_feeds", "Feeds this worker polls, by state.", ["state"])
INGEST_FEEDS_DUE = Gauge("wirewatch_ingest_feeds_due", "Feeds whose poll is due now.")
INGEST_FEEDS_OVERDUE = Gauge(
    "wirewatch_ingest_feeds_overdue", "Feeds due for longer than a minimum interval but not yet fetched."
)
INGEST_FEEDS_QUIET = Gauge("wirewatch_ingest_feeds_quiet", "Feeds silent for much longer than their own cadence.")
INGEST_FEEDS_DISABLED = Counter("wirewatch_ingest_feeds_disabled_total", "Feeds disabled (410 Gone), by reason.",
                                ["reason"])
INGEST_URL_MOVES = Counter("wirewatch_ingest_url_moves_total", "Stored feed URLs updated after a permanent redirect.")
INGEST_FULLTEXT = Counter(
    "wirewatch_ingest_fulltext_total",
    "Article pages wanted for their text, by outcome (ok, cached, not_modified, paywall, cookie_wall, consent, "
    "too_large, timeout, not_html, blocked, robots_disallowed, robots_unreachable, http_error, network, empty, ...).",
    ["outcome"],
)
INGEST_FULLTEXT_SECONDS = Histogram(
    "wirewatch_ingest_fulltext_seconds", "One article page: robots check, fetch and extraction.",
    buckets=LATENCY_BUCKETS,
)
INGEST_FULLTEXT_HELD_SECONDS = Histogram(
    "wirewatch_ingest_fulltext_held_seconds", "How long a poll held its new articles waiting for their pages.",
    buckets=LATENCY_BUCKETS,
)
INGEST_FULLTEXT_UPDATES = Counter(
    "wirewatch_ingest_fulltext_updates_total",
    "Articles produced again with their page text after the wait, by result (published, failed).", ["result"],
)


def serve(port: int | None, addr: str | None = None) -> int | None:
    """Expose ``/metrics`` on ``addr:port`` in a background thread; ``None`` or 0 disables it.

    ``addr`` defaults to ``$WIREWATCH_OPS__METRICS_ADDR`` (``0.0.0.0`` in containers, so Prometheus can
    scrape every worker), else 127.0.0.1. Returns the port served, or ``None``.
    """
    if not port:
        return None
    start_http_server(port, addr=addr or os.environ.get("WIREWATCH_OPS__METRICS_ADDR") or "127.0.0.1")
    return port


BUILD_INFO = Info("wirewatch_build", "Wirewatch version.")

# --- pipeline: end-to-end hop latency (observed by the stages, defined once here) -----------------------
# Hops: "fetch" = published_at -> fetched_at (ingest), "classify" = fetched_at -> classified (classify),
# "deliver" = match consumed by alerts (right after classification) -> channel acknowledgement (alerts),
# "end_to_end" = published_at -> channel acknowledgement of the story's first alert (alerts). Observe with
# ``PIPELINE_HOP.labels(hop).observe(seconds)``; :func:`observe_hop` clamps clock skew to zero.
HOP_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 900, 1800, 3600, 10800, 43200, 86400)
PIPELINE_HOPS = ("fetch", "classify", "deliver", "end_to_end")
PIPELINE_HOP = Histogram(
    "wirewatch_pipeline_hop_seconds",
    "Latency of one pipeline hop: fetch (published to fetched), classify (fetched to classified), "
    "deliver (match consumed by alerts to channel acknowledgement), end_to_end (published to acknowledged).",
    ["hop"], buckets=HOP_BUCKETS,
)


def observe_hop(hop: str, seconds: float) -> None:
    """Record one hop's latency; negative values (clock skew between hosts) count as zero."""
    PIPELINE_HOP.labels(hop).observe(max(0.0, seconds))


# --- ops: supervisor, consumer-group lag as measured from outside -----------------------------------------
OPS_CHILD_RESTARTS = Counter("wirewatch_ops_restarts_total", "Worker processes restarted by the supervisor.",
                             ["role"])
OPS_CHILD_EXITS = Counter("wirewatch_ops_exits_total", "Worker process exits seen by the supervisor, by kind "
                          "(crash, clean, signal).", ["role", "kind"])
OPS_CHILD_UP = Gauge("wirewatch_ops_up", "1 while the supervised worker of a role is running.", ["role"])
OPS_GROUP_LAG = Gauge(
    "wirewatch_ops_group_lag_messages",
    "Messages not yet committed by a consumer group, per partition (end offset minus committed offset), "
    "measured by the supervisor from the broker; keeps counting when a worker is stuck or gone.",
    ["group", "topic", "partition"],
)
OPS_STALLS = Counter("wirewatch_ops_stalls_total", "Workers restarted because their consumer group lost them "
                     "while messages waited.", ["role"])
OPS_TOPIC_END_OFFSET = Gauge("wirewatch_ops_topic_end_offset", "End (high-water) offset per topic partition.",
                             ["topic", "partition"])

# --- alerts: story folding, rules, delivery ---------------------------------------------------------------
ALERTS_STORIES = Counter("wirewatch_alerts_stories_total", "Matches folded, by result (new story, folded, replay).",
                         ["result"])
ALERTS_DECISIONS = Counter("wirewatch_alerts_decisions_total",
                           "Rule decisions per (match, subscription): send, digest or suppress, with the reason.",
                           ["action", "reason"])
ALERTS_ATTEMPTS = Counter("wirewatch_alerts_send_attempts_total", "Channel send attempts, by channel and outcome.",
                          ["channel", "outcome"])
ALERTS_SEND_SECONDS = Histogram("wirewatch_alerts_send_seconds", "Time of one channel send attempt.", ["channel"],
                                buckets=LATENCY_BUCKETS)
ALERTS_LATENCY_SECONDS = Histogram(
    "wirewatch_alerts_latency_seconds", "From match consumed to channel acknowledged (first-try instant alerts).",
    buckets=LATENCY_BUCKETS,
)
ALERTS_OUTBOX_PENDING = Gauge("wirewatch_alerts_outbox_pending", "Notifications written but not yet acknowledged.")
ALERTS_DIGESTS = Counter("wirewatch_alerts_digests_total", "Digests built, by trigger.", ["trigger"])
ALERTS_SUBSCRIPTION_ERRORS = Counter(
    "wirewatch_alerts_subscription_errors_total",
    "Subscriptions skipped because applying them failed (the others of the batch go on), by stage.", ["stage"])

# --- api: subscription API and dashboard ------------------------------------------------------------------
API_REQUESTS = Counter("wirewatch_api_requests_total", "HTTP requests, by route template, method and status class.",
                       ["route", "method", "status"])
API_REQUEST_SECONDS = Histogram("wirewatch_api_request_seconds", "Time to answer one HTTP request (streams excluded).",
                                ["route"], buckets=LATENCY_BUCKETS)
API_AUTH_FAILURES = Counter("wirewatch_api_auth_failures_total", "Requests refused by auth, by status (401/403/429).",
                            ["status"])
API_STREAM_CLIENTS = Gauge("wirewatch_api_stream_clients", "Server-sent-event clients connected to /v1/stream.")
API_STREAM_DROPPED = Counter("wirewatch_api_stream_dropped_total",
                             "Events dropped because a stream client's buffer was full (slow client).")
API_MATCHES_STORED = Counter("wirewatch_api_matches_stored_total",
                             "Matches added to the recent-matches store, by result (new, seen, bad).", ["result"])
API_FEEDBACK = Counter("wirewatch_api_feedback_total", "Feedback received on matches, by verdict.", ["verdict"])

# --- classify: embedding and topic scoring ----------------------------------------------------------------
CLASSIFY_ARTICLES = Counter("wirewatch_classify_articles_total", "Articles embedded and scored.")
CLASSIFY_FIRST_PASS = Counter("wirewatch_classify_first_pass_total",
                              "Articles the first pass sent on to the model (passed) or skipped.", ["outcome"])
CLASSIFY_MATCHES = Counter("wirewatch_classify_matches_total", "Matches produced, by topic id.", ["topic"])
CLASSIFY_BATCH_SECONDS = Histogram("wirewatch_classify_batch_seconds",
                                   "Time to embed, score and produce one batch (acks included).",
                                   buckets=LATENCY_BUCKETS)
CLASSIFY_EMBED_SECONDS = Histogram("wirewatch_classify_embed_seconds", "Time to embed one batch.",
                                   buckets=LATENCY_BUCKETS)
CLASSIFY_EMBED_CACHE = Counter("wirewatch_classify_embed_cache_total",
                               "Texts looked up in the embedding cache, by result (hit, miss).", ["result"])
CLASSIFY_TOPICS = Gauge("wirewatch_classify_topics", "Enabled topics in force.")
CLASSIFY_TOPIC_RELOADS = Counter("wirewatch_classify_topic_reloads_total", "Topic set reloads, by outcome.",
                                 ["outcome"])
CLASSIFY_MODEL = Info("wirewatch_classify_model", "Embedding model, revision and backend in use.")
