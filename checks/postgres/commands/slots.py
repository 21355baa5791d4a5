"""``slots``: are the replication slots safe, or is one filling the disk with WAL.

An inactive slot keeps every WAL segment from its ``restart_lsn`` on until the primary's
disk is full; with ``max_slot_wal_keep_size`` (13+) it is instead cut loose ('unreserved',
then 'lost'): a physical slot's standby needs a new base backup, a logical slot must be
dropped, recreated and its subscriber resynced. Both are worth waking up for.
"""

from __future__ import annotations

from collections.abc import Iterator

import click
import nagiosplugin

from checks import adapters, output
from checks.postgres.check import PostgresResource, postgres_command, run
from checks.postgres.connection import ConnectionSettings
from checks.postgres.readers.slots import SlotFacts, read_slots
from checks.status import Status, critical, worst
from checks.thresholds import (
    Limits,
    Threshold,
    ThresholdType,
    assign,
    range_options,
    threshold_options,
)
from checks.units import Unit, format_bytes, format_duration, format_value

NAME = "PG_SLOTS"
DEFAULTS = {
    "slot_retained": Limits(nagiosplugin.Range("1073741824"), nagiosplugin.Range("8589934592"))
}
# wal_status -> (state, what it means); "lost" depends on the slot type (lost_hint)
WAL_STATUS_HINTS = {
    "unreserved": (
        Status.WARNING,
        "past max_slot_wal_keep_size (wal_status unreserved): its WAL goes at the next checkpoint",
    ),
    "lost": (Status.CRITICAL, ""),
}
LOST_HINTS = {
    "physical": "lost its WAL (wal_status lost): its standby needs a new base backup",
    "logical": (
        "lost its WAL (wal_status lost): drop and recreate the slot and resync its subscriber"
    ),
}


def wal_status_hint(slot: SlotFacts) -> str:
    if slot.wal_status == "lost":
        return LOST_HINTS.get(slot.slot_type, LOST_HINTS["physical"])
    return WAL_STATUS_HINTS[slot.wal_status or ""][1]


class SlotsResource(PostgresResource):
    def __init__(self, settings: ConnectionSettings, selected: tuple[str, ...]) -> None:
        super().__init__(settings)
        self.selected = selected
        self.slots: list[SlotFacts] = []
        # full metric name -> the slot it was yielded for; never guessed from a prefix
        # (slot replica1 is a prefix of replica1_old's metrics)
        self.owner: dict[str, SlotFacts] = {}

    def probe(self) -> Iterator[nagiosplugin.Metric]:
        with self.connection() as conn:
            slots = read_slots(conn)
        if self.selected:
            missing = sorted(set(self.selected) - {s.slot_name for s in slots})
            if missing:
                raise critical(f"no replication slot named {', '.join(missing)}")
            slots = [s for s in slots if s.slot_name in self.selected]
        # worst first: lost, unreserved, inactive by WAL retained, then the rest
        slots = sorted(slots, key=lambda s: s.badness)
        self.slots = slots
        # aggregates first, then slots worst first: adapters.Check keeps this order, so a
        # perfdata line cut at 4 KB loses the healthiest slots, never the totals
        yield from self._aggregates(slots)
        taken: set[str] = set()
        for slot in slots:
            label = output.perfdata_label(slot.slot_name, taken, fallback="slot")
            self.details.append(_describe(slot))
            for metric in self._per_slot(label, slot):
                self.owner[metric.name] = slot
                yield metric

    @staticmethod
    def _aggregates(slots: list[SlotFacts]) -> Iterator[nagiosplugin.Metric]:
        yield nagiosplugin.Metric("slots", len(slots), min=0, context="slot_fact")
        yield nagiosplugin.Metric(
            "inactive_slots", sum(s.judged_inactive for s in slots), min=0, context="slot_fact"
        )
        yield nagiosplugin.Metric(
            "max_retained_bytes",
            max((s.retained_bytes or 0 for s in slots), default=0),
            "B",
            min=0,
            context="slot_fact",
        )

    @staticmethod
    def _per_slot(label: str, slot: SlotFacts) -> Iterator[nagiosplugin.Metric]:
        # perfdata 0 for a slot that holds no WAL (never used, or lost); the text says why
        yield nagiosplugin.Metric(
            f"{label}_retained_bytes", slot.retained_bytes or 0, "B", min=0, context="slot_retained"
        )
        yield nagiosplugin.Metric(
            f"{label}_active", int(slot.active), min=0, max=1, context="slot_active"
        )
        if slot.wal_status is not None:
            yield nagiosplugin.Metric(
                f"{label}_wal_status", slot.wal_status, context="slot_wal_status"
            )
        if slot.invalidation_reason and not slot.lost:
            yield nagiosplugin.Metric(
                f"{label}_invalidated", slot.invalidation_reason, context="slot_invalidated"
            )
        if slot.safe_wal_size is not None:
            yield nagiosplugin.Metric(
                f"{label}_safe_wal_size",
                max(0, slot.safe_wal_size),
                "B",
                context="slot_safe_wal_size",
            )

    def slot_of(self, metric: nagiosplugin.Metric) -> SlotFacts:
        return self.owner[metric.name]


