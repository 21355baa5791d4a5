"""``wraparound``: how close is the oldest database to transaction ID (and multixact ID)
wraparound. Multixact IDs wrap at 2^31 too and stop writes the same way; their age is a
percentage with its own options, since ``-w/-c`` in % already mean the XID age."""

from __future__ import annotations

from collections.abc import Iterator

import nagiosplugin

from checks import adapters, output, runtime
from checks.postgres.connection import ConnectionSettings, connect
from checks.postgres.options import connection_options
from checks.postgres.probes.wraparound import (
    WRAPAROUND_LIMIT,
    DatabaseAge,
    HorizonHolder,
    holds_back,
    read_wraparound,
)
from checks.status import unknown, worst
from checks.thresholds import Limits, ThresholdType, assign, range_options, threshold_options
from checks.units import Unit

NAME = "PG_WRAPAROUND"
# Anti-wraparound autovacuum starts at autovacuum_freeze_max_age (200M, 9% of 2^31): an age
# of half the XID space means it has been failing to keep up for a long time.
DEFAULTS = {"xid_age_pct": Limits(nagiosplugin.Range("50"), nagiosplugin.Range("75"))}
# the same for multixacts: anti-wraparound vacuum starts at autovacuum_multixact_freeze_max_age
DEFAULT_MXID = Limits(nagiosplugin.Range("50"), nagiosplugin.Range("75"))
TOP_DATABASES = 5


class Wraparound(adapters.Probe):
    def __init__(self, settings: ConnectionSettings) -> None:
        super().__init__()
        self.settings = settings
        self.databases: list[DatabaseAge] = []
        self.holder: HorizonHolder | None = None

    @property
    def oldest(self) -> DatabaseAge:
        return self.databases[0]

    @property
    def oldest_mxid(self) -> DatabaseAge:
        return max(self.databases, key=lambda d: (d.mxid_age, d.datname))

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        with connect(self.settings) as conn:
            facts = read_wraparound(conn)
            login = conn.info.user
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
                f"{login}, which may hold the xmin horizon back unseen: GRANT pg_monitor TO "
                f"{login} (or pg_read_all_stats)"
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
    """The text names the database the age belongs to."""

    def describe(self, metric: nagiosplugin.Metric) -> str:
        oldest = metric.resource.oldest
        return (
            f"database {oldest.datname} XID age {oldest.xid_age:,} "
            f"({oldest.xid_percent:.1f}% of 2^31)"
        )


class MxidAgeContext(adapters.MetricContext):
    """The text names the database with the oldest multixact ID (not always the XID one)."""

    def describe(self, metric: nagiosplugin.Metric) -> str:
        oldest = metric.resource.oldest_mxid
        return (
            f"database {oldest.datname} multixact age {oldest.mxid_age:,} "
            f"({oldest.mxid_percent:.1f}% of 2^31)"
        )


class WraparoundSummary(adapters.Summary):
    """A problem with the XID age names what holds the oldest XID back, when something
    does: that, not vacuum, is what the DBA has to deal with."""

    probe: Wraparound

    def problem(self, results: nagiosplugin.Results) -> str:
        text = super().problem(results)
        status = worst(adapters.status_of(r.state) for r in results)
        xid_problem = any(
            r.metric.name in ("xid_age_pct", "xid_age") and adapters.status_of(r.state) is status
            for r in results
        )
        holder = self.probe.holder
        if xid_problem and holder is not None and holds_back(holder, self.probe.oldest):
            text += f", held back by {holder.describe()} (XID age {holder.age:,})"
        return text


@runtime.command("wraparound")
@connection_options
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
    settings: ConnectionSettings, verbose: int, warning, critical, mxid_warning, mxid_critical
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

    def build() -> nagiosplugin.Check:
        probe = Wraparound(settings)
        return nagiosplugin.Check(
            probe,
            AgeContext("xid_age_pct", limits["xid_age_pct"], label="XID age", unit=Unit.PERCENT),
            AgeContext("xid_age", limits["xid_age"], label="XID age", unit=Unit.NUMBER),
            MxidAgeContext("mxid_age_pct", mxid_limits, label="multixact age", unit=Unit.PERCENT),
            adapters.FactContext("mxid_age"),
            adapters.FactContext("xmin_horizon_age"),
            WraparoundSummary(probe),
        )

    return runtime.run_check(
        NAME, build, timeout=settings.timeout, target=settings.target, verbose=verbose
    )
