"""The two tables: chat sessions and their messages."""

import uuid

import orjson
from django.conf import settings
from django.core.validators import RegexValidator
from django.db import models
from django.utils import timezone

# \Z, not $: "$" would also accept a trailing newline.
# 1-128 characters (the length is the fields' max_length). Not "." or "..": a URL path
# cannot address them (clients resolve them away), so an id has a character other than
# a dot, or three dots at least; written without a lookahead, for the fuzzer's generator.
CLIENT_ID_PATTERN = r"^(?:[A-Za-z0-9._:-]*[A-Za-z0-9_:-][A-Za-z0-9._:-]*|\.{3,})\Z"
CLIENT_ID_MESSAGE = "Use 1-128 characters of letters, digits and . _ : - (not . or ..)"
client_id_validator = RegexValidator(CLIENT_ID_PATTERN, CLIENT_ID_MESSAGE)

DEFAULT_TITLE = "New Chat"

# The most a message's extra keys may take, serialized as compact JSON (API.md).
MAX_EXTRA_BYTES = 16 * 1024


class JSONObjectField(models.TextField):
    """A JSON object kept exactly as the client sent it: its keys in their order.

    PostgreSQL `json` (text checked to be JSON), not `jsonb`, which would sort the
    keys; text elsewhere. In Python a dict (or None); the database holds compact
    JSON written by orjson, so its size is what the 16 KiB bound measures.
    """

    def db_type(self, connection):
        return "json" if connection.vendor == "postgresql" else "text"

    def from_db_value(self, value, expression, connection):
        # psycopg decodes `json` itself; SQLite hands back the text.
        return orjson.loads(value) if isinstance(value, str | bytes) else value

    def to_python(self, value):
        return orjson.loads(value) if isinstance(value, str | bytes) else value

    def get_prep_value(self, value):
        return None if value is None else orjson.dumps(value).decode()


class Role(models.TextChoices):
    USER = "user"
    ASSISTANT = "assistant"
    SYSTEM = "system"


class ContentType(models.TextChoices):
    TEXT = "text"
    MARKDOWN = "markdown"


