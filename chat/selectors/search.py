"""Full-text search over a user's own messages (the index: chat/migrations/0004_message_search.py).

Every word of the query must match a word of the message, case- and
accent-insensitively. Best matches first, then newest: PostgreSQL ranks with
`ts_rank` over the stored tsvector, SQLite (FTS5 finds the candidates) with the
same kind of figure computed here. Both ranks depend on the message and the
query alone, never on the rest of the table, so a cursor (rank, timestamp, id)
pages stably while others write.
"""

import base64
import binascii
import functools
import math
import re
import unicodedata
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from django.db import connection, connections
from psycopg.types.datetime import TimestamptzLoader
from psycopg.types.json import set_json_loads

from chat import replica
from chat.exceptions import ApiError
from chat.models import ChatMessage
from chat.selectors.messages import MESSAGE_FIELDS, message_to_wire, with_extra

SNIPPET_LENGTH = 160
SNIPPET_LEAD = 40  # characters kept before the first match
ELLIPSIS = "…"
WORD = re.compile(r"\w+")
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class InvalidCursor(ApiError):
    status, code, message = 400, "VALIDATION_ERROR", "Invalid cursor"

    def __init__(self):
        super().__init__(details={"cursor": ["Invalid cursor."]})


@functools.lru_cache(maxsize=65536)
def fold(text: str) -> str:
    """A word as the index sees it: accents off, case folded (cached: words repeat)."""
    decomposed = unicodedata.normalize("NFKD", text)
    return "".join(c for c in decomposed if not unicodedata.combining(c)).casefold()


def query_words(q: str) -> list[str]:
    """The distinct words of a query, folded, in order."""
    return list(dict.fromkeys(fold(word) for word in WORD.findall(q)))


# ----------------------------------------------------------------------------- cursors


def encode_cursor(rank: float, timestamp: datetime, pk: int) -> str:
    micros = (timestamp - EPOCH) // timedelta(microseconds=1)
    return base64.urlsafe_b64encode(orjson.dumps([rank, micros, pk])).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, datetime, int]:
    try:
        rank, micros, pk = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not (isinstance(rank, float | int) and not isinstance(rank, bool) and math.isfinite(rank)):
            raise ValueError(rank)
        if not (type(micros) is int and type(pk) is int and 0 <= pk < 2**63):
            raise ValueError(micros)
        return float(rank), EPOCH + timedelta(microseconds=micros), pk
    except (ValueError, TypeError, OverflowError, binascii.Error, orjson.JSONDecodeError):
        raise InvalidCursor() from None


# ----------------------------------------------------------------------------- snippets


def snippet(content: str, words: list[str]) -> tuple[str, list[list[int]]]:
    """A window of the content around its first match, and the matched words' [start, end) in it."""
    wanted = set(words)
    spans = [(m.start(), m.end()) for m in WORD.finditer(content) if fold(m.group()) in wanted]
    start = 0
    if spans and len(content) > SNIPPET_LENGTH:
        start = max(0, min(spans[0][0] - SNIPPET_LEAD, len(content) - SNIPPET_LENGTH))
        # Begin at a word, not inside one.
        while 0 < start < spans[0][0] and not content[start - 1].isspace():
            start += 1
    end = min(len(content), start + SNIPPET_LENGTH)
    while end < len(content) and end > start and not content[end].isspace() and content[end - 1].isalnum():
        end -= 1  # end at a word's end, unless that empties the window
    if end <= start:
        end = min(len(content), start + SNIPPET_LENGTH)
    prefix = ELLIPSIS if start > 0 else ""
    suffix = ELLIPSIS if end < len(content) else ""
    shift = len(prefix) - start
    highlights = [[a + shift, b + shift] for a, b in spans if a >= start and b <= end]
    return prefix + content[start:end] + suffix, highlights


# ----------------------------------------------------------------------------- the two engines


# The message's columns in the GET shape's order (the timestamp's column has its own name).
_MESSAGE_COLUMNS = ", ".join("m." + ("message_timestamp" if c == "timestamp" else c) for c in MESSAGE_FIELDS.values())
_WIRE_KEYS = tuple(MESSAGE_FIELDS)

# A page of hits, each with its message and session's title: one statement. The
# hits come from the GIN index on the documents, asked for the query's words as
# the caller's own lexemes (`<owner id>~<word>`, migration 0010): the index reads
# the caller's entries alone, whatever the size of the table. The owner is checked
# again on the rows and on the session. A query without words is NULL: no hits.
_PAGE_SQL = """
    SELECT h.rank, h."timestamp", h.message_id, m.session_id, s.title, {columns}, m.extra
    FROM (
        SELECT rank, "timestamp", message_id FROM (
            SELECT ts_rank(x.document, q.words) AS rank, x."timestamp", x.message_id
            FROM chat_message_search x, chat_owned_query(%(q)s, %(user)s) AS q(words)
            WHERE x.document @@ q.words AND x.user_id = %(user)s
        ) hits {page}
        ORDER BY rank DESC, "timestamp" DESC, message_id DESC
        LIMIT %(limit)s
    ) h
    JOIN chat_messages m ON m.id = h.message_id
    JOIN chat_sessions s ON s.id = m.session_id AND s.user_id = %(user)s
    ORDER BY h.rank DESC, h."timestamp" DESC, h.message_id DESC
"""
_FIRST_PAGE_SQL = _PAGE_SQL.format(columns=_MESSAGE_COLUMNS, page="")
_NEXT_PAGE_SQL = _PAGE_SQL.format(
    columns=_MESSAGE_COLUMNS, page='WHERE (rank, "timestamp", message_id) < (%(rank)s::real, %(ts)s, %(pk)s)'
)


