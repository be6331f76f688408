"""Proposed application changes, tried under the benchmark before anyone edits the app.

`make bench BENCH_ARGS="--experiments drop-view-response,raw-poll-sql"` serves the
service with these applied (bench.urls calls `apply` in each worker, before its
first request). Each models one change recommended in the benchmark's report,
with the before/after figures as its evidence. None is on in a plain
`make bench`, and none is ever imported by production code.
"""

import os
from collections.abc import Callable

from django.db import connection
from psycopg.types.datetime import TimestamptzLoader

EXPERIMENTS: dict[str, Callable[[], None]] = {}


def experiment(function: Callable[[], None]) -> Callable[[], None]:
    EXPERIMENTS[function.__name__.replace("_", "-")] = function
    return function


@experiment
def drop_view_response() -> None:
    """ApiView.dispatch forgets `self.response` once it has it.

    DRF keeps the response on the view and the view in the response's
    renderer_context: a reference cycle, so every response (and its data: 600 KB
    for a 1,000-message history) waits for the cyclic garbage collector's
    rare full collections instead of being freed when sent, and worker RSS grows
    by ~240 KB per history request.
    """
    from chat.api.base import ApiView

    original = ApiView.dispatch

    def dispatch(self, request, *args, **kwargs):
        response = original(self, request, *args, **kwargs)
        del self.response  # the view <-> response cycle, broken: refcounting frees both
        return response

    ApiView.dispatch = dispatch


GUEST_POLL_SQL = """
SELECT m.id, m.message_id, m.role, m.content, m.content_type, m.message_timestamp
FROM chat_sessions s
LEFT JOIN chat_messages m ON m.session_id = s.id AND m.id > %s
WHERE s.session_key = %s AND s.user_id IS NULL
ORDER BY m.id
LIMIT %s
"""


@experiment
def raw_poll_sql() -> None:
    """guest_messages_after runs SQL written once, instead of an ORM query compiled per request.

    The same single query through the same (session, id) index; the ORM's
    queryset building and compiling is about a third of a poll's time in the
    in-process profile.
    """
    from chat import selectors
    from chat.errors import NotFound

    keys = selectors._GUEST_WIRE_KEYS

    def guest_messages_after(*, session_key, after_id: int, limit: int):
        with connection.cursor() as cursor:
            cursor.cursor.adapters.register_loader("timestamptz", TimestamptzLoader)
            cursor.execute(GUEST_POLL_SQL, (after_id, session_key, limit + 1))
            rows = cursor.fetchall()
        if not rows:
            raise NotFound("Session not found")
        if rows[0][0] is None:
            return [], False
        return [dict(zip(keys, row, strict=True)) for row in rows[:limit]], len(rows) > limit

    selectors.guest_messages_after = guest_messages_after


def apply(names: str | None = None) -> list[str]:
    """Apply the experiments named in `names` (default: $BENCH_EXPERIMENTS), comma-separated."""
    names = os.environ.get("BENCH_EXPERIMENTS", "") if names is None else names
    applied = []
    for name in filter(None, (part.strip() for part in names.split(","))):
        if name not in EXPERIMENTS:
            raise ValueError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}")
        EXPERIMENTS[name]()
        applied.append(name)
    return applied
