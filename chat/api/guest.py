"""Guest live chat: start a session, send, poll for new messages; staff reply.

No authentication: a guest session's `session_key` (a UUID in the path) is the
guest's only credential. A key that is malformed, unknown, or belongs to a session
with an owner gets the same 404, so a key reveals nothing about other sessions.
Every answer is the seed's envelope (chat.api.errors.envelope).
"""

import logging
import re
import time
import uuid

from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.permissions import AllowAny, IsAdminUser
from rest_framework.response import Response

from chat import metrics, replica, selectors, services
from chat.api import fields
from chat.api.base import ApiView, validated
from chat.api.errors import envelope
from chat.api.messages import client_id_field
from chat.api.renderers import OrjsonRenderer
from chat.api.schema import RATE_LIMIT_HEADERS, REQUEST_ID_HEADERS, envelope_serializer, errors
from chat.exceptions import ApiError, NotFound
from chat.models import ContentType, Role
from chat.selectors import guest_message_to_wire

logger = logging.getLogger(__name__)

MAX_MESSAGES_PER_POLL = 100
MAX_CONTENT_LENGTH = services.GUEST_MESSAGE_MAX_LENGTH
MAX_GUEST_NAME_LENGTH = 100
# PostgreSQL's bigint, the type of the message id.
MAX_MESSAGE_ID = 2**63 - 1

# Only the canonical spelling the server hands out: the rate limiter counts per
# path segment, so other spellings of the same UUID must not open fresh budgets.
SESSION_KEY_RE = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
# [0-9], not \d: \d also matches other scripts' digits ("٣"), which int() accepts.
CURSOR_RE = re.compile(r"[0-9]{1,19}")
# A long-poll's `wait`, in seconds (API.md, "Real-time delivery").
MAX_WAIT = 30
WAIT_RE = re.compile(r"[0-9]{1,2}")


def parse_session_key(raw: str) -> uuid.UUID:
    """The path's session key; anything else is answered exactly like an unknown key."""
    if not SESSION_KEY_RE.fullmatch(raw):
        raise NotFound("Session not found")
    return uuid.UUID(raw)


def parse_cursor(request) -> int:
    """`last_message_id`: missing means 0; anything but ASCII digits up to 2^63-1 is a 400."""
    return cursor_from(request.query_params.getlist("last_message_id"), name="last_message_id")


def cursor_from(values: list[str], *, name: str) -> int:
    """A message-id cursor from a query parameter's values (or a header's, e.g. Last-Event-ID)."""
    if not values:
        return 0
    if len(values) == 1 and CURSOR_RE.fullmatch(values[0]) and int(values[0]) <= MAX_MESSAGE_ID:
        return int(values[0])
    raise ApiError(details={name: [f"Give one integer from 0 to {MAX_MESSAGE_ID}, in ASCII digits."]})


def wait_from(values: list[str]) -> int:
    """`wait`: seconds a long-poll may wait, 0-30 in ASCII digits; missing means 0 (answer at once)."""
    if not values:
        return 0
    if len(values) == 1 and WAIT_RE.fullmatch(values[0]) and int(values[0]) <= MAX_WAIT:
        return int(values[0])
    raise ApiError(details={"wait": [f"Give one whole number of seconds from 0 to {MAX_WAIT}, in ASCII digits."]})


_unrouted_logged_at: float | None = None


def unrouted_wait() -> None:
    """A long-poll reached the WSGI app: it answers at once (it holds no thread for 30 s), counted and logged.

    The proxy (or chatsite.asgi on one port) sends `wait` requests to the live
    process; one that arrives here was routed wrongly. The client still gets a
    correct poll answer and loses nothing; it only polls sooner.
    """
    global _unrouted_logged_at
    metrics.live_wait_unrouted.inc()
    now = time.monotonic()
    if _unrouted_logged_at is None or now - _unrouted_logged_at > 60:
        _unrouted_logged_at = now
        logger.warning("a long-poll (wait > 0) reached the WSGI app and was answered at once: route it to chat.live")


