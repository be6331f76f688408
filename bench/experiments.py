"""Proposed application changes, tried under the benchmark before anyone edits the app.

`make bench BENCH_ARGS="--experiments drop-view-response"` serves the
service with these applied (bench.urls calls `apply` in each worker, before its
first request). Each models one change recommended in the benchmark's report,
with the before/after figures as its evidence. None is on in a plain
`make bench`, and none is ever imported by production code.
"""

import os
from collections.abc import Callable

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
    from chat.api.base import ApiView

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
