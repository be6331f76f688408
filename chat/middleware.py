"""Middleware that every request passes: trace ids, the body limit, database outages, lazy messages."""

import io
import re
import uuid

from django.conf import settings
from django.contrib.messages import storage as message_storage
from django.contrib.messages.middleware import MessageMiddleware
from django.core.exceptions import ValidationError as DjangoValidationError
from django.core.handlers.wsgi import LimitedStream
from django.urls import Resolver404, resolve
from django.utils.functional import SimpleLazyObject, empty

from chat.api.base import ApiView
from chat.api.errors import DATABASE_DOWN, render_error
from chat.exceptions import ApiError, PayloadTooLarge, ServiceUnavailable
from chat.logging import trace_id_var

TRACE_ID_RE = re.compile(r"[A-Za-z0-9._-]{1,64}")


def trace_id_from(request) -> str:
    """The client's X-Request-ID or X-Correlation-ID when well-formed, else a new UUID4."""
    for header in ("HTTP_X_REQUEST_ID", "HTTP_X_CORRELATION_ID"):
        value = request.META.get(header, "")
        if TRACE_ID_RE.fullmatch(value):
            return value
    return str(uuid.uuid4())


class RequestIdMiddleware:
    """Give each request a trace id, put it on every log line and echo it back."""

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        request.trace_id = trace_id_from(request)
        token = trace_id_var.set(request.trace_id)
        try:
            response = self.get_response(request)
        finally:
            trace_id_var.reset(token)
        response["X-Request-ID"] = request.trace_id
        return response

    def process_exception(self, request, exception):
        # Outside DRF views (admin, health checks), a database outage is a 503 too,
        # and a Django ValidationError (a value of the wrong shape reaching a query) a 400.
        if isinstance(exception, DATABASE_DOWN):
            return render_error(request, ServiceUnavailable(headers={"Retry-After": "5"}))
        if isinstance(exception, DjangoValidationError):
            return render_error(request, ApiError(details={"non_field_errors": exception.messages}))
        return None


class BodySizeLimitMiddleware:
    """Answer 413 to a body over MAX_REQUEST_BODY_BYTES (or the path's own limit in
    MAX_REQUEST_BODY_BYTES_BY_PATH) without reading it; drain the others.

    Django's WSGI request reads at most CONTENT_LENGTH bytes of the body, so the
    declared length is the size of whatever will be read. A chunked body has no
    declared length: it is read here, up to one byte past the limit, and handed
    on as if it had been sent with one.

    An API view answers the 413 itself, after the rate limiter has counted the
    request (so it carries the limit headers and spends the budget); the body is
    hidden from it. Any other URL gets the 413 here.

    A body the view did not read (a 401 or 429 answered first) is read to its end
    after the response, so the connection can serve the client's next request
    (gunicorn's gthread worker drains at most 64 KiB itself and closes the
    connection beyond that, after announcing keep-alive). Bodies over the limit
    are never read: gunicorn.conf.py closes their connection with `Connection: close`.
    """

    DRAIN_CHUNK = 64 * 1024

    def __init__(self, get_response):
        self.get_response = get_response
        self.default_limit = settings.MAX_REQUEST_BODY_BYTES
        self.path_limits = settings.MAX_REQUEST_BODY_BYTES_BY_PATH

    def __call__(self, request):
        limit = self.path_limits.get(request.path_info, self.default_limit)
        if "chunked" in request.META.get("HTTP_TRANSFER_ENCODING", "").lower() and not request.META.get(
            "CONTENT_LENGTH"
        ):
            self._buffer_chunked_body(request, limit)
        raw = request.META.get("CONTENT_LENGTH") or "0"
        try:
            length = int(raw)
        except ValueError:
            length = -1
        if length < 0:
            return render_error(
                request,
                ApiError(
                    "Invalid Content-Length header", details={"Content-Length": ["Must be a non-negative integer."]}
                ),
            )
        if length > limit:
            too_large = PayloadTooLarge(f"Request body is larger than {limit} bytes")
            if not self._answered_by_an_api_view(request):
                return render_error(request, too_large)
            request.body_too_large = too_large
            # Nothing may read it, not even a form parser checking the declared length.
            request._stream = LimitedStream(io.BytesIO(b""), 0)
            request.META["CONTENT_LENGTH"] = "0"
            return self.get_response(request)
        response = self.get_response(request)
        try:
            while request.read(self.DRAIN_CHUNK):
                pass
        except OSError:  # the client went away mid-body (UnreadablePostError): nothing left to serve
            pass
        return response

    @staticmethod
    def _answered_by_an_api_view(request) -> bool:
        try:
            match = resolve(request.path_info)
        except Resolver404:
            return False
        return issubclass(getattr(match.func, "cls", type(None)), ApiView)

    def _buffer_chunked_body(self, request, limit: int) -> None:
        stream = request.META.get("wsgi.input")
        if stream is None:
            return
        body = stream.read(limit + 1)
        request.META["CONTENT_LENGTH"] = str(len(body))
        request._stream = LimitedStream(io.BytesIO(body[:limit]), min(len(body), limit))


class LazyMessageMiddleware(MessageMiddleware):
    """Django's MessageMiddleware with its storage made on first use.

    Making the storage (a cookie storage with its signer and a session storage) was
    8% of a plain request's CPU, paid by every API request, while only the admin
    and the staff pages use messages. A storage never made holds nothing to save,
    so the response is left alone; once used, it is saved as Django saves it.
    """

    def process_request(self, request):
        request._messages = SimpleLazyObject(lambda: message_storage.default_storage(request))

    def process_response(self, request, response):
        messages = getattr(request, "_messages", None)
        if type(messages) is SimpleLazyObject and messages._wrapped is empty:
            return response
        return super().process_response(request, response)
