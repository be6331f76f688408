"""Proposed application changes, tried under the benchmark before anyone edits the app.

`make bench BENCH_ARGS="--experiments no-db-health-checks"` serves the service with
them applied (bench.urls calls `apply` in each worker when it loads the URLs,
before the first request). Each models one change the benchmark's report
recommends, its before/after figures the evidence. None is on in a plain `make
bench`, and production code never imports this module. An experiment that was
applied to the app goes from here (bench/README.md keeps its figures).
"""

import os
from collections.abc import Callable

EXPERIMENTS: dict[str, Callable[[], None]] = {}


def experiment(function: Callable[[], None]) -> Callable[[], None]:
    EXPERIMENTS[function.__name__.replace("_", "-")] = function
    return function


@experiment
def no_db_health_checks() -> None:
    """CONN_HEALTH_CHECKS off (applied in bench/settings.py; nothing to patch here).

    With health checks on, Django runs `SELECT 1` before the first query of every
    request that reuses a connection: one more PostgreSQL round trip per request,
    two where a poll needs one.
    """


@experiment
def async_commit() -> None:
    """synchronous_commit off for the app's connections (applied in bench/settings.py).

    A write already commits without waiting for the disk under its session's lock,
    then waits for the WAL flush before it answers (chat.services.write_sql); with
    this, that wait is gone too: a write is acknowledged before the flush, and a
    database crash can lose the last fraction of a second of acknowledged writes
    (never corrupt them). Measures what the durable answer costs.
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
