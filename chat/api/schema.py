"""OpenAPI pieces shared by every endpoint: the error envelope, the rate-limit
headers, the request-id header and the token security scheme."""

import re

from drf_spectacular.extensions import OpenApiAuthenticationExtension, OpenApiSerializerFieldExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, inline_serializer
from rest_framework import serializers

from chat.api.fields import NonBlankCharField

ERROR_CODES = [
    "VALIDATION_ERROR",
    "UNAUTHENTICATED",
    "FORBIDDEN",
    "NOT_FOUND",
    "METHOD_NOT_ALLOWED",
    "NOT_ACCEPTABLE",
    "CONFLICT",
    "PAYLOAD_TOO_LARGE",
    "UNSUPPORTED_MEDIA_TYPE",
    "RATE_LIMIT_EXCEEDED",
    "INTERNAL_ERROR",
    "SERVICE_UNAVAILABLE",
]


class ErrorSerializer(serializers.Serializer):
    code = serializers.ChoiceField(choices=ERROR_CODES)
    details = serializers.JSONField(
        allow_null=True, help_text="DRF's field errors for a 400; {retry_after} for a 429; else null"
    )


class ErrorEnvelopeSerializer(serializers.Serializer):
    """The body of every error, on every endpoint."""

    success = serializers.BooleanField(help_text="always false")
    message = serializers.CharField()
    data = serializers.JSONField(allow_null=True, help_text="always null")
    error = ErrorSerializer()
    meta = serializers.JSONField(allow_null=True, help_text="always null")
    trace_id = serializers.CharField()
    timestamp = serializers.CharField(help_text="UTC ISO 8601 ending in Z")


def envelope_serializer(name: str, data, *, meta=None) -> serializers.Serializer:
    """The guest envelope around `data` (a serializer instance)."""
    return inline_serializer(
        name=name,
        fields={
            "success": serializers.BooleanField(),
            "message": serializers.CharField(),
            "data": data,
            "error": serializers.JSONField(allow_null=True, help_text="null on success"),
            "meta": meta if meta is not None else serializers.JSONField(allow_null=True),
            "trace_id": serializers.CharField(),
            "timestamp": serializers.CharField(help_text="UTC ISO 8601 ending in Z"),
        },
    )


def error(description: str) -> OpenApiResponse:
    return OpenApiResponse(ErrorEnvelopeSerializer, description=description)


ERRORS = {
    400: error("Invalid input (VALIDATION_ERROR); `details` names the fields"),
    401: error("No or invalid credentials (UNAUTHENTICATED)"),
    403: error("Another user's session, or not staff (FORBIDDEN)"),
    404: error("Unknown session or URL (NOT_FOUND)"),
    405: error("Method not allowed (METHOD_NOT_ALLOWED)"),
    409: error("The id names another message of the session, not yours (CONFLICT)"),
    413: error("Body over the limit, 1 MiB by default (PAYLOAD_TOO_LARGE)"),
    415: error("A body that is not application/json (UNSUPPORTED_MEDIA_TYPE)"),
    429: error("Rate limit exceeded (RATE_LIMIT_EXCEEDED); details.retry_after equals Retry-After"),
    500: error("Unexpected error (INTERNAL_ERROR); never shows internals"),
    503: error("The database is unreachable (SERVICE_UNAVAILABLE)"),
}


def errors(*statuses: int) -> dict[int, OpenApiResponse]:
    return {status: ERRORS[status] for status in statuses}


REQUEST_ID_HEADERS = [
    OpenApiParameter(
        "X-Request-ID",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        description="Trace id to use if 1-64 characters of [A-Za-z0-9._-]; echoed back",
    ),
    OpenApiParameter(
        "X-Request-ID",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        response=True,
        description="The request's trace id, also in the body's trace_id and every log line",
    ),
]

RATE_LIMIT_HEADERS = [
    OpenApiParameter(
        "X-RateLimit-Limit",
        OpenApiTypes.INT,
        OpenApiParameter.HEADER,
        response=True,
        description="The binding limit: requests allowed in its window",
    ),
    OpenApiParameter(
        "X-RateLimit-Remaining",
        OpenApiTypes.INT,
        OpenApiParameter.HEADER,
        response=True,
        description="Requests left in the window, never negative",
    ),
    OpenApiParameter(
        "X-RateLimit-Reset",
        OpenApiTypes.STR,
        OpenApiParameter.HEADER,
        response=True,
        description="When the window ends, UTC ISO 8601 with milliseconds",
    ),
    OpenApiParameter(
        "Retry-After",
        OpenApiTypes.INT,
        OpenApiParameter.HEADER,
        response=[429],
        description="Whole seconds until the window ends (on 429 only)",
    ),
]


