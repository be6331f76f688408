"""What every write of messages shares, whichever engine runs its locked part.

A write to a session is prepared here first, with no lock held: ids given,
duplicates refused, the rows built with their defaults, each message's preview
shortened, the title of a new session chosen and, for PostgreSQL, the rows
encoded as JSON. Only then does an engine take the session's row lock and do
what needs it: chat.services.write_sql (PostgreSQL: one statement) or the ORM
(chat.services.messages: SQLite, the import). Both take the same SessionWrite and
give the same result, and tests/test_session_write_paths.py holds them to it.
"""

import functools
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
from django.db import transaction

from chat import metrics, replica, wakeups
from chat.exceptions import ApiError
from chat.models import DEFAULT_TITLE, ChatMessage, Role

TITLE_LENGTH = 50
PREVIEW_LENGTH = 100

# The columns of a message that its request sets, as the PostgreSQL engine receives
# them (chat_messages' names -> ChatMessage's). Its extra keys and its author are
# parameters of their own.
REQUEST_COLUMNS = {
    "message_id": "message_id",
    "role": "role",
    "content": "content",
    "content_type": "content_type",
    "model": "model",
    "original_model": "original_model",
    "total_tokens": "total_tokens",
    "input_tokens": "input_tokens",
    "output_tokens": "output_tokens",
    "user_message_id": "user_message_id",
    "elapsed_time": "elapsed_time",
    "completion_id": "completion_id",
    "message_timestamp": "timestamp",
    "error": "error",
    "error_message": "error_message",
    "error_code": "error_code",
    "retry_after": "retry_after",
    "suggestions": "suggestions",
}


def shorten(text: str, limit: int) -> str:
    """Collapse whitespace runs; cut to `limit` characters ending in `...`.

    A long text is collapsed from a prefix when that is enough: the collapsed
    prefix is a prefix of the collapsed whole, so once it is past `limit` the cut
    is the same (a 1 MB message costs microseconds, not a split of all of it).
    """
    head = text[: 4 * limit]
    collapsed = " ".join(head.split())
    if len(head) < len(text) and len(collapsed) <= limit:
        collapsed = " ".join(text.split())
    if len(collapsed) <= limit:
        return collapsed
    return collapsed[: limit - 3].rstrip() + "..."


def title_for(*, session_title: str | None, messages: Sequence[dict[str, Any]]) -> str:
    """The title of a new session: explicit, else the first user message, else the default."""
    if session_title and session_title.strip():
        return session_title.strip()
    first_user = next((m for m in messages if m["role"] == Role.USER), None)
    if first_user is not None:
        return shorten(first_user.get("content") or "", TITLE_LENGTH) or DEFAULT_TITLE
    return DEFAULT_TITLE


def new_message_id() -> str:
    return f"msg_{uuid.uuid4().hex}"


@dataclass
class PreparedRows:
    """A write's messages, built before the lock: all but what the lock decides (the
    session, a missing timestamp, the integer ids, the time of the write)."""

    rows: list[ChatMessage]
    previews: list[str]  # each message's content shortened to a session preview

    def payload(self) -> str:
        """The rows as the PostgreSQL engine takes them: a JSON array of objects keyed by column."""
        return orjson.dumps(
            [{column: getattr(row, attr) for column, attr in REQUEST_COLUMNS.items()} for row in self.rows]
        ).decode()

    def extras(self) -> list[str | None]:
        """Each row's extra keys as the JSON text the `json` column keeps (as the ORM writes it).

        Apart from the rows: PostgreSQL's JSON functions refuse a NUL escape
        (`\\u0000`) inside a document they take apart, which extra keys may hold.
        """
        return [None if row.extra is None else orjson.dumps(row.extra).decode() for row in self.rows]


def rows_prepare(*, messages: Sequence[dict[str, Any]], author=None) -> PreparedRows:
    """Build the rows of `messages` (validated fields; `message_id` given to those without).

    Two messages with one id are refused: one statement cannot upsert a row twice,
    and the request would not say which one it meant.
    """
    messages = [m if m.get("message_id") else {**m, "message_id": new_message_id()} for m in messages]
    ids = {m["message_id"] for m in messages}
    if len(ids) != len(messages):
        raise ApiError(details={"messages": ["Two messages share one `id`."]})
    rows = [
        ChatMessage(
            author=author,
            **{
                **fields,
                "timestamp": fields.get("timestamp"),
                "error": bool(fields.get("error")) or fields.get("error_message") is not None,
            },
        )
        for fields in messages
    ]
    return PreparedRows(rows=rows, previews=[shorten(row.content, PREVIEW_LENGTH) for row in rows])


@dataclass
class SessionWrite:
    """One write of messages to one session, everything that needs no lock done.

    The session is named either by id (the API: made for `user` if unknown, and
    refused unless `user` owns it) or by a guest session's key (the guest send and
    the staff reply: unknown, or owned, is not found).
    """

    prepared: PreparedRows
    source: str  # for the metrics: one of metrics.SOURCES
    session_id: str | None = None
    session_key: uuid.UUID | None = None
    user: Any = None
    new_title: str = DEFAULT_TITLE  # the title of a session this write makes
    title: str | None = None  # a title to set (the API's non-blank sessionTitle)
    first_title: str | None = None  # a guest send: the title of a session still empty and untitled
    # A guest send's or a staff reply's client id: a retry if its author stored it already.
    retry_id: str | None = None
    author: Any = None  # a staff reply's author

    def retries(self, *, role: str, author_id: int | None) -> bool:
        """Whether a stored message with this write's `retry_id` is this author's own earlier send:
        the same role (a guest's user message, a staff reply) and the same author (none for a guest)."""
        return role == self.prepared.rows[0].role and author_id == (self.author.pk if self.author else None)

    def title_to_set(self, *, current: str, message_count: int) -> str | None:
        """The session's new title once it is locked, or None to keep its own."""
        if self.title is not None and self.title != current:
            return self.title
        if self.first_title is not None and message_count == 0 and current == DEFAULT_TITLE:
            return self.first_title
        return None


def after_write(*, source: str, saved: int, guest_key: uuid.UUID | None) -> None:
    """What follows a committed write (at once outside a transaction, else on its commit).

    Counted once it commits: a rolled-back save saved nothing. Guest sessions have
    waiters (chat.live): they are woken after the write is marked for the read
    replica, so that what they read has it.
    """
    transaction.on_commit(functools.partial(metrics.observe_messages_saved, source, saved))
    if guest_key is not None:
        replica.note_write_on_commit([replica.guest_caller(guest_key)])
        wakeups.publish_on_commit(session_key=guest_key)
