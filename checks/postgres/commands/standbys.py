"""``standbys``: from the primary, are the expected standbys connected, and how far behind."""

from __future__ import annotations

from collections.abc import Iterator

import click
import nagiosplugin

from checks import plugin
from checks.postgres.connection import ConnectionSettings, connect
from checks.postgres.options import connection_options, role_mismatch_option
from checks.postgres.probes.standbys import Standby, read_standbys
from checks.thresholds import Limits, assign, threshold_options
from checks.units import Unit, format_bytes, format_duration, format_value

NAME = "PG_STANDBYS"
DEFAULTS = {
    "standby_replay_bytes": Limits(
        nagiosplugin.Range("67108864"), nagiosplugin.Range("1073741824")
    ),
    "standby_replay_seconds": Limits(nagiosplugin.Range("60"), nagiosplugin.Range("300")),
}


class Standbys(plugin.Probe):
    def __init__(
        self,
        settings: ConnectionSettings,
        expected_names: tuple[str, ...],
        on_replica: plugin.Status,
    ) -> None:
        super().__init__()
        self.settings = settings
        self.expected_names = expected_names
        self.on_replica = on_replica
        self.standbys: list[Standby] = []
        self.wal_receivers: list[Standby] = []
        # synchronous standbys commits wait for (synchronous_standby_names), and how many
        # WAL senders satisfy them (a synchronous pg_receivewal does too)
        self.required_sync = 0
        self.commit_sync = 0
        # metric name -> the application_name it belongs to, for the words in the output
        self.owners: dict[str, str] = {}

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        with connect(self.settings) as conn:
            upstream = read_standbys(conn)
            login = conn.info.user
        standbys = self.standbys = upstream.standbys  # worst first
        receivers = self.wal_receivers = upstream.wal_receivers
        if upstream.in_recovery and not standbys and not receivers:
            # a cascading replica with standbys of its own is checked like a primary
            raise plugin.CheckFailed(
                self.on_replica, "replica (in recovery) with no standbys of its own"
            )
        if any(s.hidden for s in standbys):
            raise plugin.unknown(
                f"cannot see pg_stat_replication details as role {login}: "
                f"GRANT pg_monitor TO {login} (or pg_read_all_stats)"
            )
        self.required_sync = upstream.required_sync
        self.commit_sync = sum(s.streaming and s.synchronous for s in standbys + receivers)
        if upstream.synchronous_standby_names.strip() and not upstream.in_recovery:
            self.details.append(
                f"synchronous_standby_names = '{upstream.synchronous_standby_names}': "
                f"commits wait for {self.required_sync} synchronous standby(s), "
                f"{self.commit_sync} streaming"
            )
        streaming = [s for s in standbys if s.streaming]
        # aggregates first: the first line and the perfdata get cut when there are many
        yield nagiosplugin.Metric("standbys", len(streaming), min=0)
        yield nagiosplugin.Metric("sync_standbys", sum(s.synchronous for s in streaming), min=0)
        known = [s.replay_lag_bytes for s in standbys if s.replay_lag_bytes is not None]
        if known:
            yield nagiosplugin.Metric(
                "max_replay_lag_bytes", max(known), "B", min=0, context="standby_lag_fact"
            )
        for name in self.expected_names:
            present = any(s.application_name == name for s in streaming)
            yield nagiosplugin.Metric(f"expected_{name}", int(present), context="expected")
        taken: set[str] = set()
        for standby in standbys:
            label = plugin.perfdata_label(standby.application_name, taken, fallback="standby")
            replay = (
                "replay position not reported yet"
                if standby.replay_lag_bytes is None
                else f"replay {format_bytes(standby.replay_lag_bytes)} / "
                f"{format_duration(standby.replay_lag_seconds)} behind"
            )
            self.details.append(
                f"{standby.application_name} ({standby.client_addr or 'local'}): "
                f"{standby.state}, {standby.sync_state}, {replay}, write "
                f"{format_duration(standby.write_lag_seconds)}, flush "
                f"{format_duration(standby.flush_lag_seconds)}"
            )
            metrics = []
            if standby.replay_lag_bytes is not None:
                metrics.append(
                    nagiosplugin.Metric(
                        f"{label}_replay_lag_bytes",
                        standby.replay_lag_bytes,
                        "B",
                        min=0,
                        context="standby_replay_bytes",
                    )
                )
            metrics += [
                nagiosplugin.Metric(
                    f"{label}_replay_lag",
                    round(standby.replay_lag_seconds, 3),
                    "s",
                    min=0,
                    context="standby_replay_seconds",
                ),
                nagiosplugin.Metric(
                    f"{label}_write_lag",
                    round(standby.write_lag_seconds, 3),
                    "s",
                    min=0,
                    context="standby_lag_fact",
                ),
                nagiosplugin.Metric(
                    f"{label}_flush_lag",
                    round(standby.flush_lag_seconds, 3),
                    "s",
                    min=0,
                    context="standby_lag_fact",
                ),
            ]
            for metric in metrics:
                self.owners[metric.name] = standby.application_name
                yield metric
        for receiver in receivers:
            flushed = (
                "flush position not reported"
                if receiver.flush_lag_bytes is None
                else f"flushed {format_bytes(receiver.flush_lag_bytes)} behind"
            )
            self.details.append(
                f"WAL receiver (not a standby): {receiver.application_name} "
                f"({receiver.client_addr or 'local'}): {receiver.state}, "
                f"{receiver.sync_state}, {flushed}"
            )