# Text may not contain NUL: PostgreSQL cannot store it, so the API refuses it (400).
NO_NUL_PATTERN = r"^[^\x00]*$"
# What str.strip() removes (str.isspace), spelled out: `\s` means other characters in
# other regex engines (ECMAScript's has U+FEFF and lacks U+001C-U+001F and U+0085).
WHITESPACE = "".join(f"\\u{code:04x}" for code in range(0x10000) if chr(code).isspace())
# Text that must not be blank (chat.api.fields.NonBlankCharField): no NUL, and at least
# one character that is not whitespace.
NOT_BLANK_PATTERN = rf"^[^\x00]*[^\x00{WHITESPACE}][^\x00]*$"


class StrictCharFieldSchema(OpenApiSerializerFieldExtension):
    target_class = "chat.api.fields.StrictCharField"
    match_subclasses = True  # NonBlankCharField and the fields made from it

    def map_serializer_field(self, auto_schema, direction):
        schema = auto_schema._map_serializer_field(self.target, direction, bypass_extensions=True)
        pattern = NOT_BLANK_PATTERN if isinstance(self.target, NonBlankCharField) else NO_NUL_PATTERN
        return {**schema, "pattern": pattern}


class BearerOrTokenScheme(OpenApiAuthenticationExtension):
    target_class = "accounts.authentication.BearerOrTokenAuthentication"
    name = "tokenAuth"

    def get_security_definition(self, auto_schema):
        return {
            "type": "http",
            "scheme": "bearer",
            "description": "A DRF token: `Authorization: Bearer <key>` (or `Token <key>`). "
            "`python manage.py issue_token USERNAME` prints one.",
        }


def require_request_bodies(result, generator, request, public):
    """A JSON body whose schema requires something is itself required.

    drf-spectacular cannot see that through a oneOf (the two shapes of saving
    messages), so it would document an empty POST as valid.
    """
    components = result.get("components", {}).get("schemas", {})
    for path in result["paths"].values():
        for operation in path.values():
            body = operation.get("requestBody") if isinstance(operation, dict) else None
            if not body:
                continue
            ref = body["content"].get("application/json", {}).get("schema", {}).get("$ref", "")
            component = components.get(ref.rsplit("/", 1)[-1], {})
            if "oneOf" in component or component.get("required"):
                body["required"] = True
    return result


def merge_blank_alternatives(result, generator, request, public):
    """One schema for a string that may be blank, not a oneOf of two that both take "".

    For `allow_blank` with a validator pattern, drf-spectacular writes
    `oneOf: [{pattern, maxLength}, {maxLength: 0}]`; when the pattern accepts ""
    (our NUL-refusing one does), "" matches both, which breaks `oneOf` and makes
    schema-driven clients and fuzzers call a valid blank value invalid.
    """

    def visit(node):
        if isinstance(node, dict):
            alternatives = node.get("oneOf")
            if isinstance(alternatives, list) and len(alternatives) == 2:
                full, blank = alternatives
                pattern = full.get("pattern") if isinstance(full, dict) else None
                if (
                    blank == {"type": "string", "maxLength": 0}
                    and full.get("type") == "string"
                    and (pattern is None or re.search(pattern, ""))
                ):
                    node.pop("oneOf")
                    node.update(full)
            for value in node.values():
                visit(value)
        elif isinstance(node, list):
            for value in node:
                visit(value)

    visit(result)
    return result


