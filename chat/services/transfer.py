"""A user's data in bulk: import (the export's NDJSON, parsed by chat.api.transfer) and erase.

Both write through the services every write uses, so statistics and the usage
ledger stay right: messages by `session_messages_write`, deletes with
`usage_retire_sessions`.
"""

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from django.db import transaction

from chat.exceptions import ApiError, Forbidden
from chat.models import DEFAULT_TITLE, ChatSession
from chat.services.messages import session_lock, session_lock_or_create, session_messages_write
from chat.services.usage import usage_deferred, usage_retire_sessions
from chat.services.writing import rows_prepare

# Messages written per call of session_messages_write.
IMPORT_BATCH = 500


@dataclass
class SessionRecord:
    line: int
    id: str
    title: str
    created_at: datetime
    updated_at: datetime


@dataclass
class MessageRecord:
    line: int
    session_id: str
    fields: dict[str, Any]  # validated, as session_messages_write takes them


class ImportLineError(ApiError):
    """A line of an import that cannot be taken: the whole import is refused."""

    def __init__(self, line: int, reason: str, errors=None):
        super().__init__(f"Line {line}: {reason}", details={"line": line, "errors": errors or {"line": [reason]}})


@dataclass
class _Pending:
    session_id: str
    messages: list[dict[str, Any]] = field(default_factory=list)


def too_many(limit: int, what: str) -> str:
    return f"an import takes at most {limit:,} {what}: import the rest in another"


def sessions_import(
    *,
    user,
    records: Iterable[SessionRecord | MessageRecord],
    progress=None,
    max_sessions: int | None = None,
    max_messages: int | None = None,
) -> dict[str, int]:
    """Import sessions and their messages for `user`, all or nothing; returns the counts.

    Sessions upsert by id (an existing session of the user keeps its other
    messages and takes the record's title and times), messages upsert by id
    within their session, so importing the same export twice changes nothing.
    A session of someone else (or a guest's) is refused (403); a bad record
    (raised by `records` as ImportLineError) refuses everything (400), and so
    does the first session or message past `max_sessions` or `max_messages`.
    `progress(n)` is called with the number of lines taken, if given.
    """
    imported: dict[str, SessionRecord] = {}
    seen: set[tuple[str, str]] = set()
    pending = _Pending(session_id="")
    messages = 0

    def flush() -> None:
        if pending.messages:
            # Read afresh: the previous batch moved its statistics.
            session = session_lock(session_id=pending.session_id)
            session_messages_write(session=session, prepared=rows_prepare(messages=pending.messages), source="import")
            pending.messages = []

    with transaction.atomic(), usage_deferred():
        for record in records:
            if isinstance(record, SessionRecord):
                if record.id in imported:
                    raise ImportLineError(record.line, f"session {record.id!r} appears twice")
                if max_sessions is not None and len(imported) >= max_sessions:
                    raise ImportLineError(record.line, too_many(max_sessions, "sessions"))
                flush()
                session, _ = session_lock_or_create(session_id=record.id, user=user, title=record.title)
                if session.user_id != user.pk:
                    raise Forbidden(f"Line {record.line}: session {record.id!r} belongs to someone else")
                imported[record.id] = record
            else:
                if record.session_id not in imported:
                    raise ImportLineError(record.line, f"session {record.session_id!r} has no session line before it")
                key = (record.session_id, record.fields["message_id"])
                if key in seen:
                    raise ImportLineError(record.line, f"message {key[1]!r} appears twice in session {key[0]!r}")
                seen.add(key)
                if max_messages is not None and messages >= max_messages:
                    raise ImportLineError(record.line, too_many(max_messages, "messages"))
                if record.session_id != pending.session_id or len(pending.messages) >= IMPORT_BATCH:
                    flush()
                    pending.session_id = record.session_id
                pending.messages.append(record.fields)
                messages += 1
            if progress is not None:
                progress(1)
        flush()
        # The sessions' own fields as exported (writing moved updated_at to now).
        for record in imported.values():
            ChatSession.objects.filter(pk=record.id).update(
                title=record.title or DEFAULT_TITLE, created_at=record.created_at, updated_at=record.updated_at
            )
    return {"sessions": len(imported), "messages": messages}


def sessions_erase(*, user) -> int:
    """Delete every session and message of `user` (usage stays); returns how many sessions.

    The sessions are locked in id order first (as every multi-session writer
    locks them), then their usage moves to the deleted rows, then they go.
    """
    with transaction.atomic():
        ids = list(
            ChatSession.objects.select_for_update().filter(user=user).order_by("pk").values_list("pk", flat=True)
        )
        if not ids:
            return 0
        usage_retire_sessions(user_id=user.pk, session_ids=ids)
        ChatSession.objects.filter(user=user, pk__in=ids).delete()
    return len(ids)
