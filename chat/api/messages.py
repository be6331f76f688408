"""GET and POST /api/chat/messages: the messages of the caller's sessions."""

import re

import orjson
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import HttpResponse, HttpResponseNotModified, StreamingHttpResponse
from django.http.response import HttpResponseBase
from django.utils.http import parse_etags, urlencode
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import (
    OpenApiParameter,
    OpenApiResponse,
    PolymorphicProxySerializer,
    extend_schema,
    extend_schema_field,
    extend_schema_serializer,
)
from rest_framework import serializers
from rest_framework.response import Response

from chat import selectors, services
from chat.api import fields
from chat.api.base import ApiView, validated
from chat.api.renderers import OrjsonRenderer
from chat.api.schema import RATE_LIMIT_HEADERS, REQUEST_ID_HEADERS, errors
from chat.exceptions import ApiError, NotFound
from chat.models import CLIENT_ID_PATTERN, MAX_EXTRA_BYTES, ContentType, Role, client_id_validator
from chat.selectors import message_to_wire

MAX_MESSAGES_PER_REQUEST = 100
MAX_PAGE = 1000

IF_NONE_MATCH = OpenApiParameter(
    "If-None-Match",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description="An ETag of an earlier answer: 304 with no body if the history has not changed since",
)
HISTORY_HEADERS = [
    OpenApiParameter(
        "ETag",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        response=[200, 304],
        description="Changes with every write to the session (and differs per page)",
    ),
    OpenApiParameter(
        "Link",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        response=[200],
        description='With `limit`, while older messages remain: `<...&before=CURSOR>; rel="prev"` (RFC 8288)',
    ),
    OpenApiParameter(
        "Cache-Control",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        response=[200, 304],
        description="`no-store`: a chat is kept by its client, not by caches; revalidate with If-None-Match",
    ),
]


@extend_schema_field({"type": "integer", "minimum": 1, "maximum": MAX_PAGE})
class PageLimitField(serializers.Field):
    """A page size: ASCII digits (no `5.0`, ` 5`, `٣`) from 1 to MAX_PAGE."""

    default_error_messages = {"invalid": f"Give a whole number from 1 to {MAX_PAGE}."}

    def to_internal_value(self, data) -> int:
        if not isinstance(data, str) or not re.fullmatch(r"[0-9]{1,4}", data) or not 1 <= int(data) <= MAX_PAGE:
            self.fail("invalid")
        return int(data)

    def to_representation(self, value):
        return value


def etag_matches(if_none_match: str, etag: str) -> bool:
    """RFC 9110's weak comparison of If-None-Match against our (strong) ETag; `*` matches."""
    tags = parse_etags(if_none_match)
    return "*" in tags or etag in (tag.removeprefix("W/") for tag in tags)


def history_response(request, history: selectors.History) -> HttpResponseBase:
    """The JSON as the selector made it: at once when short, else written as it is read."""
    if history.body is None:  # long: a worker's memory must not grow with it
        return StreamingHttpResponse(history.chunks, content_type="application/json")
    if not isinstance(request.accepted_renderer, OrjsonRenderer):
        return Response(orjson.loads(history.body))  # the browsable API's page (HTML)
    return HttpResponse(history.body, content_type="application/json")


def history_headers(response: HttpResponseBase, etag: str) -> HttpResponseBase:
    response["ETag"] = etag
    # Chats are private: no cache keeps them (hardening), and a client that keeps its
    # own copy revalidates it with If-None-Match, which works whatever Cache-Control says.
    response["Cache-Control"] = "no-store"
    return response


MAX_SUGGESTIONS = 20


def client_id_field(**kwargs) -> fields.StrictRegexField:
    return fields.StrictRegexField(
        CLIENT_ID_PATTERN,
        max_length=128,
        error_messages={"invalid": "Use 1-128 characters of letters, digits and . _ : -"},
        **kwargs,
    )


