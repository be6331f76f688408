"""Who is calling, as far as the network can tell."""

import ipaddress
from functools import lru_cache

from django.conf import settings
from django.http import HttpRequest

# One IPv6 customer gets a /64 at least (RFC 6177): within it, addresses cost nothing.
IPV6_CLIENT_PREFIX = 64


@lru_cache(maxsize=4096)  # parsing costs more than the lookup; callers repeat
def _normalized_ip(value: str) -> str | None:
    """The address in its canonical spelling; an IPv4-mapped IPv6 address (::ffff:a.b.c.d) as a.b.c.d."""
    try:
        ip = ipaddress.ip_address(value.strip())
    except ValueError:
        return None
    if ip.version == 6 and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return str(ip)


@lru_cache(maxsize=4096)
def ip_identity(value: str) -> str | None:
    """Whom an address counts as in the rate limits: an IPv4 address itself, an IPv6 one its /64.

    Without it, an IPv6 client could take a fresh budget per address of its /64
    (2^64 of them), and an IPv4 client a second one as ::ffff:a.b.c.d. None if
    `value` is not an address.
    """
    normalized = _normalized_ip(value)
    if normalized is None:
        return None
    ip = ipaddress.ip_address(normalized.split("%")[0])  # a zone (fe80::1%eth0) names a link, not a client
    if ip.version == 4:
        return normalized
    return str(ipaddress.IPv6Network((ip, IPV6_CLIENT_PREFIX), strict=False))


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


def client_identity(request: HttpRequest) -> str:
    """The caller as the IP rate limits count it (ip_identity of client_ip)."""
    ip = client_ip(request)
    return ip_identity(ip) or ip
