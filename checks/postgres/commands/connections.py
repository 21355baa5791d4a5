"""``connections``: how close are the clients to running out of connection slots."""

from __future__ import annotations

from collections.abc import Iterator

import nagiosplugin

from checks import adapters, output
from checks.postgres.check import Connection, FactsResource, postgres_command, run, sessions_visible
from checks.postgres.connection import ConnectionSettings
from checks.postgres.readers.connections import ConnectionsFacts, read_connections
from checks.thresholds import Limits, Threshold, threshold_options
from checks.units import Unit

NAME = "PG_CONNECTIONS"
DEFAULTS = {"connections_pct": Limits(nagiosplugin.Range("80"), nagiosplugin.Range("90"))}
# the thresholded metrics' labels and units, in the order a usage error names the units
WORDS = {
    "connections_pct": ("connections used", Unit.PERCENT),
    "connections": ("connections", Unit.NUMBER),
}
# the long output lists this many databases, busiest first
TOP_DATABASES = 5


class ConnectionsResource(FactsResource[ConnectionsFacts]):
    def read(self, conn: Connection) -> ConnectionsFacts:
        return read_connections(conn)

    def measure(self, facts: ConnectionsFacts) -> Iterator[nagiosplugin.Metric]:
        sessions_visible(self.login, facts.hidden)
        reserved = f"{facts.superuser_reserved} for superusers"
        if facts.reserved:
            reserved += f", {facts.reserved} for pg_use_reserved_connections"
        self.details.append(
            f"max_connections {facts.max_connections}, reserved {reserved}: {facts.usable} usable"
        )
        if facts.per_state:
            states = sorted(facts.per_state.items(), key=lambda item: (-item[1], item[0]))
            self.details.append("by state: " + ", ".join(f"{s} {n}" for s, n in states))
        databases = sorted(facts.per_database.items(), key=lambda item: (-item[1], item[0]))
        for datname, count in databases[:TOP_DATABASES]:
            self.details.append(f"database {datname or '(none)'}: {count}")
        if len(databases) > TOP_DATABASES:
            self.details.append(f"… {len(databases) - TOP_DATABASES} more databases")
        yield nagiosplugin.Metric("connections", facts.used, min=0, max=facts.usable)
        yield nagiosplugin.Metric(
            "connections_pct", round(facts.used_percent, 1), "%", min=0, max=100
        )
        yield nagiosplugin.Metric(
            "max_connections", facts.max_connections, min=0, context="connections_fact"
        )


class ConnectionsSummary(adapters.Summary):
    resource: ConnectionsResource

    def _busiest(self) -> str:
        facts = self.resource.facts
        busiest = facts.busiest_database if facts else None
        return f"most on {busiest[0] or '(none)'} ({busiest[1]})" if busiest else ""

    def ok(self, results: nagiosplugin.Results) -> str:
        facts = self.resource.facts
        assert facts is not None
        text = (
            f"{facts.used} of {facts.usable} usable connections in use ({facts.used_percent:.1f}%)"
        )
        return ", ".join(filter(None, [text, self._busiest()]))

    def problem(self, results: nagiosplugin.Results) -> str:
        facts = self.resource.facts
        assert facts is not None
        text = f"{super().problem(results)}: {facts.used} of {facts.usable} usable"
        return ", ".join(filter(None, [text, self._busiest()]))


@postgres_command("connections")
@threshold_options(
    plain_unit=None,
    help_suffix="A count of client connections (40) or a percentage of the usable ones (80%).",
)
def command(
    settings: ConnectionSettings,
    verbose: int,
    warning: tuple[Threshold, ...],
    critical: tuple[Threshold, ...],
) -> output.Report:
    """Client connections against the usable ones: max_connections minus the reserved slots.

    Usable = max_connections - superuser_reserved_connections - reserved_connections (16+),
    the slots an ordinary role can get. Defaults: warning above 80%, critical above 90%;
    a count threshold (-w 40) applies as well as the percentage ones.
    """
    resource = ConnectionsResource(settings)
    return run(
        NAME,
        resource,
        *adapters.threshold_contexts(warning, critical, WORDS, defaults=DEFAULTS),
        adapters.FactContext("connections_fact"),
        summary=ConnectionsSummary(resource),
        verbose=verbose,
    )