@extend_schema_serializer(component_name="MessageInput")
class MessageInputSerializer(serializers.Serializer):
    """One message as a client sends it. Keys not named here are kept as they came
    (at most 16 KiB as compact JSON) and returned after the named ones."""

    id = client_id_field(source="message_id", required=False)
    role = serializers.ChoiceField(choices=Role.choices)
    content = fields.StrictCharField(required=False, allow_blank=True, default="")
    contentType = serializers.ChoiceField(
        source="content_type", choices=ContentType.choices, required=False, default=ContentType.TEXT
    )
    model = fields.StrictCharField(required=False, allow_null=True, max_length=255)
    originalModel = fields.StrictCharField(source="original_model", required=False, allow_null=True, max_length=255)
    total_tokens = fields.StrictIntegerField(required=False, allow_null=True)
    input_tokens = fields.StrictIntegerField(required=False, allow_null=True)
    output_tokens = fields.StrictIntegerField(required=False, allow_null=True)
    user_message_id = fields.StrictCharField(required=False, allow_null=True, max_length=128)
    elapsed_time = fields.StrictIntegerField(required=False, allow_null=True, help_text="milliseconds")
    completion_id = fields.StrictCharField(required=False, allow_null=True, max_length=255)
    timestamp = fields.StrictDateTimeField(required=False, allow_null=True, help_text="ISO 8601; no offset means UTC")
    error = fields.StrictBooleanField(required=False, default=False)
    error_message = fields.StrictCharField(required=False, allow_null=True, allow_blank=True)
    error_code = fields.StrictCharField(required=False, allow_null=True, max_length=100)
    retry_after = fields.StrictIntegerField(required=False, allow_null=True, help_text="seconds")
    suggestions = serializers.ListField(
        child=fields.StrictCharField(max_length=1000),
        required=False,
        allow_null=True,
        max_length=MAX_SUGGESTIONS,
    )

    def to_internal_value(self, data):
        validated = super().to_internal_value(data)
        validated["extra"] = self.extra_keys(data)
        return validated

    def extra_keys(self, data) -> dict | None:
        extra = {key: value for key, value in data.items() if key not in self.fields}
        if not extra:
            return None
        try:
            size = len(orjson.dumps(extra))
        except orjson.JSONEncodeError:  # deeper than orjson writes (254 levels)
            size = None
        if size is None or size > MAX_EXTRA_BYTES:
            name = f"Message {data['id']!r}" if isinstance(data.get("id"), str) else "This message"
            raise serializers.ValidationError(
                {"non_field_errors": [f"{name}: its extra keys must take at most {MAX_EXTRA_BYTES} bytes as JSON."]}
            )
        return extra


@extend_schema_serializer(component_name="Message")
class MessageOutputSerializer(serializers.Serializer):
    """A stored message; every key is present, unset ones are null. Keys the client sent
    that this shape does not name follow, as they came."""

    id = serializers.CharField()
    role = serializers.ChoiceField(choices=Role.choices)
    content = serializers.CharField()
    contentType = serializers.ChoiceField(choices=ContentType.choices)
    model = serializers.CharField(allow_null=True)
    originalModel = serializers.CharField(allow_null=True)
    total_tokens = serializers.IntegerField(allow_null=True)
    input_tokens = serializers.IntegerField(allow_null=True)
    output_tokens = serializers.IntegerField(allow_null=True)
    user_message_id = serializers.CharField(allow_null=True)
    elapsed_time = serializers.IntegerField(allow_null=True)
    completion_id = serializers.CharField(allow_null=True)
    timestamp = serializers.DateTimeField()
    error = serializers.BooleanField()
    error_message = serializers.CharField(allow_null=True)
    error_code = serializers.CharField(allow_null=True)
    retry_after = serializers.IntegerField(allow_null=True)
    suggestions = serializers.ListField(child=serializers.CharField(), allow_null=True)


@extend_schema_serializer(component_name="SaveOneMessage")
class SaveOneMessageSerializer(serializers.Serializer):
    sessionId = client_id_field()
    sessionTitle = fields.StrictCharField(required=False, allow_null=True, allow_blank=True, max_length=255)
    message = MessageInputSerializer()


@extend_schema_serializer(component_name="SaveMessageArray")
class SaveMessageArraySerializer(serializers.Serializer):
    sessionId = client_id_field()
    sessionTitle = fields.StrictCharField(required=False, allow_null=True, allow_blank=True, max_length=255)
    messages = serializers.ListField(child=MessageInputSerializer(), min_length=1, max_length=MAX_MESSAGES_PER_REQUEST)


SAVE_MESSAGES_REQUEST = PolymorphicProxySerializer(
    component_name="SaveMessagesRequest",
    serializers=[SaveOneMessageSerializer, SaveMessageArraySerializer],
    resource_type_field_name=None,
)


