"""``standbys``: from the primary, are the expected standbys connected, and how far behind."""

from __future__ import annotations

from collections.abc import Iterator

import click
import nagiosplugin

from checks import adapters, output
from checks.postgres.capabilities import ServerCapabilities
from checks.postgres.check import Connection, FactsResource, needs_pg_monitor, postgres_command, run
from checks.postgres.connection import ConnectionSettings
from checks.postgres.options import role_mismatch_option
from checks.postgres.readers.standbys import (
    StandbyFacts,
    UpstreamFacts,
    looks_mangled,
    read_standbys,
    server_shown_name,
)
from checks.status import CheckFailed, Status
from checks.thresholds import Limits, Threshold, assign, threshold_options
from checks.units import (
    Unit,
    UnitError,
    format_bytes,
    format_duration,
    format_value,
    parse_quantity,
)

NAME = "PG_STANDBYS"
DEFAULTS = {
    "standby_replay_bytes": Limits(
        nagiosplugin.Range("67108864"), nagiosplugin.Range("1073741824")
    ),
    "standby_replay_seconds": Limits(nagiosplugin.Range("60"), nagiosplugin.Range("300")),
}


class StandbysResource(FactsResource[UpstreamFacts]):
    def __init__(
        self,
        settings: ConnectionSettings,
        expected_names: tuple[str, ...],
        on_replica: Status,
        *,
        excluded: tuple[str, ...] = (),
        delays: dict[str, float] | None = None,
    ) -> None:
        super().__init__(settings)
        self.expected_names = expected_names
        self.on_replica = on_replica
        self.excluded_names = excluded
        self.delays = delays or {}
        self.standbys: list[StandbyFacts] = []
        self.wal_receivers: list[StandbyFacts] = []
        self.logical: list[StandbyFacts] = []
        self.excluded: list[StandbyFacts] = []
        # application_name as the server shows it -> the delay given by --delayed
        self.delay_of: dict[str, float] = {}
        # how many WAL senders satisfy the synchronous standbys synchronous_standby_names
        # names (a synchronous pg_receivewal or logical subscriber does too); how many it
        # names and commits wait for are the facts' (named_sync, required_sync)
        self.commit_sync = 0
        # metric name -> the application_name it belongs to, for the words in the output
        self.owners: dict[str, str] = {}

    def _shown(
        self, names: tuple[str, ...] | list[str], server: ServerCapabilities
    ) -> dict[str, str]:
        """Each name the user gave -> as the server shows it; notes the ones that differ."""
        shown = {name: server_shown_name(name, server) for name in names}
        for name, as_shown in shown.items():
            if as_shown != name:
                self.details.append(
                    f"'{name}' is shown by the server as '{as_shown}': PostgreSQL replaces "
                    "non-ASCII characters in application_name, so that is the name matched"
                )
        return shown

    def read(self, conn: Connection) -> UpstreamFacts:
        return read_standbys(conn)

    def measure(self, upstream: UpstreamFacts) -> Iterator[nagiosplugin.Metric]:
        server = upstream.capabilities
        excluded = set(self._shown(self.excluded_names, server).values())
        self.delay_of = {
            server_shown_name(name, server): delay for name, delay in self.delays.items()
        }
        self._shown(list(self.delays), server)
        self.excluded = [s for s in upstream.standbys if s.application_name in excluded]
        standbys = self.standbys = [  # worst first
            s for s in upstream.standbys if s.application_name not in excluded
        ]
        receivers = self.wal_receivers = upstream.wal_receivers
        self.logical = upstream.logical
        if upstream.in_recovery and not upstream.standbys and not receivers:
            # a cascading replica with standbys of its own is checked like a primary
            raise CheckFailed(self.on_replica, "replica (in recovery) with no standbys of its own")
        if any(s.hidden for s in upstream.standbys + upstream.logical):
            raise needs_pg_monitor(self.login, "see pg_stat_replication details")
        senders = upstream.standbys + receivers + upstream.logical
        self.commit_sync = sum(s.streaming and s.synchronous for s in senders)
        self.details += self._notes(upstream, senders)
        streaming = [s for s in standbys if s.streaming]
        # aggregates first: the first line and the perfdata get cut when there are many
        yield nagiosplugin.Metric("standbys", len(streaming), min=0)
        yield nagiosplugin.Metric("sync_standbys", sum(s.synchronous for s in streaming), min=0)
        known = [
            s.replay_lag_bytes
            for s in standbys
            if s.replay_lag_bytes is not None and s.application_name not in self.delay_of
        ]
        if known:
            yield nagiosplugin.Metric(
                "max_replay_lag_bytes", max(known), "B", min=0, context="standby_lag_fact"
            )
        for name, shown in self._shown(self.expected_names, server).items():
            present = any(s.application_name == shown for s in streaming)
            yield nagiosplugin.Metric(f"expected_{name}", int(present), context="expected")
        taken: set[str] = set()
        for standby in standbys:
            label = output.perfdata_label(standby.application_name, taken, fallback="standby")
            delay = self.delay_of.get(standby.application_name)
            replay = (
                "replay position not reported yet"
                if standby.replay_lag_bytes is None
                else f"replay {format_bytes(standby.replay_lag_bytes)} / "
                f"{format_duration(standby.replay_lag_seconds)} behind"
            )
            if delay is not None:
                replay += f" (delayed {format_duration(delay)} on purpose)"
            self.details.append(
                f"{standby.application_name} ({standby.client_addr or 'local'}): "
                f"{standby.state}, {standby.sync_state}, {replay}, write "
                f"{format_duration(standby.write_lag_seconds)}, flush "
                f"{format_duration(standby.flush_lag_seconds)}"
            )
            metrics = (
                list(self._delayed_metrics(label, standby, delay))
                if delay is not None
                else list(self._lag_metrics(label, standby))
            )
            metrics += [
                nagiosplugin.Metric(
                    f"{label}_{kind}_lag", round(seconds, 3), "s", min=0, context="standby_lag_fact"
                )
                for kind, seconds in (
                    ("write", standby.write_lag_seconds),
                    ("flush", standby.flush_lag_seconds),
                )
            ]
            for metric in metrics:
                self.owners[metric.name] = standby.application_name
                yield metric
        for standby in self.excluded:
            self.details.append(
                f"excluded (--exclude): {standby.application_name} "
                f"({standby.client_addr or 'local'}): {standby.state}, {standby.sync_state}"
            )
        for sender in self.logical:
            self.details.append(
                f"logical replication (not a standby): {sender.application_name} "
                f"({sender.client_addr or 'local'}): {sender.state}, {sender.sync_state}, "
                + (
                    "position not reported yet"
                    if sender.flush_lag_bytes is None
                    else f"confirmed {format_bytes(sender.flush_lag_bytes)} behind"
                )
            )
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

    def _notes(self, upstream: UpstreamFacts, senders: list[StandbyFacts]) -> list[str]:
        """What commits wait for, and names the server rewrote, in words."""
        notes: list[str] = []
        server = upstream.capabilities
        if upstream.synchronous_standby_names.strip() and not upstream.in_recovery:
            waits = (
                f"commits wait for {upstream.required_sync} synchronous standby(s)"
                if upstream.commits_wait
                else f"commits do not wait (synchronous_commit = {upstream.synchronous_commit}"
                "), only transactions that ask for it"
            )
            notes.append(
                f"synchronous_standby_names = '{upstream.synchronous_standby_names}': "
                f"{waits}, {self.commit_sync} synchronous streaming"
            )
            if not upstream.synchronous_standby_names.isascii():
                notes.append(
                    "synchronous_standby_names has non-ASCII characters: the server shows "
                    "them in application_name as "
                    f"{chr(92) + 'xHH' if server.escapes_non_ascii_names else '?'}, "
                    "so that name never matches: give the standby an ASCII application_name"
                )
        if not upstream.synchronous_commit_known:
            notes.append(
                "synchronous_commit is set for this login (role, database or client), which "
                "hides the server's own value: taken as the default (on)"
            )
        for sender in senders:
            if looks_mangled(sender.application_name, server):
                notes.append(
                    f"application_name '{sender.application_name}' may have had non-ASCII "
                    "characters the server replaced: name it that way in --standby and "
                    "synchronous_standby_names, or give it an ASCII name"
                )
        return notes

    @staticmethod
    def _lag_metrics(
        label: str,
        standby: StandbyFacts,
        *,
        bytes_context: str = "standby_replay_bytes",
        seconds_context: str = "standby_replay_seconds",
    ) -> Iterator[nagiosplugin.Metric]:
        return _bytes_and_seconds(
            (f"{label}_replay_lag_bytes", standby.replay_lag_bytes, bytes_context),
            (f"{label}_replay_lag", standby.replay_lag_seconds, seconds_context),
        )

    @staticmethod
    def _delayed_metrics(
        label: str, standby: StandbyFacts, delay: float
    ) -> Iterator[nagiosplugin.Metric]:
        """A standby that applies WAL late on purpose (recovery_min_apply_delay): the WAL
        it holds unreplayed is its delay, not lag. Judged: how far behind it has flushed
        (it must still receive at once) and replay lag beyond its delay."""
        yield from _bytes_and_seconds(
            (f"{label}_flush_lag_bytes", standby.flush_lag_bytes, "delayed_flush_bytes"),
            (
                f"{label}_replay_lag_beyond_delay",
                max(0.0, standby.replay_lag_seconds - delay),
                "delayed_replay_seconds",
            ),
        )
        # its whole lag is still shown, as a fact that is not judged
        yield from StandbysResource._lag_metrics(
            label, standby, bytes_context="standby_lag_fact", seconds_context="standby_lag_fact"
        )


