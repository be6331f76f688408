from collections.abc import Iterator, Sequence
from typing import Any

from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.db.models import Count, OuterRef, Subquery, Sum
from django.db.models.functions import Coalesce

from chat.json import dumps
from chat.models import ChatMessage, ChatSession
from chat.services import PREVIEW_LENGTH, shorten

STAT_FIELDS = (
    "message_count",
    "total_tokens",
    "last_model",
    "last_message_preview",
    "last_message_timestamp",
    "last_message_id",
    "last_role",
)


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


def recount(session_ids: Sequence[str], *, lock: bool) -> list[tuple[ChatSession, dict[str, Any]]]:
    """Each session of `session_ids` with its statistics as the messages say.

    One query for the sessions with their count, token sum and newest message
    id (subqueries on the (session, id) and (session, timestamp, id) indexes),
    one for those newest messages. With `lock`, the sessions' rows are locked
    (in id order) as every write locks them, so the figures cannot move until
    the caller's transaction ends.
    """
    messages = ChatMessage.objects.filter(session=OuterRef("pk")).order_by().values("session")
    sessions = ChatSession.objects.filter(pk__in=session_ids).order_by("pk").only("pk", *STAT_FIELDS)
    if lock:
        sessions = sessions.select_for_update()
    sessions = list(
        sessions.annotate(
            counted=Coalesce(Subquery(messages.annotate(n=Count("id")).values("n")), 0),
            tokens=Coalesce(Subquery(messages.annotate(t=Sum("total_tokens")).values("t")), 0),
            newest_id=Subquery(
                ChatMessage.objects.filter(session=OuterRef("pk")).order_by("-timestamp", "-id").values("id")[:1]
            ),
        )
    )
    newest = {
        m.pk: m
        for m in ChatMessage.objects.filter(pk__in=[s.newest_id for s in sessions if s.newest_id]).only(
            "model", "content", "timestamp", "role"
        )
    }
    result = []
    for session in sessions:
        message = newest.get(session.newest_id)
        result.append(
            (
                session,
                {
                    "message_count": session.counted,
                    "total_tokens": session.tokens,
                    "last_model": message.model if message else None,
                    "last_message_preview": shorten(message.content, PREVIEW_LENGTH) if message else None,
                    "last_message_timestamp": message.timestamp if message else None,
                    "last_message_id": message.pk if message else None,
                    "last_role": message.role if message else None,
                },
            )
        )
    return result


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
            with transaction.atomic():
                fixed = []
                for session, expected in recount(batch, lock=not dry_run):
                    checked += 1
                    changes = [
                        f"{field} {show(getattr(session, field))} -> {show(value)}"
                        for field, value in expected.items()
                        if getattr(session, field) != value
                    ]
                    if changes:
                        drifted += 1
                        self.stdout.write(f"{session.pk}: " + "; ".join(changes))
                        for field, value in expected.items():
                            setattr(session, field, value)
                        fixed.append(session)
                if fixed and not dry_run:
                    ChatSession.objects.bulk_update(fixed, STAT_FIELDS)

        outcome = "nothing changed (dry run)" if dry_run else f"{drifted} fixed"
        self.stdout.write(f"Checked {checked} session(s): {drifted} had drifted statistics; {outcome}.")
