"""GET /api/v1/chat/guest/inbox: the staff inbox, guest sessions by latest activity.

Staff only (token or login session), on the staff member's tier budget. Pages are
cursored by position (a session's updated_at and id), so a page costs the same
however deep it is; the cursor is opaque to clients and a malformed one is a 400.
"""

import base64
import binascii
import re
from datetime import datetime

import orjson
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, extend_schema, extend_schema_serializer
from rest_framework import serializers
from rest_framework.permissions import IsAdminUser
from rest_framework.response import Response
from rest_framework.utils.urls import replace_query_param

from chat import selectors
from chat.api.base import ApiView
from chat.api.errors import envelope
from chat.api.schema import RATE_LIMIT_HEADERS, REQUEST_ID_HEADERS, envelope_serializer, errors
from chat.exceptions import ApiError
from chat.models import CLIENT_ID_PATTERN, Role
from chat.selectors.inbox import Position

CURSOR_PARAM = "cursor"
# A cursor we hand out is ~90 characters; anything much longer is not one of ours.
MAX_CURSOR_LENGTH = 300
# Cursor directions: the page after a position (older sessions) or before it (newer).
AFTER, BEFORE = "a", "b"
CLIENT_ID_RE = re.compile(CLIENT_ID_PATTERN)
BOOLEANS = {"true": True, "1": True, "false": False, "0": False}


def invalid(name: str, text: str) -> ApiError:
    return ApiError(details={name: [text]})


def encode_cursor(direction: str, position: Position) -> str:
    updated_at, session_id = position
    raw = orjson.dumps([direction, updated_at.isoformat(), session_id])
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str) -> tuple[str, Position]:
    """(direction, position) from a cursor of encode_cursor; anything else raises the 400."""
    try:
        if len(cursor) > MAX_CURSOR_LENGTH:
            raise ValueError("too long")
        decoded = orjson.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
        if not isinstance(decoded, list) or len(decoded) != 3:
            raise ValueError("not one of our cursors")
        direction, updated_at, session_id = decoded
        position = (datetime.fromisoformat(updated_at), session_id)
        if direction not in (AFTER, BEFORE) or position[0].tzinfo is None or not CLIENT_ID_RE.match(session_id):
            raise ValueError("not one of our cursors")
    except (ValueError, TypeError, binascii.Error):
        raise invalid(CURSOR_PARAM, "Invalid cursor: use the next or previous link of a page.") from None
    return direction, position


def single_param(request, name: str) -> str | None:
    values = request.query_params.getlist(name)
    if len(values) > 1:
        raise invalid(name, "Give it once.")
    return values[0] if values else None


@extend_schema_serializer(component_name="GuestInboxSession")
class InboxRowSerializer(serializers.Serializer):
    """A guest session as the staff inbox lists it."""

    session_key = serializers.UUIDField()
    id = serializers.CharField()
    guest_name = serializers.CharField(allow_blank=True)
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField(help_text="Latest activity: moves with every message")
    message_count = serializers.IntegerField()
    last_message_id = serializers.IntegerField(allow_null=True, help_text="The newest message's integer id")
    last_message_preview = serializers.CharField(allow_null=True)
    last_role = serializers.ChoiceField(choices=Role.choices, allow_null=True)
    awaiting_reply = serializers.BooleanField(help_text="The newest message is the guest's (role user)")


@extend_schema_serializer(component_name="GuestInboxMeta")
class InboxMetaSerializer(serializers.Serializer):
    next = serializers.URLField(allow_null=True, help_text="The next (older) page, or null")
    previous = serializers.URLField(allow_null=True, help_text="The previous (newer) page, or null")


class GuestInboxApi(ApiView):
    """Guest sessions for staff, latest activity first, 50 a page; `awaiting_reply=true` for those waiting on you."""

    permission_classes = [IsAdminUser]
    # On the staff member's tier budget, like staff replies.
    throttle_scopes = ("user",)

    @extend_schema(
        operation_id="guest_inbox_list",
        parameters=[
            OpenApiParameter(
                "awaiting_reply",
                OpenApiTypes.BOOL,
                OpenApiParameter.QUERY,
                description="true: only sessions whose newest message is the guest's (default false)",
            ),
            OpenApiParameter(
                CURSOR_PARAM,
                {"type": "string", "maxLength": MAX_CURSOR_LENGTH},
                OpenApiParameter.QUERY,
                description="Opaque: take it from meta.next or meta.previous",
            ),
            *REQUEST_ID_HEADERS,
            *RATE_LIMIT_HEADERS,
        ],
        responses={
            200: envelope_serializer("GuestInboxPage", InboxRowSerializer(many=True), meta=InboxMetaSerializer()),
            **errors(400, 401, 403, 429, 500, 503),
        },
    )
    def get(self, request):
        awaiting = single_param(request, "awaiting_reply")
        if awaiting is not None and awaiting.lower() not in BOOLEANS:
            raise invalid("awaiting_reply", "Give true or false.")
        awaiting_reply = BOOLEANS.get((awaiting or "false").lower(), False)
        cursor = single_param(request, CURSOR_PARAM)
        after = before = None
        if cursor is not None:
            direction, position = decode_cursor(cursor)
            after, before = (position, None) if direction == AFTER else (None, position)

        page = selectors.inbox_sessions(awaiting_reply=awaiting_reply, after=after, before=before)
        url = request.build_absolute_uri()
        meta = {
            "next": replace_query_param(url, CURSOR_PARAM, encode_cursor(AFTER, page.next)) if page.next else None,
            "previous": (
                replace_query_param(url, CURSOR_PARAM, encode_cursor(BEFORE, page.previous)) if page.previous else None
            ),
        }
        return Response(envelope(request, success=True, message="Inbox retrieved", data=page.rows, meta=meta))