class ChatMessagesApi(ApiView):
    """The messages of one of your chat sessions: read them (whole or by pages), or save new ones."""

    @extend_schema_serializer(component_name="ChatMessagesQuery")
    class QuerySerializer(serializers.Serializer):
        session_id = client_id_field()
        limit = PageLimitField(
            required=False,
            help_text="1-1000: a page, the newest `limit` messages (older than `before`), oldest first",
        )
        before = serializers.CharField(
            required=False,
            max_length=64,
            trim_whitespace=False,
            help_text="Opaque: the `before` of the `Link: rel=prev` header of the page after this one",
        )

        def validate(self, attrs):
            if "before" in attrs:
                if "limit" not in attrs:
                    raise serializers.ValidationError({"before": ["`before` needs `limit`."]})
                attrs["before_key"] = selectors.cursor_decode(attrs["before"])
            return attrs

    class InputSerializer(serializers.Serializer):
        """Either `message` or `messages`: the schema says so with the two shapes below."""

        sessionId = client_id_field()
        sessionTitle = fields.StrictCharField(required=False, allow_null=True, allow_blank=True, max_length=255)
        message = MessageInputSerializer(required=False)
        messages = serializers.ListField(
            child=MessageInputSerializer(), required=False, min_length=1, max_length=MAX_MESSAGES_PER_REQUEST
        )

        def validate(self, attrs):
            if ("message" in attrs) == ("messages" in attrs):
                raise serializers.ValidationError(
                    {"non_field_errors": ["Send exactly one of `message` or `messages`."]}
                )
            messages = [attrs["message"]] if "message" in attrs else attrs["messages"]
            # Two messages sharing one `id` are refused by the service (services.session_messages_write).
            return {"session_id": attrs["sessionId"], "session_title": attrs.get("sessionTitle"), "messages": messages}

    @extend_schema_serializer(component_name="SaveMessagesResponse")
    class OutputSerializer(serializers.Serializer):
        messages = MessageOutputSerializer(many=True)
        count = serializers.IntegerField()
        success = serializers.BooleanField()

    @extend_schema(
        operation_id="chat_messages_list",
        parameters=[QuerySerializer, IF_NONE_MATCH, *HISTORY_HEADERS, *REQUEST_ID_HEADERS, *RATE_LIMIT_HEADERS],
        responses={
            200: MessageOutputSerializer(many=True),
            304: OpenApiResponse(description="Not modified: `If-None-Match` holds the current ETag. No body."),
            **errors(400, 401, 403, 404, 429, 500, 503),
        },
        description=(
            "The session's messages, ordered by timestamp, then arrival; every key is always present. "
            "Without `limit`, all of them (streamed when long). With `limit`, the newest `limit` "
            "(older than `before`), still oldest first, and while older ones remain a "
            '`Link: <...>; rel="prev"` header to the page before. Every answer has an `ETag` that changes '
            "with every write to the session: send it back in `If-None-Match` for a 304 that reads no message."
        ),
    )
    def get(self, request):
        repeated = {k: ["Give it once."] for k in ("session_id", "limit", "before") if len(request.GET.getlist(k)) > 1}
        if repeated:
            raise ApiError(details=repeated)
        # A plain dict, not the QueryDict: DRF reads an empty optional parameter of a
        # QueryDict as absent, and `limit=` or `before=` is a mistake to point out.
        query = self.QuerySerializer(data=request.GET.dict())
        query.is_valid(raise_exception=True)
        params = query.validated_data
        session_id, limit = params["session_id"], params.get("limit")
        etag_query = f"{limit}:{params.get('before')}"
        if_none_match = request.headers.get("If-None-Match")
        if if_none_match:
            state = selectors.session_history_state(user=request.user, session_id=session_id)
            etag = state.etag(query=etag_query)
            if etag_matches(if_none_match, etag):
                return history_headers(HttpResponseNotModified(), etag)
        history = selectors.session_history(
            user=request.user, session_id=session_id, limit=limit, before=params.get("before_key")
        )
        response = history_response(request, history)
        if history.older is not None:
            prev = urlencode(
                {"session_id": session_id, "limit": limit, "before": selectors.cursor_encode(history.older)}
            )
            response["Link"] = f'<{request.build_absolute_uri(request.path)}?{prev}>; rel="prev"'
        return history_headers(response, history.state.etag(query=etag_query))

    @extend_schema(
        operation_id="chat_messages_save",
        request=SAVE_MESSAGES_REQUEST,
        parameters=[*REQUEST_ID_HEADERS, *RATE_LIMIT_HEADERS],
        responses={201: OutputSerializer, **errors(400, 401, 403, 413, 415, 429, 500, 503)},
        description=(
            "Save `message` or `messages` (1-100) to `sessionId`, all or nothing. A message whose `id` "
            "exists in the session replaces it. An unknown `sessionId` creates a session owned by you."
        ),
    )
    def post(self, request):
        stored = services.messages_save(user=request.user, **validated(self.InputSerializer, request.data))
        return Response(
            {"messages": [message_to_wire(m) for m in stored], "count": len(stored), "success": True},
            status=201,
        )


class ChatMessageDetailApi(ApiView):
    """Delete one message of one of your chat sessions; the session's statistics follow."""

    @extend_schema_serializer(component_name="ChatMessageDeleteQuery")
    class QuerySerializer(serializers.Serializer):
        session_id = client_id_field()

    @extend_schema(
        operation_id="chat_messages_delete",
        parameters=[QuerySerializer, *REQUEST_ID_HEADERS, *RATE_LIMIT_HEADERS],
        responses={204: None, **errors(400, 401, 403, 404, 429, 500, 503)},
        description=(
            "Delete the message whose `id` is `message_id` from the session `session_id`. "
            "`message_count`, `total_tokens` and the last-message fields move in the same transaction."
        ),
    )
    def delete(self, request, message_id: str):
        query = self.QuerySerializer(data=request.query_params)
        query.is_valid(raise_exception=True)
        try:
            client_id_validator(message_id)
        except DjangoValidationError:
            raise NotFound("Message not found") from None
        services.message_delete(user=request.user, session_id=query.validated_data["session_id"], message_id=message_id)
        return Response(status=204)
