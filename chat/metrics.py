"""Prometheus metrics, correct under several gunicorn workers.

With PROMETHEUS_MULTIPROC_DIR set (gunicorn.conf.py and the Docker image set it),
prometheus-client keeps every value in a per-process file in that directory and
`/metrics` merges them, so any worker answers for all of them. Without it (tests,
`runserver`, management commands) the values live in this process's default
registry. Which one is decided by prometheus-client when it is first imported.

Labels are bounded: a route is the URL pattern (never the raw path), a status
is an HTTP code, a scope is a key of RATE_LIMITS, a source is one of SOURCES.
"""

import contextvars
import os

from prometheus_client import REGISTRY, CollectorRegistry, Counter, Gauge, Histogram, generate_latest, multiprocess

MULTIPROC_DIR = os.environ.get("PROMETHEUS_MULTIPROC_DIR", "")
if MULTIPROC_DIR:
    # Every process that imports this (gunicorn workers, but also `manage.py migrate`
    # in the image) writes its files here: the directory must exist first.
    os.makedirs(MULTIPROC_DIR, exist_ok=True)

# Where messages were saved from: the authenticated API, a guest, a staff reply, the admin.
SOURCES = ("api", "guest", "staff", "admin", "import")
METHODS = frozenset({"GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})
# A request that matched no URL pattern; its path is never a label.
UNMATCHED = "<unmatched>"

http_requests = Counter(
    "chat_http_requests",
    "HTTP requests served, by method, URL pattern and status",
    ["method", "route", "status"],
)
http_request_duration = Histogram(
    "chat_http_request_duration_seconds",
    "Time to answer an HTTP request, by method, URL pattern and status",
    ["method", "route", "status"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
guest_polls = Counter(
    "chat_guest_polls",
    "Guest polls answered, by outcome: empty, or returned messages",
    ["outcome"],
)
guest_poll_messages = Counter("chat_guest_poll_messages", "Messages returned by guest polls")
messages_saved = Counter(
    "chat_messages_saved",
    "Messages saved (inserted or replaced), by source: api, guest, staff, admin, import",
    ["source"],
)
rate_limited = Counter("chat_rate_limited", "Requests refused by a rate limit (429), by binding scope", ["scope"])
limiter_failures = Counter(
    "chat_rate_limiter_failures",
    "Requests for which the rate limiter could not reach the cache, by mode: open (served) or closed (503)",
    ["mode"],
)

# Real-time delivery (chat.wakeups publishes, chat.live waits).
wakeups_published = Counter("chat_wakeups_published", "Wake-ups published after a guest session's write committed")
wakeup_publish_failures = Counter(
    "chat_wakeup_publish_failures", "Wake-ups not published: the channel (Redis) was unreachable"
)
live_channel_outages = Counter(
    "chat_live_channel_outages",
    "Times a live process lost its wake-up subscription (it re-checks the database meanwhile)",
)
live_rechecks = Counter(
    "chat_live_rechecks", "Database re-checks a live process ran while its wake-up channel was down"
)
live_streams_opened = Counter("chat_live_streams_opened", "Event streams opened, by kind: guest, inbox", ["kind"])
live_events_sent = Counter("chat_live_events_sent", "Events sent on streams, by kind: guest, inbox", ["kind"])
live_wait_unrouted = Counter(
    "chat_live_wait_unrouted", "Long-polls (wait > 0) that reached the WSGI app and were answered at once"
)
replica_reads = Counter("chat_replica_reads", "Reads that may lag served by the read replica")
replica_fallbacks = Counter(
    "chat_replica_fallbacks",
    "Reads that may lag sent to the primary instead of the replica, by reason: down, behind,"
    " recent_write (the replica has not replayed the caller's last write yet), cache_down",
    ["reason"],
)
replica_lag_seconds = Gauge(
    "chat_replica_lag_seconds",
    "The read replica's lag behind the primary as this process last measured it (-1: not answering)",
    multiprocess_mode="livemax",
)


def observe_request(*, method: str, route: str | None, status: int, seconds: float) -> None:
    labels = (method if method in METHODS else "OTHER", route or UNMATCHED, str(status))
    http_requests.labels(*labels).inc()
    http_request_duration.labels(*labels).observe(seconds)


def observe_guest_poll(returned: int) -> None:
    """A guest poll answered with `returned` messages (0: an empty poll)."""
    guest_polls.labels("messages" if returned else "empty").inc()
    if returned:
        guest_poll_messages.inc(returned)


# How long the write of the request being served held its session's row lock, in ms
# (chat.services): its request log line says it (chat.observability), which resets it.
write_lock_ms: contextvars.ContextVar[float | None] = contextvars.ContextVar("write_lock_ms", default=None)


def observe_lock_hold(seconds: float) -> None:
    """The current request's write held its session's lock for `seconds`."""
    write_lock_ms.set(round(max(seconds, 0.0) * 1000, 3))


def observe_messages_saved(source: str, n: int) -> None:
    """`n` messages saved from `source` (one of SOURCES)."""
    if source not in SOURCES:
        raise ValueError(f"unknown message source {source!r}; one of {SOURCES}")
    if n:
        messages_saved.labels(source).inc(n)


def on_rate_limited(sender, *, scope: str, **kwargs) -> None:
    """Receiver of chat.throttles.rate_limited."""
    rate_limited.labels(scope).inc()


def on_limiter_failed(sender, *, fail_open: bool, **kwargs) -> None:
    """Receiver of chat.throttles.limiter_failed."""
    limiter_failures.labels("open" if fail_open else "closed").inc()


def registry() -> CollectorRegistry:
    """Every process's values in multiprocess mode, else this process's."""
    if not MULTIPROC_DIR:
        return REGISTRY
    merged = CollectorRegistry()
    multiprocess.MultiProcessCollector(merged, path=MULTIPROC_DIR)
    return merged


def exposition() -> bytes:
    """The Prometheus text format of every metric."""
    return generate_latest(registry())
