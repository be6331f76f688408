from django.core.management.base import CommandError

from chat import services
from chat.json import dumps
from chat.management.recount import RecountCommand
from chat.models import ChatSession


def show(value) -> str:
    return dumps(value).decode()


class Command(RecountCommand):
    help = (
        "Recompute sessions' statistics (message_count, total_tokens, last_model, last_message_preview, "
        "last_message_timestamp, last_message_id, last_role) from their messages, report every session whose stored figures drifted, "
        "and fix them (unless --dry-run). updated_at is left as it is. Give SESSION_IDs or --all."
    )
    noun, metavar, drift_summary, default_batch_size = "session", "SESSION_ID", "{} had drifted statistics", 500

    def every(self):
        return ChatSession.objects.all()

    def keys_of(self, names):
        known = set(ChatSession.objects.filter(pk__in=names).values_list("pk", flat=True))
        unknown = [name for name in names if name not in known]
        if unknown:
            raise CommandError(f"unknown session(s): {', '.join(unknown)}")
        return names

    def recount(self, keys, *, fix):
        checked, lines = 0, []
        for session_id, drift in services.session_stats_recount(session_ids=keys, fix=fix):
            checked += 1
            if drift:
                changes = [f"{field} {show(stored)} -> {show(counted)}" for field, (stored, counted) in drift.items()]
                lines.append(f"{session_id}: " + "; ".join(changes))
        return checked, lines
