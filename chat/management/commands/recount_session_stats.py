from collections.abc import Iterator

from django.core.management.base import BaseCommand, CommandError

from chat import services
from chat.json import dumps
from chat.models import ChatSession


def show(value) -> str:
    return dumps(value).decode()


def session_ids_in_batches(batch_size: int) -> Iterator[list[str]]:
    """Every session id, in order, `batch_size` at a time (keyset pagination: no OFFSET scans)."""
    last = None
    while True:
        sessions = ChatSession.objects.order_by("pk")
        if last is not None:
            sessions = sessions.filter(pk__gt=last)
        batch = list(sessions.values_list("pk", flat=True)[:batch_size])
        if not batch:
            return
        yield batch
        last = batch[-1]


class Command(BaseCommand):
    help = (
        "Recompute sessions' statistics (message_count, total_tokens, last_model, last_message_preview, "
        "last_message_timestamp, last_message_id, last_role) from their messages, report every session whose stored figures drifted, "
        "and fix them (unless --dry-run). updated_at is left as it is. Give SESSION_IDs or --all."
    )

    def add_arguments(self, parser):
        parser.add_argument("session_ids", nargs="*", metavar="SESSION_ID", help="sessions to recount")
        parser.add_argument("--all", action="store_true", help="recount every session")
        parser.add_argument("--dry-run", action="store_true", help="report the drift, change nothing")
        parser.add_argument("--batch-size", type=int, default=500, help="sessions per query and transaction")

    def handle(self, *args, session_ids, all, dry_run, batch_size, **options):
        if bool(session_ids) == bool(all):
            raise CommandError("give SESSION_IDs or --all (not both)")
        if batch_size < 1:
            raise CommandError("--batch-size must be at least 1")
        if all:
            batches = session_ids_in_batches(batch_size)
        else:
            session_ids = list(dict.fromkeys(session_ids))
            known = set(ChatSession.objects.filter(pk__in=session_ids).values_list("pk", flat=True))
            unknown = [session_id for session_id in session_ids if session_id not in known]
            if unknown:
                raise CommandError(f"unknown session(s): {', '.join(unknown)}")
            batches = (session_ids[i : i + batch_size] for i in range(0, len(session_ids), batch_size))

        checked = drifted = 0
        for batch in batches:
            for session_id, drift in services.session_stats_recount(session_ids=batch, fix=not dry_run):
                checked += 1
                if drift:
                    drifted += 1
                    changes = [
                        f"{field} {show(stored)} -> {show(counted)}" for field, (stored, counted) in drift.items()
                    ]
                    self.stdout.write(f"{session_id}: " + "; ".join(changes))

        outcome = "nothing changed (dry run)" if dry_run else f"{drifted} fixed"
        self.stdout.write(f"Checked {checked} session(s): {drifted} had drifted statistics; {outcome}.")
