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

from chat import replica
from chat.exceptions import ApiError
from chat.models import ChatMessage
from chat.selectors.messages import MESSAGE_FIELDS, message_to_wire

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


def _postgresql_hits(alias: str, user_id: int, q: str, after, limit: int) -> list[tuple[float, datetime, int]]:
    """(rank, timestamp, id) of the page, best first, from the GIN index on the documents.

    The index is asked for the owner's lexeme AND the words (one condition the
    planner cannot split off); `user_id` is checked again on the rows. The rank
    is of the words alone.
    """
    page = ""
    params: list[Any] = [q, user_id, user_id]
    if after is not None:
        page = 'WHERE (rank, "timestamp", message_id) < (%s::real, %s, %s)'
        params += list(after)
    sql = f"""
        SELECT rank, "timestamp", message_id FROM (
            SELECT ts_rank(s.document, q.words) AS rank, s."timestamp", s.message_id
            FROM chat_message_search s,
                 plainto_tsquery('simple', chat_unaccent(%s)) AS q(words),
                 CAST(quote_literal('~u' || %s) AS tsquery) AS o(owner)
            WHERE numnode(q.words) > 0 AND s.document @@ (o.owner && q.words) AND s.user_id = %s
        ) hits {page}
        ORDER BY rank DESC, "timestamp" DESC, message_id DESC
        LIMIT %s
    """  # noqa: S608 (constants and placeholders only)
    with connections[alias].cursor() as cursor:
        cursor.execute(sql, [*params, limit])
        return [(float(rank), ts, pk) for rank, ts, pk in cursor.fetchall()]


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


def message_search(*, user_id: int, q: str, limit: int, cursor: str | None = None) -> dict[str, Any]:
    """A page of the user's messages matching every word of `q`, best first, then newest.

    A read that may lag: from the read replica when there is one and it has the
    user's own last write (chat.replica); the hits and their messages are read
    from the same database.
    """
    after = decode_cursor(cursor) if cursor is not None else None
    words = query_words(q)
    if not words:
        return {"results": [], "next": None}

    def page(alias: str) -> tuple[list[tuple[float, datetime, int]], dict[int, ChatMessage]]:
        if connection.vendor == "postgresql":
            hits = _postgresql_hits(alias, user_id, q, after, limit + 1)
        else:
            hits = _sqlite_hits(user_id, q, words, after, limit + 1)
        messages = {
            m.pk: m
            for m in ChatMessage.objects.using(alias)
            .filter(pk__in=[pk for _, _, pk in hits[:limit]], session__user_id=user_id)
            .select_related("session")
            .only(*MESSAGE_FIELDS.values(), "extra", "session__title", "session__user_id")
        }
        return hits, messages

    hits, messages = replica.read(caller=replica.owner_caller(user_id), run=page)
    more = len(hits) > limit
    hits = hits[:limit]
    results = []
    for _, _, pk in hits:
        message = messages.get(pk)
        if message is None:  # deleted between the two queries
            continue
        text, highlights = snippet(message.content, words)
        results.append(
            {
                "session_id": message.session_id,
                "session_title": message.session.title,
                "message": message_to_wire(message),
                "snippet": text,
                "highlights": highlights,
            }
        )
    return {"results": results, "next": encode_cursor(*hits[-1]) if more else None}