def inactive_for(slot: SlotFacts) -> str:
    """``inactive for 5min``; after a restart (17+) only a lower bound is known."""
    if slot.inactive_seconds is None:
        return "inactive"
    if slot.inactive_at_start:
        # PostgreSQL 17+ resets inactive_since to the server's start
        return (
            f"inactive for at least {format_duration(slot.inactive_seconds)} "
            "(since the server started)"
        )
    return f"inactive for {format_duration(slot.inactive_seconds)}"


def _describe(slot: SlotFacts) -> str:
    kind = f"{'temporary ' if slot.temporary else ''}{slot.slot_type}"
    if slot.active:
        state = f"active (pid {slot.active_pid})"
    elif slot.never_reserved:
        state = "not used yet"
    elif slot.synced:
        state = "synced from the primary (failover slot)"
    else:
        state = inactive_for(slot)
    parts = [f"slot {slot.slot_name} ({kind}): {state}"]
    if slot.retained_bytes is not None:
        parts.append(f"retains {format_bytes(slot.retained_bytes)}")
    elif slot.never_reserved:
        parts.append("reserves no WAL yet")
    if slot.wal_status is not None:
        parts.append(f"wal_status {slot.wal_status}")
    if slot.safe_wal_size is not None:
        parts.append(f"safe_wal_size {format_bytes(slot.safe_wal_size)}")
    if slot.invalidation_reason:
        parts.append(f"invalidated: {slot.invalidation_reason}")
    return ", ".join(parts)


class SlotMetricContext(adapters.MetricContext):
    """One context for every slot's metric of a kind; the text names the slot."""

    def describe(self, metric: nagiosplugin.Metric) -> str:
        slot = metric.resource.slot_of(metric)
        return f"slot {slot.slot_name} {self.label} {format_value(metric.value, self.unit)}"


class InactiveContext(adapters.FlagContext):
    """Inactive is WARNING; CRITICAL past --inactive-critical where 17+ says for how long."""

    def __init__(self, name: str, critical_after: float | None) -> None:
        super().__init__(name, bad_value=False)
        self.critical_after = critical_after

    def verdict(self, metric: nagiosplugin.Metric, resource: SlotsResource) -> tuple[Status, str]:
        slot = resource.slot_of(metric)
        if not slot.judged_inactive:
            # a slot not used yet holds nothing; an invalidated one is judged as such
            return Status.OK, ""
        text = f"slot {slot.slot_name} {inactive_for(slot)}"
        if slot.retained_bytes:
            text += f", retaining {format_bytes(slot.retained_bytes)}"
        if (
            self.critical_after is not None
            and slot.inactive_seconds is not None
            and slot.inactive_seconds > self.critical_after
        ):
            return Status.CRITICAL, f"{text} (over {format_duration(self.critical_after)})"
        return Status.WARNING, text


