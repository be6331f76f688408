"""The one envelope and one handler for every error of every endpoint.

Views and services raise chat.exceptions; `api_exception_handler` (DRF) and the Django
handlers below turn every failure into the envelope of API.md:
`{"success": false, "message", "data": null, "error": {"code", "details"}, ...}`.
"""

import functools
import logging
import time

from django import db
from django.conf import settings
from django.core.exceptions import PermissionDenied as DjangoPermissionDenied
from django.core.exceptions import ValidationError as DjangoValidationError
from django.http import Http404, HttpRequest, HttpResponse
from rest_framework import exceptions as drf
from rest_framework.response import Response
from rest_framework.serializers import as_serializer_error
from rest_framework.views import exception_handler as drf_exception_handler

from chat.exceptions import ApiError, Forbidden, InternalError, MethodNotAllowed, NotFound, ServiceUnavailable
from chat.json import json_response, utc_iso

logger = logging.getLogger(__name__)


# DRF's exceptions, translated to the codes of API.md.
DRF_CODES: list[tuple[type[Exception], int, str]] = [
    (drf.ValidationError, 400, "VALIDATION_ERROR"),
    (drf.ParseError, 400, "VALIDATION_ERROR"),
    (drf.NotAuthenticated, 401, "UNAUTHENTICATED"),
    (drf.AuthenticationFailed, 401, "UNAUTHENTICATED"),
    (drf.PermissionDenied, 403, "FORBIDDEN"),
    (drf.NotFound, 404, "NOT_FOUND"),
    (drf.MethodNotAllowed, 405, "METHOD_NOT_ALLOWED"),
    (drf.NotAcceptable, 406, "NOT_ACCEPTABLE"),
    (drf.UnsupportedMediaType, 415, "UNSUPPORTED_MEDIA_TYPE"),
    (drf.Throttled, 429, "RATE_LIMIT_EXCEEDED"),
]

# A database that cannot be reached (or went away mid-request) is a 503, not a 500.
DATABASE_DOWN = (db.OperationalError, db.InterfaceError)


def utc_timestamp() -> str:
    return utc_iso(time.time())


def envelope(
    request: HttpRequest | None,
    *,
    success: bool,
    message: str,
    data=None,
    error: dict | None = None,
    meta=None,
) -> dict:
    """The body every guest response and every error response shares."""
    return {
        "success": success,
        "message": message,
        "data": data,
        "error": error,
        "meta": meta,
        "trace_id": getattr(request, "trace_id", None),
        "timestamp": utc_timestamp(),
    }


def error_body(request, *, code: str, message: str, details=None) -> dict:
    return envelope(request, success=False, message=message, error={"code": code, "details": details})


def error_response(request, *, status: int, code: str, message: str, details=None, headers=None) -> HttpResponse:
    """An error envelope for plain Django views and middleware."""
    response = json_response(error_body(request, code=code, message=message, details=details), status=status)
    for name, value in (headers or {}).items():
        response[name] = value
    return response


def render_error(request, exc: ApiError) -> HttpResponse:
    """The envelope of a chat.exceptions error, for plain Django views and middleware."""
    return error_response(
        request, status=exc.status, code=exc.code, message=exc.message, details=exc.details, headers=exc.headers
    )


def _message_of(exc: drf.APIException) -> str:
    detail = exc.detail
    if isinstance(detail, str):
        return str(detail)
    return "Invalid request"


def api_exception_handler(exc: Exception, context: dict) -> Response | None:
    """DRF's handler, wrapped so that every error is the one envelope."""
    request = context.get("request")
    if isinstance(exc, ApiError):
        body = error_body(request, code=exc.code, message=exc.message, details=exc.details)
        return Response(body, status=exc.status, headers=exc.headers)
    if isinstance(exc, DATABASE_DOWN):
        logger.error("database unavailable: %s: %s", exc.__class__.__name__, exc)
        body = error_body(request, code=ServiceUnavailable.code, message=ServiceUnavailable.message)
        return Response(body, status=503, headers={"Retry-After": "5"})
    if isinstance(exc, Http404):
        exc = drf.NotFound()
    elif isinstance(exc, DjangoPermissionDenied):
        exc = drf.PermissionDenied()
    elif isinstance(exc, DjangoValidationError):
        # A model validator or a query given a value of the wrong shape: bad input, not a crash.
        exc = drf.ValidationError(as_serializer_error(exc))

    response = drf_exception_handler(exc, context)
    if response is None:
        if settings.DEBUG:
            return None  # DRF re-raises: Django's debug page shows the traceback.
        logger.exception("unhandled error", exc_info=exc)
        body = error_body(request, code=InternalError.code, message=InternalError.message)
        return Response(body, status=InternalError.status)

    status, code = next(
        ((status, code) for exc_class, status, code in DRF_CODES if isinstance(exc, exc_class)),
        (response.status_code, "ERROR"),
    )
    details = None
    if isinstance(exc, drf.ValidationError):
        details = exc.detail
    elif isinstance(exc, drf.ParseError):
        details = {"body": [_message_of(exc)]}
    elif isinstance(exc, drf.Throttled):
        details = {"retry_after": exc.wait}
    message = "Invalid request" if isinstance(exc, drf.ValidationError) else _message_of(exc)
    response.data = error_body(request, code=code, message=message, details=details)
    response.status_code = status
    return response


# Django's own error views (unknown URLs, CSRF failures outside DRF, crashes).


def bad_request(request, exception=None):
    return render_error(request, ApiError("Bad request"))


def permission_denied(request, exception=None):
    return render_error(request, Forbidden("Forbidden"))


def page_not_found(request, exception=None):
    return render_error(request, NotFound())


def server_error(request):
    return render_error(request, InternalError())


def csrf_failure(request, reason=""):
    return render_error(request, Forbidden("CSRF verification failed"))


def allow_methods(*methods: str):
    """Django's require_http_methods, answering other methods with the envelope's 405."""

    def decorator(view):
        @functools.wraps(view)
        def wrapper(request, *args, **kwargs):
            if request.method not in methods:
                refused = MethodNotAllowed(
                    f'Method "{request.method}" not allowed.', headers={"Allow": ", ".join(methods)}
                )
                return render_error(request, refused)
            return view(request, *args, **kwargs)

        return wrapper

    return decorator