class StandbyLagContext(plugin.MetricContext):
    """One context for every standby's metric of a kind; the text names the standby."""

    def describe(self, metric: nagiosplugin.Metric) -> str:
        owners = getattr(metric.resource, "owners", {})
        name = owners.get(metric.name, metric.name)
        return f"{name} {self.label} {format_value(metric.value, self.unit)}"


class SyncContext(plugin.MetricContext):
    """Synchronous standbys: at least ``--sync``, by default as many as commits wait for."""

    def __init__(self, name: str, minimum: int | None) -> None:
        super().__init__(name, label="synchronous standbys", unit=Unit.NUMBER)
        self.minimum = minimum

    def _required(self, resource: object) -> int:
        if self.minimum is not None:
            return self.minimum
        return getattr(resource, "required_sync", 0)

    def evaluate(self, metric: nagiosplugin.Metric, resource: object) -> nagiosplugin.Result:
        required = self._required(resource)
        if self.minimum is not None:
            if metric.value < required:
                return nagiosplugin.Result(nagiosplugin.Critical, f"below {required}", metric)
            return nagiosplugin.Result(nagiosplugin.Ok, None, metric)
        have = getattr(resource, "commit_sync", metric.value)
        if have < required:
            # describe() words it: the metric alone would not say that commits hang
            return nagiosplugin.Result(nagiosplugin.Critical, None, metric)
        return nagiosplugin.Result(nagiosplugin.Ok, None, metric)

    def describe(self, metric: nagiosplugin.Metric) -> str:
        resource = metric.resource
        required = self._required(resource)
        have = getattr(resource, "commit_sync", metric.value)
        if self.minimum is None and have < required:
            return f"commits wait: {required} synchronous standby(s) required, {have} streaming"
        return super().describe(metric)

    def performance(self, metric: nagiosplugin.Metric, resource: object):
        required = self._required(resource)
        return nagiosplugin.Performance(
            metric.name, metric.value, crit=f"{required}:" if required else "", min=0
        )


class ExpectedContext(nagiosplugin.Context):
    def evaluate(self, metric: nagiosplugin.Metric, resource: object) -> nagiosplugin.Result:
        if metric.value:
            return nagiosplugin.Result(nagiosplugin.Ok, None, metric)
        name = metric.name.removeprefix("expected_")
        return nagiosplugin.Result(nagiosplugin.Critical, f"standby {name} not streaming", metric)


