from datetime import timedelta

from django.core.management.base import BaseCommand, CommandError
from django.db.models import Count, Sum
from django.utils import timezone

from chat import services
from chat.models import ChatSession

DEFAULT_BATCH_SIZE = 1000


class Command(BaseCommand):
    help = (
        "Delete guest sessions (no owner) with no activity for --inactive-days N days (by updated_at, which "
        "every write moves), and their messages, in batches. --dry-run counts them without deleting."
    )

    def add_arguments(self, parser):
        parser.add_argument("--inactive-days", type=int, required=True, metavar="N", help="at least 1")
        parser.add_argument("--dry-run", action="store_true", help="count what would be deleted; delete nothing")
        parser.add_argument(
            "--batch-size",
            type=int,
            default=DEFAULT_BATCH_SIZE,
            help=f"sessions a transaction (default {DEFAULT_BATCH_SIZE})",
        )

    def handle(self, *args, inactive_days: int, dry_run: bool, batch_size: int, verbosity: int, **options):
        if inactive_days < 1:
            raise CommandError("--inactive-days must be at least 1")
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        try:
            cutoff = timezone.now() - timedelta(days=inactive_days)
        except OverflowError:
            raise CommandError(f"--inactive-days {inactive_days} reaches before the year 1") from None
        # Served by the partial index on updated_at of guest sessions.
        inactive = ChatSession.objects.filter(user__isnull=True, updated_at__lt=cutoff)
        since = cutoff.isoformat(timespec="seconds").replace("+00:00", "Z")

        if dry_run:
            totals = inactive.aggregate(sessions=Count("pk"), messages=Sum("message_count"))
            if verbosity >= 2:
                for session_id in inactive.order_by("updated_at").values_list("pk", flat=True).iterator():
                    self.stdout.write(f"would delete {session_id}")
            self.stdout.write(
                f"Would delete {totals['sessions']} guest sessions ({totals['messages'] or 0} messages) "
                f"inactive since {since}."
            )
            return

        sessions = messages = 0
        while True:
            batch, deleted_sessions, deleted_messages = services.guest_sessions_purge_batch(
                inactive_before=cutoff, batch_size=batch_size
            )
            if not batch:
                break
            sessions += deleted_sessions
            messages += deleted_messages
            if verbosity >= 2:
                for session_id in batch:
                    self.stdout.write(f"deleted {session_id}")
        self.stdout.write(f"Deleted {sessions} guest sessions ({messages} messages) inactive since {since}.")