def _json(ref: str, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": {"$ref": ref}}}}


# The API's parts, as Swagger UI groups them: (path prefix, tag, what it is), first match wins.
OPERATIONS = "Operations"
API_PARTS = [
    ("/api/v1/chat/guest/", "Guest chat", "A website visitor's live chat: no account, a session key; staff reply."),
    ("/api/chat/messages", "Messages", "Save and read a session's messages (API token)."),
    ("/api/chat/sessions", "Sessions", "The caller's chat sessions (API token)."),
    ("/healthz", OPERATIONS, "Health, readiness and metrics for the people who run the service."),
    ("/readyz", OPERATIONS, None),
    ("/metrics", OPERATIONS, None),
]


def api_part(path: str) -> str:
    """The tag of `path`: its part in API_PARTS, else its first word after the version ("search" -> "Search")."""
    for prefix, tag, _ in API_PARTS:
        if path.startswith(prefix):
            return tag
    words = [w for w in path.strip("/").split("/") if w not in {"api", "chat"} and not w.startswith(("v1", "{"))]
    return words[0].replace("-", " ").capitalize() if words else OPERATIONS


def tag_api_parts(result, generator, request, public):
    """Tags name the API's parts ("Guest chat", "Messages"), not the URL's first word ("v1", "chat")."""
    used = []
    for path, operations in result["paths"].items():
        for operation in operations.values():
            if isinstance(operation, dict):
                operation["tags"] = [api_part(path)]
                used.append(operation["tags"][0])
    described = {tag: text for _, tag, text in API_PARTS if text}
    result["tags"] = [
        {"name": tag, **({"description": described[tag]} if tag in described else {})} for tag in dict.fromkeys(used)
    ]
    return result


_ERROR = "#/components/schemas/ErrorEnvelope"
_STATUS = "#/components/schemas/StatusEnvelope"
_NOT_ALLOWED = _json(_ERROR, "Any method but GET and HEAD (METHOD_NOT_ALLOWED)")

# The operations endpoints are plain Django views (no DRF: nothing between the
# process and the answer), so the schema states them here.
OPERATIONS_PATHS = {
    "/healthz": {
        "get": {
            "operationId": "healthz",
            "tags": [OPERATIONS],
            "description": "The process is up. Checks no dependency.",
            "security": [],
            "responses": {"200": _json(_STATUS, "Up: data is {status: ok}"), "405": _NOT_ALLOWED},
        }
    },
    "/readyz": {
        "get": {
            "operationId": "readyz",
            "tags": [OPERATIONS],
            "description": "Ready for traffic: the database and the cache answer.",
            "security": [],
            "responses": {
                "200": _json(_STATUS, "Ready: data is {database: ok, cache: ok}"),
                "503": _json(_ERROR, "Not ready (SERVICE_UNAVAILABLE): details says which dependency failed"),
                "405": _NOT_ALLOWED,
            },
        }
    },
    "/metrics": {
        "get": {
            "operationId": "metrics",
            "tags": [OPERATIONS],
            "description": "Prometheus metrics, for staff (token or login session) or the METRICS_TOKEN bearer.",
            "security": [{"tokenAuth": []}, {"cookieAuth": []}],
            "responses": {
                "200": {
                    "description": "Prometheus text exposition format",
                    "content": {"text/plain": {"schema": {"type": "string"}}},
                },
                "401": _json(_ERROR, "No or invalid credentials (UNAUTHENTICATED)"),
                "403": _json(_ERROR, "Not staff (FORBIDDEN)"),
                "405": _NOT_ALLOWED,
                "429": {
                    **_json(_ERROR, "Too many calls from this IP (RATE_LIMIT_EXCEEDED); details.retry_after"),
                    "headers": {"Retry-After": {"schema": {"type": "integer"}, "description": "Whole seconds to wait"}},
                },
            },
        }
    },
}

STATUS_ENVELOPE = {
    "type": "object",
    "properties": {
        "success": {"type": "boolean"},
        "message": {"type": "string"},
        "data": {"type": "object", "additionalProperties": {"type": "string"}},
        "error": {"nullable": True},
        "meta": {"nullable": True},
        "trace_id": {"type": "string"},
        "timestamp": {"type": "string"},
    },
    "required": ["success", "message", "data", "error", "meta", "trace_id", "timestamp"],
}


def add_operations_endpoints(result, generator, request, public):
    """Document /healthz, /readyz and /metrics, which DRF does not see."""
    result["paths"].update(OPERATIONS_PATHS)
    result.setdefault("components", {}).setdefault("schemas", {})["StatusEnvelope"] = STATUS_ENVELOPE
    return result


# The event streams are served by chat.live on ASGI (no DRF view to read), so the schema states them here.
_KEY = {
    "in": "path",
    "name": "session_key",
    "required": True,
    "schema": {"type": "string", "format": "uuid"},
    "description": "The guest session's key",
}
_TRACE = {
    "in": "header",
    "name": "X-Request-ID",
    "schema": {"type": "string"},
    "description": "Trace id to use if 1-64 characters of [A-Za-z0-9._-]; echoed back",
}
_STREAM_HEADERS = {
    "X-Request-ID": {"schema": {"type": "string"}, "description": "The request's trace id"},
    "Cache-Control": {"schema": {"type": "string", "enum": ["no-store"]}},
    "X-Accel-Buffering": {"schema": {"type": "string", "enum": ["no"]}, "description": "Tells nginx not to buffer"},
    "X-RateLimit-Limit": {"schema": {"type": "integer"}, "description": "The binding limit"},
    "X-RateLimit-Remaining": {"schema": {"type": "integer"}, "description": "Requests left in the window"},
    "X-RateLimit-Reset": {"schema": {"type": "string"}, "description": "When the window ends, UTC ISO 8601"},
}
_EVENT_STREAM = {"text/event-stream": {"schema": {"type": "string"}}}
GUEST_EVENTS_FORMAT = (
    "Each message is one event: `id: <the message's integer id>`, `event: message`, `data: <the "
    "ChatMessageResource as one line of JSON>`, then a blank line. While idle, a comment line (`: keep-alive`) "
    "at least every 15 s. The stream ends after 300 s (LIVE_STREAM_MAX_SECONDS) or when the server shuts down; "
    "EventSource reconnects with Last-Event-ID and loses nothing."
)

LIVE_PATHS = {
    "/api/v1/chat/guest/{session_key}/events": {
        "get": {
            "operationId": "guest_events_stream",
            "tags": ["Guest chat"],
            "summary": "A guest session's messages as server-sent events",
            "description": "The messages after `Last-Event-ID` (else `last_message_id`, else 0), oldest first, "
            "then each new one as it is committed. " + GUEST_EVENTS_FORMAT + " Opening a stream counts as one "
            "guest poll; at most 3 open streams per session key and 30 per client IP (429 beyond). Errors before "
            "the stream starts are the JSON envelope. Served by the live (ASGI) process.",
            "security": [{}],
            "parameters": [
                _KEY,
                {
                    "in": "header",
                    "name": "Last-Event-ID",
                    "schema": {"type": "integer", "format": "int64", "minimum": 0},
                    "description": "Resume after this message id (EventSource sends it when it reconnects)",
                },
                {
                    "in": "query",
                    "name": "last_message_id",
                    "schema": {"type": "integer", "format": "int64", "minimum": 0},
                    "description": "Start after this message id when there is no Last-Event-ID (default 0)",
                },
                _TRACE,
            ],
            "responses": {
                "200": {
                    "description": "text/event-stream: `event: message` events. Example:\n\n"
                    '```\nid: 22004\nevent: message\ndata: {"id":22004,"message_id":"w-1","role":"user",'
                    '"content":"Hi","contentType":"text","timestamp":"2026-11-30T10:45:03.771959Z"}\n\n'
                    ": keep-alive\n```",
                    "headers": _STREAM_HEADERS,
                    "content": _EVENT_STREAM,
                },
                "400": _json(_ERROR, "A bad Last-Event-ID or last_message_id (VALIDATION_ERROR)"),
                "404": _json(_ERROR, "Unknown session key (NOT_FOUND)"),
                "405": _json(_ERROR, "Any method but GET (METHOD_NOT_ALLOWED)"),
                "429": _json(_ERROR, "Poll limit spent, or too many open streams (RATE_LIMIT_EXCEEDED)"),
                "503": _json(_ERROR, "Database unreachable, or the server is shutting down (SERVICE_UNAVAILABLE)"),
            },
        }
    },
    "/api/v1/chat/guest/inbox/events": {
        "get": {
            "operationId": "guest_inbox_events_stream",
            "tags": ["Guest chat"],
            "summary": "The staff inbox as server-sent events",
            "description": "Staff only (a token, or the admin's login cookie, which EventSource sends). Whenever a "
            "guest session gets a message: `event: session` with its inbox row (GuestInboxSession) as one line of "
            "JSON as `data`. No resume ids: a reconnecting client re-reads GET /api/v1/chat/guest/inbox. Keep-alive "
            "comments and the 300 s end as on the guest stream. On the staff member's tier budget.",
            "security": [{"tokenAuth": []}, {"cookieAuth": []}],
            "parameters": [_TRACE],
            "responses": {
                "200": {
                    "description": "text/event-stream: `event: session` events with a GuestInboxSession as data",
                    "headers": _STREAM_HEADERS,
                    "content": _EVENT_STREAM,
                },
                "401": _json(_ERROR, "No or invalid credentials (UNAUTHENTICATED)"),
                "403": _json(_ERROR, "Not staff (FORBIDDEN)"),
                "405": _json(_ERROR, "Any method but GET (METHOD_NOT_ALLOWED)"),
                "429": _json(_ERROR, "Rate limit exceeded (RATE_LIMIT_EXCEEDED)"),
                "503": _json(_ERROR, "Database unreachable, or the server is shutting down (SERVICE_UNAVAILABLE)"),
            },
        }
    },
}


def add_live_endpoints(result, generator, request, public):
    """Document the event streams of chat.live, which DRF does not see."""
    result["paths"].update(LIVE_PATHS)
    return result
