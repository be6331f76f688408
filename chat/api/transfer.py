"""GET /api/chat/export and POST /api/chat/import: all of the caller's sessions as NDJSON.

The import's line format is parsed here (`records_from_lines`), for the API and
the import_sessions command alike; the writing is chat.services.sessions_import.
"""

from collections.abc import Iterable, Iterator

import orjson
from django.conf import settings
from django.http import StreamingHttpResponse
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiExample, OpenApiResponse, extend_schema, inline_serializer
from rest_framework import serializers
from rest_framework.parsers import BaseParser
from rest_framework.response import Response

from chat import selectors, services
from chat.api import fields
from chat.api.base import ApiView
from chat.api.messages import MessageInputSerializer, client_id_field
from chat.api.schema import RATE_LIMIT_HEADERS, REQUEST_ID_HEADERS, errors
from chat.services.transfer import ImportLineError, MessageRecord, SessionRecord

NDJSON = "application/x-ndjson"
IMPORT_PATH = "/api/chat/import"


class NdjsonParser(BaseParser):
    """The body as bytes: lines are parsed (and named in errors) one by one."""

    media_type = NDJSON

    def parse(self, stream, media_type=None, parser_context=None):
        return stream.read() if stream is not None else b""


class SessionLineSerializer(serializers.Serializer):
    id = client_id_field()
    title = fields.StrictCharField(max_length=255, allow_blank=True)
    created_at = fields.StrictDateTimeField()
    updated_at = fields.StrictDateTimeField()


def records_from_lines(lines: Iterable[bytes]) -> Iterator[SessionRecord | MessageRecord]:
    """The records of an export, line by line; a bad line raises ImportLineError naming it.

    One serializer of each kind validates every line: DRF builds (deep-copies) a
    serializer's fields once per instance, which per line was most of an import's time.
    """
    sessions, messages = SessionLineSerializer(), MessageInputSerializer()
    for number, raw in enumerate(lines, 1):
        if not raw.strip():
            continue
        try:
            data = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise ImportLineError(number, f"not JSON ({exc})") from None
        if not isinstance(data, dict):
            raise ImportLineError(number, "not a JSON object")
        kind = data.pop("type", None)
        if kind == "session":
            yield SessionRecord(line=number, **_validated(sessions, data, number, "invalid session"))
        elif kind == "message":
            session_id = data.pop("session_id", None)
            if not isinstance(session_id, str):
                raise ImportLineError(number, "a message needs its session_id")
            if "id" not in data:
                raise ImportLineError(number, "a message needs its id")
            fields = dict(_validated(messages, data, number, "invalid message"))
            yield MessageRecord(line=number, session_id=session_id, fields=fields)
        else:
            raise ImportLineError(number, 'type must be "session" or "message"')


def _validated(serializer: serializers.Serializer, data: dict, number: int, reason: str) -> dict:
    try:
        return serializer.run_validation(data)
    except serializers.ValidationError as exc:
        raise ImportLineError(number, reason, exc.detail) from None


class ChatExportApi(ApiView):
    """All your sessions and messages as NDJSON, streamed: each session, oldest first, then its messages."""

    @extend_schema(
        operation_id="chat_export",
        parameters=[*REQUEST_ID_HEADERS, *RATE_LIMIT_HEADERS],
        responses={
            (200, NDJSON): OpenApiResponse(
                OpenApiTypes.STR,
                description='One JSON object a line: {"type": "session", "id", "title", "created_at", '
                '"updated_at"}, then that session\'s messages as {"type": "message", "session_id", '
                "...the GET shape}.",
            ),
            **errors(401, 429, 500, 503),
        },
    )
    def get(self, request):
        response = StreamingHttpResponse(selectors.user_export(user_id=request.user.pk), content_type=NDJSON)
        response["Content-Disposition"] = 'attachment; filename="chat-export.ndjson"'
        response["Cache-Control"] = "no-store"
        return response


class ChatImportApi(ApiView):
    """Import sessions and messages in the export's format: one transaction, ids upsert, a bad line names itself."""

    parser_classes = [NdjsonParser]

    @extend_schema(
        operation_id="chat_import",
        request={NDJSON: OpenApiTypes.STR},
        parameters=[*REQUEST_ID_HEADERS, *RATE_LIMIT_HEADERS],
        responses={
            200: inline_serializer(
                "ChatImportResult",
                {"sessions": serializers.IntegerField(), "messages": serializers.IntegerField()},
            ),
            **errors(400, 401, 403, 413, 415, 429, 500, 503),
        },
        examples=[
            OpenApiExample(
                "one session",
                request_only=True,
                media_type=NDJSON,
                value='{"type": "session", "id": "s1", "title": "Hi", "created_at": "2025-01-01T00:00:00Z", '
                '"updated_at": "2025-01-01T00:00:00Z"}\n',
            )
        ],
        description="Up to 32 MiB, 500 sessions and 10,000 messages (IMPORT_MAX_SESSIONS, "
        "IMPORT_MAX_MESSAGES). Everything or nothing: a bad line, or the first one past a limit, is a 400 "
        "naming it (`details.line`), a session of another user a 403. Importing an export twice changes nothing.",
    )
    def post(self, request):
        body = request.data if isinstance(request.data, bytes) else b""
        counts = services.sessions_import(
            user=request.user,
            records=records_from_lines(body.split(b"\n")),
            max_sessions=settings.IMPORT_MAX_SESSIONS,
            max_messages=settings.IMPORT_MAX_MESSAGES,
        )
        return Response(counts)
