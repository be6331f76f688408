"""The shape both recount commands share: NAMEs or --all, --dry-run, --batch-size, one summary line.

recount_session_stats and recount_usage each say what they count (`noun`), how a
name on the command line finds its key, and how one batch is checked and fixed;
the arguments, their errors, the batching and the report are this class's.
"""

from collections.abc import Iterator, Sequence

from django.core.management.base import BaseCommand, CommandError
from django.db.models import QuerySet


def keys_in_batches(queryset: QuerySet, batch_size: int) -> Iterator[list]:
    """Every primary key of `queryset`, in order, `batch_size` at a time (keyset pagination: no OFFSET scans)."""
    last = None
    while True:
        page = queryset.order_by("pk")
        if last is not None:
            page = page.filter(pk__gt=last)
        batch = list(page.values_list("pk", flat=True)[:batch_size])
        if not batch:
            return
        yield batch
        last = batch[-1]


class RecountCommand(BaseCommand):
    noun: str  # what is checked, e.g. "session"
    metavar: str  # a name on the command line, e.g. "SESSION_ID"
    drift_summary: str  # the report's middle, e.g. "{} had drifted statistics"
    default_batch_size: int

    def every(self) -> QuerySet:
        """What --all checks."""
        raise NotImplementedError

    def keys_of(self, names: list[str]) -> list:
        """The keys of the named rows, in order; CommandError naming those that do not exist."""
        raise NotImplementedError

    def recount(self, keys: Sequence, *, fix: bool) -> tuple[int, list[str]]:
        """Check `keys` (fix them unless `fix` is false): how many were checked, and a line per drift found."""
        raise NotImplementedError

    def add_arguments(self, parser):
        parser.add_argument("names", nargs="*", metavar=self.metavar, help=f"{self.noun}s to recount")
        parser.add_argument("--all", action="store_true", help=f"recount every {self.noun}")
        parser.add_argument("--dry-run", action="store_true", help="report the drift, change nothing")
        parser.add_argument(
            "--batch-size", type=int, default=self.default_batch_size, help=f"{self.noun}s per query and transaction"
        )

    def handle(self, *args, names, all, dry_run, batch_size, **options):
        if bool(names) == bool(all):
            raise CommandError(f"give {self.metavar}s or --all (not both)")
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        if all:
            batches = keys_in_batches(self.every(), batch_size)
        else:
            keys = self.keys_of(list(dict.fromkeys(names)))
            batches = (keys[i : i + batch_size] for i in range(0, len(keys), batch_size))

        checked = drifted = 0
        for batch in batches:
            count, lines = self.recount(batch, fix=not dry_run)
            checked += count
            drifted += len(lines)
            for line in lines:
                self.stdout.write(line)
        outcome = "nothing changed (dry run)" if dry_run else f"{drifted} fixed"
        self.stdout.write(f"Checked {checked} {self.noun}(s): {self.drift_summary.format(drifted)}; {outcome}.")
