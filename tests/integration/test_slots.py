"""slots: an inactive slot left behind, a named slot, and a slot that loses its WAL."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from harness.postgres import PgCluster, PgServer, wait_for
from tests.plugin_run import check_postgresql

SLOT = "test_inactive_slot"


@pytest.fixture
def inactive_slot(pg_primary: PgServer) -> Iterator[str]:
    """A physical slot that reserves WAL and that nobody uses; dropped afterwards, since a
    retained slot on the shared cluster fills the disk for the tests after this one."""
    pg_primary.execute("SELECT pg_create_physical_replication_slot(%s, true)", [SLOT])
    try:
        yield SLOT
    finally:
        pg_primary.execute("SELECT pg_drop_replication_slot(%s)", [SLOT])


def test_replica_slot_alone_is_ok(pg_cluster: PgCluster) -> None:
    pg_cluster.wait_streaming()
    run = check_postgresql("slots", "--slot", "replica1", env=pg_cluster.primary.env())
    assert run.status == "OK", run.stdout
    assert run.summary.startswith("1 slot active, most WAL retained by replica1: ")
    perf = run.perfdata
    assert set(perf) == {
        "slots",
        "inactive_slots",
        "replica1_retained_bytes",
        "replica1_active",
    }
    assert perf["replica1_active"].value == 1
    assert perf["replica1_retained_bytes"].uom == "B"
    assert (perf["replica1_retained_bytes"].warn, perf["replica1_retained_bytes"].crit) == (
        "1073741824",
        "8589934592",
    )
    assert run.long_output[0].startswith("slot replica1 (physical): active (pid ")


def test_inactive_slot_is_a_warning_naming_it(pg_cluster: PgCluster, inactive_slot: str) -> None:
    run = check_postgresql("slots", env=pg_cluster.primary.env())
    assert run.status == "WARNING", run.stdout
    assert run.summary.startswith(f"slot {inactive_slot} inactive")
    assert ", retaining " in run.summary
    perf = run.perfdata
    assert perf["slots"].value == 2 and perf["inactive_slots"].value == 1
    assert perf[f"{inactive_slot}_active"].value == 0
    # reserved at creation: at least the current segment's start
    assert perf[f"{inactive_slot}_retained_bytes"].value > 0
    assert float(perf[f"{inactive_slot}_retained_bytes"].value).is_integer()
    assert any(
        line.startswith(f"slot {inactive_slot} (physical): inactive") for line in run.long_output
    )


def test_retained_bytes_threshold_names_the_slot(pg_cluster: PgCluster, inactive_slot: str) -> None:
    primary = pg_cluster.primary
    primary.execute("SELECT pg_switch_wal()")
    run = check_postgresql("slots", "-c", "1kB", "--slot", inactive_slot, env=primary.env())
    assert run.status == "CRITICAL"
    assert run.summary.startswith(f"slot {inactive_slot} retains ")
    assert run.summary.endswith("(above 1.0 KiB)")
    assert run.perfdata[f"{inactive_slot}_retained_bytes"].crit == "1024"


def test_inactive_critical_needs_inactive_since(pg_cluster: PgCluster, inactive_slot: str) -> None:
    primary = pg_cluster.primary
    wait_for(
        lambda: (
            primary.major < 17
            or primary.scalar(
                "SELECT now() - inactive_since > interval '1 s' FROM pg_replication_slots "
                "WHERE slot_name = %s",
                [inactive_slot],
            )
        ),
        what="the slot to be inactive for a second",
        timeout=20,
    )
    run = check_postgresql(
        "slots", "--slot", inactive_slot, "--inactive-critical", "500ms", env=primary.env()
    )
    if primary.major >= 17:
        assert run.status == "CRITICAL", run.stdout
        assert run.summary.startswith(f"slot {inactive_slot} inactive for ")
        assert run.summary.endswith("(over 500ms)")
    else:
        # before 17 the server does not say since when: inactive stays a warning
        assert run.status == "WARNING", run.stdout


def test_missing_named_slot_is_critical(pg_primary: PgServer) -> None:
    run = check_postgresql("slots", "--slot", "nosuch", env=pg_primary.env())
    assert run.first_line == "PG_SLOTS CRITICAL - no replication slot named nosuch"


def test_replica_without_slots_is_ok(pg_replica: PgServer) -> None:
    run = check_postgresql("slots", env=pg_replica.env())
    assert run.first_line == "PG_SLOTS OK - no replication slots | inactive_slots=0;;;0 slots=0;;;0"


def test_slot_past_max_slot_wal_keep_size_goes_unreserved_then_lost(make_pg_cluster) -> None:
    with make_pg_cluster(replicas=0, max_slot_wal_keep_size="1MB") as cluster:
        primary = cluster.primary
        primary.execute("SELECT pg_create_physical_replication_slot('doomed', true)")
        primary.execute("CREATE TABLE wal_filler (x int, pad text)")

        def switch_segments(count: int) -> None:
            for _ in range(count):
                primary.execute(
                    "INSERT INTO wal_filler SELECT g, 'x' FROM generate_series(1, 100) g"
                )
                primary.execute("SELECT pg_switch_wal()")

        def wal_status() -> str:
            return primary.scalar(
                "SELECT wal_status FROM pg_replication_slots WHERE slot_name = 'doomed'"
            )

        # past the keep size, but the segments are still there until a checkpoint
        switch_segments(3)
        primary.wait_until(lambda: wal_status() == "unreserved", "wal_status unreserved", 30)
        run = check_postgresql("slots", env=primary.env())
        assert run.status == "WARNING", run.stdout
        assert "slot doomed past max_slot_wal_keep_size (wal_status unreserved)" in run.summary
        assert "doomed_safe_wal_size" in run.perfdata

        def lost() -> bool:
            switch_segments(1)
            primary.execute("CHECKPOINT")
            return wal_status() == "lost"

        primary.wait_until(lost, "wal_status lost", 30)
        run = check_postgresql("slots", env=primary.env())
        assert run.status == "CRITICAL", run.stdout
        assert run.summary == (
            "slot doomed lost its WAL (wal_status lost): its standby needs a new base backup"
        )
        assert run.perfdata["doomed_retained_bytes"].value == 0
