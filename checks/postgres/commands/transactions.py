"""``transactions``: long-running transactions and sessions idle inside one.

All ages are in seconds: ``-w/-c`` apply to the headline, the oldest open transaction;
the idle-in-transaction age and the oldest prepared transaction's have their own options
(docs/design.md §3, metrics sharing a unit).
"""

from __future__ import annotations

from collections.abc import Iterator

import nagiosplugin

from checks import adapters, output
from checks.postgres.check import Connection, FactsResource, postgres_command, run, sessions_visible
from checks.postgres.connection import ConnectionSettings
from checks.postgres.readers.transactions import SessionFacts, TransactionsFacts, read_transactions
from checks.status import worst
from checks.thresholds import (
    Limits,
    Threshold,
    ThresholdType,
    assign,
    range_options,
    threshold_options,
)
from checks.units import Unit, format_duration

NAME = "PG_TRANSACTIONS"
DEFAULTS = {"oldest_xact_age": Limits(nagiosplugin.Range("1800"), nagiosplugin.Range("7200"))}
# Idle in transaction is worse than busy: locks and snapshot held while nothing happens.
DEFAULT_IDLE = Limits(nagiosplugin.Range("300"), nagiosplugin.Range("1800"))
# A prepared transaction left behind holds back the xmin horizon and its locks, across
# restarts, with nobody attached: worth a look after minutes.
DEFAULT_PREPARED = Limits(nagiosplugin.Range("300"), nagiosplugin.Range("1800"))
# The XIDs a prepared transaction pins: vacuum cannot freeze past it. Critical at half of
# autovacuum_freeze_max_age's default (200M), where anti-wraparound vacuum would soon run
# over and over for nothing.
DEFAULT_PREPARED_XIDS = Limits(nagiosplugin.Range("10000000"), nagiosplugin.Range("100000000"))


