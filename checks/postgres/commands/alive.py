"""``alive``: can a client connect and run a query, and how fast."""

from __future__ import annotations

import time
from collections.abc import Iterator

import nagiosplugin

from checks import adapters, output, runtime
from checks.postgres.connection import ConnectionSettings, connect, reached
from checks.postgres.options import connection_options
from checks.postgres.probes.alive import read_liveness
from checks.thresholds import (
    Limits,
    ThresholdType,
    assign,
    range_options,
    threshold_options,
)
from checks.units import Unit

NAME = "PG_ALIVE"
# check_pgsql's long-standing default; scram authentication alone takes ~0.1 s, more under load
DEFAULT_CONNECT = Limits(nagiosplugin.Range("2"), nagiosplugin.Range("5"))


class Alive(adapters.Probe):
    def __init__(self, settings: ConnectionSettings) -> None:
        super().__init__()
        self.settings = settings
        self.role = ""
        self.version = 0
        # the server actually reached: from a host list or a service file, the one that
        # answered
        self.reached = ""

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        # psycopg's import (~0.1 s, far more on a busy host) is Python's cost, not the
        # server's: load it before the clock starts, or CPU load alone looks like a slow
        # server and crosses the connect thresholds
        import psycopg  # noqa: F401

        started = time.monotonic()
        with connect(self.settings) as conn:
            connect_seconds = time.monotonic() - started
            facts = read_liveness(conn)
            self.reached = reached(conn)
        self.role = "replica" if facts.in_recovery else "primary"
        self.version = facts.server_version
        yield nagiosplugin.Metric("connect_time", round(connect_seconds, 3), "s", min=0)
        yield nagiosplugin.Metric("query_time", round(facts.query_seconds, 3), "s", min=0)


class AliveSummary(adapters.Summary):
    probe: Alive

    def ok(self, results: nagiosplugin.Results) -> str:
        # no timings: they differ every run, and Consul holds back output-only changes
        # for minutes, so its catalog would show stale figures (they are in perfdata)
        version = f"{self.probe.version // 10000}.{self.probe.version % 10000}"
        return f"{self.probe.reached} accepts connections (PostgreSQL {version}, {self.probe.role})"


@runtime.command("alive")
@connection_options
@threshold_options(plain_unit=Unit.SECONDS, help_suffix="Connect time, e.g. 500ms or 2s.")
@range_options("query", ThresholdType(unit=Unit.SECONDS, plain_unit=Unit.SECONDS), "the query time")
def command(
    settings: ConnectionSettings, verbose: int, warning, critical, query_warning, query_critical
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

    def build() -> nagiosplugin.Check:
        probe = Alive(settings)
        return nagiosplugin.Check(
            probe,
            adapters.MetricContext(
                "connect_time", limits["connect_time"], label="connect time", unit=Unit.SECONDS
            ),
            adapters.MetricContext(
                "query_time",
                Limits.given(query_warning, query_critical),
                label="query time",
                unit=Unit.SECONDS,
            ),
            AliveSummary(probe),
        )

    return runtime.run_check(
        NAME, build, timeout=settings.timeout, target=settings.target, verbose=verbose
    )
