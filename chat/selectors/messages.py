"""Every read of sessions and messages."""

from typing import Any

from django.db import DEFAULT_DB_ALIAS, connections
from django.db.models import QuerySet
from psycopg.types.datetime import TimestamptzLoader

from chat import replica
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


def fetch_sql(sql: str, params, *, using: str = DEFAULT_DB_ALIAS) -> list[tuple]:
    """Run SQL on PostgreSQL (the database `using`) and fetch its rows with psycopg's own (C) timestamptz loader.

    Django's loader is pure Python, and most of the cost of a long history. The
    connection's time zone is UTC, so the datetimes are the same. Django returns
    jsonb as text here; the caller decodes it.
    """
    with connections[using].cursor() as cursor:
        cursor.cursor.adapters.register_loader("timestamptz", TimestamptzLoader)
        cursor.execute(sql, params)
        return cursor.fetchall()


def with_extra(wire: dict[str, Any], extra: dict[str, Any] | None) -> dict[str, Any]:
    """The GET shape followed by the client's extra keys, which never replace a named one."""
    if extra:
        for key, value in extra.items():
            wire.setdefault(key, value)
    return wire


def message_to_wire(message) -> dict[str, Any]:
    """A stored ChatMessage in the GET shape, its extra keys last."""
    return with_extra({key: getattr(message, column) for key, column in MESSAGE_FIELDS.items()}, message.extra)


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
    """A user's sessions, most recently updated first (ties: id, descending).

    A read that may lag: from the read replica when there is one and it has the
    user's own last write (chat.replica).
    """
    alias = replica.read_alias(caller=replica.user_caller(user))
    return ChatSession.objects.using(alias).filter(user=user).order_by("-updated_at", "-id")
