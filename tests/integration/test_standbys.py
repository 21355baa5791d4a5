"""standbys: the primary's view of its replicas."""

from __future__ import annotations

import subprocess
from collections.abc import Callable
from pathlib import Path

from harness.postgres import PgCluster
from tests.plugin_run import check_postgresql


def test_one_standby_streaming(pg_cluster: PgCluster) -> None:
    pg_cluster.wait_streaming()
    run = check_postgresql("standbys", env=pg_cluster.primary.env())
    assert run.first_line.startswith("PG_STANDBYS OK - 1 streaming (replica1), replay lag")
    perf = run.perfdata
    assert perf["standbys"].value == 1
    # aggregates first: a cut first line keeps them
    assert list(perf)[:3] == ["standbys", "sync_standbys", "max_replay_lag_bytes"]
    assert perf["max_replay_lag_bytes"].uom == "B"
    assert {
        "replica1_replay_lag_bytes",
        "replica1_replay_lag",
        "replica1_write_lag",
        "replica1_flush_lag",
    } <= set(perf)
    assert perf["replica1_replay_lag_bytes"].uom == "B"
    assert any(
        line.startswith("replica1 (127.0.0.1): streaming, async") for line in run.long_output
    )


def test_replica_without_standbys_of_its_own(pg_cluster: PgCluster) -> None:
    replica = pg_cluster.replicas[0]
    run = check_postgresql("standbys", env=replica.env())
    assert run.first_line == ("PG_STANDBYS OK - replica (in recovery) with no standbys of its own")
    strict = check_postgresql("standbys", "--role-mismatch", "critical", env=replica.env())
    assert strict.status == "CRITICAL"


def test_fewer_standbys_than_expected_is_critical(pg_cluster: PgCluster) -> None:
    run = check_postgresql("standbys", "--min-standbys", "2", env=pg_cluster.primary.env())
    assert run.status == "CRITICAL"
    assert run.summary == "streaming standbys 1 (below 2)"
    assert run.perfdata["standbys"].crit == "2:"


def test_named_standby_missing_is_critical(pg_cluster: PgCluster) -> None:
    run = check_postgresql(
        "standbys", "--standby", "replica1", "--standby", "replica9", env=pg_cluster.primary.env()
    )
    assert run.status == "CRITICAL"
    assert run.summary == "standby replica9 not streaming"


def test_sync_expectation(pg_cluster: PgCluster) -> None:
    run = check_postgresql("standbys", "--sync", "1", env=pg_cluster.primary.env())
    assert run.status == "CRITICAL"
    assert run.summary == "synchronous standbys 0 (below 1)"


def test_commits_waiting_for_a_missing_synchronous_standby_is_critical(
    make_pg_cluster: Callable[..., PgCluster],
) -> None:
    with make_pg_cluster(replicas=1) as cluster:
        # no writing statement from here on: every commit would hang
        cluster.primary.set_config(synchronous_standby_names='FIRST 1 ("replica 9")')
        run = check_postgresql("standbys", env=cluster.primary.env())
        run.assert_contract()
        assert run.status == "CRITICAL", run.stdout
        assert run.summary == "commits wait: 1 synchronous standby(s) required, 0 streaming"
        assert run.perfdata["sync_standbys"].crit == "1:"
        # an explicit --sync is the user's word
        assert check_postgresql("standbys", "--sync", "0", env=cluster.primary.env()).status == "OK"
        # naming the replica that streams satisfies it
        cluster.primary.set_config(synchronous_standby_names="replica1")
        cluster.primary.wait_until(
            lambda: cluster.primary.scalar(
                "SELECT sync_state = 'sync' FROM pg_stat_replication "
                "WHERE application_name = 'replica1'"
            ),
            "replica1 to become synchronous",
        )
        run = check_postgresql("standbys", env=cluster.primary.env())
        assert run.status == "OK", run.stdout
        assert run.perfdata["sync_standbys"].value == 1


def test_pg_receivewal_is_a_wal_receiver_not_a_standby(
    pg_cluster: PgCluster, tmp_path: Path
) -> None:
    primary = pg_cluster.primary
    log = (tmp_path / "pg_receivewal.log").open("w")
    receiver = subprocess.Popen(
        [
            str(pg_cluster.install.program("pg_receivewal")),
            "--no-loop",
            "--no-password",
            "-D",
            str(tmp_path),
            "-d",
            primary.replication_conninfo(application_name="walarchive"),
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
    )
    try:
        primary.wait_until(
            lambda: primary.scalar(
                "SELECT count(*) FROM pg_stat_replication WHERE application_name = "
                "'walarchive' AND state = 'streaming' AND write_lsn IS NOT NULL"
            ),
            "pg_receivewal to stream",
        )
        run = check_postgresql("standbys", env=primary.env())
        run.assert_contract()
        assert run.status == "OK", run.stdout
        assert run.first_line.startswith("PG_STANDBYS OK - 1 streaming (replica1), replay lag")
        assert ", 1 WAL receiver(s) |" in run.first_line
        assert run.perfdata["standbys"].value == 1
        assert not [label for label in run.perfdata if label.startswith("walarchive")]
        assert any(
            line.startswith("WAL receiver (not a standby): walarchive (127.0.0.1): streaming")
            for line in run.long_output
        ), run.stdout
        strict = check_postgresql("standbys", "--min-standbys", "2", env=primary.env())
        assert strict.summary == "streaming standbys 1 (below 2)"
    finally:
        receiver.terminate()
        receiver.wait(timeout=30)
        log.close()
        # leave the shared cluster as it was: the WAL sender goes with its client
        primary.wait_until(
            lambda: primary.scalar(
                "SELECT count(*) = 0 FROM pg_stat_replication WHERE application_name = 'walarchive'"
            ),
            "pg_receivewal's WAL sender to exit",
        )
