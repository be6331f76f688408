"""Schemathesis against the app's own OpenAPI schema, in-process, on every endpoint.

Generated inputs include NUL bytes and arbitrary Unicode. Every response must be
no 5xx and must match the schema: status code, content type, headers, body.
The run is bounded for CI; FUZZ_EXAMPLES raises it (see README, Reliability).
"""

import base64
import os
from collections import Counter
from datetime import UTC, date, datetime, timedelta
from urllib.parse import urlencode

import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from schemathesis.specs.openapi.checks import positive_data_acceptance

from chatsite.wsgi import application

MAX_EXAMPLES = int(os.environ.get("FUZZ_EXAMPLES", "25"))

# The event streams are served by chat.live on ASGI, not by this WSGI app (and never end by
# themselves): tests/test_live_server.py and tests/test_live_one_port.py cover them.
schema = schemathesis.openapi.from_wsgi("/api/schema/", application).exclude(
    operation_id=["guest_events_stream", "guest_inbox_events_stream"]
)


@schemathesis.serializer("application/x-ndjson")
def ndjson(ctx, value) -> bytes:
    """The import's body: the generated string as it is (lines of JSON, or not)."""
    return value.encode("utf-8", "surrogatepass") if isinstance(value, str) else str(value).encode()


# DRF's cursors are base64 of a query string: p (position), o (offset), r (reverse).
# The schema says only "string", so the fuzzer would almost never reach the decoder's
# inner checks; these build cursors that decode, with positions good and bad.
POSITIONS = st.one_of(
    st.datetimes(timezones=st.just(UTC)).map(str),
    st.datetimes().map(str),  # naive
    st.dates().map(str),
    st.sampled_from(["notadate", "0001-01-01 00:00:00+14:00", "9999-12-31 23:59:59-14:00", "2026-13-45", ""]),
    st.text(max_size=40),
)
CURSOR_FIELDS = st.fixed_dictionaries(
    {},
    optional={
        "p": POSITIONS,
        "o": st.one_of(st.integers(-5, 5000).map(str), st.text(max_size=5)),
        "r": st.one_of(st.sampled_from(["0", "1"]), st.text(max_size=3)),
    },
)
CRAFTED_CURSORS = st.one_of(
    CURSOR_FIELDS.map(lambda fields: base64.b64encode(urlencode(fields).encode()).decode()),
    st.binary(max_size=60).map(lambda raw: base64.b64encode(raw).decode()),
)


@schema.hook
def flatmap_query(context, query):
    """Give every `cursor` query parameter a crafted cursor most of the time."""
    operation = context.operation
    if operation is None or not isinstance(query, dict):
        return st.just(query)
    if not any(p.name == "cursor" for p in operation.query):
        return st.just(query)
    return st.one_of(st.just(query), CRAFTED_CURSORS.map(lambda cursor: {**query, "cursor": cursor}))


# Every status the fuzzer got; conftest.py prints the tally at the end of the run.
STATUSES: Counter = Counter()
# Crafted cursors sent (a tally line of their own, so a schema change that loses them shows).
CURSORS: Counter = Counter()


def contains_nul(value) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(contains_nul(k) or contains_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(contains_nul(item) for item in value)
    return False


def schema_cannot_say_it(case) -> list:
    """Checks to skip for rules the schema does not state.

    Two messages of one request may not share an `id` (uniqueItems compares
    whole objects, not one key), so such a body is schema-valid yet a 400; a
    history page's `before` cursor is opaque: any string we did not make is a 400;
    a usage range must run forwards and span at most 366 days (two parameters together); a
    search cursor is valid only if the server made it. Text may not hold NUL (API.md):
    a pattern on every text field could say it, but would slow generation down; such
    a body is a 400 naming the field. Any other opaque `cursor` (the session list's,
    the inbox's) that does not decode is a 400 or 404.
    """
    if (case.query or {}).get("before") is not None:
        return [positive_data_acceptance]  # an opaque cursor is valid only if we made it
    if case.path == "/api/chat/usage" and usage_range_out_of_bounds(case.query or {}):
        return [positive_data_acceptance]
    if case.path == "/api/chat/import":
        return [positive_data_acceptance]  # NDJSON: lines of JSON objects, which a string schema cannot say
    if case.path == "/api/chat/search" and "cursor" in (case.query or {}):
        return [positive_data_acceptance]  # an opaque cursor is any string; only the server's own are valid
    body = case.body if isinstance(case.body, dict) else {}
    messages = body.get("messages")
    if isinstance(messages, list):
        ids = [m["id"] for m in messages if isinstance(m, dict) and isinstance(m.get("id"), str)]
        if len(ids) != len(set(ids)):
            return [positive_data_acceptance]
    if contains_nul(case.body) or contains_nul(case.query):
        return [positive_data_acceptance]
    # Opaque cursors: the schema says "string"; which strings decode to a position it cannot say.
    if isinstance(case.query, dict) and ({"before", "cursor"} & set(case.query)):
        return [positive_data_acceptance]
    return []


def usage_range_out_of_bounds(query: dict) -> bool:
    try:
        end = date.fromisoformat(query["to"]) if "to" in query else datetime.now(UTC).date()
        start = date.fromisoformat(query["from"]) if "from" in query else end - timedelta(days=29)
    except (TypeError, ValueError):
        return False
    return start > end or (end - start).days >= 366


def tally(case, response) -> None:
    STATUSES[response.status_code] += 1
    if isinstance(case.query, dict) and "cursor" in case.query:
        CURSORS[response.status_code] += 1


@pytest.fixture
def generous_limits(settings):
    settings.RATE_LIMITS = {key: "1000000/hour" for key in settings.RATE_LIMITS}


# Transactional: schemathesis calls the WSGI app itself, whose request_finished
# signal closes a connection left inside a test's transaction.
@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("generous_limits")
@schema.parametrize()
@settings(max_examples=MAX_EXAMPLES, deadline=None, suppress_health_check=list(HealthCheck), derandomize=True)
def test_authenticated_calls_match_the_schema(case, alice):
    response = case.call_and_validate(
        headers={"Authorization": f"Bearer {alice.api_token}"}, excluded_checks=schema_cannot_say_it(case)
    )
    tally(case, response)


@pytest.mark.django_db(transaction=True)
@pytest.mark.usefixtures("generous_limits")
@schema.parametrize()
@settings(
    max_examples=max(5, MAX_EXAMPLES // 3), deadline=None, suppress_health_check=list(HealthCheck), derandomize=True
)
def test_anonymous_calls_match_the_schema(case):
    response = case.call_and_validate(excluded_checks=schema_cannot_say_it(case))
    tally(case, response)
