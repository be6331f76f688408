"""The staff inbox: guest sessions by latest activity, read from the session rows alone.

The write service keeps each session's newest message id and role on its row
(`last_message_id`, `last_role`), so a page is one query over the partial indexes
on (updated_at, id) of guest sessions, and never reads a message.
"""

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.db.models import Q, QuerySet

from chat.models import ChatSession, Role

INBOX_PAGE_SIZE = 50

# A row of the inbox, in its wire order (API.md, "Staff inbox"); awaiting_reply is derived.
INBOX_COLUMNS = (
    "session_key",
    "id",
    "guest_name",
    "created_at",
    "updated_at",
    "message_count",
    "last_message_id",
    "last_message_preview",
    "last_role",
)

# Where a page starts or ends: a session's (updated_at, id), the inbox's sort key.
Position = tuple[datetime, str]


@dataclass(frozen=True)
class InboxPage:
    rows: list[dict[str, Any]]
    # The positions to read the next (older) and previous (newer) page from; None at an end.
    next: Position | None
    previous: Position | None


def _to_row(values: dict[str, Any]) -> dict[str, Any]:
    """A session's inbox row, JSON-ready with chat.json.dumps (datetimes stay datetimes)."""
    row = {column: values[column] for column in INBOX_COLUMNS}
    row["session_key"] = str(row["session_key"])
    row["awaiting_reply"] = row["last_role"] == Role.USER
    return row


def _position(row: dict[str, Any]) -> Position:
    return row["updated_at"], row["id"]


def _guest_sessions(*, awaiting_reply: bool) -> QuerySet[ChatSession]:
    sessions = ChatSession.objects.filter(user__isnull=True)
    if awaiting_reply:
        # The exact predicate of the chat_session_guest_awaiting partial index.
        sessions = sessions.filter(last_role=Role.USER)
    return sessions


def inbox_sessions(
    *,
    awaiting_reply: bool = False,
    after: Position | None = None,
    before: Position | None = None,
    limit: int = INBOX_PAGE_SIZE,
) -> InboxPage:
    """A page of guest sessions, latest activity first (updated_at, then id, descending).

    `after`: the page of sessions older than that position (following `next`);
    `before`: the page of sessions newer than it (following `previous`); neither:
    the newest. With `awaiting_reply`, only sessions whose newest message is the
    guest's. One query of at most `limit` + 1 rows (the extra one says whether
    there is more), an index range scan either way.
    """
    if after is not None and before is not None:
        raise ValueError("give after or before, not both")
    sessions = _guest_sessions(awaiting_reply=awaiting_reply)
    if before is None:
        if after is not None:
            updated_at, session_id = after
            # The first condition alone bounds the index range; the second breaks ties.
            sessions = sessions.filter(updated_at__lte=updated_at).filter(
                Q(updated_at__lt=updated_at) | Q(id__lt=session_id)
            )
        found = [_to_row(v) for v in sessions.order_by("-updated_at", "-id").values(*INBOX_COLUMNS)[: limit + 1]]
        rows = found[:limit]
        more_older = len(found) > limit
        return InboxPage(
            rows=rows,
            next=_position(rows[-1]) if more_older else None,
            previous=_position(rows[0]) if after is not None and rows else None,
        )

    updated_at, session_id = before
    sessions = sessions.filter(updated_at__gte=updated_at).filter(Q(updated_at__gt=updated_at) | Q(id__gt=session_id))
    found = [_to_row(v) for v in sessions.order_by("updated_at", "id").values(*INBOX_COLUMNS)[: limit + 1]]
    more_newer = len(found) > limit
    rows = found[:limit][::-1]
    return InboxPage(
        rows=rows,
        next=_position(rows[-1]) if rows else None,
        previous=_position(rows[0]) if more_newer else None,
    )


def inbox_session(*, session_id: str | None = None, session_key=None) -> dict[str, Any] | None:
    """One guest session's inbox row (what the inbox's event stream sends), by id or key; one query.

    None when there is no such guest session (unknown, purged, or one with an owner).
    """
    if (session_id is None) == (session_key is None):
        raise ValueError("give session_id or session_key")
    lookup = {"pk": session_id} if session_id is not None else {"session_key": session_key}
    values = _guest_sessions(awaiting_reply=False).filter(**lookup).values(*INBOX_COLUMNS).first()
    return _to_row(values) if values is not None else None
