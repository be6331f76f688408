from collections.abc import Sequence
from datetime import date

from django.core.management.base import CommandError
from django.db import connection, transaction

from accounts.models import User
from chat.management.recount import RecountCommand
from chat.services.usage import FIGURES, messages_usage_sql, usage_apply


def as_date(value) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)  # SQLite returns text


def drift(user_ids: Sequence[int]) -> list[tuple[int, date, str, list[int], list[int]]]:
    """(user, day, model, expected, stored) for every live ledger row that differs from the messages.

    One statement, so one snapshot: a write commits its messages and its ledger
    deltas together, and either both are seen here or neither. That makes the
    fix (a delta, not an absolute value) exact while writers go on.
    """
    marks = ", ".join(["%s"] * len(user_ids))
    expected = ", ".join(f"SUM(e_{f})" for f in FIGURES)
    stored = ", ".join(f"SUM(s_{f})" for f in FIGURES)
    differs = " OR ".join(f"SUM(e_{f}) <> SUM(s_{f})" for f in FIGURES)
    sql = (
        f"SELECT user_id, day, model, {expected}, {stored} FROM ("  # noqa: S608 (constants and placeholders only)
        f"SELECT user_id, day, model, {', '.join(f'{f} AS e_{f}' for f in FIGURES)}, "
        f"{', '.join(f'0 AS s_{f}' for f in FIGURES)} "
        f"FROM ({messages_usage_sql(connection.vendor, f'AND s.user_id IN ({marks})')}) counted "
        "UNION ALL "
        f"SELECT user_id, day, model, {', '.join(f'0 AS e_{f}' for f in FIGURES)}, "
        f"{', '.join(f'{f} AS s_{f}' for f in FIGURES)} "
        f"FROM chat_usage_days WHERE live AND user_id IN ({marks})"
        f") both_sides GROUP BY user_id, day, model HAVING {differs} ORDER BY user_id, day, model"
    )
    n = len(FIGURES)
    with connection.cursor() as cursor:
        cursor.execute(sql, [*user_ids, *user_ids])
        return [
            (row[0], as_date(row[1]), row[2], [int(x) for x in row[3 : 3 + n]], [int(x) for x in row[3 + n :]])
            for row in cursor.fetchall()
        ]


class Command(RecountCommand):
    help = (
        "Check the usage ledger's live rows (per user, UTC day and model) against the stored messages, "
        "report every row that drifted and fix it (unless --dry-run). Usage never goes down: where the "
        "ledger counted more than the messages hold (messages deleted without the services), the excess "
        "is kept as usage of deleted messages. Give USERNAMEs or --all."
    )
    noun, metavar, drift_summary, default_batch_size = "user", "USERNAME", "{} ledger row(s) had drifted", 100

    def every(self):
        return User.objects.all()

    def keys_of(self, names):
        ids = dict(User.objects.filter(username__in=names).values_list("username", "pk"))
        unknown = sorted(set(names) - set(ids))
        if unknown:
            raise CommandError(f"unknown user(s): {', '.join(unknown)}")
        return sorted(ids.values())

    def recount(self, keys, *, fix):
        usernames = dict(User.objects.filter(pk__in=keys).values_list("pk", "username"))
        lines = []
        with transaction.atomic():
            for user_id, day, model, expected, stored in drift(keys):
                changes = "; ".join(
                    f"{f} {s} -> {e}" for f, e, s in zip(FIGURES, expected, stored, strict=True) if e != s
                )
                lines.append(f"{usernames.get(user_id, user_id)} {day} {model or '(no model)'}: {changes}")
                if fix:
                    key = (day, model)
                    usage_apply(
                        user_id=user_id,
                        live={key: [e - s for e, s in zip(expected, stored, strict=True)]},
                        retired={key: [max(0, s - e) for e, s in zip(expected, stored, strict=True)]},
                    )
        return len(keys), lines