class TransactionsResource(FactsResource[TransactionsFacts]):
    def read(self, conn: Connection) -> TransactionsFacts:
        return read_transactions(conn)

    def measure(self, facts: TransactionsFacts) -> Iterator[nagiosplugin.Metric]:
        sessions_visible(self.login, facts.hidden)
        for title, session, age in (
            ("oldest transaction", facts.oldest, facts.oldest and facts.oldest.xact_age),
            (
                "oldest idle in transaction",
                facts.oldest_idle,
                facts.oldest_idle and facts.oldest_idle.idle_age,
            ),
        ):
            if session is not None and isinstance(age, (int, float)):
                self.details.append(
                    f"{title}: {session.describe()} {session.where()}, {format_duration(age)}"
                    f", {session.state}"
                )
        if facts.oldest_prepared is not None:
            self.details.append(
                f"prepared transactions: {facts.prepared}, oldest "
                f"{facts.oldest_prepared.describe()}, "
                f"{format_duration(facts.oldest_prepared.age)}, XID age "
                f"{facts.oldest_prepared.xid_age:,} (pg_prepared_xacts)"
            )
        pinning = facts.pinning_prepared
        if pinning is not None and pinning.gid != getattr(facts.oldest_prepared, "gid", None):
            self.details.append(
                f"oldest XID pinned by {pinning.describe()}: XID age {pinning.xid_age:,}"
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
        yield nagiosplugin.Metric(
            "oldest_prepared_age", round(facts.oldest_prepared_age or 0.0, 3), "s", min=0
        )
        yield nagiosplugin.Metric(
            "prepared_xid_age", pinning.xid_age if pinning else 0, min=0, max=2**31
        )


class SessionAgeContext(adapters.MetricContext):
    """The text names the session: pid and application_name, as pg_terminate_backend needs."""

    def __init__(self, name: str, limits: Limits, *, label: str, attribute: str) -> None:
        super().__init__(name, limits, label=label, unit=Unit.SECONDS)
        self.attribute = attribute

    def describe(self, metric: nagiosplugin.Metric) -> str:
        facts = metric.resource.facts
        session: SessionFacts | None = getattr(facts, self.attribute, None)
        if session is None:
            return f"no session {self.label}"
        return f"{session.describe()} {self.label} for {format_duration(metric.value)}"


class PreparedContext(adapters.MetricContext):
    """The text names the prepared transaction by gid, as COMMIT/ROLLBACK PREPARED need:
    the oldest, or with ``pinning`` the one that pins the oldest XID."""

    def __init__(
        self, name: str, limits: Limits, *, label: str, unit: Unit, pinning: bool = False
    ) -> None:
        super().__init__(name, limits, label=label, unit=unit)
        self.pinning = pinning

    def describe(self, metric: nagiosplugin.Metric) -> str:
        facts: TransactionsFacts = metric.resource.facts
        prepared = facts.pinning_prepared if self.pinning else facts.oldest_prepared
        if prepared is None:
            return "no prepared transaction"
        if self.pinning:
            return f"{prepared.describe()} pins XIDs {prepared.xid_age:,} transactions old"
        return f"{prepared.describe()} prepared {format_duration(metric.value)} ago"


class TransactionsSummary(adapters.Summary):
    resource: TransactionsResource

    def problem(self, results: nagiosplugin.Results) -> str:
        """One session both oldest in transaction and oldest idle in it is named once:
        ``pid 42 (psql) in transaction for 40min (above 30min), idle for 35min (...)``."""
        status = worst(adapters.status_of(r.state) for r in results)
        bad = [r for r in results if adapters.status_of(r.state) is status]
        facts = self.resource.facts
        oldest = facts.oldest if facts else None
        idle = facts.oldest_idle if facts else None
        named = {adapters.named(r) for r in bad}
        same = (
            oldest is not None
            and idle is not None
            and oldest.pid == idle.pid
            and {"oldest_xact_age", "oldest_idle_in_xact_age"} <= named
        )
        texts = []
        for result in bad:
            text = str(result)
            if same and idle is not None and adapters.named(result) == "oldest_idle_in_xact_age":
                text = text.replace(f"{idle.describe()} idle in transaction for", "idle for", 1)
            texts.append(text)
        return ", ".join(texts)

    def ok(self, results: nagiosplugin.Results) -> str:
        facts = self.resource.facts
        assert facts is not None
        prepared = ""
        if facts.oldest_prepared is not None:
            prepared = (
                f"{facts.prepared} prepared, oldest {format_duration(facts.oldest_prepared.age)}"
            )
        if facts.oldest is None:
            # a prepared transaction is open, just not in any session
            return f"no session in a transaction, {prepared}" if prepared else "no open transaction"
        text = f"{facts.open_transactions} open, oldest: {results['oldest_xact_age']}"
        if facts.oldest_idle is not None:
            text += f", {facts.idle_in_transaction} idle in transaction"
        if prepared:
            text += f", {prepared}"
        return text


@postgres_command("transactions")
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
@range_options(
    "prepared",
    ThresholdType(unit=Unit.SECONDS, plain_unit=Unit.SECONDS),
    "the oldest prepared transaction (pg_prepared_xacts)",
    default_warning="above 5min",
    default_critical="above 30min",
)
@range_options(
    "prepared-xids",
    ThresholdType(unit=Unit.NUMBER),
    "the XID age of the prepared transaction pinning the oldest XID (transactions begun since)",
    default_warning="above 10000000",
    default_critical="above 100000000",
)
def command(
    settings: ConnectionSettings,
    verbose: int,
    warning: tuple[Threshold, ...],
    critical: tuple[Threshold, ...],
    idle_warning: Threshold | None,
    idle_critical: Threshold | None,
    prepared_warning: Threshold | None,
    prepared_critical: Threshold | None,
    prepared_xids_warning: Threshold | None,
    prepared_xids_critical: Threshold | None,
) -> output.Report:
    """Oldest open transaction and oldest session idle in transaction, with pid and name.

    Only client sessions count (not autovacuum or WAL senders); the check's own session is
    left out. -w/-c apply to the oldest transaction (default: warning above 30min, critical
    above 2h); --idle-warning/--idle-critical to the oldest idle-in-transaction session;
    --prepared-warning/--prepared-critical to the oldest prepared transaction, which holds
    back vacuum and keeps its locks across restarts with no session attached;
    --prepared-xids-warning/--prepared-xids-critical to the XIDs it pins (its XID age:
    transactions begun since, default warning above 10000000, critical above 100000000).
    """
    limits = assign(
        warning,
        critical,
        targets={Unit.SECONDS: "oldest_xact_age"},
        defaults=DEFAULTS,
        plain_unit=Unit.SECONDS,
    )
    idle_limits = Limits.given(idle_warning, idle_critical, DEFAULT_IDLE)
    prepared_limits = Limits.given(prepared_warning, prepared_critical, DEFAULT_PREPARED)
    prepared_xid_limits = Limits.given(
        prepared_xids_warning, prepared_xids_critical, DEFAULT_PREPARED_XIDS
    )

    resource = TransactionsResource(settings)
    return run(
        NAME,
        resource,
        SessionAgeContext(
            "oldest_xact_age", limits["oldest_xact_age"], label="in transaction", attribute="oldest"
        ),
        SessionAgeContext(
            "oldest_idle_in_xact_age",
            idle_limits,
            label="idle in transaction",
            attribute="oldest_idle",
        ),
        PreparedContext(
            "oldest_prepared_age", prepared_limits, label="prepared transaction", unit=Unit.SECONDS
        ),
        PreparedContext(
            "prepared_xid_age",
            prepared_xid_limits,
            label="prepared transaction XID age",
            unit=Unit.NUMBER,
            pinning=True,
        ),
        adapters.FactContext("xact_fact"),
        summary=TransactionsSummary(resource),
        verbose=verbose,
    )
