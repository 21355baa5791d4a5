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
        # perfdata label -> application_name, for the words in the output
        self.names: dict[str, str] = {}

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        with connect(self.settings) as conn:
            upstream = read_standbys(conn)
            login = conn.info.user
        standbys = self.standbys = upstream.standbys
        if upstream.in_recovery and not standbys:
            # a cascading replica with standbys of its own is checked like a primary
            raise plugin.CheckFailed(
                self.on_replica, "replica (in recovery) with no standbys of its own"
            )
        if any(s.hidden for s in standbys):
            raise plugin.unknown(
                f"cannot see pg_stat_replication details as role {login}: "
                f"GRANT pg_monitor TO {login} (or pg_read_all_stats)"
            )
        streaming = [s for s in standbys if s.streaming]
        yield nagiosplugin.Metric("standbys", len(streaming), min=0)
        yield nagiosplugin.Metric("sync_standbys", sum(s.synchronous for s in streaming), min=0)
        for name in self.expected_names:
            present = any(s.application_name == name for s in streaming)
            yield nagiosplugin.Metric(f"expected_{name}", int(present), context="expected")
        taken: set[str] = set()
        for standby in standbys:
            label = plugin.perfdata_label(standby.application_name, taken, fallback="standby")
            self.names[label] = standby.application_name
            self.details.append(
                f"{standby.application_name} ({standby.client_addr or 'local'}): "
                f"{standby.state}, {standby.sync_state}, replay "
                f"{format_bytes(standby.replay_lag_bytes or 0)} / "
                f"{format_duration(standby.replay_lag_seconds)} behind, write "
                f"{format_duration(standby.write_lag_seconds)}, flush "
                f"{format_duration(standby.flush_lag_seconds)}"
            )
            yield nagiosplugin.Metric(
                f"{label}_replay_lag_bytes",
                standby.replay_lag_bytes or 0,
                "B",
                min=0,
                context="standby_replay_bytes",
            )
            yield nagiosplugin.Metric(
                f"{label}_replay_lag",
                round(standby.replay_lag_seconds, 3),
                "s",
                min=0,
                context="standby_replay_seconds",
            )
            yield nagiosplugin.Metric(
                f"{label}_write_lag",
                round(standby.write_lag_seconds, 3),
                "s",
                min=0,
                context="standby_lag_fact",
            )
            yield nagiosplugin.Metric(
                f"{label}_flush_lag",
                round(standby.flush_lag_seconds, 3),
                "s",
                min=0,
                context="standby_lag_fact",
            )


class StandbyLagContext(plugin.MetricContext):
    """One context for every standby's metric of a kind; the text names the standby."""

    def describe(self, metric: nagiosplugin.Metric) -> str:
        names = getattr(metric.resource, "names", {})
        label = next((lb for lb in names if metric.name.startswith(f"{lb}_")), metric.name)
        return f"{names.get(label, label)} {self.label} {format_value(metric.value, self.unit)}"


class ExpectedContext(nagiosplugin.Context):
    def evaluate(self, metric: nagiosplugin.Metric, resource: object) -> nagiosplugin.Result:
        if metric.value:
            return nagiosplugin.Result(nagiosplugin.Ok, None, metric)
        name = metric.name.removeprefix("expected_")
        return nagiosplugin.Result(nagiosplugin.Critical, f"standby {name} not streaming", metric)


class StandbysSummary(plugin.Summary):
    def __init__(self, probe: Standbys) -> None:
        self.probe = probe

    def ok(self, results: nagiosplugin.Results) -> str:
        streaming = [s for s in self.probe.standbys if s.streaming]
        if not streaming:
            return "no standby streaming"
        worst_bytes = max(s.replay_lag_bytes or 0 for s in streaming)
        worst_seconds = max(s.replay_lag_seconds for s in streaming)
        names = ", ".join(s.application_name for s in streaming)
        return (
            f"{len(streaming)} streaming ({names}), replay lag at most "
            f"{format_bytes(worst_bytes)}, {format_duration(worst_seconds)}"
        )


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
    default=0,
    show_default=True,
    help="Fewer synchronous (sync or quorum) standbys than this is CRITICAL.",
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
    min_sync: int,
    expected_names: tuple[str, ...],
    role_mismatch: plugin.Status,
) -> plugin.Report:
    """The primary's view of its standbys (pg_stat_replication): count, sync state, lag.

    Per standby, perfdata labelled by application_name: replay lag in bytes and seconds,
    write and flush lag in seconds. Defaults: warning above 64MB or 60s of replay lag,
    critical above 1GB or 300s; CRITICAL below --min-standbys streaming standbys.
    """
    limits = assign(
        warning,
        critical,
        targets={Unit.BYTES: "standby_replay_bytes", Unit.SECONDS: "standby_replay_seconds"},
        defaults=DEFAULTS,
    )

    def build() -> nagiosplugin.Check:
        probe = Standbys(settings, expected_names, role_mismatch)
        return nagiosplugin.Check(
            probe,
            plugin.MetricContext(
                "standbys",
                Limits(None, nagiosplugin.Range(f"{min_standbys}:")),
                label="streaming standbys",
                unit=Unit.NUMBER,
            ),
            plugin.MetricContext(
                "sync_standbys",
                Limits(None, nagiosplugin.Range(f"{min_sync}:")),
                label="synchronous standbys",
                unit=Unit.NUMBER,
            ),
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
