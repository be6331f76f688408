"""A session's history for GET /api/chat/messages: whole or a page, in bounded batches.

A worker's memory must not grow with the session (a free user can store ~100
messages of 1 MiB an hour), so a history is read in batches: each at most
BATCH_ROWS messages whose text (content, error_message, extra keys) starts
within BATCH_BYTES, by a keyset on the (session, timestamp, id) index. The bytes
are exactly those of `orjson.dumps(the whole list)`.

On PostgreSQL a history that fits one batch (the usual case: 1,000 messages are
~0.6 MB) is one statement, the session row LEFT JOINed to the batch: an unknown
session (no row), an empty one (one row of NULLs) and the ETag's state come with
the messages, and the answer is built at once. A longer one is streamed: its
batches are read one after the other inside one REPEATABLE READ transaction (one
snapshot, whatever writers do meanwhile), each encoded and handed on before the
next is read. Elsewhere (SQLite, development only) the ORM reads it at once.
"""

import base64
import binascii
import hashlib
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from django.db import connection, transaction
from django.db.models import Q
from psycopg.types.datetime import TimestamptzLoader
from psycopg.types.json import set_json_loads

from chat.exceptions import ApiError, Forbidden, NotFound
from chat.json import OPTIONS
from chat.models import ChatMessage, ChatSession
from chat.selectors.messages import MESSAGE_FIELDS, with_extra

BATCH_ROWS = 2000
BATCH_BYTES = 1024 * 1024

Key = tuple[datetime, int]  # a message's place in the history: (timestamp, id)

_WIRE_KEYS = tuple(MESSAGE_FIELDS)
_TIMESTAMP = _WIRE_KEYS.index("timestamp")
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


# --------------------------------------------------------------------------- cursors


class InvalidCursor(ApiError):
    message = "Invalid cursor"

    def __init__(self):
        super().__init__(details={"before": ["Invalid cursor."]})


_CURSOR_TEXT = re.compile(r"-?[0-9]{1,18}\.[0-9]{1,19}")


def _b64(text: str) -> str:
    return base64.urlsafe_b64encode(text.encode()).decode().rstrip("=")


def cursor_encode(key: Key) -> str:
    """An opaque `before` cursor for a message's place: base64url of `<epoch µs>.<id>`."""
    timestamp, pk = key
    return _b64(f"{(timestamp - _EPOCH) // timedelta(microseconds=1)}.{pk}")


def cursor_decode(cursor: str) -> Key:
    """The place a `before` cursor names; InvalidCursor (a 400) for anything cursor_encode did not make."""
    try:
        text = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode("ascii")
    except (binascii.Error, ValueError):
        raise InvalidCursor() from None
    if not _CURSOR_TEXT.fullmatch(text) or _b64(text) != cursor:  # one spelling per place
        raise InvalidCursor()
    micros, pk = (int(part) for part in text.split("."))
    try:
        timestamp = _EPOCH + timedelta(microseconds=micros)
    except OverflowError:
        raise InvalidCursor() from None
    if not 0 < pk < 2**63:
        raise InvalidCursor()
    return timestamp, pk


# --------------------------------------------------------------------------- the answer


@dataclass(frozen=True)
class HistoryState:
    """What a history answer depends on, read from the session row alone: every write
    moves `updated_at` under the session's row lock, and inserts and deletes move
    `message_count` too (so even two writes in one clock tick differ)."""

    session_id: str
    updated_at: datetime
    message_count: int

    def etag(self, *, query: str = "") -> str:
        """A strong ETag of the answer to `query` (the page's parameters) in this state."""
        raw = f"{self.session_id}\0{self.updated_at.isoformat()}\0{self.message_count}\0{query}"
        return '"' + hashlib.blake2b(raw.encode(), digest_size=12).hexdigest() + '"'


@dataclass
class History:
    state: HistoryState
    body: bytes | None  # the whole JSON array, when it was small enough to build at once
    chunks: Iterator[bytes] | None  # else its pieces, read as they are consumed
    older: Key | None  # a page's oldest message, when older ones remain (the `prev` link)


def _owned(user, row: tuple, session_id: str) -> HistoryState:
    user_id, updated_at, message_count = row
    if user_id != user.pk:
        raise Forbidden("This session belongs to someone else")
    return HistoryState(session_id, updated_at, message_count)


def session_history_state(*, user, session_id: str) -> HistoryState:
    """The state an ETag is made of: one read of the session row, none of its messages."""
    row = ChatSession.objects.filter(pk=session_id).values_list("user_id", "updated_at", "message_count").first()
    if row is None:
        raise NotFound("Session not found")
    return _owned(user, row, session_id)