# name every streaming standby in the first line up to this many; past it, only the worst
NAMES_IN_SUMMARY = 3


class StandbysSummary(plugin.Summary):
    probe: Standbys

    def ok(self, results: nagiosplugin.Results) -> str:
        streaming = [s for s in self.probe.standbys if s.streaming]  # worst first
        receivers = len(self.probe.wal_receivers)
        extra = f", {receivers} WAL receiver(s)" if receivers else ""
        if not streaming:
            return f"no standby streaming{extra}"
        worst_bytes = max(s.replay_lag_bytes or 0 for s in streaming)
        worst_seconds = max(s.replay_lag_seconds for s in streaming)
        lag = f"replay lag at most {format_bytes(worst_bytes)}, {format_duration(worst_seconds)}"
        if len(streaming) > NAMES_IN_SUMMARY:
            return (
                f"{len(streaming)} streaming, {lag} (worst: {streaming[0].application_name}){extra}"
            )
        names = ", ".join(sorted(s.application_name for s in streaming))
        return f"{len(streaming)} streaming ({names}), {lag}{extra}"


@click.command("standbys", context_settings=plugin.CONTEXT_SETTINGS)
@connection_options
@threshold_options(
    plain_unit=None,
    help_suffix="On each standby's replay lag: in bytes (16MB) or in time (30s).",
)
@click.option(
    "--min-standbys",
    type=click.IntRange(min=0),
    default=1,
    show_default=True,
    help="Fewer streaming standbys than this is CRITICAL.",
)
@click.option(
    "--sync",
    "min_sync",
    type=click.IntRange(min=0),
    default=None,
    help="Fewer synchronous (sync or quorum) standbys than this is CRITICAL. "
    "Default: as many as synchronous_standby_names makes commits wait for.",
)
@click.option(
    "--standby",
    "expected_names",
    multiple=True,
    metavar="APPLICATION_NAME",
    help="A standby that must be streaming; repeatable.",
)
@role_mismatch_option("replica without standbys of its own")
def command(
    settings: ConnectionSettings,
    verbose: int,
    warning,
    critical,
    min_standbys: int,
    min_sync: int | None,
    expected_names: tuple[str, ...],
    role_mismatch: plugin.Status,
) -> plugin.Report:
    """The primary's view of its standbys (pg_stat_replication): count, sync state, lag.

    Perfdata: standbys, sync_standbys, max_replay_lag_bytes first; then per standby,
    worst first, labelled by application_name: replay lag in bytes and seconds, write and
    flush lag in seconds. Defaults: warning above 64MB or 60s of replay lag, critical
    above 1GB or 300s; CRITICAL below --min-standbys streaming standbys, and when fewer
    synchronous standbys stream than synchronous_standby_names makes commits wait for.
    WAL receivers (pg_receivewal, barman: no replay position) are listed, not counted.
    """
    limits = assign(
        warning,
        critical,
        targets={Unit.BYTES: "standby_replay_bytes", Unit.SECONDS: "standby_replay_seconds"},
        defaults=DEFAULTS,
    )

    def build() -> nagiosplugin.Check:
        probe = Standbys(settings, expected_names, role_mismatch)
        return plugin.Check(
            probe,
            plugin.MetricContext(
                "standbys",
                Limits(None, nagiosplugin.Range(f"{min_standbys}:")),
                label="streaming standbys",
                unit=Unit.NUMBER,
            ),
            SyncContext("sync_standbys", min_sync),
            ExpectedContext("expected"),
            StandbyLagContext(
                "standby_replay_bytes",
                limits["standby_replay_bytes"],
                label="replay lag",
                unit=Unit.BYTES,
            ),
            StandbyLagContext(
                "standby_replay_seconds",
                limits["standby_replay_seconds"],
                label="replay lag",
                unit=Unit.SECONDS,
            ),
            plugin.FactContext("standby_lag_fact"),
            StandbysSummary(probe),
        )

    return plugin.run_check(
        NAME, build, timeout=settings.timeout, target=settings.target(), verbose=verbose
    )