def _bytes_and_seconds(
    in_bytes: tuple[str, int | None, str], in_seconds: tuple[str, float, str]
) -> Iterator[nagiosplugin.Metric]:
    """A lag in bytes (left out while the standby has not reported it) and in seconds,
    each as (metric name, value, context)."""
    name, value, context = in_bytes
    if value is not None:
        yield nagiosplugin.Metric(name, value, "B", min=0, context=context)
    name, seconds, context = in_seconds
    yield nagiosplugin.Metric(name, round(seconds, 3), "s", min=0, context=context)


# (context, the thresholds it takes, its words, its unit): a --delayed standby's flush
# lag and replay lag beyond its delay take the -w/-c of the others' replay lag
LAG_CONTEXTS = (
    ("standby_replay_bytes", "standby_replay_bytes", "replay lag", Unit.BYTES),
    ("standby_replay_seconds", "standby_replay_seconds", "replay lag", Unit.SECONDS),
    ("delayed_flush_bytes", "standby_replay_bytes", "flush lag", Unit.BYTES),
    (
        "delayed_replay_seconds",
        "standby_replay_seconds",
        "replay lag beyond its delay",
        Unit.SECONDS,
    ),
)


class StandbyLagContext(adapters.MetricContext):
    """One context for every standby's metric of a kind; the text names the standby."""

    def describe(self, metric: nagiosplugin.Metric) -> str:
        owners = getattr(metric.resource, "owners", {})
        name = owners.get(metric.name, metric.name)
        return f"{name} {self.label} {format_value(metric.value, self.unit)}"


