"""Who is calling, as far as the network can tell."""

import ipaddress
from functools import lru_cache

from django.conf import settings
from django.http import HttpRequest


@lru_cache(maxsize=4096)  # parsing costs more than the lookup; callers repeat
def _normalized_ip(value: str) -> str | None:
    try:
        return str(ipaddress.ip_address(value.strip()))
    except ValueError:
        return None


def client_ip(request: HttpRequest) -> str:
    """The caller's IP: REMOTE_ADDR, or the X-Forwarded-For entry the trusted proxies vouch for.

    Each of the TRUSTED_PROXY_COUNT proxies appends the address it received the
    request from, so the client is the Nth entry from the right; anything to its
    left was written by the client and is ignored. With no trusted proxies the
    header is ignored entirely: a client cannot choose its own IP.
    """
    remote = _normalized_ip(request.META.get("REMOTE_ADDR", "")) or "unknown"
    proxies = settings.TRUSTED_PROXY_COUNT
    if proxies <= 0:
        return remote
    forwarded = [entry for entry in request.META.get("HTTP_X_FORWARDED_FOR", "").split(",") if entry.strip()]
    if not forwarded:
        return remote
    # Fewer entries than proxies: the request skipped the outer ones, and the
    # first entry is the address the innermost proxy saw.
    return _normalized_ip(forwarded[-min(proxies, len(forwarded))]) or remote
