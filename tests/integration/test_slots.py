"""slots: an inactive slot left behind, a named slot, slots that lose their WAL, a slot
that reserves none yet, a slot whose name extends another's, and dozens of slots."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest

from harness.postgres import PgCluster, PgServer, wait_for
from tests.plugin_run import check_postgresql

# Scenario runs on every supported major, not only the full-suite ones.
pytestmark = pytest.mark.pg_matrix

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
        "max_retained_bytes",
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


@pytest.mark.pg(">= 17")
def test_inactive_critical_needs_inactive_since(pg_cluster: PgCluster, inactive_slot: str) -> None:
    primary = pg_cluster.primary
    wait_for(
        lambda: primary.scalar(
            "SELECT now() - inactive_since > interval '1 s' FROM pg_replication_slots "
            "WHERE slot_name = %s",
            [inactive_slot],
        ),
        what="the slot to be inactive for a second",
        timeout=20,
    )
    run = check_postgresql(
        "slots", "--slot", inactive_slot, "--inactive-critical", "500ms", env=primary.env()
    )
    assert run.status == "CRITICAL", run.stdout
    assert run.summary.startswith(f"slot {inactive_slot} inactive for ")
    assert run.summary.endswith("(over 500ms)")


@pytest.mark.pg("< 17")
def test_inactive_stays_a_warning_without_inactive_since(
    pg_cluster: PgCluster, inactive_slot: str
) -> None:
    # before 17 the server does not say since when a slot is inactive
    run = check_postgresql(
        "slots",
        "--slot",
        inactive_slot,
        "--inactive-critical",
        "500ms",
        env=pg_cluster.primary.env(),
    )
    assert run.status == "WARNING", run.stdout


def test_missing_named_slot_is_critical(pg_primary: PgServer) -> None:
    run = check_postgresql("slots", "--slot", "nosuch", env=pg_primary.env())
    assert run.first_line == "PG_SLOTS CRITICAL - no replication slot named nosuch"


def test_replica_without_slots_is_ok(pg_replica: PgServer) -> None:
    run = check_postgresql("slots", env=pg_replica.env())
    assert run.first_line == (
        "PG_SLOTS OK - no replication slots "
        "| slots=0;;;0 inactive_slots=0;;;0 max_retained_bytes=0B;;;0"
    )


def test_slot_whose_name_extends_an_active_one_is_the_one_named(pg_cluster: PgCluster) -> None:
    """replica1_old's metrics start with 'replica1_': the words must still name it, never
    the live replica1 (a DBA would drop the wrong slot)."""
    primary = pg_cluster.primary
    pg_cluster.wait_streaming()
    primary.execute("SELECT pg_create_physical_replication_slot('replica1_old', true)")
    try:
        # WAL written after the slot reserved its start: on an idle server a switch alone
        # may not move the insert position at all
        primary.execute("CREATE TABLE IF NOT EXISTS slot_probe (x int)")
        primary.execute("INSERT INTO slot_probe VALUES (1)")
        primary.execute("SELECT pg_switch_wal()")
        wait_for(
            lambda: primary.scalar(
                "SELECT pg_wal_lsn_diff(pg_current_wal_lsn(), restart_lsn) > 1024"
                " FROM pg_replication_slots WHERE slot_name = 'replica1_old'"
            ),
            what="replica1_old to retain WAL",
            timeout=30,
        )
        run = check_postgresql("slots", "-c", "1kB", env=primary.env())
        warn = check_postgresql("slots", env=primary.env())
    finally:
        primary.execute("SELECT pg_drop_replication_slot('replica1_old')")
    assert run.status == "CRITICAL", run.stdout
    assert run.summary.startswith("slot replica1_old retains "), run.stdout
    assert "slot replica1 " not in run.summary
    assert warn.status == "WARNING", warn.stdout
    # 17+ says for how long
    assert re.match(r"slot replica1_old inactive( for \S+)?, retaining ", warn.summary), warn.stdout
    assert "slot replica1 " not in warn.summary
    assert warn.perfdata["replica1_old_active"].value == 0
    assert warn.perfdata["replica1_active"].value == 1
    # worst first: the inactive slot leads the long output
    assert re.match(
        r"slot replica1_old \(physical\): inactive( for \S+)?, retains ", warn.long_output[0]
    )
    assert warn.long_output[1].startswith("slot replica1 (physical): active (pid ")


def test_slot_past_max_slot_wal_keep_size_goes_unreserved_then_lost(make_pg_cluster) -> None:
    # no checkpoint but the test's own: one between "unreserved" and the check would make
    # the slots lost before the check sees them unreserved (seen on a loaded host)
    with make_pg_cluster(
        replicas=0,
        max_slot_wal_keep_size="1MB",
        wal_level="logical",
        max_wal_size="1GB",
        checkpoint_timeout="1h",
    ) as cluster:
        primary = cluster.primary
        primary.execute("SELECT pg_create_physical_replication_slot('doomed', true)")
        primary.execute("SELECT pg_create_logical_replication_slot('doomed_logical', 'pgoutput')")
        # created without reserving WAL: restart_lsn and wal_status NULL until first used
        primary.execute("SELECT pg_create_physical_replication_slot('never_used')")
        primary.execute("CREATE TABLE wal_filler (x int, pad text)")

        def switch_segments(count: int) -> None:
            for _ in range(count):
                primary.execute(
                    "INSERT INTO wal_filler SELECT g, 'x' FROM generate_series(1, 100) g"
                )
                primary.execute("SELECT pg_switch_wal()")

        def wal_status(slot: str = "doomed") -> str:
            return primary.scalar(
                "SELECT wal_status FROM pg_replication_slots WHERE slot_name = %s", [slot]
            )

        # the server reports a negative safe_wal_size for it: neither judged nor shown;
        # it holds nothing and waits for its standby: not used yet, not "inactive"
        run = check_postgresql(
            "slots", "--slot", "never_used", "--safe-wal-critical", "50MB:", env=primary.env()
        )
        assert run.status == "OK", run.stdout
        assert run.summary == "1 slot (1 not used yet), none reserves WAL yet"
        assert run.perfdata["inactive_slots"].value == 0
        assert "never_used_safe_wal_size" not in run.perfdata
        assert run.long_output == ["slot never_used (physical): not used yet, reserves no WAL yet"]
        assert "0 B" not in run.stdout and "-" not in run.stdout.split(" - ", 1)[1]

        # past the keep size, but the segments are still there until a checkpoint
        switch_segments(3)
        primary.wait_until(
            lambda: wal_status() == wal_status("doomed_logical") == "unreserved",
            "wal_status unreserved",
            30,
        )
        run = check_postgresql("slots", env=primary.env())
        assert run.status == "WARNING", run.stdout
        # several slots: counted, the worse problem first, then the one holding most WAL
        assert run.summary.startswith(
            "2 of 3 slots past max_slot_wal_keep_size (wal_status unreserved), "
            "2 of 3 slots inactive, most WAL held by "
        ), run.summary
        run = check_postgresql("slots", "--slot", "doomed", env=primary.env())
        assert "slot doomed past max_slot_wal_keep_size (wal_status unreserved)" in run.summary
        assert "doomed_safe_wal_size" in run.perfdata
        assert "never_used_safe_wal_size" not in run.perfdata

        def lost() -> bool:
            switch_segments(1)
            primary.execute("CHECKPOINT")
            return wal_status() == "lost" and wal_status("doomed_logical") == "lost"

        primary.wait_until(lost, "wal_status lost", 30)
        run = check_postgresql("slots", "--slot", "doomed", env=primary.env())
        assert run.status == "CRITICAL", run.stdout
        assert run.summary == (
            "slot doomed lost its WAL (wal_status lost): its standby needs a new base backup"
        )
        assert run.perfdata["doomed_retained_bytes"].value == 0
        assert "retains" not in run.stdout
        run = check_postgresql("slots", "--slot", "doomed_logical", env=primary.env())
        assert run.status == "CRITICAL", run.stdout
        assert run.summary == (
            "slot doomed_logical lost its WAL (wal_status lost): drop and recreate the slot "
            "and resync its subscriber"
        )
        # both lost: counted on the first line, each named in the long output, lost first
        run = check_postgresql("slots", env=primary.env())
        assert run.status == "CRITICAL", run.stdout
        assert run.summary == "2 of 3 slots lost their WAL (wal_status lost)"
        assert [line.split(" (")[0] for line in run.long_output] == [
            "slot doomed",
            "slot doomed_logical",
            "slot never_used",
        ]


def test_dozens_of_slots_are_counted_worst_first(make_pg_cluster) -> None:
    """37 slots with long names: a short summary, the slot holding most WAL first in the
    long output and in perfdata, the aggregates always there."""
    with make_pg_cluster(replicas=0, max_replication_slots=40) as cluster:
        primary = cluster.primary
        # the oldest sorts last by name: worst-first must not be alphabetical
        primary.execute("SELECT pg_create_physical_replication_slot('zz_oldest', true)")
        primary.execute("CREATE TABLE wal_filler (x int, pad text)")
        primary.execute("INSERT INTO wal_filler SELECT g, 'x' FROM generate_series(1, 20000) g")
        primary.execute("SELECT pg_switch_wal()")
        primary.execute("CHECKPOINT")  # a new slot reserves WAL from the last redo point
        for number in range(36):
            primary.execute(
                "SELECT pg_create_physical_replication_slot(%s, %s)",
                [f"standby_with_a_rather_long_slot_name_{number:02}", number % 2 == 0],
            )
        run = check_postgresql("slots", env=primary.env())
    assert run.status == "WARNING", run.stdout
    assert re.fullmatch(
        r"19 of 37 slots inactive, most WAL held by zz_oldest \(\d+\.\d (KiB|MiB)\)", run.summary
    ), run.summary
    slot_lines = [line for line in run.long_output if line.startswith("slot ")]
    assert re.match(r"slot zz_oldest \(physical\): inactive( for \S+)?, retains ", slot_lines[0])
    # the slots that reserve no WAL come after those that hold some
    holds = ["reserves no WAL yet" not in line for line in slot_lines]
    assert not any("inactive" in line for line in slot_lines if "reserves no WAL" in line)
    assert holds == sorted(holds, reverse=True)
    # perfdata too long for the 4 KB output: the healthiest slots' go, never the aggregates
    assert run.long_output[0] == "(perfdata truncated to fit the 4 KB output limit)"
    perf = run.perfdata
    # the 18 created without reserving WAL are not used yet, not inactive
    assert (perf["slots"].value, perf["inactive_slots"].value) == (37, 19)
    assert perf["max_retained_bytes"].value == perf["zz_oldest_retained_bytes"].value > 0
    assert perf["max_retained_bytes"].uom == "B"
    assert len(run.stdout.encode()) < 4000


@pytest.mark.pg(">= 17")  # inactive_since
def test_inactivity_after_a_restart_is_a_lower_bound(make_pg_cluster) -> None:
    """PostgreSQL 17+ sets inactive_since of every slot to the server's start: a slot left
    for days reads "inactive for 2s" after a restart. The check says it is at least that."""
    with make_pg_cluster(replicas=0) as cluster:
        primary = cluster.primary
        primary.execute("SELECT pg_create_physical_replication_slot('left_behind', true)")
        fresh = check_postgresql("slots", env=primary.env())
        assert re.fullmatch(r"slot left_behind inactive for \S+, retaining .*", fresh.summary), (
            fresh.stdout
        )
        primary.restart()
        wait_for(
            lambda: primary.scalar(
                "SELECT now() - inactive_since > interval '1 s' FROM pg_replication_slots "
                "WHERE slot_name = 'left_behind'"
            ),
            what="the slot to be inactive for a second since the restart",
            timeout=20,
        )
        run = check_postgresql("slots", "--inactive-critical", "500ms", env=primary.env())
        # at least 1s, over 500ms: CRITICAL, and says it knows only a lower bound
        assert run.status == "CRITICAL", run.stdout
        assert re.fullmatch(
            r"slot left_behind inactive for at least \d+\.\ds \(since the server started\), "
            r"retaining \S+ \S+ \(over 500ms\)",
            run.summary,
        ), run.summary
        assert run.long_output[0].startswith("slot left_behind (physical): inactive for at least ")
        # a slot made after the start has its own inactive_since
        primary.execute("SELECT pg_create_physical_replication_slot('newer', true)")
        both = check_postgresql("slots", env=primary.env())
        newer = [line for line in both.long_output if line.startswith("slot newer ")]
        assert newer and "since the server started" not in newer[0], both.stdout
