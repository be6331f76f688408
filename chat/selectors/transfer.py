"""A user's whole history as NDJSON, streamed (the export of API.md)."""

import itertools
from collections.abc import Iterator

from chat import replica
from chat.json import dumps
from chat.models import ChatSession
from chat.selectors.messages import MESSAGE_FIELDS, with_extra

# Sessions and messages per round trip of the server-side cursor.
CHUNK_ROWS = 2000
# Bytes handed to the server at once.
WRITE_BYTES = 64 * 1024

SESSION_COLUMNS = ("id", "title", "created_at", "updated_at")
_MESSAGE_COLUMNS = tuple(f"messages__{column}" for column in MESSAGE_FIELDS.values())


def user_export(*, user_id: int) -> Iterator[bytes]:
    """Each of the user's sessions, oldest first, then its messages (GET shape, by timestamp and id).

    One query (sessions LEFT JOIN messages, so an empty session is a row of
    NULLs): one snapshot, read through a server-side cursor CHUNK_ROWS at a
    time, so memory stays flat whatever the history's size. A read that may
    lag: from the read replica when there is one and it has the user's own last
    write (chat.replica). The query runs here, before the first byte is
    streamed, so a replica that fails it is replaced by the primary at once.
    """

    def start(alias: str) -> tuple[tuple | None, Iterator[tuple]]:
        rows = (
            ChatSession.objects.using(alias)
            .filter(user_id=user_id)
            .order_by("created_at", "id", "messages__timestamp", "messages__id")
            .values_list(*SESSION_COLUMNS, *_MESSAGE_COLUMNS, "messages__extra")
            .iterator(chunk_size=CHUNK_ROWS)
        )
        return next(rows, None), rows

    first, rest = replica.read(caller=replica.owner_caller(user_id), run=start)
    return _lines(first, rest)


def _lines(first: tuple | None, rest: Iterator[tuple]) -> Iterator[bytes]:
    """The export's lines of the rows `first` and `rest`, WRITE_BYTES at a time."""
    if first is None:
        return
    keys = tuple(MESSAGE_FIELDS)
    n = len(SESSION_COLUMNS)
    buffer: list[bytes] = []
    size = 0
    current = None
    for row in itertools.chain((first,), rest):
        lines = []
        if row[0] != current:
            current = row[0]
            lines.append(dumps({"type": "session", **dict(zip(SESSION_COLUMNS, row[:n], strict=True))}))
        if row[n] is not None:  # a message (the LEFT JOIN's NULLs are an empty session)
            message = {"type": "message", "session_id": current, **dict(zip(keys, row[n:-1], strict=True))}
            lines.append(dumps(with_extra(message, row[-1])))
        for line in lines:
            buffer.append(line + b"\n")
            size += len(line) + 1
        if size >= WRITE_BYTES:
            yield b"".join(buffer)
            buffer, size = [], 0
    if buffer:
        yield b"".join(buffer)