def _postgresql_page(alias: str, user_id: int, q: str, after, limit: int) -> list[tuple]:
    """(rank, timestamp, id, session id, session title, the message in the GET shape) of the page, best first.

    Read with psycopg's C loaders (timestamps) and orjson (JSON): no model per row.
    """
    params: dict[str, Any] = {"q": q, "user": user_id, "limit": limit}
    if after is not None:
        params.update(zip(("rank", "ts", "pk"), after, strict=True))
    with connections[alias].cursor() as cursor:
        raw = cursor.cursor
        raw.adapters.register_loader("timestamptz", TimestamptzLoader)
        set_json_loads(orjson.loads, raw)
        cursor.execute(_FIRST_PAGE_SQL if after is None else _NEXT_PAGE_SQL, params)
        rows = cursor.fetchall()
    n = len(_WIRE_KEYS)
    return [
        (
            float(row[0]),
            row[1],
            row[2],
            row[3],
            row[4],
            with_extra(dict(zip(_WIRE_KEYS, row[5 : 5 + n], strict=True)), row[-1]),
        )
        for row in rows
    ]


def sqlite_rank(content: str, words: list[str]) -> float:
    """A rank from the message and the query alone (like ts_rank): more occurrences rank higher."""
    counts = dict.fromkeys(words, 0)
    for match in WORD.finditer(content):
        word = fold(match.group())
        if word in counts:
            counts[word] += 1
    return round(sum(math.log1p(n) for n in counts.values()), 9)


def _sqlite_hits(user_id: int, q: str, words: list[str], after, limit: int) -> list[tuple[float, datetime, int]]:
    """FTS5 finds the user's messages holding every word; they are ranked here (a documented fallback).

    FTS5 gets the words as typed: its tokenizer folds case and accents its own way
    (it keeps ß, which casefold() makes ss).
    """
    match = " ".join('"' + word.replace('"', '""') + '"' for word in dict.fromkeys(WORD.findall(q)))
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT m.id, m.message_timestamp, m.content FROM chat_message_fts f "
            "JOIN chat_messages m ON m.id = f.rowid JOIN chat_sessions s ON s.id = m.session_id "
            "WHERE chat_message_fts MATCH %s AND s.user_id = %s",
            [match, user_id],
        )
        rows = cursor.fetchall()
    hits = []
    for pk, ts, content in rows:
        moment = ts if isinstance(ts, datetime) else datetime.fromisoformat(ts)
        moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
        hits.append((sqlite_rank(content, words), moment, pk))
    hits.sort(reverse=True)
    if after is not None:
        hits = [hit for hit in hits if hit < after]
    return hits[:limit]


# ----------------------------------------------------------------------------- the selector


def _sqlite_page(user_id: int, q: str, words: list[str], after, limit: int) -> list[tuple]:
    """As _postgresql_page, with FTS5's hits and the ORM's messages."""
    hits = _sqlite_hits(user_id, q, words, after, limit)
    messages = {
        m.pk: m
        for m in ChatMessage.objects.filter(pk__in=[pk for _, _, pk in hits], session__user_id=user_id)
        .select_related("session")
        .only(*MESSAGE_FIELDS.values(), "extra", "session__title", "session__user_id")
    }
    return [
        (rank, ts, pk, m.session_id, m.session.title, message_to_wire(m))
        for rank, ts, pk in hits
        if (m := messages.get(pk)) is not None  # deleted between the two queries
    ]


def message_search(*, user_id: int, q: str, limit: int, cursor: str | None = None) -> dict[str, Any]:
    """A page of the user's messages matching every word of `q`, best first, then newest.

    A read that may lag: from the read replica when there is one and it has the
    user's own last write (chat.replica).
    """
    after = decode_cursor(cursor) if cursor is not None else None
    words = query_words(q)
    if not words:
        return {"results": [], "next": None}
    if connection.vendor == "postgresql":
        rows = replica.read(
            caller=replica.owner_caller(user_id),
            run=lambda alias: _postgresql_page(alias, user_id, q, after, limit + 1),
        )
    else:
        rows = _sqlite_page(user_id, q, words, after, limit + 1)
    results = []
    for _, _, _, session_id, title, message in rows[:limit]:
        text, highlights = snippet(message["content"], words)
        results.append(
            {
                "session_id": session_id,
                "session_title": title,
                "message": message,
                "snippet": text,
                "highlights": highlights,
            }
        )
    return {"results": results, "next": encode_cursor(*rows[limit - 1][:3]) if len(rows) > limit else None}
