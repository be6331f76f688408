from django.core.management.base import BaseCommand, CommandError

from chat import selectors
from chat.json import dumps
from chat.models import ChatMessage, ChatSession
from chat.selectors import MESSAGE_FIELDS, message_to_wire

# The session as the session list shows it, with its owner; never its session_key (a guest's credential).
SESSION_FIELDS = (*selectors.SESSION_FIELDS, "guest_name")
CHUNK = 1000


def session_to_wire(session: ChatSession) -> dict:
    return {
        **{field: getattr(session, field) for field in SESSION_FIELDS},
        "user": session.user.username if session.user_id else None,
    }


class Command(BaseCommand):
    help = (
        "Write a session and its messages to stdout, messages in the API's GET shape, ordered by "
        "(timestamp, id). --format json (default): one object {'session': ..., 'messages': [...]}; "
        "--format jsonl: the session on the first line, then one message per line. "
        "The guest session key is never written."
    )

    def add_arguments(self, parser):
        parser.add_argument("session_id", metavar="SESSION_ID")
        parser.add_argument("--format", choices=("json", "jsonl"), default="json")

    def handle(self, *args, session_id, format, **options):
        session = ChatSession.objects.select_related("user").filter(pk=session_id).first()
        if session is None:
            raise CommandError(f"unknown session: {session_id}")
        messages = (
            ChatMessage.objects.filter(session=session)
            .order_by("timestamp", "id")
            .only(*MESSAGE_FIELDS.values(), "extra")
            .iterator(chunk_size=CHUNK)
        )
        # Written as it is read: a long session is never held in memory whole.
        head = dumps(session_to_wire(session)).decode()
        if format == "jsonl":
            self.stdout.write(head)
            for message in messages:
                self.stdout.write(dumps(message_to_wire(message)).decode())
            return
        self.stdout.write('{"session":' + head + ',"messages":[', ending="")
        for index, message in enumerate(messages):
            self.stdout.write(("," if index else "") + dumps(message_to_wire(message)).decode(), ending="")
        self.stdout.write("]}")
