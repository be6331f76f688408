"""The request log and request metrics: one JSON line and one observation per request.

What a line holds is chosen, never dumped: the URL pattern rather than the path
(a guest's path holds its session key, its only credential), and no headers,
query strings or bodies, so tokens, passwords and message content never reach
the logs.
"""

import logging
import time

from django.urls import Resolver404, resolve
from django.utils.functional import SimpleLazyObject, empty

from chat import metrics

logger = logging.getLogger("chat.request")

GUEST_ROUTE_PREFIX = "api/v1/chat/guest/"


def route_of(request) -> str | None:
    """The URL pattern of the request (`api/chat/sessions/<str:session_id>`), or None if none matches.

    A response made by middleware before the URL was resolved (a 413, an https
    redirect) has no resolver_match: the path is resolved here instead.
    """
    match = getattr(request, "resolver_match", None)
    if match is None:
        try:
            match = resolve(request.path_info)
        except Resolver404:
            return None
    return match.route


def caller_of(request, route: str | None) -> str:
    """The user's id if authenticated; else "guest" on a guest endpoint, else "anonymous".

    A user nobody has looked at yet (a lazy request.user that no view touched) is
    left alone: resolving it would cost a session query on /healthz.
    """
    user = request.__dict__.get("user")
    if isinstance(user, SimpleLazyObject) and user._wrapped is empty:
        user = None
    if user is not None and user.is_authenticated:
        return str(user.pk)
    return "guest" if route and route.startswith(GUEST_ROUTE_PREFIX) else "anonymous"


class RequestLogMiddleware:
    """Log one line per request and count it in the metrics.

    Placed right after RequestIdMiddleware, so the line carries the trace id and
    sees the final status of every response, the 413s and 503s of the
    middleware below it included.
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        started = time.perf_counter()
        metrics.write_lock_ms.set(None)
        response = self.get_response(request)
        seconds = time.perf_counter() - started
        route = route_of(request)
        metrics.observe_request(method=request.method, route=route, status=response.status_code, seconds=seconds)
        logger.info(
            "%s %s %s",
            request.method,
            route or metrics.UNMATCHED,
            response.status_code,
            extra={
                "method": request.method,
                "route": route,
                "status": response.status_code,
                "duration_ms": round(seconds * 1000, 2),
                "user": caller_of(request, route),
                "rate_limit_scope": getattr(request, "rate_limit_scope", None),
                # A write: how long it held its session's row lock (chat.services.write_sql).
                "lock_ms": metrics.write_lock_ms.get(),
            },
        )
        return response


class RedactRequestFilter(logging.Filter):
    """For Django's lines about a request: the route instead of the path, no request object.

    Django logs a 5xx as "Internal Server Error: <path>" with the request in
    `extra` (django.request; django.security.* alike); the path of a guest
    endpoint holds the session key, and the request object would be written out
    by the JSON formatter. Django logs the 5xx after the middleware has
    returned, so the trace id is taken from the request. A handler filter, after
    TraceIdFilter.
    """

    # A rejected request (a bad Host header, django.security.*) is the client's doing:
    # one short line, no traceback (Django attaches one, 3 KB, to each).
    SECURITY_LOGGER = "django.security."
    SECURITY_MESSAGE_LENGTH = 200

    def filter(self, record: logging.LogRecord) -> bool:
        if record.name.startswith(self.SECURITY_LOGGER):
            record.exc_info = record.exc_text = record.stack_info = None
            message = record.getMessage()
            if len(message) > self.SECURITY_MESSAGE_LENGTH:
                message = message[: self.SECURITY_MESSAGE_LENGTH - 3] + "..."
            record.msg, record.args = message, ()
        request = getattr(record, "request", None)
        if request is not None:
            path = getattr(request, "path", None)
            paths = {path, path.encode("unicode_escape").decode("ascii")} if isinstance(path, str) else set()
            route = route_of(request) or metrics.UNMATCHED
            if isinstance(record.args, tuple):
                record.args = tuple(route if isinstance(arg, str) and arg in paths else arg for arg in record.args)
            record.method = getattr(request, "method", None)
            record.trace_id = getattr(record, "trace_id", None) or getattr(request, "trace_id", None)
            del record.request
        return True
