"""``transactions``: long-running transactions and sessions idle inside one.

Both ages are in seconds: ``-w/-c`` apply to the headline, the oldest open transaction;
the idle-in-transaction age has its own options (DESIGN.md §3, two metrics sharing a unit).
"""

from __future__ import annotations

from collections.abc import Iterator

import click
import nagiosplugin

from checks import plugin
from checks.postgres.connection import ConnectionSettings, connect
from checks.postgres.options import connection_options
from checks.postgres.probes.transactions import Session, Transactions, read_transactions
from checks.thresholds import Limits, ThresholdType, assign, range_options, threshold_options
from checks.units import Unit, format_duration

NAME = "PG_TRANSACTIONS"
DEFAULTS = {"oldest_xact_age": Limits(nagiosplugin.Range("1800"), nagiosplugin.Range("7200"))}
# Idle in transaction is worse than busy: locks and snapshot held while nothing happens.
DEFAULT_IDLE = Limits(nagiosplugin.Range("300"), nagiosplugin.Range("1800"))


class TransactionsProbe(plugin.Probe):
    def __init__(self, settings: ConnectionSettings) -> None:
        super().__init__()
        self.settings = settings
        self.facts: Transactions | None = None

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        with connect(self.settings) as conn:
            facts = self.facts = read_transactions(conn)
            login = conn.info.user
        if facts.hidden:
            raise plugin.unknown(
                f"cannot see {facts.hidden} other sessions in pg_stat_activity as role "
                f"{login}: GRANT pg_monitor TO {login} (or pg_read_all_stats)"
            )
        for title, session, age in (
            ("oldest transaction", facts.oldest, facts.oldest and facts.oldest.xact_age),
            (
                "oldest idle in transaction",
                facts.oldest_idle,
                facts.oldest_idle and facts.oldest_idle.idle_age,
            ),
        ):
            if session is not None:
                self.details.append(
                    f"{title}: {session.describe()} {session.where()}, {format_duration(age)}"
                    f", {session.state}"
                )
        if facts.prepared:
            self.details.append(
                f"prepared transactions: {facts.prepared}, oldest "
                f"{format_duration(facts.oldest_prepared_age or 0)} (pg_prepared_xacts)"
            )
        oldest_age = facts.oldest.xact_age if facts.oldest else 0.0
        idle_age = facts.oldest_idle.idle_age if facts.oldest_idle else 0.0
        yield nagiosplugin.Metric("oldest_xact_age", round(oldest_age, 3), "s", min=0)
        yield nagiosplugin.Metric("oldest_idle_in_xact_age", round(idle_age or 0.0, 3), "s", min=0)
        yield nagiosplugin.Metric(
            "open_transactions", facts.open_transactions, min=0, context="xact_fact"
        )
        yield nagiosplugin.Metric(
            "idle_in_transaction", facts.idle_in_transaction, min=0, context="xact_fact"
        )
        yield nagiosplugin.Metric("prepared_xacts", facts.prepared, min=0, context="xact_fact")


class SessionAgeContext(plugin.MetricContext):
    """The text names the session: pid and application_name, as pg_terminate_backend needs."""

    def __init__(self, name: str, limits: Limits, *, label: str, attribute: str) -> None:
        super().__init__(name, limits, label=label, unit=Unit.SECONDS)
        self.attribute = attribute

    def describe(self, metric: nagiosplugin.Metric) -> str:
        facts = metric.resource.facts
        session: Session | None = getattr(facts, self.attribute, None)
        if session is None:
            return f"no session {self.label}"
        return f"{session.describe()} {self.label} for {format_duration(metric.value)}"


class TransactionsSummary(plugin.Summary):
    def __init__(self, probe: TransactionsProbe) -> None:
        self.probe = probe

    def ok(self, results: nagiosplugin.Results) -> str:
        facts = self.probe.facts
        assert facts is not None
        if facts.oldest is None:
            return "no open transaction"
        text = f"{facts.open_transactions} open, oldest: {results['oldest_xact_age']}"
        if facts.oldest_idle is not None:
            text += f", {facts.idle_in_transaction} idle in transaction"
        return text


@click.command("transactions", context_settings=plugin.CONTEXT_SETTINGS)
@connection_options
@threshold_options(
    plain_unit=Unit.SECONDS,
    help_suffix="On the age of the oldest open transaction (10min, 2h).",
)
@range_options(
    "idle",
    ThresholdType(unit=Unit.SECONDS, plain_unit=Unit.SECONDS),
    "the oldest session idle in transaction",
    default_warning="above 5min",
    default_critical="above 30min",
)
def command(
    settings: ConnectionSettings, verbose: int, warning, critical, idle_warning, idle_critical
) -> plugin.Report:
    """Oldest open transaction and oldest session idle in transaction, with pid and name.

    Only client sessions count (not autovacuum or WAL senders); the check's own session is
    left out. -w/-c apply to the oldest transaction (default: warning above 30min, critical
    above 2h); --idle-warning/--idle-critical to the oldest idle-in-transaction session.
    """
    limits = assign(
        warning,
        critical,
        targets={Unit.SECONDS: "oldest_xact_age"},
        defaults=DEFAULTS,
        plain_unit=Unit.SECONDS,
    )
    idle_limits = Limits.given(idle_warning, idle_critical, DEFAULT_IDLE)

    def build() -> nagiosplugin.Check:
        probe = TransactionsProbe(settings)
        return nagiosplugin.Check(
            probe,
            SessionAgeContext(
                "oldest_xact_age",
                limits["oldest_xact_age"],
                label="in transaction",
                attribute="oldest",
            ),
            SessionAgeContext(
                "oldest_idle_in_xact_age",
                idle_limits,
                label="idle in transaction",
                attribute="oldest_idle",
            ),
            plugin.FactContext("xact_fact"),
            TransactionsSummary(probe),
        )

    return plugin.run_check(
        NAME, build, timeout=settings.timeout, target=settings.target(), verbose=verbose
    )
