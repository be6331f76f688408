from collections.abc import Iterator, Sequence
from datetime import date

from django.core.management.base import BaseCommand, CommandError
from django.db import connection, transaction

from accounts.models import User
from chat.services.usage import FIGURES, messages_usage_sql, usage_apply


def as_date(value) -> date:
    return value if isinstance(value, date) else date.fromisoformat(value)  # SQLite returns text


def user_ids_in_batches(batch_size: int) -> Iterator[list[int]]:
    """Every user id, in order, `batch_size` at a time (keyset pagination)."""
    last = 0
    while True:
        batch = list(User.objects.filter(pk__gt=last).order_by("pk").values_list("pk", flat=True)[:batch_size])
        if not batch:
            return
        yield batch
        last = batch[-1]


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


class Command(BaseCommand):
    help = (
        "Check the usage ledger's live rows (per user, UTC day and model) against the stored messages, "
        "report every row that drifted and fix it (unless --dry-run). Usage never goes down: where the "
        "ledger counted more than the messages hold (messages deleted without the services), the excess "
        "is kept as usage of deleted messages. Give USERNAMEs or --all."
    )

    def add_arguments(self, parser):
        parser.add_argument("usernames", nargs="*", metavar="USERNAME", help="users to recount")
        parser.add_argument("--all", action="store_true", help="recount every user")
        parser.add_argument("--dry-run", action="store_true", help="report the drift, change nothing")
        parser.add_argument("--batch-size", type=int, default=100, help="users per query and transaction")

    def handle(self, *args, usernames, all, dry_run, batch_size, **options):
        if bool(usernames) == bool(all):
            raise CommandError("give USERNAMEs or --all (not both)")
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        names: dict[int, str] = {}
        if all:
            batches = user_ids_in_batches(batch_size)
        else:
            usernames = list(dict.fromkeys(usernames))
            names = dict(User.objects.filter(username__in=usernames).values_list("pk", "username"))
            unknown = sorted(set(usernames) - set(names.values()))
            if unknown:
                raise CommandError(f"unknown user(s): {', '.join(unknown)}")
            ids = sorted(names)
            batches = (ids[i : i + batch_size] for i in range(0, len(ids), batch_size))

        checked = rows = 0
        for batch in batches:
            checked += len(batch)
            batch_names = names or dict(User.objects.filter(pk__in=batch).values_list("pk", "username"))
            with transaction.atomic():
                for user_id, day, model, expected, stored in drift(batch):
                    rows += 1
                    changes = "; ".join(
                        f"{f} {s} -> {e}" for f, e, s in zip(FIGURES, expected, stored, strict=True) if e != s
                    )
                    self.stdout.write(f"{batch_names.get(user_id, user_id)} {day} {model or '(no model)'}: {changes}")
                    if not dry_run:
                        key = (day, model)
                        usage_apply(
                            user_id=user_id,
                            live={key: [e - s for e, s in zip(expected, stored, strict=True)]},
                            retired={key: [max(0, s - e) for e, s in zip(expected, stored, strict=True)]},
                        )
        outcome = "nothing changed (dry run)" if dry_run else f"{rows} fixed"
        self.stdout.write(f"Checked {checked} user(s): {rows} ledger row(s) had drifted; {outcome}.")
