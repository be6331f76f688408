"""Reads of the usage ledger: a user's usage per day and model over a range of UTC days."""

from datetime import date
from typing import Any

from django.db import connection

from chat import replica
from chat.selectors.messages import fetch_sql

FIGURES = ("messages", "input_tokens", "output_tokens", "total_tokens", "errors")

# A (day, model) has at most two rows (live, and of deleted messages): summed here.
# A day and model whose every figure is 0 (its messages all moved to another day
# or model by upserts) is left out; '' (no model) is answered as null.
USAGE_SQL = (
    "SELECT day, NULLIF(model, ''), "  # noqa: S608 (constants and placeholders only)
    + ", ".join(f"CAST(SUM({f}) AS BIGINT)" for f in FIGURES)
    + " FROM chat_usage_days WHERE user_id = %s AND day >= %s AND day <= %s"
    " GROUP BY day, model HAVING " + " OR ".join(f"SUM({f}) <> 0" for f in FIGURES) + " ORDER BY day, model"
)
DAY_KEYS = ("date", "model", *FIGURES)


def user_usage(*, user_id: int, start: date, end: date) -> dict[str, Any]:
    """Usage from `start` to `end` (inclusive): totals and a row per day and model.

    Reads the ledger only, through its (user, day, model, live) key: the cost
    grows with the days and models in the range, never with the messages. A
    read that may lag: from the read replica when there is one and it has the
    user's own last write (chat.replica).
    """
    params = [user_id, connection.ops.adapt_datefield_value(start), connection.ops.adapt_datefield_value(end)]
    if connection.vendor == "postgresql":
        rows = replica.read(
            caller=replica.owner_caller(user_id), run=lambda alias: fetch_sql(USAGE_SQL, params, using=alias)
        )
    else:
        with connection.cursor() as cursor:
            cursor.execute(USAGE_SQL, params)
            rows = cursor.fetchall()
    # The rows are the answer's days as they are: a date is written by orjson as
    # YYYY-MM-DD (SQLite gives that text already).
    days = [dict(zip(DAY_KEYS, row, strict=True)) for row in rows]
    totals = {name: sum(row[i] for row in rows) for i, name in enumerate(FIGURES, 2)}
    return {"from": start.isoformat(), "to": end.isoformat(), "totals": totals, "days": days}