class ContentField(fields.NonBlankCharField):
    """A message's text: 1-2000 characters, not only whitespace, stored as sent (NUL refused)."""

    def __init__(self, **kwargs):
        super().__init__(max_length=MAX_CONTENT_LENGTH, **kwargs)


@extend_schema_serializer(component_name="ChatMessageResource")
class ChatMessageResourceSerializer(serializers.Serializer):
    """A message of a guest session. `id` is the polling cursor."""

    id = serializers.IntegerField()
    message_id = serializers.CharField()
    role = serializers.ChoiceField(choices=Role.choices)
    content = serializers.CharField()
    contentType = serializers.ChoiceField(choices=ContentType.choices)
    timestamp = serializers.DateTimeField()


SESSION_KEY_PARAMETER = OpenApiParameter(
    "session_key", OpenApiTypes.UUID, OpenApiParameter.PATH, description="The guest session's key"
)


class GuestView(ApiView):
    """No credentials: the key in the path is the guest's. JSON out only."""

    authentication_classes = []
    permission_classes = [AllowAny]
    renderer_classes = [OrjsonRenderer]


class GuestSessionCreateApi(GuestView):
    """Start a guest session; its `session_key` is the guest's only credential."""

    throttle_scopes = ("guest_create", "guest_ip")

    @extend_schema_serializer(component_name="GuestSessionCreate")
    class InputSerializer(serializers.Serializer):
        guest_name = fields.StrictCharField(required=False, allow_blank=True, max_length=MAX_GUEST_NAME_LENGTH)

    @extend_schema_serializer(component_name="GuestSession")
    class OutputSerializer(serializers.Serializer):
        session_key = serializers.UUIDField()
        created_at = serializers.DateTimeField()

    def writers(self, request) -> list[str]:
        # The new session's first poll must find it, on whichever node and database it lands.
        created = getattr(self, "created_key", None)
        return [replica.guest_caller(created)] if created else []

    @extend_schema(
        operation_id="guest_sessions_create",
        request=InputSerializer,
        parameters=[*REQUEST_ID_HEADERS, *RATE_LIMIT_HEADERS],
        responses={
            201: envelope_serializer("GuestSessionCreated", OutputSerializer()),
            **errors(400, 413, 415, 429, 500, 503),
        },
        description="The body is optional: none at all is fine.",
    )
    def post(self, request):
        payload = self.InputSerializer(data=request.data)
        payload.is_valid(raise_exception=True)
        session = services.guest_session_create(guest_name=payload.validated_data.get("guest_name", ""))
        self.created_key = str(session.session_key)
        data = {"session_key": self.created_key, "created_at": session.created_at}
        return Response(envelope(request, success=True, message="Guest session created", data=data), status=201)