class WalStatusContext(nagiosplugin.Context):
    """13+: 'unreserved' WARNING, 'lost' CRITICAL; a word, so no perfdata."""

    def evaluate(self, metric: nagiosplugin.Metric, resource: SlotsResource) -> nagiosplugin.Result:
        if metric.value not in WAL_STATUS_HINTS:
            return nagiosplugin.Result(nagiosplugin.Ok, None, metric)
        status = WAL_STATUS_HINTS[metric.value][0]
        slot = resource.slot_of(metric)
        text = f"slot {slot.slot_name} {wal_status_hint(slot)}"
        return nagiosplugin.Result(adapters.state_of(status), text, metric)


INVALIDATED_HINTS = {
    "physical": "its standby needs a new base backup",
    "logical": "drop and recreate the slot and resync its subscriber",
}


class InvalidatedContext(nagiosplugin.Context):
    """17+: a slot invalidated for a reason other than lost WAL (rows_removed,
    wal_level_insufficient, idle_timeout...) can never be used again: CRITICAL."""

    def evaluate(self, metric: nagiosplugin.Metric, resource: SlotsResource) -> nagiosplugin.Result:
        slot = resource.slot_of(metric)
        hint = INVALIDATED_HINTS.get(slot.slot_type, INVALIDATED_HINTS["physical"])
        return nagiosplugin.Result(
            nagiosplugin.Critical,
            f"slot {slot.slot_name} invalidated ({metric.value}): {hint}",
            metric,
        )


class SlotsSummary(adapters.Summary):
    resource: SlotsResource

    def ok(self, results: nagiosplugin.Results) -> str:
        slots = self.resource.slots
        if not slots:
            return "no replication slots"
        count = f"{len(slots)} slot{'s' if len(slots) > 1 else ''}"
        active = sum(s.active for s in slots)
        if active == len(slots):
            count += " active"
        else:
            kinds = [
                (active, "active"),
                (sum(s.never_reserved for s in slots), "not used yet"),
                (sum(bool(s.synced and not s.active) for s in slots), "synced from the primary"),
            ]
            count += f" ({', '.join(f'{n} {words}' for n, words in kinds if n)})"
        held = [s for s in slots if s.retained_bytes is not None]
        if not held:
            return f"{count}, none reserves WAL yet"
        most = max(held, key=lambda s: (s.retained_bytes or 0, s.slot_name))
        return (
            f"{count}, most WAL retained by {most.slot_name}: "
            f"{format_bytes(most.retained_bytes or 0)}"
        )

    def problem(self, results: nagiosplugin.Results) -> str:
        """One slot: its results in full. Several: counted per problem, so that the line
        stays short with dozens of slots; the long output lists them, worst first."""
        status = worst(adapters.status_of(r.state) for r in results)
        bad = [r for r in results if adapters.status_of(r.state) is status]
        owners = [self.resource.owner.get(adapters.named(r)) for r in bad]
        if None in owners or len({s.slot_name for s in owners if s}) <= 1:
            return super().problem(results)
        by_problem: dict[tuple[int, str], list[SlotFacts]] = {}
        for result, slot in zip(bad, owners, strict=True):
            assert slot is not None
            by_problem.setdefault(_problem_words(result), []).append(slot)
        total = len(self.resource.slots)
        parts = []
        for (_, words), slots in sorted(by_problem.items(), key=lambda item: item[0][0]):
            names = {s.slot_name for s in slots}
            if len(names) == 1:
                parts.append(f"slot {slots[0].slot_name} {words}")
            else:
                parts.append(f"{len(names)} of {total} slots {words}")
        holding = [s for s in owners if s and s.retained_bytes]
        if holding:
            # ties go to the one first in the long output
            most = min(holding, key=lambda s: (-(s.retained_bytes or 0), s.badness))
            parts.append(
                f"most WAL held by {most.slot_name} ({format_bytes(most.retained_bytes or 0)})"
            )
        return ", ".join(parts)


