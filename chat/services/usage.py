"""The usage ledger (chat_usage_days): what each user's messages used, per UTC day and model.

It moves in the transaction of every write, by deltas, so it is exact under
concurrent writers without a lock of its own:

- a new message adds its figures to its (day, model);
- a re-saved message (upsert) takes its old figures off its old (day, model) and
  adds the new ones: usage counts every message as last saved;
- a deleted message (one message, a session, everything) leaves the live rows
  for the `live=False` rows of the same (day, model): usage never goes down.

The delta upsert is one `INSERT ... ON CONFLICT DO UPDATE SET x = x + excluded.x`
(PostgreSQL and SQLite alike), rows in key order so that two writers of one user
always take the row locks in the same order (no deadlock).
"""

import contextlib
import contextvars
from collections import defaultdict
from collections.abc import Iterable, Iterator, Mapping
from datetime import UTC, date

from django.db import connection
from django.db.models import Count, Q, Sum, Value
from django.db.models.functions import Coalesce, TruncDate

from chat.models import ChatMessage

# The figures of a ledger row, in the order of the SQL below.
FIGURES = ("messages", "input_tokens", "output_tokens", "total_tokens", "errors")

# The columns a message's figures come from.
USAGE_FIELDS = ("model", "input_tokens", "output_tokens", "total_tokens", "error")

Key = tuple[date, str]  # (UTC day, model or "")
Deltas = dict[Key, list[int]]


def _upsert_sql(rows: int) -> str:
    values = ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s, %s)"] * rows)
    updates = ", ".join(f"{f} = chat_usage_days.{f} + excluded.{f}" for f in FIGURES)
    return (
        f"INSERT INTO chat_usage_days (user_id, day, model, live, {', '.join(FIGURES)}) VALUES {values} "  # noqa: S608 (constants and placeholders only)
        f"ON CONFLICT (user_id, day, model, live) DO UPDATE SET {updates}"
    )


# While set (usage_deferred), deltas gather here instead of being written at once.
_deferred: contextvars.ContextVar[dict | None] = contextvars.ContextVar("usage_deferred", default=None)


@contextlib.contextmanager
def usage_deferred() -> Iterator[None]:
    """Gather the ledger deltas of a multi-session write (an import) and write them once, at the end.

    A write locks its session, then the user's ledger rows. A transaction that
    writes many sessions would otherwise hold ledger rows while it waits for its
    next session's lock, which a writer of that session may hold while it waits
    for the same ledger rows: a deadlock. Written last, after every session lock,
    the ledger is always taken in the same order. Use inside the transaction.
    """
    gathered: dict[int, dict] = {}
    token = _deferred.set(gathered)
    try:
        yield
    finally:
        _deferred.reset(token)
    for user_id, figures in sorted(gathered.items()):
        _write(user_id, [(key, is_live, f) for (key, is_live), f in figures.items()])


def usage_apply(*, user_id: int, live: Mapping[Key, list[int]], retired: Mapping[Key, list[int]] | None = None) -> None:
    """Add `live` (and `retired`) deltas to a user's ledger rows, in the current transaction."""
    rows = [(key, True, figures) for key, figures in live.items()]
    rows += [(key, False, figures) for key, figures in (retired or {}).items()]
    gathered = _deferred.get()
    if gathered is None:
        _write(user_id, rows)
        return
    into = gathered.setdefault(user_id, {})
    for key, is_live, figures in rows:
        into[key, is_live] = [a + b for a, b in zip(into.get((key, is_live), [0] * len(FIGURES)), figures, strict=True)]