class SyncContext(adapters.MetricContext):
    """Synchronous standbys: at least ``--sync``, by default as many as commits wait for.

    With synchronous_commit local or off server-wide, commits do not wait for the
    standbys synchronous_standby_names names: one missing is WARNING (only transactions
    that ask for synchronous commit wait, and data is not protected as the setting says),
    not the CRITICAL "commits wait".
    """

    def __init__(self, name: str, minimum: int | None) -> None:
        super().__init__(name, label="synchronous standbys", unit=Unit.NUMBER)
        self.minimum = minimum

    def _required(self, resource: StandbysResource) -> int:
        if self.minimum is not None:
            return self.minimum
        return resource.facts.required_sync if resource.facts else 0

    def _missing(self, resource: StandbysResource) -> tuple[int, int]:
        """(named, streaming) when fewer synchronous standbys stream than are named."""
        named = resource.facts.named_sync if resource.facts else 0
        have = resource.commit_sync
        return (named, have) if have < named else (0, 0)

    def evaluate(
        self, metric: nagiosplugin.Metric, resource: StandbysResource
    ) -> nagiosplugin.Result:
        required = self._required(resource)
        if self.minimum is not None:
            if metric.value < required:
                return nagiosplugin.Result(nagiosplugin.Critical, f"below {required}", metric)
            return nagiosplugin.Result(nagiosplugin.Ok, None, metric)
        named, _ = self._missing(resource)
        if named:
            # describe() words it: the metric alone would not say whether commits hang
            state = nagiosplugin.Critical if required else nagiosplugin.Warn
            return nagiosplugin.Result(state, None, metric)
        return nagiosplugin.Result(nagiosplugin.Ok, None, metric)

    def describe(self, metric: nagiosplugin.Metric) -> str:
        resource = metric.resource
        required = self._required(resource)
        named, have = self._missing(resource)
        if self.minimum is None and named:
            if required:
                return f"commits wait: {required} synchronous standby(s) required, {have} streaming"
            setting = resource.facts.synchronous_commit if resource.facts else "local"
            return (
                f"{named} synchronous standby(s) named, {have} streaming: commits do not "
                f"wait (synchronous_commit {setting})"
            )
        return super().describe(metric)

    def performance(
        self, metric: nagiosplugin.Metric, resource: StandbysResource
    ) -> nagiosplugin.Performance:
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


