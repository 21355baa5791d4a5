"""standbys: the primary's view of its replicas."""

from __future__ import annotations

from harness.postgres import PgCluster
from tests.plugin_run import check_postgresql


def test_one_standby_streaming(pg_cluster: PgCluster) -> None:
    pg_cluster.wait_streaming()
    run = check_postgresql("standbys", env=pg_cluster.primary.env())
    assert run.first_line.startswith("PG_STANDBYS OK - 1 streaming (replica1), replay lag")
    perf = run.perfdata
    assert perf["standbys"].value == 1
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
