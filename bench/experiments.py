"""Proposed application changes, tried under the benchmark before anyone edits the app.

`make bench BENCH_ARGS="--experiments drop-view-response,plain-poll-view"` serves
the service with them applied (bench.urls calls `apply` in each worker when it
loads the URLs, before the first request). Each models one change recommended
in the benchmark's report, its before/after figures the evidence. None is on in
a plain `make bench`, and production code never imports this module.
"""

import os
import uuid
from collections.abc import Callable

from django.http import HttpRequest, HttpResponse

from chat import metrics, selectors, throttles
from chat.api.base import ApiView
from chat.api.errors import envelope, error_response
from chat.api.guest import CURSOR_RE, MAX_MESSAGE_ID, MAX_MESSAGES_PER_POLL, SESSION_KEY_RE, GuestMessagesApi
from chat.exceptions import ApiError
from chat.json import json_response

EXPERIMENTS: dict[str, Callable[[], None]] = {}


def experiment(function: Callable[[], None]) -> Callable[[], None]:
    EXPERIMENTS[function.__name__.replace("_", "-")] = function
    return function


@experiment
def drop_view_response() -> None:
    """ApiView.dispatch forgets `self.response` once it has it.

    DRF keeps the response on the view and the view in the response's
    renderer_context: a reference cycle, so every response (and its data: 600 KB
    for a 1,000-message history) waits for the cyclic garbage collector's
    rare full collections instead of being freed when sent, and worker RSS grows
    by ~240 KB per history request.
    """
    original = ApiView.dispatch

    def dispatch(self, request, *args, **kwargs):
        response = original(self, request, *args, **kwargs)
        del self.response  # the view <-> response cycle, broken: refcounting frees both
        return response

    ApiView.dispatch = dispatch


@experiment
def no_db_health_checks() -> None:
    """CONN_HEALTH_CHECKS off (applied in bench/settings.py; nothing to patch here).

    With health checks on, Django runs `SELECT 1` before the first query of every
    request that reuses a connection: one more PostgreSQL round trip per request,
    two where a poll needs one.
    """


@experiment
def plain_poll_view() -> None:
    """The guest poll (GET) served by a plain Django view through throttles.limit_view, not DRF.

    Same selector, limits, headers, envelope and metrics; bench.urls mounts
    `guest_messages` ahead of production's route and it hands every other method
    (the guest's send) to the DRF view as before.
    """


@throttles.limit_view("guest_poll", "guest_ip")
def guest_poll(request: HttpRequest, session_key: str) -> HttpResponse:
    values = request.GET.getlist("last_message_id")
    if not SESSION_KEY_RE.fullmatch(session_key):
        return error_response(request, status=404, code="NOT_FOUND", message="Session not found")
    if values and not (len(values) == 1 and CURSOR_RE.fullmatch(values[0]) and int(values[0]) <= MAX_MESSAGE_ID):
        return error_response(request, status=400, code="VALIDATION_ERROR", message="Invalid request")
    cursor = int(values[0]) if values else 0
    try:
        messages, has_more = selectors.guest_messages_after(
            session_key=uuid.UUID(session_key), after_id=cursor, limit=MAX_MESSAGES_PER_POLL
        )
    except ApiError as exc:
        return error_response(request, status=exc.status, code=exc.code, message=exc.message)
    meta = {"last_message_id": messages[-1]["id"] if messages else cursor, "has_more": has_more}
    metrics.observe_guest_poll(len(messages))
    return json_response(envelope(request, success=True, message="Messages retrieved", data=messages, meta=meta))


_guest_messages_api = GuestMessagesApi.as_view()


def guest_messages(request: HttpRequest, session_key: str) -> HttpResponse:
    """GET: the poll without DRF; any other method: the production view."""
    if request.method == "GET":
        return guest_poll(request, session_key=session_key)
    return _guest_messages_api(request, session_key=session_key)


def apply(names: str | None = None) -> list[str]:
    """Apply the experiments named in `names` (default: $BENCH_EXPERIMENTS), comma-separated."""
    names = os.environ.get("BENCH_EXPERIMENTS", "") if names is None else names
    applied = []
    for name in filter(None, (part.strip() for part in names.split(","))):
        if name not in EXPERIMENTS:
            raise ValueError(f"unknown experiment {name!r}; known: {', '.join(EXPERIMENTS)}")
        EXPERIMENTS[name]()
        applied.append(name)
    return applied
