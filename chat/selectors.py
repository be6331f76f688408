"""Every read of sessions and messages."""

from typing import Any

import orjson
from django.db import connection
from django.db.models import FilteredRelation, Q, QuerySet
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


def _fetch(queryset: QuerySet) -> list[tuple]:
    """The rows of a values_list() queryset, fetched fast on PostgreSQL.

    The ORM builds the SQL; on PostgreSQL the rows are fetched with psycopg's own
    (C) timestamptz loader instead of Django's pure-Python one, which is most of
    the cost of a long history. The connection's time zone is UTC, so the
    datetimes are the same. Django returns jsonb as text here; it is decoded by
    the caller. Elsewhere the ORM fetches as usual.
    """
    if connection.vendor != "postgresql":
        return list(queryset)
    sql, params = queryset.query.sql_with_params()
    with connection.cursor() as cursor:
        cursor.cursor.adapters.register_loader("timestamptz", TimestamptzLoader)
        cursor.execute(sql, params)
        return cursor.fetchall()


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


def guest_messages_after(*, session_key, after_id: int, limit: int) -> tuple[list[dict[str, Any]], bool]:
    """A guest session's messages with id > `after_id`, oldest first, at most `limit`; and whether more wait.

    One query: the guest session LEFT JOINed to its messages newer than the cursor
    (the condition sits in the join, so a session with nothing new is still one row
    of NULLs, and an unknown key — or one of an owned session — is no row at all),
    through the (session, id) index, `limit` + 1 rows to tell whether more wait.
    """
    rows = _fetch(
        ChatSession.objects.filter(session_key=session_key, user__isnull=True)
        .annotate(new=FilteredRelation("messages", condition=Q(messages__id__gt=after_id)))
        .values_list(*(f"new__{column}" for column in GUEST_MESSAGE_FIELDS.values()))
        .order_by("new__id")[: limit + 1]
    )
    if not rows:
        raise NotFound("Session not found")
    if rows[0][0] is None:  # the LEFT JOIN found nothing new
        return [], False
    return [dict(zip(_GUEST_WIRE_KEYS, row, strict=True)) for row in rows[:limit]], len(rows) > limit
