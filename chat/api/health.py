"""Operations endpoints: /healthz, /readyz and /metrics.

Plain Django views, not DRF ones: no rate limit, no content negotiation, and
/healthz touches nothing (no database, no cache, no session) so that it says
only whether the process answers.
"""

import hmac
import logging
import os
import uuid

from django.conf import settings
from django.core.cache import cache
from django.db import connection
from django.http import HttpResponse
from django.views.decorators.csrf import csrf_exempt
from prometheus_client import CONTENT_TYPE_LATEST
from rest_framework.exceptions import AuthenticationFailed

from accounts.authentication import BearerOrTokenAuthentication
from chat import metrics
from chat.api.doors import limited_door
from chat.api.errors import allow_methods, envelope, render_error
from chat.exceptions import Forbidden, ServiceUnavailable, Unauthenticated
from chat.json import json_response

logger = logging.getLogger(__name__)


# Read-only, so no CSRF check: another method gets its 405, not a CSRF 403.
@csrf_exempt
@allow_methods("GET", "HEAD")
def healthz(request):
    """The process is up and serving. Checks no dependency."""
    return json_response(envelope(request, success=True, message="OK", data={"status": "ok"}))


def database_ready() -> bool:
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
            return cursor.fetchone() == (1,)
    except Exception as error:  # any failure means not ready; the reason goes to the log, not the client
        logger.warning("readiness: database unavailable (%s: %s)", type(error).__name__, error)
        return False


def cache_ready() -> bool:
    key = f"readyz:{os.getpid()}"
    value = uuid.uuid4().hex
    try:
        cache.set(key, value, timeout=10)
        return cache.get(key) == value
    except Exception as error:  # as above
        logger.warning("readiness: cache unavailable (%s: %s)", type(error).__name__, error)
        return False


# Read-only, so no CSRF check: another method gets its 405, not a CSRF 403.
@csrf_exempt
@allow_methods("GET", "HEAD")
def readyz(request):
    """Ready for traffic: the database answers SELECT 1 and the cache a write and a read."""
    checks = {
        "database": "ok" if database_ready() else "unavailable",
        "cache": "ok" if cache_ready() else "unavailable",
    }
    if all(state == "ok" for state in checks.values()):
        return json_response(envelope(request, success=True, message="Ready", data=checks))
    return render_error(request, ServiceUnavailable(details=checks, headers={"Retry-After": "5"}))


def metrics_caller(request):
    """'token' for the METRICS_TOKEN bearer; else the user of a DRF token or login session; else None.

    Raises AuthenticationFailed for a token that is not valid.
    """
    header = request.META.get("HTTP_AUTHORIZATION", "")
    scheme, _, credential = header.partition(" ")
    if (
        settings.METRICS_TOKEN
        and scheme.lower() == "bearer"
        and hmac.compare_digest(credential.strip().encode(), settings.METRICS_TOKEN.encode())
    ):
        return "token"
    found = BearerOrTokenAuthentication().authenticate(request)
    if found is not None:
        return found[0]
    user = request.user
    return user if user.is_authenticated else None


# Read-only, so no CSRF check: another method gets its 405, not a CSRF 403.
@csrf_exempt
@allow_methods("GET", "HEAD")
@limited_door("metrics")  # 401 against 403 answers whether a token exists: not for unlimited guessing
def metrics_view(request):
    """Prometheus text format, for staff (token or login session) or the METRICS_TOKEN bearer."""
    try:
        caller = metrics_caller(request)
    except AuthenticationFailed as exc:
        caller, reason = None, str(exc.detail)
    else:
        reason = "Authentication credentials were not provided."
    if caller is None:
        return render_error(request, Unauthenticated(reason, headers={"WWW-Authenticate": "Bearer"}))
    if caller != "token" and not caller.is_staff:
        return render_error(request, Forbidden("Metrics are for staff only"))
    return HttpResponse(metrics.exposition(), content_type=CONTENT_TYPE_LATEST)
