"""Browsers on other origins (API.md, "Browsers (CORS)"): who may call what, and the headers that say so.

`cors_headers(origin=, path=, method=)` is the one place the rules live. Django applies
it through `CorsMiddleware` (django-cors-headers' middleware, which answers preflights
before anything else runs); a server that runs no Django middleware (the ASGI waiting
process) calls it directly, with `is_preflight`, so every answer agrees:

- an origin of CORS_ALLOWED_ORIGINS may call every endpoint: its answers, errors
  included, carry `Access-Control-Allow-Origin: <origin>` and the exposed headers;
- with CORS_GUEST_ANY_ORIGIN, the guest endpoints (not the staff or authenticated
  ones) answer every origin with `*`;
- a preflight also gets the allowed methods and headers and a Max-Age;
- any other origin gets no Access-Control-* header; credentials are never allowed.
"""

import functools
import re
from collections.abc import Mapping
from urllib.parse import urlsplit

from corsheaders.conf import conf
from corsheaders.middleware import CorsMiddleware as BaseCorsMiddleware
from django.conf import settings
from django.utils.cache import patch_vary_headers

# The guest endpoints a widget calls: create a session, send and poll, the event
# stream. Not the staff ones that share the prefix (inbox, inbox/events, replies).
GUEST_PATH_RE = re.compile(r"/api/v1/chat/guest/(?:sessions|(?!inbox/)[^/]+/(?:messages|events))")


def is_preflight(method: str, headers: Mapping[str, str]) -> bool:
    """A CORS preflight: OPTIONS with Access-Control-Request-Method (`headers` matched case-insensitively)."""
    return method == "OPTIONS" and any(name.lower() == "access-control-request-method" for name in headers)


@functools.lru_cache(maxsize=8)
def _urls_pattern(regex: str) -> re.Pattern[str]:
    return re.compile(regex)


def cors_enabled(path: str) -> bool:
    """Whether CORS applies to `path` at all (CORS_URLS_REGEX; every path by default)."""
    return _urls_pattern(conf.CORS_URLS_REGEX).match(path) is not None


def allowed_origin(origin: str | None, path: str) -> str | None:
    """The Access-Control-Allow-Origin value for `origin` on `path`, or None: not allowed."""
    if not origin or not cors_enabled(path):
        return None
    if settings.CORS_GUEST_ANY_ORIGIN and GUEST_PATH_RE.fullmatch(path):
        return "*"
    if origin == "null":  # sandboxed frames and file:// pages: only when listed as such
        return origin if "null" in conf.CORS_ALLOWED_ORIGINS else None
    try:
        url = urlsplit(origin)
    except ValueError:
        return None
    # As django-cors-headers compares: scheme and host[:port], exactly.
    for allowed in conf.CORS_ALLOWED_ORIGINS:
        listed = urlsplit(allowed)
        if listed.scheme == url.scheme and listed.netloc == url.netloc:
            return origin
    return None


def cors_headers(*, origin: str | None, path: str, method: str) -> dict[str, str]:
    """The Access-Control-* headers of the answer to a request from `origin` for `path`; {} if none.

    `Vary: Origin` is not included: the answer of a CORS-enabled path (cors_enabled)
    depends on the Origin, so add it to every one, allowed or not.
    """
    allow = allowed_origin(origin, path)
    if allow is None:
        return {}
    headers = {"Access-Control-Allow-Origin": allow}
    if conf.CORS_EXPOSE_HEADERS:
        headers["Access-Control-Expose-Headers"] = ", ".join(conf.CORS_EXPOSE_HEADERS)
    if method == "OPTIONS":
        headers["Access-Control-Allow-Methods"] = ", ".join(conf.CORS_ALLOW_METHODS)
        headers["Access-Control-Allow-Headers"] = ", ".join(conf.CORS_ALLOW_HEADERS)
        if conf.CORS_PREFLIGHT_MAX_AGE:
            headers["Access-Control-Max-Age"] = str(conf.CORS_PREFLIGHT_MAX_AGE)
    return headers


class CorsMiddleware(BaseCorsMiddleware):
    """django-cors-headers' middleware with its headers from cors_headers().

    It answers a preflight (200, empty) itself, before authentication, rate limits
    and the body limit, so a preflight never spends a budget or gets a 401; and it
    adds the headers to every other answer on the way out, errors included. Its own
    header logic is replaced only because it cannot answer `*` on some paths and the
    origin on others (CORS_ALLOW_ALL_ORIGINS is global), and so that the ASGI side
    shares one function.
    """

    def is_enabled(self, request) -> bool:
        return cors_enabled(request.path_info)

    def add_response_headers(self, request, response):
        # Every request passes here (bare views included), so it does no more than it must:
        # whether CORS applies was decided on the way in (check_preflight), and the Origin is
        # read from META rather than request.headers (which would copy every header first).
        enabled = getattr(request, "_cors_enabled", None)
        if enabled is None:
            enabled = cors_enabled(request.path_info)
        if not enabled:
            return response
        if response.has_header("Vary"):
            patch_vary_headers(response, ("origin",))
        else:
            response.headers["Vary"] = "origin"  # what patch_vary_headers writes when there is none
        origin = request.META.get("HTTP_ORIGIN")
        if not origin:
            return response
        for name, value in cors_headers(origin=origin, path=request.path_info, method=request.method).items():
            response[name] = value
        return response
