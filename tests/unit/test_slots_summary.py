"""slots: which slot a metric belongs to, worst-first order, and the counted summary."""

from __future__ import annotations

import nagiosplugin

from checks.postgres.commands.slots import SlotsResource, SlotsSummary, wal_status_hint
from checks.postgres.connection import ConnectionSettings
from checks.postgres.readers.slots import SlotFacts, slot_of_row


def slot(name: str, **changes) -> SlotFacts:
    row = {
        "slot_name": name,
        "slot_type": "physical",
        "temporary": False,
        "active": False,
        "active_pid": None,
        "reserves_wal": True,
        "retained_bytes": 1024,
        "wal_status": "reserved",
        "safe_wal_size": None,
        "inactive_seconds": None,
        "invalidation_reason": None,
    }
    row.update(changes)
    return slot_of_row(row)


def test_never_used_slot_has_no_safe_wal_size() -> None:
    never = slot(
        "never",
        reserves_wal=False,
        retained_bytes=None,
        wal_status=None,
        safe_wal_size=-306_500_000,
    )
    assert never.safe_wal_size is None
    assert never.never_reserved and not never.lost
    assert slot("used", safe_wal_size=5).safe_wal_size == 5


def test_lost_hint_depends_on_the_slot_type() -> None:
    assert wal_status_hint(slot("p", wal_status="lost")).endswith("needs a new base backup")
    assert wal_status_hint(slot("l", slot_type="logical", wal_status="lost")).endswith(
        "drop and recreate the slot and resync its subscriber"
    )


def test_worst_first() -> None:
    slots = [
        slot("active", active=True, retained_bytes=10**9),
        slot("small", retained_bytes=10),
        slot("big", retained_bytes=10**6),
        slot("never", reserves_wal=False, retained_bytes=None, wal_status=None),
        slot("lost", reserves_wal=False, retained_bytes=None, wal_status="lost"),
        slot("unreserved", wal_status="unreserved"),
    ]
    assert [s.slot_name for s in sorted(slots, key=lambda s: s.badness)] == [
        "lost",
        "unreserved",
        "big",
        "small",
        # not used yet: holds nothing, ranks with the healthy ones
        "active",
        "never",
    ]


def _probe_with(slots: list[SlotFacts]) -> tuple[SlotsResource, list[nagiosplugin.Metric]]:
    probe = SlotsResource(ConnectionSettings.__new__(ConnectionSettings), ())
    probe.slots = slots
    metrics = []
    for index, one in enumerate(slots):
        for metric in probe._per_slot(f"s{index}", one):
            probe.owner[metric.name] = one
            metrics.append(metric)
    return probe, metrics


def test_owner_is_looked_up_by_full_metric_name() -> None:
    live, old = slot("replica1", active=True), slot("replica1_old")
    probe, _ = _probe_with([])
    for one, label in ((live, "replica1"), (old, "replica1_old")):
        for metric in probe._per_slot(label, one):
            probe.owner[metric.name] = one
    assert probe.slot_of(nagiosplugin.Metric("replica1_old_active", 0)) is old
    assert probe.slot_of(nagiosplugin.Metric("replica1_active", 1)) is live


def test_many_inactive_slots_are_counted() -> None:
    slots = [slot(f"standby_{n:02}", retained_bytes=n * 1024) for n in range(35)]
    slots += [slot("up1", active=True), slot("up2", active=True)]
    probe, metrics = _probe_with(slots)
    results = nagiosplugin.Results()
    for metric in metrics:
        inactive = metric.context == "slot_active" and not metric.value
        results.add(
            nagiosplugin.Result(nagiosplugin.Warn if inactive else nagiosplugin.Ok, None, metric)
        )
    text = SlotsSummary(probe).problem(results)
    assert text == "35 of 37 slots inactive, most WAL held by standby_34 (34.0 KiB)"


def test_not_used_yet_invalidated_and_synced_slots_are_not_judged_inactive() -> None:
    never = slot("never", reserves_wal=False, retained_bytes=None, wal_status=None)
    assert not never.judged_inactive
    invalid = slot("conflicted", slot_type="logical", invalidation_reason="rows_removed")
    assert invalid.invalidated and not invalid.judged_inactive and not invalid.never_reserved
    assert not slot("failover", slot_type="logical", synced=True).judged_inactive
    assert slot("left", inactive_seconds=60.0).judged_inactive
