"""``wraparound``: how close is the oldest database to transaction ID (and multixact ID)
wraparound. Multixact IDs wrap at 2^31 too and stop writes the same way; their age is a
percentage with its own options, since ``-w/-c`` in % already mean the XID age."""

from __future__ import annotations

from collections.abc import Iterator

import nagiosplugin

from checks import adapters, output
from checks.postgres.check import (
    Connection,
    FactsResource,
    grant_pg_monitor,
    postgres_command,
    run,
)
from checks.postgres.connection import ConnectionSettings
from checks.postgres.readers.wraparound import (
    WRAPAROUND_LIMIT,
    DatabaseAgeFacts,
    HorizonHolderFacts,
    WraparoundFacts,
    holds_back,
    read_wraparound,
)
from checks.status import unknown, worst
from checks.thresholds import (
    Limits,
    Threshold,
    ThresholdType,
    assign,
    range_options,
    threshold_options,
)
from checks.units import Unit

NAME = "PG_WRAPAROUND"
# Anti-wraparound autovacuum starts at autovacuum_freeze_max_age (200M, 9% of 2^31): an age
# of half the XID space means it has been failing to keep up for a long time.
DEFAULTS = {"xid_age_pct": Limits(nagiosplugin.Range("50"), nagiosplugin.Range("75"))}
# the same for multixacts: anti-wraparound vacuum starts at autovacuum_multixact_freeze_max_age
DEFAULT_MXID = Limits(nagiosplugin.Range("50"), nagiosplugin.Range("75"))
TOP_DATABASES = 5


class WraparoundResource(FactsResource[WraparoundFacts]):
    def __init__(self, settings: ConnectionSettings) -> None:
        super().__init__(settings)
        self.databases: list[DatabaseAgeFacts] = []
        self.holder: HorizonHolderFacts | None = None

    @property
    def oldest(self) -> DatabaseAgeFacts:
        return self.databases[0]

    @property
    def oldest_mxid(self) -> DatabaseAgeFacts:
        return max(self.databases, key=lambda d: (d.mxid_age, d.datname))

    def read(self, conn: Connection) -> WraparoundFacts:
        return read_wraparound(conn)

    def measure(self, facts: WraparoundFacts) -> Iterator[nagiosplugin.Metric]:
        databases, holder = facts.databases, facts.holder
        self.databases, self.holder = databases, holder
        if not databases:
            raise unknown("internal error: pg_database is empty")
        oldest = self.oldest
        oldest_mxid = self.oldest_mxid
        self.details.append(
            f"autovacuum_freeze_max_age {oldest.freeze_max_age:,}: anti-wraparound vacuum "
            "starts past it"
        )
        if facts.hidden_sessions:
            self.details.append(
                f"{facts.hidden_sessions} other sessions' transactions are hidden from role "
                f"{self.login}, which may hold the xmin horizon back unseen: "
                + grant_pg_monitor(self.login)
            )
        if holder is None:
            self.details.append(
                "nothing holds the xmin horizon back: vacuum can freeze every database"
            )
        else:
            self.details.append(
                f"oldest xmin held by {holder.describe()}: XID age {holder.age:,}"
                + (
                    f", vacuum cannot freeze {oldest.datname} past it"
                    if holds_back(holder, oldest)
                    else ""
                )
            )
        for database in databases[:TOP_DATABASES]:
            self.details.append(
                f"{database.datname}: XID age {database.xid_age:,} ({database.xid_percent:.1f}%)"
                f", multixact age {database.mxid_age:,} ({database.mxid_percent:.1f}%)"
            )
        if len(databases) > TOP_DATABASES:
            self.details.append(f"… {len(databases) - TOP_DATABASES} more databases")
        yield nagiosplugin.Metric("xid_age_pct", round(oldest.xid_percent, 2), "%", min=0, max=100)
        yield nagiosplugin.Metric(
            "xid_age", oldest.xid_age, min=0, max=WRAPAROUND_LIMIT, context="xid_age"
        )
        yield nagiosplugin.Metric(
            "xmin_horizon_age",
            holder.age if holder else 0,
            min=0,
            max=WRAPAROUND_LIMIT,
            context="xmin_horizon_age",
        )
        yield nagiosplugin.Metric(
            "mxid_age_pct", round(oldest_mxid.mxid_percent, 2), "%", min=0, max=100
        )
        yield nagiosplugin.Metric(
            "mxid_age", oldest_mxid.mxid_age, min=0, max=WRAPAROUND_LIMIT, context="mxid_age"
        )


