"""lag: the replica's own view, idle primary, paused replay, and a receiver that is gone."""

from __future__ import annotations

import pytest

from harness.postgres import PgCluster, wait_for
from tests.plugin_run import check_postgresql

# Scenario runs on every supported major, not only the full-suite ones.
pytestmark = pytest.mark.pg_matrix


def test_primary_says_there_is_no_lag_to_measure(pg_cluster: PgCluster) -> None:
    run = check_postgresql("lag", env=pg_cluster.primary.env())
    assert run.first_line == "PG_LAG OK - primary (not in recovery): no replay lag to measure"
    failing = check_postgresql("lag", "--role-mismatch", "critical", env=pg_cluster.primary.env())
    assert failing.status == "CRITICAL"


def test_idle_primary_is_not_lag(pg_cluster: PgCluster) -> None:
    replica = pg_cluster.replicas[0]
    pg_cluster.primary.execute("CREATE TABLE IF NOT EXISTS idle_probe (x int)")
    pg_cluster.primary.execute("INSERT INTO idle_probe VALUES (1)")
    # the last replayed commit ages past the thresholds while nothing new arrives
    wait_for(
        lambda: replica.scalar(
            "SELECT now() - pg_last_xact_replay_timestamp() > interval '2.5 s'"
            " AND pg_last_wal_receive_lsn() = pg_last_wal_replay_lsn()"
        ),
        what="an idle primary",
        timeout=30,
    )
    run = check_postgresql("lag", "-w", "1s", "-c", "2s", env=replica.env())
    assert run.status == "OK", run.stdout
    assert run.perfdata["replay_lag_seconds"].value == 0
    assert run.perfdata["replay_lag_bytes"].value == 0
    assert run.perfdata["receiver_streaming"].value == 1
    assert run.summary.startswith("replay lag 0 B, 0ms, streaming from 127.0.0.1:")


def test_paused_replay_with_writes_passes_byte_and_second_thresholds(
    pg_cluster: PgCluster,
) -> None:
    primary, replica = pg_cluster.primary, pg_cluster.replicas[0]
    # a replayed commit gives the replica a replay timestamp for the seconds to age from
    primary.execute("CREATE TABLE IF NOT EXISTS lag_probe (x int, pad text)")
    pg_cluster.wait_caught_up()
    replica.pause_replay()
    try:
        primary.execute(
            "INSERT INTO lag_probe SELECT g, repeat('x', 200) FROM generate_series(1, 20000) g"
        )
        wait_for(
            lambda: replica.scalar(
                "SELECT pg_wal_lsn_diff(pg_last_wal_receive_lsn(), pg_last_wal_replay_lsn())"
                " > 2 * 1024 * 1024"
                " AND now() - pg_last_xact_replay_timestamp() > interval '2.5 s'"
            ),
            what="WAL received but not replayed",
            timeout=30,
        )
        run = check_postgresql(
            "lag", "-w", "1MB", "-c", "2MB", "-w", "1s", "-c", "2s", env=replica.env()
        )
    finally:
        replica.resume_replay()
    assert run.status == "CRITICAL"
    assert "replay lag" in run.summary and "(above 2.0 MiB)" in run.summary
    assert "(above 2.0s)" in run.summary
    perf = run.perfdata
    assert perf["replay_lag_bytes"].value > 2 * 1024 * 1024
    assert perf["replay_lag_bytes"].uom == "B"
    assert (perf["replay_lag_bytes"].warn, perf["replay_lag_bytes"].crit) == ("1048576", "2097152")
    assert perf["replay_lag_seconds"].value > 2
    assert perf["replay_paused"].value == 1


def test_paused_replay_alone_is_a_warning(pg_cluster: PgCluster) -> None:
    replica = pg_cluster.replicas[0]
    replica.pause_replay()
    try:
        run = check_postgresql("lag", env=replica.env())
    finally:
        replica.resume_replay()
    assert run.status == "WARNING"
    assert run.summary == "WAL replay is paused (pg_wal_replay_resume() resumes it)"


def test_no_wal_receiver_is_critical(make_pg_cluster) -> None:
    cluster: PgCluster = make_pg_cluster(replicas=1)
    replica = cluster.replicas[0]
    cluster.primary.stop()
    wait_for(lambda: replica.wal_receiver_status() != "streaming", what="receiver gone", timeout=30)
    run = check_postgresql("lag", env=replica.env())
    assert run.status == "CRITICAL"
    assert "not streaming" in run.summary
    assert run.perfdata["receiver_streaming"].value == 0