class StandbysSummary(adapters.Summary):
    resource: StandbysResource

    def ok(self, results: nagiosplugin.Results) -> str:
        probe = self.resource
        streaming = [s for s in probe.standbys if s.streaming]  # worst first
        extra = ""
        if probe.logical:
            extra += f", {len(probe.logical)} logical (not counted)"
        if probe.wal_receivers:
            extra += f", {len(probe.wal_receivers)} WAL receiver(s)"
        if probe.excluded:
            extra += f", {len(probe.excluded)} excluded"
        if not streaming:
            return f"no standby streaming{extra}"
        # a standby delayed on purpose is behind by its delay: the figures leave it out
        prompt = [s for s in streaming if s.application_name not in probe.delay_of]
        delayed = len(streaming) - len(prompt)
        lag = ""
        if prompt:
            worst_bytes = max(s.replay_lag_bytes or 0 for s in prompt)
            worst_seconds = max(s.replay_lag_seconds for s in prompt)
            lag = (
                f", replay lag at most {format_bytes(worst_bytes)}, "
                f"{format_duration(worst_seconds)}"
            )
        if delayed:
            lag += f", {delayed} delayed on purpose"
        if len(streaming) > NAMES_IN_SUMMARY:
            worst = streaming[0].application_name
            return f"{len(streaming)} streaming{lag} (worst: {worst}){extra}"
        names = ", ".join(sorted(s.application_name for s in streaming))
        return f"{len(streaming)} streaming ({names}){lag}{extra}"


def parse_delays(
    ctx: click.Context, param: click.Parameter, values: tuple[str, ...]
) -> dict[str, float]:
    """``--delayed NAME=DURATION`` values -> {name: seconds}."""
    delays: dict[str, float] = {}
    for value in values:
        name, sep, duration = value.rpartition("=")
        try:
            if not sep or not name:
                raise UnitError("give NAME=DURATION, e.g. replica3=2min")
            quantity = parse_quantity(duration)
            if quantity.unit not in (Unit.SECONDS, Unit.NUMBER) or quantity.value < 0:
                raise UnitError(f"{duration!r} is not a duration (2min, 1h)")
        except UnitError as exc:
            raise click.BadParameter(f"{value!r}: {exc}", ctx, param) from None
        delays[name] = float(quantity.value)
    return delays


@postgres_command("standbys")
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
@click.option(
    "--exclude",
    "excluded",
    multiple=True,
    metavar="APPLICATION_NAME",
    help="Leave this standby out: not counted, not judged, listed as excluded; repeatable.",
)
@click.option(
    "--delayed",
    "delays",
    multiple=True,
    metavar="APPLICATION_NAME=DURATION",
    callback=parse_delays,
    help="This standby applies WAL DURATION late on purpose (its recovery_min_apply_delay, "
    "e.g. replica3=2min): -w/-c judge its flush lag in bytes and its replay lag beyond "
    "DURATION; repeatable.",
)
@role_mismatch_option("replica without standbys of its own")
def command(
    settings: ConnectionSettings,
    verbose: int,
    warning: tuple[Threshold, ...],
    critical: tuple[Threshold, ...],
    min_standbys: int,
    min_sync: int | None,
    expected_names: tuple[str, ...],
    excluded: tuple[str, ...],
    delays: dict[str, float],
    role_mismatch: Status,
) -> output.Report:
    """The primary's view of its standbys (pg_stat_replication): count, sync state, lag.

    Perfdata: standbys, sync_standbys, max_replay_lag_bytes first; then per standby,
    worst first, labelled by application_name: replay lag in bytes and seconds, write and
    flush lag in seconds. Defaults: warning above 64MB or 60s of replay lag, critical
    above 1GB or 300s; CRITICAL below --min-standbys streaming standbys, and when fewer
    synchronous standbys stream than synchronous_standby_names makes commits wait for
    (WARNING when synchronous_commit is local or off, so commits do not wait).
    WAL receivers (pg_receivewal, barman: no replay position) and logical replication
    (subscribers, pg_recvlogical) are listed, not counted. --exclude leaves a standby out;
    --delayed judges a standby delayed on purpose beyond its delay.
    """
    limits = assign(
        warning,
        critical,
        targets={Unit.BYTES: "standby_replay_bytes", Unit.SECONDS: "standby_replay_seconds"},
        defaults=DEFAULTS,
    )

    resource = StandbysResource(
        settings, expected_names, role_mismatch, excluded=excluded, delays=delays
    )
    return run(
        NAME,
        resource,
        adapters.MetricContext(
            "standbys",
            Limits(None, nagiosplugin.Range(f"{min_standbys}:")),
            label="streaming standbys",
            unit=Unit.NUMBER,
        ),
        SyncContext("sync_standbys", min_sync),
        ExpectedContext("expected"),
        *(
            StandbyLagContext(name, limits[judged_as], label=label, unit=unit)
            for name, judged_as, label, unit in LAG_CONTEXTS
        ),
        adapters.FactContext("standby_lag_fact"),
        summary=StandbysSummary(resource),
        verbose=verbose,
    )