class AgeContext(adapters.MetricContext):
    """The text names the database the age belongs to: the one with the oldest XID, or
    with ``multixact`` the one with the oldest multixact ID (not always the same)."""

    def __init__(
        self, name: str, limits: Limits, *, label: str, unit: Unit, multixact: bool = False
    ) -> None:
        super().__init__(name, limits, label=label, unit=unit)
        self.multixact = multixact

    def describe(self, metric: nagiosplugin.Metric) -> str:
        resource: WraparoundResource = metric.resource
        if self.multixact:
            oldest = resource.oldest_mxid
            age, percent = oldest.mxid_age, oldest.mxid_percent
        else:
            oldest = resource.oldest
            age, percent = oldest.xid_age, oldest.xid_percent
        return f"database {oldest.datname} {self.label} {age:,} ({percent:.1f}% of 2^31)"


class WraparoundSummary(adapters.Summary):
    """A problem with the XID age names what holds the oldest XID back, when something
    does: that, not vacuum, is what the DBA has to deal with."""

    resource: WraparoundResource

    def problem(self, results: nagiosplugin.Results) -> str:
        text = super().problem(results)
        status = worst(adapters.status_of(r.state) for r in results)
        xid_problem = any(
            adapters.named(r) in ("xid_age_pct", "xid_age")
            and adapters.status_of(r.state) is status
            for r in results
        )
        holder = self.resource.holder
        if xid_problem and holder is not None and holds_back(holder, self.resource.oldest):
            text += f", held back by {holder.describe()} (XID age {holder.age:,})"
        return text


@postgres_command("wraparound")
@threshold_options(
    plain_unit=None,
    help_suffix="On the oldest database's XID age: a percentage of 2^31 (50%) or a number "
    "of transactions (1000000000).",
)
@range_options(
    "mxid",
    ThresholdType(unit=Unit.PERCENT),
    "the oldest database's multixact ID age, in % of 2^31",
    default_warning="above 50%",
    default_critical="above 75%",
)
def command(
    settings: ConnectionSettings,
    verbose: int,
    warning: tuple[Threshold, ...],
    critical: tuple[Threshold, ...],
    mxid_warning: Threshold | None,
    mxid_critical: Threshold | None,
) -> output.Report:
    """Transaction ID wraparound: the oldest age(datfrozenxid) of all databases, named.

    At 2^31 transactions the server stops accepting writes. Defaults: warning above 50%,
    critical above 75% of 2^31. Multixact IDs wrap at 2^31 too: --mxid-warning and
    --mxid-critical judge the oldest mxid_age(datminmxid), in % (default 50% and 75%).
    A problem names what holds the oldest XID back (a replication slot's xmin or
    catalog_xmin, a prepared transaction, a session's transaction, a standby's
    hot_standby_feedback); perfdata xmin_horizon_age is its XID age.
    """
    limits = assign(
        warning,
        critical,
        targets={Unit.PERCENT: "xid_age_pct", Unit.NUMBER: "xid_age"},
        defaults=DEFAULTS,
    )

    mxid_limits = Limits.given(mxid_warning, mxid_critical, DEFAULT_MXID)

    resource = WraparoundResource(settings)
    return run(
        NAME,
        resource,
        AgeContext("xid_age_pct", limits["xid_age_pct"], label="XID age", unit=Unit.PERCENT),
        AgeContext("xid_age", limits["xid_age"], label="XID age", unit=Unit.NUMBER),
        AgeContext(
            "mxid_age_pct", mxid_limits, label="multixact age", unit=Unit.PERCENT, multixact=True
        ),
        adapters.FactContext("mxid_age"),
        adapters.FactContext("xmin_horizon_age"),
        summary=WraparoundSummary(resource),
        verbose=verbose,
    )