class GuestMessagesApi(GuestView):
    """Poll a guest session for new messages (GET), or send one as the guest (POST)."""

    # GET and POST share a URL but not their limits; ApiView.initial reads
    # throttle_scopes, so each request picks its method's before that.
    POLL_SCOPES = ("guest_poll", "guest_ip")
    SEND_SCOPES = ("guest_send", "guest_ip")
    throttle_scopes = POLL_SCOPES

    @extend_schema_serializer(component_name="GuestMessage")
    class InputSerializer(serializers.Serializer):
        content = ContentField()
        id = client_id_field(required=False, help_text="Your id for the message: a retry with it stores nothing new")

    @extend_schema_serializer(component_name="GuestPollMeta")
    class PollMetaSerializer(serializers.Serializer):
        last_message_id = serializers.IntegerField(help_text="The largest id in data, or the cursor sent")
        has_more = serializers.BooleanField(help_text="More messages wait: poll again with last_message_id")

    def initial(self, request, *args, **kwargs):
        self.throttle_scopes = self.SEND_SCOPES if request.method == "POST" else self.POLL_SCOPES
        super().initial(request, *args, **kwargs)

    @extend_schema(
        operation_id="guest_messages_poll",
        parameters=[
            SESSION_KEY_PARAMETER,
            OpenApiParameter(
                "last_message_id",
                {"type": "integer", "format": "int64", "minimum": 0, "maximum": MAX_MESSAGE_ID},
                OpenApiParameter.QUERY,
                description="Return messages with id > this value (default 0)",
            ),
            OpenApiParameter(
                "wait",
                {"type": "integer", "minimum": 0, "maximum": MAX_WAIT},
                OpenApiParameter.QUERY,
                description="Long-poll: with nothing newer than `last_message_id`, wait up to this many seconds "
                "for a message before answering (default 0: answer at once). Served by the live (ASGI) process; "
                'README, "Real-time delivery".',
            ),
            *REQUEST_ID_HEADERS,
            *RATE_LIMIT_HEADERS,
        ],
        responses={
            200: envelope_serializer(
                "GuestMessagesPolled", ChatMessageResourceSerializer(many=True), meta=PollMetaSerializer()
            ),
            **errors(400, 404, 429, 500, 503),
        },
        description="Messages with id > `last_message_id`, oldest first, at most 100; with `wait`, "
        "the answer waits for the first newer message (a long-poll). A long-poll counts as one poll.",
    )
    def get(self, request, session_key: str):
        # The hot path: one query, plain dicts, no serializer on the way out.
        key = parse_session_key(session_key)
        cursor = parse_cursor(request)
        if wait_from(request.query_params.getlist("wait")):
            unrouted_wait()
        messages, has_more = selectors.guest_messages_after(
            session_key=key, after_id=cursor, limit=MAX_MESSAGES_PER_POLL
        )
        meta = {"last_message_id": messages[-1]["id"] if messages else cursor, "has_more": has_more}
        metrics.observe_guest_poll(len(messages))
        # A poll's answer is the state of a moment: no cache (the browser's, a proxy's) may keep it.
        return Response(
            envelope(request, success=True, message="Messages retrieved", data=messages, meta=meta),
            headers={"Cache-Control": "no-store"},
        )

    @extend_schema(
        operation_id="guest_messages_send",
        request=InputSerializer,
        parameters=[SESSION_KEY_PARAMETER, *REQUEST_ID_HEADERS, *RATE_LIMIT_HEADERS],
        responses={
            201: envelope_serializer("GuestMessageSent", ChatMessageResourceSerializer()),
            **errors(400, 404, 409, 413, 415, 429, 500, 503),
        },
        description=(
            "Send a message as the guest (role `user`). A retry with the same `id` stores nothing new; "
            "an `id` of another role's message (a staff reply) is a 409."
        ),
    )
    def post(self, request, session_key: str):
        key = parse_session_key(session_key)
        payload = validated(self.InputSerializer, request.data)
        message = services.guest_message_send(session_key=key, content=payload["content"], message_id=payload.get("id"))
        data = guest_message_to_wire(message)
        return Response(envelope(request, success=True, message="Message sent", data=data), status=201)


class GuestReplyApi(ApiView):
    """Reply to a guest as staff (role `assistant`, you as its author)."""

    permission_classes = [IsAdminUser]
    # Staff replies count against the staff member's tier, not the guest limits.
    throttle_scopes = ("user",)

    @extend_schema_serializer(component_name="GuestReply")
    class InputSerializer(serializers.Serializer):
        content = ContentField()
        id = client_id_field(required=False, help_text="Your id for the reply: a retry with it stores nothing new")

    @extend_schema(
        operation_id="guest_replies_send",
        request=InputSerializer,
        parameters=[SESSION_KEY_PARAMETER, *REQUEST_ID_HEADERS, *RATE_LIMIT_HEADERS],
        responses={
            201: envelope_serializer("GuestReplySent", ChatMessageResourceSerializer()),
            **errors(400, 401, 403, 404, 409, 413, 415, 429, 500, 503),
        },
        description=(
            "Reply to the guest as staff (role `assistant`). A retry with the same `id` answers your reply "
            "as first stored and stores nothing new; an `id` of another message (the guest's, or another "
            "staff member's reply) is a 409."
        ),
    )
    def post(self, request, session_key: str):
        key = parse_session_key(session_key)
        payload = validated(self.InputSerializer, request.data)
        message = services.guest_reply_send(
            session_key=key, staff_user=request.user, content=payload["content"], message_id=payload.get("id")
        )
        data = guest_message_to_wire(message)
        return Response(envelope(request, success=True, message="Reply sent", data=data), status=201)