class ChatSession(models.Model):
    """A conversation. Its statistics move in the transaction of every write."""

    id = models.CharField(primary_key=True, max_length=128, validators=[client_id_validator])
    # Null for a guest session, whose only credential is its session_key.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.CASCADE,
        related_name="chat_sessions",
    )
    session_key = models.UUIDField(default=uuid.uuid4, unique=True, editable=False)
    guest_name = models.CharField(max_length=100, blank=True, default="")
    title = models.CharField(max_length=255, default=DEFAULT_TITLE)
    message_count = models.PositiveIntegerField(default=0)
    total_tokens = models.BigIntegerField(default=0)
    last_model = models.CharField(max_length=255, null=True, blank=True)
    last_message_preview = models.CharField(max_length=100, null=True, blank=True)
    last_message_timestamp = models.DateTimeField(null=True, blank=True)
    # The newest message's integer id and role, moved with the other "last" fields:
    # the staff inbox reads them from this row (awaiting a reply: last_role is "user").
    last_message_id = models.BigIntegerField(null=True, blank=True)
    last_role = models.CharField(max_length=16, choices=Role.choices, null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now, editable=False)
    updated_at = models.DateTimeField(default=timezone.now)

    class Meta:
        db_table = "chat_sessions"
        indexes = [
            # The session list: a user's sessions, most recently updated first.
            models.Index(fields=["user", "-updated_at", "-id"], name="chat_session_user_recent"),
            # Guest sessions by latest activity: the staff inbox (read backwards, by
            # (updated_at, id) descending), the admin's guest list and purge_guest_sessions.
            models.Index(
                fields=["updated_at", "id"],
                name="chat_session_guest_inbox",
                condition=models.Q(user__isnull=True),
            ),
            # The inbox's "awaiting a reply" view: only the guest sessions whose newest
            # message is the guest's, so that page never scans the answered ones.
            models.Index(
                fields=["updated_at", "id"],
                name="chat_session_guest_awaiting",
                condition=models.Q(user__isnull=True, last_role="user"),
            ),
        ]
        constraints = [
            models.CheckConstraint(
                condition=models.Q(message_count__gte=0) & models.Q(total_tokens__gte=0),
                name="chat_session_stats_non_negative",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.id} ({self.title})"

    @property
    def is_guest(self) -> bool:
        return self.user_id is None


class ChatMessage(models.Model):
    """One message of a session, as the client sent it."""

    # The integer id is the guest polling cursor.
    id = models.BigAutoField(primary_key=True)
    session = models.ForeignKey(ChatSession, on_delete=models.CASCADE, related_name="messages", db_index=False)
    # The client's own id (`id` on the wire), unique within its session.
    message_id = models.CharField(max_length=128, validators=[client_id_validator])
    role = models.CharField(max_length=16, choices=Role.choices)
    content = models.TextField(blank=True, default="")
    content_type = models.CharField(max_length=16, choices=ContentType.choices, default=ContentType.TEXT)
    model = models.CharField(max_length=255, null=True, blank=True)
    original_model = models.CharField(max_length=255, null=True, blank=True)
    total_tokens = models.PositiveIntegerField(null=True, blank=True)
    input_tokens = models.PositiveIntegerField(null=True, blank=True)
    output_tokens = models.PositiveIntegerField(null=True, blank=True)
    user_message_id = models.CharField(max_length=128, null=True, blank=True)
    elapsed_time = models.PositiveIntegerField(null=True, blank=True, help_text="milliseconds")
    completion_id = models.CharField(max_length=255, null=True, blank=True)
    timestamp = models.DateTimeField(db_column="message_timestamp", default=timezone.now)
    error = models.BooleanField(default=False)
    error_message = models.TextField(null=True, blank=True)
    error_code = models.CharField(max_length=100, null=True, blank=True)
    retry_after = models.PositiveIntegerField(null=True, blank=True, help_text="seconds")
    suggestions = models.JSONField(null=True, blank=True)
    # The keys of the message that the GET shape does not name, as sent; null if none.
    extra = JSONObjectField(null=True, blank=True)
    # The staff member who wrote a reply to a guest; null otherwise.
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
    )
    created_at = models.DateTimeField(default=timezone.now, editable=False)

    class Meta:
        db_table = "chat_messages"
        indexes = [
            # Guest polling: id > cursor within one session.
            models.Index(fields=["session", "id"], name="chat_message_poll"),
            # History: a session's messages by time.
            models.Index(fields=["session", "timestamp", "id"], name="chat_message_history"),
        ]
        constraints = [
            models.UniqueConstraint(fields=["session", "message_id"], name="chat_message_unique_client_id"),
            models.CheckConstraint(condition=models.Q(role__in=Role.values), name="chat_message_role_valid"),
            models.CheckConstraint(
                condition=models.Q(content_type__in=ContentType.values),
                name="chat_message_content_type_valid",
            ),
        ]

    def __str__(self) -> str:
        return f"{self.session_id}/{self.message_id} ({self.role})"


class UsageDay(models.Model):
    """The usage ledger: what a user's messages used, per UTC day (of the message's timestamp) and model.

    It moves in the transaction of every write (chat.services.usage). `live` rows
    count the messages that exist, as last saved; `live=False` rows keep what
    deleted messages had used, so that deleting never lowers usage (API.md) and
    `recount_usage` can still check the live rows against the messages exactly.
    """

    # No index of its own: the key's index starts with the user.
    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="+", db_index=False)
    day = models.DateField()
    # "" for messages without a model (a user's own messages): a key column cannot be NULL
    # and still conflict in ON CONFLICT; the API shows it as null.
    model = models.CharField(max_length=255, blank=True, default="")
    live = models.BooleanField()
    messages = models.BigIntegerField(default=0)
    input_tokens = models.BigIntegerField(default=0)
    output_tokens = models.BigIntegerField(default=0)
    total_tokens = models.BigIntegerField(default=0)
    errors = models.BigIntegerField(default=0)

    class Meta:
        db_table = "chat_usage_days"
        constraints = [
            # Also the index of the read: one user's days in a range.
            models.UniqueConstraint(fields=["user", "day", "model", "live"], name="chat_usage_day_key"),
        ]

    def __str__(self) -> str:
        return f"{self.user_id} {self.day} {self.model or '-'} ({'live' if self.live else 'deleted'})"
