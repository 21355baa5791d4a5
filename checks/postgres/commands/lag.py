"""``lag``: how far behind is this replica, and can it catch up?

The figures and what each can know (docs/design.md §3, §9; the man page words them):

- Bytes: WAL this replica has not replayed, measured against the furthest position it
  knows of: what it received, and the leader's published position (Consul) or a primary
  given with ``--primary``. Without such a reference the figure is relative to the
  upstream, which for a cascaded standby may itself be behind.
- Seconds: how long the WAL now waiting to be replayed has waited. The replica only has
  bounds (readers/lag.py): at most the age of the last replayed commit, at least the time
  since the primary reported a position replay has not reached. The upper bound is
  reported while it is within the thresholds (then the verdict is sure); past them, only
  a lower bound that is itself past them is, because after a quiet spell the upper bound
  is the quiet spell, not lag. Otherwise the figure is left out and the summary says why.
- A configured ``recovery_min_apply_delay`` is not lag: seconds count beyond it, and
  received-but-delayed WAL is reported apart.

The age of the WAL receiver's last message shares seconds with the headline but on an
idle primary climbs to about half of ``wal_receiver_timeout`` before resetting (§3), so it
has its own options, with defaults derived from the server.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import click
import nagiosplugin

from checks import adapters, output
from checks.postgres.check import PostgresResource, needs_pg_monitor, postgres_command, run
from checks.postgres.connection import ConnectionSettings
from checks.postgres.lag_reference import (
    Reference,
    leader_from_consul,
    primary_from_conninfo,
    upstream_parameters,
)
from checks.postgres.options import role_mismatch_option
from checks.postgres.readers.lag import (
    ReplicaLagFacts,
    read_distance,
    read_lag,
    read_parameters,
    read_replay_lock_wait,
)
from checks.status import CheckFailed, Status, unknown
from checks.thresholds import (
    Limits,
    Threshold,
    ThresholdType,
    assign,
    range_options,
    threshold_options,
)
from checks.units import Unit, UnitError, format_bytes, format_duration, parse_quantity

if TYPE_CHECKING:
    from checks.consul import ConsulSettings

NAME = "PG_LAG"
DEFAULTS = {
    "replay_lag_bytes": Limits(nagiosplugin.Range("67108864"), nagiosplugin.Range("1073741824")),
    "replay_lag_seconds": Limits(nagiosplugin.Range("60"), nagiosplugin.Range("300")),
}
# A primary restart takes the WAL receiver down until it reconnects: the startup process
# retries every wal_retrieve_retry_interval (5 s by default), and the checks run every
# 10 s in the shipped snippets. 30 s covers a restart with room to spare.
DEFAULT_RECEIVER_GRACE = 30.0


# --------------------------------------------------------------------------- judgement


@dataclass(frozen=True)
class Figure:
    """A number the check vouches for, how (exact / at most / at least), or why it has none."""

    value: float | None
    bound: str = ""  # "", "at most", "at least"
    note: str | None = None


def _limit(limits: Limits) -> float:
    """The lowest value the thresholds would flag (inf when none would)."""
    ends = [r.end for r in (limits.warning, limits.critical) if r is not None and not r.invert]
    return min(ends, default=math.inf)


def _critical_limit(limits: Limits) -> float:
    """The lowest value the critical threshold flags (inf when it flags none)."""
    critical = limits.critical
    return critical.end if critical is not None and not critical.invert else math.inf


def judge_seconds(facts: ReplicaLagFacts, reference: Reference | None, limits: Limits) -> Figure:
    has_reference = bool(reference and reference.lsn)
    if not waiting(facts, reference):
        if facts.streaming or has_reference:
            return Figure(0.0)
        # Nothing received waits, but nothing says we are caught up either: judge_bytes
        # words why.
        return Figure(None)
    delay = facts.apply_delay
    at_least = max(0.0, facts.waiting_at_least - delay)
    at_most = facts.last_replayed_commit_age
    limit = _limit(limits)
    if at_most is None:
        if at_least > 0:
            return Figure(at_least, "at least")
        return Figure(
            None,
            note="seconds unknown: no transaction replayed since this server started",
        )
    beyond = max(0.0, at_most - delay)
    if beyond <= limit:
        return Figure(beyond, "at most" if beyond > at_least else "")
    if at_least > limit:
        return Figure(at_least, "at least")
    return Figure(
        None,
        note=(
            f"seconds unknown: last replayed commit {format_duration(at_most)} ago, "
            f"the waiting WAL may be newer (waited at least {format_duration(at_least)})"
        ),
    )


def seconds_unknown(facts: ReplicaLagFacts, reference: Reference | None, limits: Limits) -> bool:
    """Whether judge_seconds() would leave the seconds out for want of a lower bound."""
    figure = judge_seconds(facts, reference, limits)
    return figure.value is None and figure.note is not None and waiting(facts, reference)


def judge_bytes(facts: ReplicaLagFacts, reference: Reference | None) -> Figure:
    behind = facts.behind_reference_bytes if reference and reference.lsn else None
    received = facts.received_not_replayed_bytes
    if facts.apply_delay > 0:
        # WAL held back on purpose is not lag: only what has not even arrived is.
        if behind is None:
            return Figure(None, note="bytes not judged: held back by recovery_min_apply_delay")
        return Figure(max(0, behind - (received or 0)))
    if behind is not None:
        return Figure(max(behind, received or 0))
    if not facts.streaming:
        why = "nothing to compare with" if facts.log_shipping else "no WAL arrives"
        return Figure(None, note=f"lag unknown: {why} (--primary or --consul-service would tell)")
    return Figure(received or 0)


def waiting(facts: ReplicaLagFacts, reference: Reference | None) -> bool:
    behind = facts.behind_reference_bytes if reference and reference.lsn else 0
    return bool(facts.received_not_replayed_bytes) or bool(behind)


@dataclass(frozen=True)
class Verdict:
    """A state the probe decided from several facts (receiver, pause), with its words."""

    status: Status
    text: str | None


def judge_receiver(
    facts: ReplicaLagFacts, behind: Figure, byte_limits: Limits, grace: float
) -> Verdict:
    if facts.streaming:
        return Verdict(Status.OK, None)
    if facts.log_shipping:
        return Verdict(Status.OK, None)
    if facts.streaming_configured is False and facts.archive_configured is False:
        return Verdict(
            Status.CRITICAL,
            "no WAL source: neither primary_conninfo nor restore_command is set",
        )
    down = (
        "no WAL receiver"
        if facts.receiver_status is None
        else f"WAL receiver {facts.receiver_status}, not streaming"
    )
    # Behind by what would be CRITICAL anyway: no grace. Below that (WARNING: still in
    # follower.pg-db) a receiver blip, a primary restart under write load, must not
    # evict it before the grace is over.
    if behind.value is not None and behind.value > _critical_limit(byte_limits):
        return Verdict(Status.CRITICAL, f"{down} and {format_bytes(behind.value)} behind")
    # How long since anything came from upstream: the newest WAL file's age, or the
    # replica's own uptime if it started since (readers/lag.py).
    ages = [a for a in (facts.last_wal_written_age, facts.server_uptime) if a is not None]
    quiet = min(ages) if ages else None
    if quiet is not None and quiet <= grace:
        return Verdict(
            Status.WARNING,
            f"{down} (nothing from upstream for {format_duration(quiet)}, "
            f"CRITICAL after {format_duration(grace)})",
        )
    since = f"nothing from upstream for {format_duration(quiet)}" if quiet else "since when unknown"
    if facts.behind_reference_bytes == 0:
        # Past the measurable grace (an idle primary sent nothing for long, then went
        # away: nothing on the replica records when its receiver stopped), but it has
        # everything the primary has published: it misses nothing yet. The first byte
        # the primary writes and publishes makes this CRITICAL.
        return Verdict(Status.WARNING, f"{down} ({since}), not behind the primary's known position")
    return Verdict(Status.CRITICAL, f"{down}: {since}")


def insufficient_parameters(own: dict[str, int], upstream: dict[str, int]) -> list[str]:
    return [
        f"{name} is {own[name]} here but {upstream[name]} upstream"
        for name in own
        if upstream.get(name, 0) > own[name]
    ]


# --------------------------------------------------------------------------- probe


class LagResource(PostgresResource):
    def __init__(
        self,
        settings: ConnectionSettings,
        on_primary: Status,
        *,
        limits: dict[str, Limits],
        grace: float,
        primary: str | None,
        consul: tuple[str, str, object] | None,
    ) -> None:
        super().__init__(settings)
        self.on_primary = on_primary
        self.limits = limits
        self.grace = grace
        self.primary = primary
        self.consul = consul
        self.facts: ReplicaLagFacts | None = None
        self.reference: Reference | None = None
        self.bytes = Figure(None)
        self.seconds = Figure(None)
        self.receiver = Verdict(Status.OK, None)
        self.pause: Verdict | None = None
        self.notes: list[str] = []

    def _reference(self) -> Reference | None:
        budget = self.settings.budget
        if self.primary:
            return primary_from_conninfo(self.primary, budget.other_server)
        if self.consul:
            service, tag, consul_settings = self.consul
            if isinstance(consul_settings, CheckFailed):
                return Reference(None, f"the {tag} in Consul", problem=consul_settings.message)
            return leader_from_consul(
                service,
                tag,
                consul_settings,  # type: ignore[arg-type]
                budget.leader_lookup,
                self.facts.system_identifier if self.facts else None,
            )
        return None

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        with self.connection() as conn:
            facts = self.facts = read_lag(conn)
            if not facts.in_recovery:
                raise CheckFailed(
                    self.on_primary, "primary (not in recovery): no replay lag to measure"
                )
            if facts.receiver_hidden:
                raise needs_pg_monitor(self.login, "see pg_stat_wal_receiver details")
            # Only a replica asks: a primary's run never imports an HTTP client. The
            # distance is taken from the replay position read above, in one snapshot.
            reference = self.reference = self._reference()
            if reference and reference.problem:
                self.notes.append(f"not compared with the primary: {reference.problem}")
            elif (
                reference
                and reference.system_identifier
                and reference.system_identifier != facts.system_identifier
            ):
                self.notes.append(
                    f"not compared with {reference.source}: another cluster "
                    f"(system identifier {reference.system_identifier})"
                )
                reference = self.reference = None
            if reference and reference.lsn and facts.replayed_lsn:
                facts = self.facts = replace(
                    facts,
                    behind_reference_bytes=read_distance(conn, reference.lsn, facts.replayed_lsn),
                )
            if facts.capabilities.has_lock_wait_start and seconds_unknown(
                facts, reference, self.limits["replay_lag_seconds"]
            ):
                # Only where the seconds would otherwise be left out: the common path
                # does not read pg_locks.
                blocked = read_replay_lock_wait(conn)
                if blocked is not None:
                    facts = self.facts = replace(
                        facts, waiting_at_least=max(facts.waiting_at_least, blocked)
                    )
            own_parameters = (
                read_parameters(conn)
                if facts.replay_paused and facts.capabilities.pauses_for_parameters
                else None
            )
        self.bytes = judge_bytes(facts, reference)
        self.seconds = judge_seconds(facts, reference, self.limits["replay_lag_seconds"])
        self.receiver = judge_receiver(
            facts, self.bytes, self.limits["replay_lag_bytes"], self.grace
        )
        if facts.replay_paused:
            self.pause = self._judge_pause(facts, own_parameters)
        self._describe(facts, reference)

        if self.bytes.value is not None:
            yield nagiosplugin.Metric("replay_lag_bytes", int(self.bytes.value), "B", min=0)
        if self.seconds.value is not None:
            yield nagiosplugin.Metric(
                "replay_lag_seconds", round(self.seconds.value, 3), "s", min=0
            )
        yield nagiosplugin.Metric("replay_paused", int(facts.replay_paused), min=0, max=1)
        yield nagiosplugin.Metric("receiver_streaming", int(facts.streaming), min=0, max=1)
        if facts.receiver_message_age is not None:
            yield nagiosplugin.Metric(
                "receiver_message_age", round(facts.receiver_message_age, 3), "s", min=0
            )
        if facts.apply_delay > 0:
            yield nagiosplugin.Metric("apply_delay", facts.apply_delay, "s", min=0)
            if facts.received_not_replayed_bytes is not None:
                yield nagiosplugin.Metric(
                    "delayed_bytes", facts.received_not_replayed_bytes, "B", min=0
                )
        if facts.last_wal_written_age is not None:
            yield nagiosplugin.Metric(
                "last_wal_age", round(facts.last_wal_written_age, 3), "s", min=0
            )

    def _judge_pause(self, facts: ReplicaLagFacts, own: dict[str, int] | None) -> Verdict:
        plain = "WAL replay is paused (pg_wal_replay_resume() resumes it)"
        if own is None:
            return Verdict(Status.WARNING, plain)
        upstream: dict[str, int] | str | None = None
        if self.reference and self.reference.parameters:
            upstream = self.reference.parameters
        elif facts.sender_host and facts.sender_port:
            upstream = upstream_parameters(
                self.settings,
                facts.sender_host,
                facts.sender_port,
                self.settings.budget.other_server,
            )
        if isinstance(upstream, dict):
            short = insufficient_parameters(own, upstream)
            if short:
                return Verdict(
                    Status.CRITICAL,
                    "WAL replay paused for insufficient parameter settings: "
                    + ", ".join(short)
                    + f": raise {'it' if len(short) == 1 else 'them'} on this replica and "
                    "restart it (resuming replay would shut this standby down)",
                )
            return Verdict(Status.WARNING, plain)
        return Verdict(
            Status.WARNING,
            "WAL replay is paused: by pg_wal_replay_pause(), or for insufficient parameter "
            "settings if the server log says so (then raise that parameter here and restart, "
            "resuming would shut this standby down)",
        )

    def _describe(self, facts: ReplicaLagFacts, reference: Reference | None) -> None:
        if facts.streaming:
            self.details.append(f"WAL receiver: streaming from {facts.sender or '?'}")
        elif facts.log_shipping:
            self.details.append("WAL source: restore_command (log shipping, no WAL receiver)")
        else:
            self.details.append(f"WAL receiver: {facts.receiver_status or 'none'}")
        if reference and reference.lsn:
            self.details.append(f"compared with {reference.source} at {reference.lsn}")
        elif facts.streaming:
            self.details.append(
                f"figures are relative to the upstream {facts.sender}: a standby there may "
                "itself be behind the primary (use --primary or --consul-service)"
            )
        self.details.append(
            f"received {facts.received_lsn or 'nothing (not streaming)'}, "
            f"replayed {facts.replayed_lsn}"
        )
        if facts.last_replayed_commit_age is not None:
            self.details.append(
                f"last replayed commit: {format_duration(facts.last_replayed_commit_age)} ago"
            )
        if facts.apply_delay > 0:
            self.details.append(f"recovery_min_apply_delay: {format_duration(facts.apply_delay)}")
        if facts.wal_receiver_timeout:
            self.details.append(
                f"wal_receiver_timeout: {format_duration(facts.wal_receiver_timeout)}"
            )
        for figure in (self.bytes, self.seconds):
            if figure.note:
                self.notes.append(figure.note)
        self.details.extend(self.notes)


# --------------------------------------------------------------------------- contexts


class LagMetricContext(adapters.MetricContext):
    """A threshold metric whose text says which bound it is ("at least 3.0s")."""

    def __init__(self, name: str, limits: Limits, unit: Unit, figure: str) -> None:
        super().__init__(name, limits, label="replay lag", unit=unit)
        self.figure = figure

    def evaluate(self, metric: nagiosplugin.Metric, resource: LagResource) -> nagiosplugin.Result:
        figure: Figure = getattr(resource, self.figure)
        # one metric per context: the label may carry this run's bound
        self.label = f"replay lag {figure.bound}" if figure.bound else "replay lag"
        return super().evaluate(metric, resource)


class VerdictContext(adapters.FlagContext):
    """A 0/1 metric whose state the resource judged from several facts (receiver,
    pause), whatever its value; the words are the verdict's."""

    def __init__(self, name: str, judged: str) -> None:
        super().__init__(name)
        self.judged = judged

    def evaluate(self, metric: nagiosplugin.Metric, resource: LagResource) -> nagiosplugin.Result:
        verdict: Verdict | None = getattr(resource, self.judged)
        if verdict is None or verdict.status is Status.OK:
            return nagiosplugin.Result(nagiosplugin.Ok, None, metric)
        return nagiosplugin.Result(adapters.state_of(verdict.status), verdict.text, metric)


