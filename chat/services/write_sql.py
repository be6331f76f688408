"""The locked part of a write on PostgreSQL: one statement, `chat_session_write(...)`.

The function (chat/sql/session_write.sql, with the reasons for each
step) takes the session's row lock, checks who may write, upserts the messages
and moves the statistics and the usage ledger; the rows come in ready-made
(chat.services.writing). Sent outside a transaction, as a request sends it, the
statement is its own transaction: the lock is granted, used and released within
one round trip, and nothing of the application runs while it is held. Inside a
transaction (a test, a caller's atomic block) it joins it, and the lock lasts
until that commits.

Outside a transaction the write's commit does not wait for its WAL to reach the
disk (`synchronous_commit` off for that one transaction), so the lock is released
as soon as the function returns, and the next writer of the session (or of the
user's usage ledger) does not queue behind this one's disk flush (≈2 ms here, more
than the function's own work). The request then sends `FLUSH_SQL`, a transaction of
its own that commits as the server is configured, and so waits for the WAL to be
flushed up to its own commit record, past the write's: the answer still leaves
only once the write is on disk (or on the synchronous standbys), as with a plain
commit. What changes is visibility: other readers may see the write a flush
earlier than its author hears of it. A database crash in that window (the flush's
few milliseconds) loses a write no one was told was saved, which a poller may
have seen.
"""

from django.db import connection
from psycopg.types.datetime import TimestamptzLoader

from chat import metrics
from chat.exceptions import Conflict, Forbidden, NotFound
from chat.models import DEFAULT_TITLE, ChatMessage
from chat.services.writing import SessionWrite, after_write

WRITE_SQL = (
    "SELECT outcome, session_id, owner_id, guest_key, ids, stamps, written_at, retried_content, "
    "retried_content_type{after} FROM chat_session_write(%s, %s, %s, %s, %s, %s, %s, %s, %s, %s::json, %s::text[], "
    "%s::text[])"
)
# A request's write: the commit does not wait for the flush, and `held` is the
# lock's hold by the database's clock (a set-returning PL/pgSQL function runs to
# its end before its row is projected, so this clock_timestamp() is read at the
# end of the function: from the grant to there, the asynchronous commit after it
# being a few microseconds).
AUTOCOMMIT_WRITE_SQL = WRITE_SQL.format(
    after=", clock_timestamp() - written_at AS held, set_config('synchronous_commit', 'off', true)"
)
IN_TRANSACTION_WRITE_SQL = WRITE_SQL.format(after="")
# A transaction that commits as the server is configured, so waits for the WAL's
# flush past its own commit record and therefore past the write's (see the module's
# docstring). PostgreSQL flushes at commit only a transaction that has an id and
# wrote WAL: a transactional logical-decoding message is both, and touches no table
# (logical decoding consumers, if any, see an empty message with this prefix).
FLUSH_SQL = "SELECT pg_logical_emit_message(true, 'chat.write_flush', '')"


def write_sql(write: SessionWrite) -> list[ChatMessage]:
    """Run `write` as one statement; the stored messages in request order (a retry: the one first stored)."""
    prepared = write.prepared
    params = [
        write.session_id,
        write.session_key,
        write.user.pk if write.user is not None else None,
        write.new_title,
        write.title,
        write.first_title,
        DEFAULT_TITLE,
        write.retry_id,
        write.author.pk if write.author is not None else None,
        prepared.payload(),
        prepared.extras(),
        prepared.previews,
    ]
    autocommit = not connection.in_atomic_block
    with connection.cursor() as cursor:
        # psycopg's own (C) timestamptz loader; the connection's time zone is UTC.
        cursor.cursor.adapters.register_loader("timestamptz", TimestamptzLoader)
        cursor.execute(AUTOCOMMIT_WRITE_SQL if autocommit else IN_TRANSACTION_WRITE_SQL, params)
        row = cursor.fetchone()
        outcome, session_id, owner_id, guest_key, ids, stamps, written_at, retried_content, retried_type = row[:9]
        held = row[9] if autocommit else None
        if autocommit and outcome in ("ok", "retry"):
            # A retry answers with a message another request stored: durable too.
            cursor.execute(FLUSH_SQL)
    if outcome == "not_found":
        raise NotFound("Session not found")
    if outcome == "forbidden":
        raise Forbidden("This session belongs to someone else")
    if outcome == "conflict":
        raise Conflict("This id belongs to another message of the session", details={"id": [write.retry_id]})
    if autocommit:
        metrics.observe_lock_hold(held.total_seconds())
    if outcome == "retry":
        stored = ChatMessage(
            id=ids[0],
            session_id=session_id,
            message_id=write.retry_id,
            role=write.prepared.rows[0].role,
            author=write.author,
            content=retried_content,
            content_type=retried_type,
            timestamp=stamps[0],
        )
        _mark_stored(stored)
        return [stored]
    rows = prepared.rows
    for message, pk, stamp in zip(rows, ids, stamps, strict=True):
        message.id = pk
        message.session_id = session_id
        message.timestamp = stamp
        message.created_at = written_at
        _mark_stored(message)
    after_write(source=write.source, saved=len(rows), guest_key=guest_key if owner_id is None else None)
    return rows


def _mark_stored(message: ChatMessage) -> None:
    """As bulk_create leaves what it saved: a row of the default database."""
    message._state.adding = False
    message._state.db = connection.alias
