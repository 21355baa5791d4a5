"""``alive``: can a client connect and run a query, and how fast."""

from __future__ import annotations

import time
from collections.abc import Iterator

import nagiosplugin

from checks import adapters, output
from checks.postgres.check import PostgresResource, postgres_command, run
from checks.postgres.connection import ConnectionSettings, reached
from checks.postgres.readers.alive import LivenessFacts, read_liveness
from checks.thresholds import (
    Limits,
    Threshold,
    ThresholdType,
    assign,
    range_options,
    threshold_options,
)
from checks.units import Unit

NAME = "PG_ALIVE"
# check_pgsql's long-standing default; scram authentication alone takes ~0.1 s, more under load
DEFAULT_CONNECT = Limits(nagiosplugin.Range("2"), nagiosplugin.Range("5"))


class AliveResource(PostgresResource):
    def __init__(self, settings: ConnectionSettings) -> None:
        super().__init__(settings)
        self.facts: LivenessFacts | None = None
        # the server actually reached: from a host list or a service file, the one that
        # answered
        self.reached = ""

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        # psycopg's import (~0.1 s, far more on a busy host) is Python's cost, not the
        # server's: load it before the clock starts, or CPU load alone looks like a slow
        # server and crosses the connect thresholds
        import psycopg  # noqa: F401

        started = time.monotonic()
        with self.connection() as conn:
            connect_seconds = time.monotonic() - started
            facts = self.facts = read_liveness(conn)
            self.reached = reached(conn)
        yield nagiosplugin.Metric("connect_time", round(connect_seconds, 3), "s", min=0)
        yield nagiosplugin.Metric("query_time", round(facts.query_seconds, 3), "s", min=0)


class AliveSummary(adapters.Summary):
    resource: AliveResource

    def ok(self, results: nagiosplugin.Results) -> str:
        # no timings: they differ every run, and Consul holds back output-only changes
        # for minutes, so its catalog would show stale figures (they are in perfdata)
        alive = self.resource
        facts = alive.facts
        assert facts is not None
        version = f"{facts.server_version // 10000}.{facts.server_version % 10000}"
        role = "replica" if facts.in_recovery else "primary"
        return f"{alive.reached} accepts connections (PostgreSQL {version}, {role})"


@postgres_command("alive")
@threshold_options(plain_unit=Unit.SECONDS, help_suffix="Connect time, e.g. 500ms or 2s.")
@range_options("query", ThresholdType(unit=Unit.SECONDS, plain_unit=Unit.SECONDS), "the query time")
def command(
    settings: ConnectionSettings,
    verbose: int,
    warning: tuple[Threshold, ...],
    critical: tuple[Threshold, ...],
    query_warning: Threshold | None,
    query_critical: Threshold | None,
) -> output.Report:
    """Connect and run a query; CRITICAL when the server refuses, fails or is too slow.

    -w/-c apply to the connect time (default: warning above 2s, critical above 5s);
    --query-warning/--query-critical to the query time.
    """
    limits = assign(
        warning,
        criticals=critical,
        targets={Unit.SECONDS: "connect_time"},
        defaults={"connect_time": DEFAULT_CONNECT},
    )

    resource = AliveResource(settings)
    return run(
        NAME,
        resource,
        adapters.MetricContext(
            "connect_time", limits["connect_time"], label="connect time", unit=Unit.SECONDS
        ),
        adapters.MetricContext(
            "query_time",
            Limits.given(query_warning, query_critical),
            label="query time",
            unit=Unit.SECONDS,
        ),
        summary=AliveSummary(resource),
        verbose=verbose,
    )