def _problem_words(result: nagiosplugin.Result) -> tuple[int, str]:
    """What is wrong with a slot, without its name (the same words for every slot), and
    its rank in the summary: lost, unreserved, WAL thresholds, then inactive."""
    metric = result.metric
    assert metric is not None  # a slot's result is about one of its metrics
    context = metric.context
    if context == "slot_wal_status" and metric.value == "lost":
        return 0, "lost their WAL (wal_status lost)"
    if context == "slot_invalidated":
        return 0, f"invalidated ({metric.value})"
    if context == "slot_wal_status":
        return 1, f"past max_slot_wal_keep_size (wal_status {metric.value})"
    if context == "slot_retained":
        return 2, f"retain WAL {result.hint}"
    if context == "slot_safe_wal_size":
        return 3, f"safe_wal_size {result.hint}"
    if context == "slot_active":
        return 4, "inactive"
    return 5, str(result)


@postgres_command("slots")
@threshold_options(
    plain_unit=Unit.BYTES,
    help_suffix="On the WAL each slot retains, in bytes (1GB).",
)
@click.option(
    "--slot",
    "selected",
    multiple=True,
    metavar="NAME",
    help="Check only this slot (repeatable); a missing one is CRITICAL.",
)
@click.option(
    "--inactive-critical",
    type=ThresholdType(unit=Unit.SECONDS),
    metavar="DURATION",
    help="An inactive slot is CRITICAL once inactive this long (PostgreSQL 17+, which "
    "records inactive_since); before that, and below it, inactive is WARNING.",
)
@range_options(
    "safe-wal",
    ThresholdType(unit=Unit.BYTES),
    "a slot's safe_wal_size, the WAL that may still be written before the slot is lost "
    "(13+ with max_slot_wal_keep_size); '1GB:' alerts below 1GB",
)
def command(
    settings: ConnectionSettings,
    verbose: int,
    warning: tuple[Threshold, ...],
    critical: tuple[Threshold, ...],
    selected: tuple[str, ...],
    inactive_critical: Threshold | None,
    safe_wal_warning: Threshold | None,
    safe_wal_critical: Threshold | None,
) -> output.Report:
    """Replication slots: WAL retained by each, inactive slots, wal_status, safe_wal_size.

    Inactive is WARNING (CRITICAL after --inactive-critical on 17+); a slot not used yet
    (reserving no WAL) is not inactive, and after a restart 17+ knows only a lower bound.
    wal_status 'unreserved' is WARNING, 'lost' and any other invalidation CRITICAL.
    Defaults for the WAL a slot retains: warning above 1GB, critical above 8GB. No slot at
    all is OK.
    """
    limits = assign(
        warning,
        critical,
        targets={Unit.BYTES: "slot_retained"},
        defaults=DEFAULTS,
        plain_unit=Unit.BYTES,
    )
    safe_limits = Limits.given(safe_wal_warning, safe_wal_critical)
    critical_after = inactive_critical.range.end if inactive_critical else None

    resource = SlotsResource(settings, selected)
    return run(
        NAME,
        resource,
        adapters.FactContext("slot_fact"),
        SlotMetricContext(
            "slot_retained", limits["slot_retained"], label="retains", unit=Unit.BYTES
        ),
        SlotMetricContext(
            "slot_safe_wal_size", safe_limits, label="safe_wal_size", unit=Unit.BYTES
        ),
        InactiveContext("slot_active", critical_after),
        WalStatusContext("slot_wal_status"),
        InvalidatedContext("slot_invalidated"),
        summary=SlotsSummary(resource),
        verbose=verbose,
    )
