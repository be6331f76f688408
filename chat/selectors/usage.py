"""Reads of the usage ledger: a user's usage per day and model over a range of UTC days."""

from datetime import date
from typing import Any

from django.db.models import Sum

from chat.models import UsageDay

FIGURES = ("messages", "input_tokens", "output_tokens", "total_tokens", "errors")


def user_usage(*, user_id: int, start: date, end: date) -> dict[str, Any]:
    """Usage from `start` to `end` (inclusive): totals and a row per day and model.

    Reads the ledger only, through its (user, day, model, live) key: the cost
    grows with the days and models in the range, never with the messages. A
    (day, model) has at most two rows (live, and of deleted messages), summed here.
    """
    rows = list(
        UsageDay.objects.filter(user_id=user_id, day__gte=start, day__lte=end)
        .values("day", "model")
        .order_by("day", "model")
        .annotate(**{figure: Sum(figure) for figure in FIGURES})
    )
    days = [
        {"date": row["day"].isoformat(), "model": row["model"] or None, **{f: row[f] for f in FIGURES}}
        for row in rows
        if any(row[f] for f in FIGURES)
    ]
    totals = {figure: sum(day[figure] for day in days) for figure in FIGURES}
    return {"from": start.isoformat(), "to": end.isoformat(), "totals": totals, "days": days}