def session_history(*, user, session_id: str, limit: int | None = None, before: Key | None = None) -> History:
    """A user's session's messages by (timestamp, id), oldest first, as JSON.

    Without `limit`, all of them. With it, the newest `limit` older than `before`
    (or the newest of all), and `older` set when there are more before those.
    Raises NotFound or Forbidden before any of it is produced.
    """
    if connection.vendor == "postgresql":
        return _postgres_history(user, session_id, limit, before)
    return _orm_history(user, session_id, limit, before)


def _array(messages: list[dict[str, Any]]) -> bytes:
    return orjson.dumps(messages, option=OPTIONS)


def _chunks(batches: Iterator[list[dict[str, Any]]]) -> Iterator[bytes]:
    """The JSON array of every batch's messages: `[`, `a,b`, `,`, `c,d`, ..., `]`.

    The separators go as pieces of their own, and a batch of one message (a long
    one) is encoded alone, so no piece is copied to be framed.
    """
    opened = False
    try:
        for messages in batches:
            if not messages:
                continue
            yield b"," if opened else b"["
            opened = True
            piece = _array(messages)[1:-1] if len(messages) > 1 else orjson.dumps(messages[0], option=OPTIONS)
            del messages
            yield piece
        yield b"]" if opened else b"[]"
    finally:
        batches.close()  # ends the batches' transaction now, not when collected


# --------------------------------------------------------------------------- PostgreSQL

_COLUMNS = ", ".join("m." + ("message_timestamp" if c == "timestamp" else c) for c in MESSAGE_FIELDS.values())
_SIZE = "octet_length(content) + coalesce(octet_length(error_message), 0) + coalesce(octet_length(extra::text), 0)"

# One batch of a session's messages: at most %(rows)s in {order} from the keyset
# {bound}, those whose text starts within %(bytes)s (so the first always fits);
# each with `running`, the text's bytes up to its end, and `pk` for the next keyset.
# octet_length reads a long value's size from its TOAST pointer, not the value.
_BATCH = """
SELECT {columns}, m.extra, m.running, m.id AS pk
FROM (
    SELECT *, {size} AS size,
           sum({size}) OVER (ORDER BY message_timestamp {order}, id {order} ROWS UNBOUNDED PRECEDING) AS running
    FROM chat_messages
    WHERE session_id = %(session)s {bound}
    ORDER BY message_timestamp {order}, id {order}
    LIMIT %(rows)s
) m
WHERE m.running - m.size < %(bytes)s
ORDER BY m.message_timestamp {order}, m.id {order}
"""
_AFTER = "AND (message_timestamp, id) > (%(after_ts)s, %(after_id)s)"
_BEFORE = "AND (message_timestamp, id) < (%(before_ts)s, %(before_id)s)"
_THROUGH = "AND (message_timestamp, id) <= (%(through_ts)s, %(through_id)s)"


def _batch(*, order: str = "ASC", bound: str = "") -> str:
    return _BATCH.format(columns=_COLUMNS, size=_SIZE, order=order, bound=bound)


# The first batch with the session row. A page reads newest first, one more than
# asked (which says older ones remain).
# (The session's columns come last, so that a row's first ones are the wire keys'.)
_FIRST = (
    "SELECT b.*, s.user_id, s.updated_at, s.message_count"
    " FROM chat_sessions s LEFT JOIN LATERAL ({}) b ON true WHERE s.id = %(session)s"
)
_FIRST_WHOLE = _FIRST.format(_batch())
_FIRST_PAGE = _FIRST.format(_batch(order="DESC"))
_FIRST_PAGE_BEFORE = _FIRST.format(_batch(order="DESC", bound=_BEFORE))
# The later batches of a streamed history: after the last one read, up to a page's newest.
_NEXT = {
    (False, False): _batch(),
    (True, False): _batch(bound=_AFTER),
    (False, True): _batch(bound=_THROUGH),
    (True, True): _batch(bound=f"{_AFTER} {_THROUGH}"),
}
# A long page's oldest message (`limit` back from its newest) and the one before it.
_PAGE_START = """
SELECT message_timestamp, id FROM chat_messages
WHERE session_id = %(session)s AND (message_timestamp, id) <= (%(through_ts)s, %(through_id)s)
ORDER BY message_timestamp DESC, id DESC OFFSET %(skip)s LIMIT 2
"""
_EXTRA, _RUNNING, _PK = len(_WIRE_KEYS), len(_WIRE_KEYS) + 1, len(_WIRE_KEYS) + 2


def _fetch(sql: str, params: dict) -> list[tuple]:
    """Rows with psycopg's C loaders for timestamps and orjson for JSON (Django's are Python)."""
    with connection.cursor() as cursor:
        raw = cursor.cursor
        raw.adapters.register_loader("timestamptz", TimestamptzLoader)
        set_json_loads(orjson.loads, raw)
        cursor.execute(sql, params)
        return cursor.fetchall()


def _messages(rows: list[tuple]) -> list[dict[str, Any]]:
    messages = [dict(zip(_WIRE_KEYS, row, strict=False)) for row in rows]  # zip stops at the wire keys
    for message, row in zip(messages, rows, strict=True):
        if row[_EXTRA] is not None:
            with_extra(message, row[_EXTRA])
    return messages


