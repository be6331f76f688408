"""Every read of sessions and messages."""

import functools
import uuid
from typing import Any

import orjson
from django.db import connection
from django.db.models import FilteredRelation, Q, QuerySet, Subquery
from psycopg.types.datetime import TimestamptzLoader

from chat.errors import Forbidden, NotFound
from chat.models import ChatSession

# The GET shape of a message: wire key -> column. Every key is always present.
MESSAGE_FIELDS: dict[str, str] = {
    "id": "message_id",
    "role": "role",
    "content": "content",
    "contentType": "content_type",
    "model": "model",
    "originalModel": "original_model",
    "total_tokens": "total_tokens",
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "user_message_id": "user_message_id",
    "elapsed_time": "elapsed_time",
    "completion_id": "completion_id",
    "timestamp": "timestamp",
    "error": "error",
    "error_message": "error_message",
    "error_code": "error_code",
    "retry_after": "retry_after",
    "suggestions": "suggestions",
}
_WIRE_KEYS = tuple(MESSAGE_FIELDS)


def _fetch_sql(sql: str, params) -> list[tuple]:
    """Run SQL on PostgreSQL and fetch its rows with psycopg's own (C) timestamptz loader.

    Django's loader is pure Python, and most of the cost of a long history. The
    connection's time zone is UTC, so the datetimes are the same. Django returns
    jsonb as text here; the caller decodes it.
    """
    with connection.cursor() as cursor:
        cursor.cursor.adapters.register_loader("timestamptz", TimestamptzLoader)
        cursor.execute(sql, params)
        return cursor.fetchall()


def _fetch(queryset: QuerySet) -> list[tuple]:
    """The rows of a values_list() queryset: built by the ORM, fetched fast on PostgreSQL (_fetch_sql)."""
    if connection.vendor != "postgresql":
        return list(queryset)
    return _fetch_sql(*queryset.query.sql_with_params())


def message_to_wire(message) -> dict[str, Any]:
    """A stored ChatMessage in the GET shape."""
    return {key: getattr(message, column) for key, column in MESSAGE_FIELDS.items()}


def session_messages(*, user, session_id: str) -> list[dict[str, Any]]:
    """The messages of a user's session in the GET shape, by (timestamp, id).

    One query: the session LEFT JOINed to its messages through the history
    index, so an empty session (one row of NULLs) and an unknown one (no rows)
    are told apart without a second round trip.
    """
    rows = _fetch(
        ChatSession.objects.filter(pk=session_id)
        .values_list("user_id", *(f"messages__{column}" for column in MESSAGE_FIELDS.values()))
        .order_by("messages__timestamp", "messages__id")
    )
    if not rows:
        raise NotFound("Session not found")
    if rows[0][0] != user.pk:
        raise Forbidden("This session belongs to someone else")
    if rows[0][1] is None:  # the LEFT JOIN found no message
        return []
    messages = [dict(zip(_WIRE_KEYS, row[1:], strict=True)) for row in rows]
    for message in messages:
        if isinstance(message["suggestions"], str):  # jsonb as text (PostgreSQL path)
            message["suggestions"] = orjson.loads(message["suggestions"])
    return messages


# A session as the session list shows it (API.md); never its session_key.
SESSION_FIELDS = (
    "id",
    "title",
    "message_count",
    "total_tokens",
    "last_model",
    "last_message_preview",
    "last_message_timestamp",
    "created_at",
    "updated_at",
)


def user_sessions(*, user) -> QuerySet[ChatSession]:
    """A user's sessions, most recently updated first (ties: id, descending)."""
    return ChatSession.objects.filter(user=user).order_by("-updated_at", "-id")


# A guest message on the wire (ChatMessageResource): wire key -> column.
GUEST_MESSAGE_FIELDS: dict[str, str] = {
    "id": "id",
    "message_id": "message_id",
    "role": "role",
    "content": "content",
    "contentType": "content_type",
    "timestamp": "timestamp",
}
_GUEST_WIRE_KEYS = tuple(GUEST_MESSAGE_FIELDS)


def guest_message_to_wire(message) -> dict[str, Any]:
    """A stored ChatMessage as a ChatMessageResource."""
    return {key: getattr(message, column) for key, column in GUEST_MESSAGE_FIELDS.items()}


def _guest_poll_queryset(*, session_key, after_id: int, limit: int) -> QuerySet:
    """The guest session LEFT JOINed to its messages with id > `after_id`, `limit` + 1 of them by id.

    The condition sits in the join, so a session with nothing new is still one row
    of NULLs, and an unknown key (or one of an owned session) is no row at all. The
    join also pins the messages to the session id found by an uncorrelated subquery
    (PostgreSQL: an InitPlan, run once), so whichever join the planner picks, it
    reads a range of the (session, id) index: without it, skewed statistics made it
    hash-join every message with id > cursor (3.4 ms instead of 0.1 ms on 22,000
    rows). The cost grows with the number of new messages of this session, not with
    the table.
    """
    guest = ChatSession.objects.filter(session_key=session_key, user__isnull=True)
    newer = Q(messages__session_id=Subquery(guest.values("pk")), messages__id__gt=after_id)
    return (
        guest.annotate(new=FilteredRelation("messages", condition=newer))
        .values_list(*(f"new__{column}" for column in GUEST_MESSAGE_FIELDS.values()))
        .order_by("new__id")[: limit + 1]
    )


# Stand-ins for the two parameters, to find their places in the compiled SQL.
_KEY_PLACEHOLDER = uuid.UUID("00000000-0000-4000-8000-00000000c0de")
_AFTER_PLACEHOLDER = -7_000_000_000_000_000_000


@functools.lru_cache(maxsize=4)
def _guest_poll_sql(limit: int) -> tuple[str, tuple[str, ...]]:
    """The poll's SQL on PostgreSQL, compiled once from _guest_poll_queryset, and the order of its parameters.

    Compiling a FilteredRelation query costs more than PostgreSQL takes to run it
    (measured: ~2 ms against ~0.7 ms), and the text is the same for every poll.
    """
    sql, params = _guest_poll_queryset(
        session_key=_KEY_PLACEHOLDER, after_id=_AFTER_PLACEHOLDER, limit=limit
    ).query.sql_with_params()
    roles = []
    for param in params:
        if param == _KEY_PLACEHOLDER:
            roles.append("session_key")
        elif param == _AFTER_PLACEHOLDER:
            roles.append("after_id")
        else:  # a Django upgrade compiled it differently: fail loudly, not wrongly
            raise AssertionError(f"unexpected parameter {param!r} in the guest poll's SQL")
    return sql, tuple(roles)


def guest_messages_after(*, session_key: uuid.UUID, after_id: int, limit: int) -> tuple[list[dict[str, Any]], bool]:
    """A guest session's messages with id > `after_id`, oldest first, at most `limit`; and whether more wait.

    One query (_guest_poll_queryset). Raises NotFound for an unknown key or one of
    a session with an owner.
    """
    if connection.vendor == "postgresql":
        sql, roles = _guest_poll_sql(limit)
        values = {"session_key": session_key, "after_id": after_id}
        rows = _fetch_sql(sql, [values[role] for role in roles])
    else:
        rows = list(_guest_poll_queryset(session_key=session_key, after_id=after_id, limit=limit))
    if not rows:
        raise NotFound("Session not found")
    if rows[0][0] is None:  # the LEFT JOIN found nothing new
        return [], False
    return [dict(zip(_GUEST_WIRE_KEYS, row, strict=True)) for row in rows[:limit]], len(rows) > limit