def _write(user_id: int, rows: list) -> None:
    """One upsert per 1,000 rows (SQLite's parameter limit), in key order: the lock order of every writer."""
    rows = sorted((row for row in rows if any(row[2])), key=lambda row: (row[0][0], row[0][1], row[1]))
    with connection.cursor() as cursor:
        for start in range(0, len(rows), 1000):
            params: list = []
            for (day, model), is_live, figures in rows[start : start + 1000]:
                params += [user_id, connection.ops.adapt_datefield_value(day), model, is_live, *figures]
            cursor.execute(_upsert_sql(len(params) // 9), params)


def message_figures(message: ChatMessage) -> tuple[Key, list[int]]:
    """A message's ledger key and figures."""
    return (
        (message.timestamp.astimezone(UTC).date(), message.model or ""),
        [
            1,
            message.input_tokens or 0,
            message.output_tokens or 0,
            message.total_tokens or 0,
            1 if message.error else 0,
        ],
    )


def _sum(messages: Iterable[ChatMessage], sign: int, into: Deltas) -> Deltas:
    for message in messages:
        key, figures = message_figures(message)
        into[key] = [a + sign * b for a, b in zip(into.get(key, [0] * len(FIGURES)), figures, strict=True)]
    return into


def usage_record(*, user_id: int | None, saved: Iterable[ChatMessage], replaced: Iterable[ChatMessage] = ()) -> None:
    """Messages were saved: `saved` as stored now, `replaced` as they were before (upserts).

    Guest sessions (no user) have no ledger. The messages need `timestamp`,
    `model`, the three token counts and `error` loaded.
    """
    if user_id is None:
        return
    usage_apply(user_id=user_id, live=_sum(replaced, -1, _sum(saved, 1, {})))


def usage_retire(*, user_id: int | None, deleted: Iterable[ChatMessage]) -> None:
    """Messages are being deleted: their figures move from the live rows to the deleted ones."""
    if user_id is None:
        return
    figures = _sum(deleted, 1, {})
    usage_apply(user_id=user_id, live={k: [-x for x in v] for k, v in figures.items()}, retired=figures)


def usage_retire_sessions(*, user_id: int | None, session_ids: Iterable[str]) -> None:
    """Sessions are being deleted: what their messages used moves to the deleted rows.

    One grouped query over the sessions' messages (a row per day and model), so
    memory does not grow with the sessions' length.
    """
    if user_id is None:
        return
    grouped = (
        ChatMessage.objects.filter(session_id__in=list(session_ids))
        .annotate(day=TruncDate("timestamp"), model_key=Coalesce("model", Value("")))
        .values("day", "model_key")
        .order_by()
        .annotate(
            n=Count("id"),
            i=Coalesce(Sum("input_tokens"), 0),
            o=Coalesce(Sum("output_tokens"), 0),
            t=Coalesce(Sum("total_tokens"), 0),
            e=Count("id", filter=Q(error=True)),
        )
    )
    figures: Deltas = defaultdict(lambda: [0] * len(FIGURES))
    for row in grouped:
        figures[(row["day"], row["model_key"])] = [row["n"], row["i"], row["o"], row["t"], row["e"]]
    usage_apply(user_id=user_id, live={k: [-x for x in v] for k, v in figures.items()}, retired=figures)


def day_sql(vendor: str, column: str) -> str:
    """The UTC day of a timestamp column, in SQL."""
    if vendor == "postgresql":
        return f"({column} AT TIME ZONE 'UTC')::date"
    return f"date({column})"  # SQLite keeps UTC text


def messages_usage_sql(vendor: str, where: str = "") -> str:
    """SELECT user_id, day, model and the FIGURES of the live ledger, as the messages say.

    `where` is an extra condition on the sessions `s` (e.g. "AND s.user_id IN (...)").
    """
    day = day_sql(vendor, "m.message_timestamp")
    return (
        f"SELECT s.user_id, {day} AS day, COALESCE(m.model, '') AS model, COUNT(*) AS messages, "  # noqa: S608 (constants; `where` is the caller's SQL with placeholders)
        "COALESCE(SUM(m.input_tokens), 0) AS input_tokens, COALESCE(SUM(m.output_tokens), 0) AS output_tokens, "
        "COALESCE(SUM(m.total_tokens), 0) AS total_tokens, SUM(CASE WHEN m.error THEN 1 ELSE 0 END) AS errors "
        "FROM chat_messages m JOIN chat_sessions s ON s.id = m.session_id "
        f"WHERE s.user_id IS NOT NULL {where} "
        f"GROUP BY s.user_id, {day}, COALESCE(m.model, '')"
    )
