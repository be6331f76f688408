"""Reads of the usage ledger: a user's usage per day and model over a range of UTC days."""

from datetime import date
from typing import Any

from django.db import connection

from chat import replica
from chat.json import dumps
from chat.selectors.messages import fetch_sql

FIGURES = ("messages", "input_tokens", "output_tokens", "total_tokens", "errors")

# A (day, model) has at most two rows (live, and of deleted messages): summed here.
# A day and model whose every figure is 0 (its messages all moved to another day
# or model by upserts) is left out; '' (no model) is answered as null.
DAYS_SQL = (
    "SELECT day AS \"date\", NULLIF(model, '') AS model, "  # noqa: S608 (constants and placeholders only)
    + ", ".join(f"CAST(SUM({f}) AS BIGINT) AS {f}" for f in FIGURES)
    + " FROM chat_usage_days WHERE user_id = %s AND day >= %s AND day <= %s"
    " GROUP BY day, model HAVING " + " OR ".join(f"SUM({f}) <> 0" for f in FIGURES)
)
USAGE_SQL = DAYS_SQL + " ORDER BY day, chat_usage_days.model"  # the stored model: '' (null) first
DAY_KEYS = ("date", "model", *FIGURES)

# PostgreSQL: the same days, their JSON written by the database, and the totals, in
# one pass over the rows above. row_to_json writes compact JSON, keys in column
# order, dates as YYYY-MM-DD: the bytes orjson writes for those rows
# (tests/test_usage_api.py compares the two). Python then joins a few strings
# instead of making a dict of every day and model and encoding it.
USAGE_JSON_SQL = (
    # COALESCE(model, '') is the stored model: the order of USAGE_SQL.
    "SELECT COALESCE(string_agg(row_to_json(d)::text, ',' ORDER BY d.\"date\", COALESCE(d.model, '')), ''), "  # noqa: S608
    + ", ".join(f"CAST(COALESCE(SUM(d.{f}), 0) AS BIGINT)" for f in FIGURES)
    + f" FROM ({DAYS_SQL}) d"
)


def user_usage(*, user_id: int, start: date, end: date) -> dict[str, Any]:
    """Usage from `start` to `end` (inclusive): totals and a row per day and model.

    Reads the ledger only, through its (user, day, model, live) key: the cost
    grows with the days and models in the range, never with the messages.
    """
    with connection.cursor() as cursor:
        cursor.execute(USAGE_SQL, _params(user_id, start, end))
        rows = cursor.fetchall()
    # A date is written by orjson as YYYY-MM-DD (SQLite gives that text already).
    days = [dict(zip(DAY_KEYS, row, strict=True)) for row in rows]
    totals = {name: sum(row[i] for row in rows) for i, name in enumerate(FIGURES, 2)}
    return {"from": start.isoformat(), "to": end.isoformat(), "totals": totals, "days": days}


def user_usage_json(*, user_id: int, start: date, end: date) -> bytes:
    """`user_usage` as the JSON of the answer, built by PostgreSQL where that is the database.

    A read that may lag there: from the read replica when there is one and it has
    the user's own last write (chat.replica).
    """
    if connection.vendor != "postgresql":
        return dumps(user_usage(user_id=user_id, start=start, end=end))
    params = _params(user_id, start, end)
    [(days, *totals)] = replica.read(
        caller=replica.owner_caller(user_id), run=lambda alias: fetch_sql(USAGE_JSON_SQL, params, using=alias)
    )
    head = dumps({"from": start.isoformat(), "to": end.isoformat(), "totals": dict(zip(FIGURES, totals, strict=True))})
    return b'%s,"days":[%s]}' % (head[:-1], days.encode())


def _params(user_id: int, start: date, end: date) -> list:
    return [user_id, connection.ops.adapt_datefield_value(start), connection.ops.adapt_datefield_value(end)]