def _key(row: tuple) -> Key:
    return row[_TIMESTAMP], row[_PK]


def _params(session_id: str, rows: int | None = None, **keys: Key | None) -> dict[str, Any]:
    params: dict[str, Any] = {"session": session_id, "rows": rows or BATCH_ROWS, "bytes": BATCH_BYTES}
    for name, key in keys.items():
        if key is not None:
            params[f"{name}_ts"], params[f"{name}_id"] = key
    return params


def _postgres_history(user, session_id: str, limit: int | None, before: Key | None) -> History:
    if limit is None:
        sql, asked = _FIRST_WHOLE, BATCH_ROWS
    else:
        sql, asked = (_FIRST_PAGE_BEFORE if before else _FIRST_PAGE), limit + 1
    rows = _fetch(sql, _params(session_id, asked, before=before))
    if not rows:
        raise NotFound("Session not found")
    state = _owned(user, rows[0][_PK + 1 :], session_id)
    batch = rows if rows[0][_PK] is not None else []  # NULLs: the LEFT JOIN found no message
    # Whole if neither bound cut it: fewer rows than asked, the text within the budget.
    whole = len(batch) < asked and (not batch or batch[-1][_RUNNING] < BATCH_BYTES)
    if limit is None:
        if whole:
            return History(state, _array(_messages(batch)), None, None)
        return History(state, None, _chunks(_postgres_batches(session_id)), None)
    if whole or len(batch) == asked:  # the page and the one after it, all read
        older = _key(batch[limit - 1]) if len(batch) > limit else None
        return History(state, _array(_messages(batch[:limit][::-1])), None, older)
    # A page too long for one batch: find where it starts, then stream it oldest first.
    through = _key(batch[0])
    places = _fetch(_PAGE_START, {**_params(session_id, through=through), "skip": limit - 1})
    older, after = (tuple(places[0]), tuple(places[1])) if len(places) == 2 else (None, None)
    return History(state, None, _chunks(_postgres_batches(session_id, after=after, through=through)), older)


def _postgres_batches(session_id: str, *, after: Key | None = None, through: Key | None = None):
    """The messages from `after` (exclusive) to `through` (inclusive), batch by batch, one snapshot.

    Runs while the answer is being sent; the transaction ends with the last batch,
    or when the answer is closed early (a client gone).
    """
    outermost = not connection.in_atomic_block
    with transaction.atomic():
        if outermost:  # else a caller's transaction, whatever its isolation (tests)
            with connection.cursor() as cursor:
                cursor.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ, READ ONLY")
        while True:
            sql = _NEXT[(after is not None, through is not None)]
            rows = _fetch(sql, _params(session_id, after=after, through=through))
            if not rows:
                return
            last, done = _key(rows[-1]), len(rows) < BATCH_ROWS and rows[-1][_RUNNING] < BATCH_BYTES
            messages = _messages(rows)
            del rows  # the messages hold what is still needed
            yield messages
            del messages
            if done:
                return
            after = last


# --------------------------------------------------------------------------- elsewhere (SQLite)


def _orm_history(user, session_id: str, limit: int | None, before: Key | None) -> History:
    """Development only: one query for the whole history (the session LEFT JOINed to its
    messages), or the state and then the page; built at once, not streamed."""
    if limit is None:
        rows = list(
            ChatSession.objects.filter(pk=session_id)
            .values_list(
                "user_id",
                "updated_at",
                "message_count",
                *(f"messages__{column}" for column in MESSAGE_FIELDS.values()),
                "messages__extra",
            )
            .order_by("messages__timestamp", "messages__id")
        )
        if not rows:
            raise NotFound("Session not found")
        state = _owned(user, rows[0][:3], session_id)
        if rows[0][3] is None:  # the LEFT JOIN found no message
            return History(state, b"[]", None, None)
        messages = [with_extra(dict(zip(_WIRE_KEYS, row[3:], strict=False)), row[-1]) for row in rows]
        return History(state, _array(messages), None, None)

    state = session_history_state(user=user, session_id=session_id)
    messages = ChatMessage.objects.filter(session_id=session_id).only(*MESSAGE_FIELDS.values(), "extra")
    if before is not None:
        timestamp, pk = before
        messages = messages.filter(Q(timestamp__lt=timestamp) | Q(timestamp=timestamp, id__lt=pk))
    page = list(messages.order_by("-timestamp", "-id")[: limit + 1])
    older = (page[limit - 1].timestamp, page[limit - 1].pk) if len(page) > limit else None
    return History(state, _array([_wire(m) for m in reversed(page[:limit])]), None, older)


def _wire(message: ChatMessage) -> dict[str, Any]:
    return with_extra({key: getattr(message, column) for key, column in MESSAGE_FIELDS.items()}, message.extra)
