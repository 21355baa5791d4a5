"""``lag``: how far behind is this replica, from its own point of view.

Two metrics share seconds as their unit here: replay lag (the headline, ``-w/-c``) and the
age of the WAL receiver's last message, which on an idle primary climbs to about half of
``wal_receiver_timeout`` before resetting without anything being wrong (DESIGN.md §3). That
one gets its own options, with defaults derived from the server's ``wal_receiver_timeout``.
"""

from __future__ import annotations

from collections.abc import Iterator

import click
import nagiosplugin

from checks import plugin
from checks.postgres.connection import ConnectionSettings, connect
from checks.postgres.options import connection_options, role_mismatch_option
from checks.postgres.probes.lag import ReplicaLag, read_lag
from checks.thresholds import Limits, ThresholdType, assign, range_options, threshold_options
from checks.units import Unit, format_bytes, format_duration

NAME = "PG_LAG"
DEFAULTS = {
    "replay_lag_bytes": Limits(nagiosplugin.Range("67108864"), nagiosplugin.Range("1073741824")),
    "replay_lag_seconds": Limits(nagiosplugin.Range("60"), nagiosplugin.Range("300")),
}


class Lag(plugin.Probe):
    def __init__(self, settings: ConnectionSettings, on_primary: plugin.Status) -> None:
        super().__init__()
        self.settings = settings
        self.on_primary = on_primary
        self.facts: ReplicaLag | None = None

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        with connect(self.settings) as conn:
            facts = self.facts = read_lag(conn)
            login = conn.info.user
        if not facts.in_recovery:
            raise plugin.CheckFailed(
                self.on_primary, "primary (not in recovery): no replay lag to measure"
            )
        if facts.receiver_hidden:
            raise plugin.unknown(
                f"cannot see pg_stat_wal_receiver details as role {login}: "
                f"GRANT pg_monitor TO {login} (or pg_read_all_stats)"
            )
        self.details.append(
            f"WAL receiver: {facts.receiver_status or 'none'}"
            + (f" from {facts.sender}" if facts.sender else "")
        )
        if facts.wal_receiver_timeout:
            self.details.append(
                f"wal_receiver_timeout: {format_duration(facts.wal_receiver_timeout)}"
            )
        yield nagiosplugin.Metric("replay_lag_bytes", facts.replay_lag_bytes, "B", min=0)
        yield nagiosplugin.Metric(
            "replay_lag_seconds", round(facts.replay_lag_seconds, 3), "s", min=0
        )
        yield nagiosplugin.Metric("replay_paused", int(facts.replay_paused), min=0, max=1)
        yield nagiosplugin.Metric(
            "receiver_streaming", int(facts.receiver_status == "streaming"), min=0, max=1
        )
        if facts.receiver_message_age is not None:
            yield nagiosplugin.Metric(
                "receiver_message_age",
                round(max(0.0, facts.receiver_message_age), 3),
                "s",
                min=0,
            )


class ReceiverContext(nagiosplugin.Context):
    """CRITICAL unless the WAL receiver streams: without it the replica falls behind forever."""

    def evaluate(self, metric: nagiosplugin.Metric, resource: Lag) -> nagiosplugin.Result:
        if metric.value:
            return nagiosplugin.Result(nagiosplugin.Ok, None, metric)
        status = resource.facts.receiver_status if resource.facts else None
        hint = (
            "no WAL receiver: not streaming from any primary"
            if status is None
            else f"WAL receiver {status}, not streaming"
        )
        return nagiosplugin.Result(nagiosplugin.Critical, hint, metric)

    def performance(self, metric: nagiosplugin.Metric, resource: object):
        return nagiosplugin.Performance(metric.name, metric.value, min=0, max=1)


class ReceiverAgeContext(plugin.MetricContext):
    """Unless told otherwise: warning past wal_receiver_timeout, critical past twice it."""

    def __init__(self, limits: Limits) -> None:
        super().__init__(
            "receiver_message_age", limits, label="last message from primary", unit=Unit.SECONDS
        )
        self.derive = limits == Limits()

    def evaluate(self, metric: nagiosplugin.Metric, resource: Lag) -> nagiosplugin.Result:
        timeout = resource.facts.wal_receiver_timeout if resource.facts else 0.0
        if self.derive and timeout > 0:
            self.warning = nagiosplugin.Range(f"{timeout:g}")
            self.critical = nagiosplugin.Range(f"{2 * timeout:g}")
        return super().evaluate(metric, resource)


class LagSummary(plugin.Summary):
    probe: Lag

    def ok(self, results: nagiosplugin.Results) -> str:
        facts = self.probe.facts
        assert facts is not None
        text = (
            f"replay lag {format_bytes(facts.replay_lag_bytes)}, "
            f"{format_duration(facts.replay_lag_seconds)}, streaming"
        )
        if facts.sender:
            text += f" from {facts.sender}"
        return text


@click.command("lag", context_settings=plugin.CONTEXT_SETTINGS)
@connection_options
@threshold_options(
    plain_unit=None,
    help_suffix="In bytes for the replay lag in bytes (16MB), in time for the replay lag in "
    "seconds (30s).",
)
@range_options(
    "receiver-age",
    ThresholdType(unit=Unit.SECONDS),
    "the age of the WAL receiver's last message",
    default_warning="above wal_receiver_timeout",
    default_critical="above twice wal_receiver_timeout",
)
@role_mismatch_option("primary")
def command(
    settings: ConnectionSettings,
    verbose: int,
    warning,
    critical,
    receiver_age_warning,
    receiver_age_critical,
    role_mismatch: plugin.Status,
) -> plugin.Report:
    """Replica lag: WAL received but not replayed, in bytes and seconds; WAL receiver state.

    Seconds are 0 whenever everything received has been replayed, so an idle primary is
    not lag. Replay paused is WARNING; no streaming WAL receiver is CRITICAL.
    Defaults: warning above 64MB or 60s, critical above 1GB or 300s.
    """
    limits = assign(
        warning,
        critical,
        targets={Unit.BYTES: "replay_lag_bytes", Unit.SECONDS: "replay_lag_seconds"},
        defaults=DEFAULTS,
    )
    receiver_limits = Limits.given(receiver_age_warning, receiver_age_critical)

    def build() -> nagiosplugin.Check:
        probe = Lag(settings, role_mismatch)
        return nagiosplugin.Check(
            probe,
            plugin.MetricContext(
                "replay_lag_bytes", limits["replay_lag_bytes"], label="replay lag", unit=Unit.BYTES
            ),
            plugin.MetricContext(
                "replay_lag_seconds",
                limits["replay_lag_seconds"],
                label="replay lag",
                unit=Unit.SECONDS,
            ),
            plugin.FlagContext(
                "replay_paused",
                bad_value=True,
                state=plugin.Status.WARNING,
                hint="WAL replay is paused (pg_wal_replay_resume() resumes it)",
            ),
            ReceiverContext("receiver_streaming"),
            ReceiverAgeContext(receiver_limits),
            LagSummary(probe),
        )

    return plugin.run_check(
        NAME, build, timeout=settings.timeout, target=settings.target(), verbose=verbose
    )