class ReceiverAgeContext(adapters.MetricContext):
    """Unless told otherwise: warning past wal_receiver_timeout, critical past twice it."""

    def __init__(self, limits: Limits) -> None:
        super().__init__(
            "receiver_message_age", limits, label="last message from upstream", unit=Unit.SECONDS
        )
        self.derive = limits == Limits()

    def evaluate(self, metric: nagiosplugin.Metric, resource: LagResource) -> nagiosplugin.Result:
        timeout = resource.facts.wal_receiver_timeout if resource.facts else 0.0
        if self.derive and timeout > 0:
            self.warning = nagiosplugin.Range(f"{timeout:g}")
            self.critical = nagiosplugin.Range(f"{2 * timeout:g}")
        return super().evaluate(metric, resource)


class LagSummary(adapters.Summary):
    resource: LagResource

    def ok(self, results: nagiosplugin.Results) -> str:
        probe = self.resource
        facts = probe.facts
        assert facts is not None
        parts = []
        if probe.bytes.value is not None:
            parts.append(format_bytes(probe.bytes.value))
        if probe.seconds.value is not None:
            bound = f"{probe.seconds.bound} " if probe.seconds.bound else ""
            parts.append(bound + format_duration(probe.seconds.value))
        texts = []
        if parts:
            text = "replay lag " + ", ".join(parts)
            if facts.apply_delay > 0:
                text += f" beyond the apply delay of {format_duration(facts.apply_delay)}"
            if probe.reference and probe.reference.lsn:
                text += f" behind {probe.reference.source}"
            texts.append(text)
        if facts.streaming:
            texts.append(f"streaming from {facts.sender}")
        elif facts.log_shipping:
            texts.append("log-shipping standby (restore_command)")
        return ", ".join([*texts, *probe.notes])

    def problem(self, results: nagiosplugin.Results) -> str:
        return _with_notes(super().problem(results), self.resource.notes)


