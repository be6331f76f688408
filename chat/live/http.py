"""HTTP for the waiting side: the request as the limiter sees it, the envelope, SSE, the request log.

No Django request handler and no middleware run here (they would hold a thread
per waiter): these few functions give the answers of the sync app's middleware
their same shape: X-Request-ID, rate-limit headers, CORS for allowed origins, the
JSON envelope for errors, one JSON log line and one metrics observation per request.
"""

import asyncio
import logging
import time
from urllib.parse import parse_qs

from django.contrib.auth.models import AnonymousUser
from django.http.cookie import parse_cookie
from django.http.request import HttpHeaders

from chat import cors, metrics, throttles
from chat.api.errors import envelope, error_body
from chat.exceptions import ApiError
from chat.json import dumps
from chat.middleware import trace_id_from

request_logger = logging.getLogger("chat.request")

SSE_HEADERS = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-store",
    # nginx: pass each event on at once instead of buffering the response.
    "X-Accel-Buffering": "no",
}
# Long-poll answers as the WSGI poll's: the state of a moment, never kept by a cache.
JSON_HEADERS = {"Content-Type": "application/json", "Cache-Control": "no-store"}
# An idle stream's keep-alive: a comment line, which EventSource ignores.
KEEP_ALIVE = b": keep-alive\n\n"


class LiveRequest:
    """An ASGI request with what chat.throttles, chat.net, trace_id_from and DRF's token authentication
    read: META, headers, COOKIES."""

    def __init__(self, scope: dict):
        self.method = scope["method"]
        self.path = scope["path"]
        self.started = time.perf_counter()
        raw_query = scope.get("query_string", b"").decode("latin-1")
        self.query = parse_qs(raw_query, keep_blank_values=True, encoding="utf-8", errors="replace")
        meta = {
            "REQUEST_METHOD": self.method,
            "PATH_INFO": self.path,
            "QUERY_STRING": raw_query,
            "REMOTE_ADDR": (scope.get("client") or ("",))[0] or "",
        }
        for name, value in scope.get("headers", ()):
            key = "HTTP_" + name.decode("latin-1").upper().replace("-", "_")
            text = value.decode("latin-1")
            meta[key] = f"{meta[key]},{text}" if key in meta else text
        self.META = meta
        self.headers = HttpHeaders(meta)
        self.COOKIES = parse_cookie(meta.get("HTTP_COOKIE", ""))
        self.trace_id = trace_id_from(self)
        self.user = AnonymousUser()
        self.rate_limit = None
        self.rate_limit_scope = None
        self.route: str | None = None
        self.streaming = False

    def query_values(self, name: str) -> list[str]:
        return self.query.get(name, [])

    def header(self, name: str) -> str | None:
        return self.META.get("HTTP_" + name.upper().replace("-", "_"))


def cors_headers(request: LiveRequest) -> dict[str, str]:
    """What the sync app's CORS middleware adds: the same function (chat.cors), so the same rules."""
    if not cors.cors_enabled(request.path):
        return {}
    return {
        **cors.cors_headers(origin=request.header("Origin"), path=request.path, method=request.method),
        "Vary": "Origin",
    }


async def send_preflight(send, request: LiveRequest) -> int:
    """A CORS preflight, answered as Django's CorsMiddleware answers it: 200, empty, before anything else."""
    await send(
        {"type": "http.response.start", "status": 200, "headers": response_headers(request, {"Content-Length": "0"})}
    )
    await send({"type": "http.response.body", "body": b""})
    return 200


def response_headers(request: LiveRequest, extra: dict[str, str] | None = None):
    headers = {
        "X-Request-ID": request.trace_id,
        **throttles.response_headers(request),
        **cors_headers(request),
        **(extra or {}),
    }
    return [(name.encode("latin-1"), value.encode("latin-1")) for name, value in headers.items()]


async def send_json(send, request: LiveRequest, status: int, body: dict, headers: dict | None = None):
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": response_headers(request, {**JSON_HEADERS, **(headers or {})}),
        }
    )
    await send({"type": "http.response.body", "body": dumps(body)})


async def send_success(send, request: LiveRequest, *, message: str, data, meta=None) -> int:
    await send_json(send, request, 200, envelope(request, success=True, message=message, data=data, meta=meta))
    return 200


async def send_error(send, request: LiveRequest, error: ApiError) -> int:
    body = error_body(request, code=error.code, message=error.message, details=error.details)
    await send_json(send, request, error.status, body, error.headers)
    return error.status


async def start_stream(send, request: LiveRequest) -> None:
    request.streaming = True  # from now on an error can only end the stream, not answer it
    await send({"type": "http.response.start", "status": 200, "headers": response_headers(request, SSE_HEADERS)})


def sse_event(event: str, data, event_id: int | None = None) -> bytes:
    """One server-sent event; `data` as one line of JSON (orjson escapes every newline)."""
    head = b"id: %d\n" % event_id if event_id is not None else b""
    return head + b"event: " + event.encode("ascii") + b"\ndata: " + dumps(data) + b"\n\n"


def watch_disconnect(receive, woken: asyncio.Event, gone: asyncio.Event) -> asyncio.Task:
    """A task that sets `gone` (and wakes the waiter) when the client goes away."""

    async def watch():
        while (await receive())["type"] != "http.disconnect":
            pass
        gone.set()
        woken.set()

    return asyncio.create_task(watch())


def log_request(request: LiveRequest, *, status: int, user: str = "guest", **extra) -> None:
    """The request's line in the JSON request log and its metrics (chat.observability's shape)."""
    seconds = time.perf_counter() - request.started
    route = request.route or metrics.UNMATCHED
    metrics.observe_request(method=request.method, route=request.route, status=status, seconds=seconds)
    request_logger.info(
        "%s %s %s",
        request.method,
        route,
        status,
        extra={
            "method": request.method,
            "route": request.route,
            "status": status,
            "duration_ms": round(seconds * 1000, 2),
            "user": user,
            "rate_limit_scope": request.rate_limit_scope,
            **extra,
        },
    )
