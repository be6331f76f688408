"""django-ratelimit on the plain Django views that the API's limiter does not cover.

`/metrics` (its 401 against 403 would tell a token guesser which tokens exist),
`/api/schema/` (~30 ms of CPU per anonymous call) and the admin login (password
guesses). One extra cache round trip costs these views nothing, so they take the
design card's django-ratelimit as it is, on the same cache (Redis in production)
and with the same decisions as chat.throttles: rates from settings.RATE_LIMITS
(one parser), the client IP of chat.net, an unreachable cache logged, signalled
(so counted) and then served or refused per RATE_LIMIT_FAIL_OPEN, and the
envelope's 429 with Retry-After. django_ratelimit is not an installed app: its
system check refuses the in-process cache of development and tests.
"""

import functools

from django.conf import settings
from django_ratelimit import ALL
from django_ratelimit.core import get_usage

from chat import throttles
from chat.api.errors import render_error
from chat.exceptions import RateLimitExceeded, ServiceUnavailable
from chat.net import client_identity

# Whom each of these scopes counts (all by client IP); their rates are in settings.RATE_LIMITS.
DOOR_SCOPES = {
    "metrics": throttles.IP,
    "schema": throttles.IP,
    "admin_login": throttles.IP,
}


def _client_ip(group, request) -> str:
    """The client as the API's limiter counts it (chat.net: trusted proxies, an IPv6 /64)."""
    return client_identity(request)


def limited_door(scope: str, *, methods=ALL):
    """Limit a plain Django view with django-ratelimit under RATE_LIMITS[scope], per client IP.

    `methods`: the HTTP methods that count (default all), e.g. ("POST",) for a login form.
    """
    if scope not in DOOR_SCOPES:
        raise ValueError(f"{scope!r} is not one of DOOR_SCOPES")

    def decorate(view):
        @functools.wraps(view)
        def limited(request, *args, **kwargs):
            refused = check(request, scope, methods=methods, sender=view)
            return refused or view(request, *args, **kwargs)

        return limited

    return decorate


def check(request, scope: str, *, methods, sender):
    """None to serve the request; else the answer: the envelope's 429, or 503 when failing closed."""
    if not settings.RATE_LIMIT_ENABLED:
        return None
    rate = throttles.rate_for(scope)
    try:
        usage = get_usage(
            request,
            group=f"chat.{scope}",
            key=_client_ip,
            rate=(rate.limit, rate.period),
            method=methods,
            increment=True,
        )
    except throttles.CACHE_DOWN as error:  # django-ratelimit catches only DNS errors
        fail_open = settings.RATE_LIMIT_FAIL_OPEN
        throttles.failures.report(error, fail_open=fail_open)
        throttles.limiter_failed.send(sender=sender, error=error, fail_open=fail_open)
        if fail_open:
            return None
        return render_error(request, ServiceUnavailable(headers={"Retry-After": "5"}))
    if usage is None or not usage["should_limit"]:
        return None
    retry_after = max(1, usage["time_left"])
    request.rate_limit_scope = scope
    throttles.rate_limited.send(sender=sender, scope=scope, request=request)
    return render_error(
        request, RateLimitExceeded(details={"retry_after": retry_after}, headers={"Retry-After": str(retry_after)})
    )