def _with_notes(text: str, notes: list[str]) -> str:
    return ", ".join([text, *notes])


# --------------------------------------------------------------------------- command


def _grace(ctx: click.Context, param: click.Parameter, value: str) -> float:
    try:
        quantity = parse_quantity(value)
    except UnitError as exc:
        raise click.BadParameter(str(exc)) from None
    if quantity.unit not in (Unit.SECONDS, Unit.NUMBER) or quantity.value < 0:
        raise click.BadParameter(f"{value!r} must be a duration such as 30s or 2min")
    return quantity.value


def _consul_settings(address: str | None) -> ConsulSettings | CheckFailed:
    from checks.consul import ConsulError, ConsulSettings

    try:
        return ConsulSettings.from_env(address=address)
    except ConsulError as exc:
        return unknown(f"Consul settings: {exc}")


@postgres_command("lag")
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
@click.option(
    "--receiver-grace",
    default=f"{DEFAULT_RECEIVER_GRACE:g}s",
    show_default=True,
    metavar="DURATION",
    callback=_grace,
    help="How long a WAL receiver may be down, counted from the last WAL received, "
    "while the replica is not behind: WARNING until then, CRITICAL after.",
)
@click.option(
    "--primary",
    metavar="CONNINFO",
    help="Compare with this primary: a conninfo, URI or service name (passwords from "
    "~/.pgpass, PGPASSFILE or the service file, never the command line).",
)
@click.option(
    "--consul-service",
    metavar="NAME",
    help="Compare with the WAL position the leader of this Consul service publishes "
    "(Meta pg_wal_lsn), asked from the local agent. Off unless given.",
)
@click.option("--leader-tag", default="leader", show_default=True, help="The leader's tag.")
@click.option(
    "--consul-addr",
    metavar="ADDR",
    help="Agent HTTP address: host:port, http(s)://host:port or unix:///path "
    "(default: CONSUL_HTTP_ADDR, then 127.0.0.1:8500). Token: CONSUL_HTTP_TOKEN(_FILE).",
)
@role_mismatch_option("primary")
def command(
    settings: ConnectionSettings,
    verbose: int,
    warning: tuple[Threshold, ...],
    critical: tuple[Threshold, ...],
    receiver_age_warning: Threshold | None,
    receiver_age_critical: Threshold | None,
    receiver_grace: float,
    primary: str | None,
    consul_service: str | None,
    leader_tag: str,
    consul_addr: str | None,
    role_mismatch: Status,
) -> output.Report:
    """Replica lag: WAL not yet replayed, in bytes and seconds; WAL receiver state.

    Bytes count against the furthest position known: received WAL, and with --primary or
    --consul-service the primary's. Seconds are how long the waiting WAL has waited, left
    out when the replica cannot know. A receiver down is WARNING within --receiver-grace,
    CRITICAL after or when behind. Replay paused is WARNING, CRITICAL when paused for
    insufficient parameter settings. Defaults: warning above 64MB or 60s, critical above
    1GB or 300s.
    """
    limits = assign(
        warning,
        critical,
        targets={Unit.BYTES: "replay_lag_bytes", Unit.SECONDS: "replay_lag_seconds"},
        defaults=DEFAULTS,
    )
    receiver_limits = Limits.given(receiver_age_warning, receiver_age_critical)
    consul = (
        (consul_service, leader_tag, _consul_settings(consul_addr))
        if consul_service and not primary
        else None
    )

    resource = LagResource(
        settings, role_mismatch, limits=limits, grace=receiver_grace, primary=primary, consul=consul
    )
    return run(
        NAME,
        resource,
        LagMetricContext("replay_lag_bytes", limits["replay_lag_bytes"], Unit.BYTES, "bytes"),
        LagMetricContext(
            "replay_lag_seconds", limits["replay_lag_seconds"], Unit.SECONDS, "seconds"
        ),
        VerdictContext("replay_paused", "pause"),
        VerdictContext("receiver_streaming", "receiver"),
        ReceiverAgeContext(receiver_limits),
        adapters.FactContext("apply_delay"),
        adapters.FactContext("delayed_bytes"),
        adapters.FactContext("last_wal_age"),
        summary=LagSummary(resource),
        verbose=verbose,
        # worked out now, not by the watchdog's thread
        target=settings.target(),
    )
